"""Running the inference server: checks before it binds, uvicorn, and graceful shutdown.

SIGTERM (or Ctrl+C) drains the server: it stops accepting connections, reports not ready,
answers every request it had accepted (the batchers finish their queues), and the process
exits with status 0.
"""

from __future__ import annotations

import gc
import importlib.util
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from ..base.runtime import get_num_threads, set_num_threads
from ..viz.server_cli import check_listen_address
from ..viz.server_guard import HostPolicy
from .app import DEFAULT_SETTINGS, ServerSettings, create_app
from .repository import ModelRepository
from .request_log import REQUEST_LOGGER, BufferedLineHandler, write_requests_to

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_PORT",
    "DEFAULT_SWITCH_INTERVAL_MS",
    "EVENT_LOOPS",
    "default_serving_instances",
    "default_serving_threads",
    "is_loopback",
    "resolve_event_loop",
    "serve",
]

DEFAULT_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_HEADER_TIMEOUT_S = 10.0
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)
_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# How long a thread keeps the GIL while another waits for it (Python's default: 5 ms). An
# instance back from the engine needs the GIL for a moment to hand its answers over and take
# the next batch; the busy event loop would keep it from it for up to the whole interval.
DEFAULT_SWITCH_INTERVAL_MS = 0.2


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_serving_instances(threads: int, cores: int | None = None) -> int:
    """The instances per model version a server runs by default, for ``threads`` engine
    threads: one per core when the engine computes on one thread, else one.

    A one-thread engine runs its calls on the calling thread, so single-thread instances
    compute on every core at once (on 2 cores, the default threads leave the second core
    to the event loop alone otherwise); an engine of more threads runs one parallel region
    at a time, so further instances would only take turns in its pool. Each instance holds
    its own copy of the weights.

    Args:
        threads: the engine's compute threads.
        cores: the cores this process may run on (default: its CPU affinity).

    Example:
        >>> default_serving_instances(1, 2), default_serving_instances(15, 16)
        (2, 1)
    """
    return (cores if cores is not None else _cores()) if threads == 1 else 1


def default_serving_threads(cores: int | None = None) -> int:
    """The engine threads a server computes with by default: every core but one.

    The event loop (HTTP and gRPC parsing, batching, answers) needs a core of its own:
    compute threads on every core would take it in turns with them, and each request
    would wait for a core twice.

    Args:
        cores: the cores this process may run on (default: its CPU affinity).

    Returns:
        ``cores - 1``, at least 1.

    Example:
        >>> default_serving_threads(2), default_serving_threads(16)
        (1, 15)
    """
    return max(1, (cores if cores is not None else _cores()) - 1)


def resolve_event_loop(loop: str = "auto") -> str:
    """The event loop a server runs: ``"uvloop"`` or ``"asyncio"``.

    uvloop (libuv, in C) runs the loop's own work (polling, socket reads and writes,
    callbacks) for less than asyncio does; it pays most where each turn of the loop
    answers few requests (a lone client). ``"auto"`` takes it whenever it is importable
    (it is not on Windows).

    Args:
        loop: ``"auto"``, ``"uvloop"`` or ``"asyncio"``.

    Returns:
        The loop's name, as uvicorn's ``loop`` setting takes it.

    Raises:
        ValueError: an unknown name, or ``"uvloop"`` where uvloop is not installed.

    Example:
        >>> resolve_event_loop("asyncio")
        'asyncio'
    """
    if loop not in EVENT_LOOPS:
        raise ValueError(f"loop must be one of {', '.join(EVENT_LOOPS)}, got {loop!r}")
    installed = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not installed:
        raise ValueError("loop 'uvloop' needs the uvloop package (pip install uvloop; "
                         "it does not run on Windows), or give loop 'asyncio'")  # fmt: skip
    if loop == "auto":
        return "uvloop" if installed else "asyncio"
    return loop


