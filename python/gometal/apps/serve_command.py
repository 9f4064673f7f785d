"""``gometal serve REPO_OR_MODEL``: serve models over the Open Inference Protocol (KServe v2).

The web stack loads only when the command runs, so ``gometal`` itself stays light.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from .arguments import positive_int

__all__ = ["add_serve_command", "run_serve"]

EXIT_USAGE = 2  # argparse's exit status for bad arguments
BYTES_PER_MB = 1024 * 1024
# Kept equal to gometal.serving's defaults (not imported: that loads the web stack).
DEFAULT_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_QUEUE_DELAY_MS = 0.0
DEFAULT_MAX_QUEUE = 256
DEFAULT_GATHER_WHILE_BUSY = True
DEFAULT_MAX_BODY_MB = 16.0
DEFAULT_HEADER_TIMEOUT_S = 10.0
API_KEY_ENV = "GOMETAL_API_KEY"
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
DEFAULT_SWITCH_INTERVAL_MS = 0.2


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be seconds > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be seconds > 0, got {text}")
    return value


def _port_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def _non_negative_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be milliseconds >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be milliseconds >= 0, got {text}")
    return value


def _switch_interval_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be milliseconds in (0, 1000], got {text!r}"
        ) from None
    if not 0 < value <= 1000:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be milliseconds in (0, 1000], got {text}")
    return value


def _positive_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MB > 0, got {text!r}") from None
    if not (math.isfinite(value) and value * BYTES_PER_MB >= 1):
        raise argparse.ArgumentTypeError(f"must be a number of MB > 0, got {text}")
    return value


def add_serve_command(commands: Any) -> None:
    """Registers ``gometal serve`` on an argparse sub-parser collection.

    Args:
        commands: what ``ArgumentParser.add_subparsers`` returned.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_serve_command(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["serve", "models", "--port", "9000"]).port
        9000
    """
    serve = commands.add_parser(
        "serve",
        help="serve models over the Open Inference Protocol (KServe v2), with dynamic batching",
        description="Serve REPO_OR_MODEL (a Triton-layout repository REPO/<model>/<version>/"
        "model.safetensors or model.onnx, or one model file) to tritonclient and other v2 "
        "clients. SIGTERM drains: accepted requests are answered, then the server exits 0.",
    )
    serve.add_argument("repository", metavar="REPO_OR_MODEL")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (127.0.0.1: this machine only; any other needs --api-key)",
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port ({DEFAULT_PORT})"
    )
    serve.add_argument(
        "--grpc-port",
        type=_port_or_zero,
        default=DEFAULT_GRPC_PORT,
        help=f"gRPC port of inference.GRPCInferenceService ({DEFAULT_GRPC_PORT}; 0: no gRPC)",
    )
    serve.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"most rows a merged batch (and one request) holds ({DEFAULT_MAX_BATCH_SIZE})",
    )
    serve.add_argument(
        "--max-queue-delay-ms",
        type=_non_negative_ms,
        default=DEFAULT_MAX_QUEUE_DELAY_MS,
        help=f"time a request waits for others to join its batch ({DEFAULT_MAX_QUEUE_DELAY_MS:g})",
    )
    serve.add_argument(
        "--no-start-when-idle",
        dest="start_when_idle",
        action="store_false",
        help="a lone request waits out --max-queue-delay-ms even when an instance is free "
        "(default: it runs at once; requests queued during a pass still merge)",
    )
    serve.add_argument(
        "--gather-while-busy",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_GATHER_WHILE_BUSY,
        help="while another instance computes, a free one waits for as many rows as that "
        "instance's batch, or until it finishes, before taking a batch "
        f"(default: {'on' if DEFAULT_GATHER_WHILE_BUSY else 'off'})",
    )
    serve.add_argument(
        "--instances",
        type=positive_int,
        default=None,
        help="model copies computing at once, per model version (default: one per core when "
        "the engine computes on one thread, as it does by default on 2 cores; else 1)",
    )
    serve.add_argument(
        "--max-queue",
        type=positive_int,
        default=DEFAULT_MAX_QUEUE,
        help=f"requests waiting per model; more get 503 + Retry-After ({DEFAULT_MAX_QUEUE})",
    )
    serve.add_argument(
        "--max-body-mb",
        type=_positive_mb,
        default=DEFAULT_MAX_BODY_MB,
        help=f"largest request body, in MB ({DEFAULT_MAX_BODY_MB:g})",
    )
    serve.add_argument(
        "--header-timeout",
        type=_positive_seconds,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="seconds a request's headers may take to arrive; slower ones get 408 "
        f"({DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="engine compute threads (default: every core but one, which the server's event "
        "loop keeps)",
    )
    serve.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="the event loop (auto: uvloop when it is installed, else asyncio)",
    )
    serve.add_argument(
        "--switch-interval-ms",
        type=_switch_interval_ms,
        default=DEFAULT_SWITCH_INTERVAL_MS,
        help="how long a thread keeps the GIL while another waits for it: an instance back "
        "from the engine waits at most this long for the event loop to let it hand its "
        f"answers over ({DEFAULT_SWITCH_INTERVAL_MS:g}; Python's default is 5)",
    )
    serve.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="start without compiling each model's plans for its batch sizes (a first "
        "request of each size then waits for its plan)",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help=f"bearer token clients must send (default: ${API_KEY_ENV}); required when --host "
        "is not loopback",
    )
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Runs ``gometal serve`` until SIGTERM or Ctrl+C.

    Args:
        args: the parsed ``gometal serve`` arguments.

    Returns:
        0 after a graceful shutdown; 2 after a one-line ``gometal serve: ...`` error on
        stderr when the repository, the address or a setting cannot be used.

    Example:
        >>> run_serve(build_parser().parse_args(["serve", "models"]))  # doctest: +SKIP
        0
    """
    from ..serving import RepositoryError, serve

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    try:
        serve(
            args.repository,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            start_when_idle=args.start_when_idle,
            gather_while_busy=args.gather_while_busy,
            instances=args.instances,
            max_queue=args.max_queue,
            api_key=api_key or None,
            max_body_bytes=int(args.max_body_mb * BYTES_PER_MB),
            threads=args.threads,
            header_timeout_s=args.header_timeout,
            warmup=args.warmup,
            loop=args.loop,
            switch_interval_ms=args.switch_interval_ms,
        )
    except (RepositoryError, ValueError) as err:
        print(f"gometal serve: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0