def _log_requests_to_stderr() -> logging.Handler | None:
    """Sends the request log to stderr (in bulk: see :mod:`.request_log`); returns the
    handler it added, to close when serving ends, or None when the log had one."""
    logger = logging.getLogger(REQUEST_LOGGER)
    if logger.handlers:
        return None
    handler = BufferedLineHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def _settle_garbage_collector() -> tuple[int, ...]:
    """Moves what loading left (models, modules) out of the collector's sight, and lets
    young objects pile up longer between collections: each request makes a few hundred,
    which otherwise start a collection every request or two. Returns the thresholds
    there were, to restore when serving ends."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *previous[1:])
    return previous


def _after_drain(signum: int, frame: FrameType | None) -> None:
    """uvicorn raises the signal it shut down for again; the drain is done, so ignore it."""


def serve(
    repository: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    grpc_port: int | None = DEFAULT_GRPC_PORT,
    max_batch_size: int = DEFAULT_SETTINGS.max_batch_size,
    max_queue_delay_ms: float = DEFAULT_SETTINGS.max_queue_delay_ms,
    instances: int | None = None,
    max_queue: int = DEFAULT_SETTINGS.max_queue,
    start_when_idle: bool = DEFAULT_SETTINGS.start_when_idle,
    gather_while_busy: bool = DEFAULT_SETTINGS.gather_while_busy,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_SETTINGS.max_body_bytes,
    allowed_hosts: Sequence[str] = (),
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    threads: int | None = None,
    warmup: bool = True,
    loop: str = "auto",
    switch_interval_ms: float = DEFAULT_SWITCH_INTERVAL_MS,
) -> None:
    """Serves a model repository over the Open Inference Protocol until SIGTERM or Ctrl+C.

    Args:
        repository: a Triton-layout repository (``REPO/<model>/<version>/model.safetensors``
            or ``model.onnx``), a folder holding one model file, or the file itself.
        host: the address to bind; other than loopback, ``api_key`` is required.
        port: the HTTP port.
        grpc_port: the gRPC port (``None`` or 0: no gRPC).
        max_batch_size: the most rows in a merged batch (and in one request).
        max_queue_delay_ms: how long a request waits for others to join its batch.
        instances: model copies computing concurrently, per model version (default:
            :func:`default_serving_instances`, one per core when ``threads`` is 1).
        max_queue: requests waiting per model version; more get 503 + Retry-After.
        start_when_idle: a free instance runs a request alone in the queue at once
            instead of waiting ``max_queue_delay_ms`` for others to join it.
        gather_while_busy: while another instance computes, a free instance waits until
            the queue holds as many rows as that instance's batch, or until it finishes.
        api_key: a bearer token every request must carry.
        max_body_bytes: the largest request body; larger ones get 413 unread.
        allowed_hosts: ``Host`` names accepted besides loopback and the bound address.
        header_timeout_s: seconds a request's headers may take to arrive.
        threads: the engine's compute threads (default: :func:`default_serving_threads`,
            every core but one, which the event loop keeps).
        warmup: compile each model's plans for the batch sizes its batcher runs before
            the server reports ready (a first request of each size then waits for none).
        loop: the event loop: ``"uvloop"``, ``"asyncio"``, or ``"auto"`` (uvloop when it
            is installed: see :func:`resolve_event_loop`).
        switch_interval_ms: how long a thread keeps the GIL while another waits for it,
            while the server runs (``sys.setswitchinterval``; Python's default is 5 ms): an
            instance finishing a batch waits that long at most for the event loop to let it
            hand the answers over.

    Raises:
        ValueError: a setting out of range, a non-loopback ``host`` without ``api_key``,
            or a port that cannot be bound (the message says which).
        RepositoryError: the repository holds no model.

    Example:
        >>> serve("models", port=8000, max_batch_size=32)  # doctest: +SKIP
    """
    import uvicorn

    from .http_connection import serving_protocol

    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"--host {host} exposes the server beyond this machine: give --api-key (a bearer "
            "token clients must send), or bind 127.0.0.1"
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):  # fmt: skip
        raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
    threads = threads if threads is not None else default_serving_threads()
    event_loop = resolve_event_loop(loop)
    if (isinstance(switch_interval_ms, bool) or not isinstance(switch_interval_ms, (int, float))
            or not 0 < switch_interval_ms <= 1000):  # fmt: skip
        raise ValueError(f"switch_interval_ms must be milliseconds in (0, 1000], got "
                         f"{switch_interval_ms!r}")  # fmt: skip
    if instances is None:
        instances = default_serving_instances(threads)
    settings = ServerSettings(
        max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms,
        instances=instances, max_queue=max_queue, start_when_idle=start_when_idle,
        gather_while_busy=gather_while_busy,
        max_body_bytes=max_body_bytes,
        api_key=api_key or None, warmup=warmup,
    )  # fmt: skip
    check_listen_address(host, port)
    set_num_threads(threads)
    grpc_address = None
    if grpc_port:
        check_listen_address(host, grpc_port)
        grpc_address = f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
    models = ModelRepository(repository)
    app = create_app(models, settings, HostPolicy.for_bind(host, allowed_hosts), grpc_address)
    state: Any = app.state.models
    ready = [f"{name}/{version}" for name, version in sorted(state.served)]
    failed = [f"{row['name']}/{row['version']}: {row['reason']}"
              for row in models.index() if row["state"] != "READY"]  # fmt: skip
    grpc_shown = f", grpc {grpc_address}" if grpc_address else ""
    print(f"gometal serve: http://{host}:{port}/v2{grpc_shown} serving "
          f"{', '.join(ready) or 'no model'} ({get_num_threads()} engine threads, "
          f"{instances} instances, {event_loop} event loop, GIL switch interval "
          f"{switch_interval_ms:g} ms)",
          flush=True)  # fmt: skip
    for (name, version), served in sorted(state.served.items()):
        if served.warmed_up:
            timings = ", ".join(f"{size}: {cost * 1e3:.2f}" for size, cost in
                                sorted(served.batch_costs.items()))  # fmt: skip
            print(f"gometal serve: {name}/{version} compiled for batch sizes "
                  f"{served.warmed_up} in {served.warmup_s:.1f} s (fitted ms per call: {timings})",
                  flush=True)  # fmt: skip
    for line in failed:
        print(f"gometal serve: not ready: {line}", file=sys.stderr, flush=True)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.begin_drain()  # not ready at once; gRPC stops taking calls too
            super().handle_exit(sig, frame)

    # No proxy-header middleware: nothing here reads the client's address.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False,
        http=serving_protocol(header_timeout_s, app.state.direct_infer), loop=event_loop,
        timeout_graceful_shutdown=None,
    )  # fmt: skip
    gc_thresholds = _settle_garbage_collector()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_ms / 1e3)
    # After uvicorn's Config: its logging setup closes every handler there was.
    log_handler = _log_requests_to_stderr()
    write_requests_to(log_handler)  # the only handler: request lines skip logging's records
    in_main_thread = threading.current_thread() is threading.main_thread()
    shutdown_signals = _SHUTDOWN_SIGNALS if in_main_thread else ()  # only main may set them
    previous = {sig: signal.signal(sig, _after_drain) for sig in shutdown_signals}
    try:
        DrainingServer(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        gc.set_threshold(*gc_thresholds)
        sys.setswitchinterval(switch_interval)
        gc.unfreeze()
        write_requests_to(None)
        if log_handler is not None:  # the last lines, and no writer thread left behind
            logging.getLogger(REQUEST_LOGGER).removeHandler(log_handler)
            log_handler.close()
