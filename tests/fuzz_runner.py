"""Fuzz cases run in worker processes under a memory limit: both sides of the protocol
that the checkpoint fuzz and the ONNX fuzz share.

A worker script calls ``serve``: it warms up, caps its address space (``RLIMIT_AS``,
where ``/proc`` tells the current size) at that size plus a budget, prints
``{"ready": true, "per_case_peak": ...}`` and then answers each JSON request it reads
from stdin with one JSON line ``{"outcome", "detail", "peak_bytes"}``. ``peak_bytes`` is
how far the resident memory rose above where it stood before the case (Linux resets the
peak per case; elsewhere the process's peak since the warm-up stands for it).

The parent calls ``run_in_workers``: it sends one case at a time and waits for its
answer. A crash (a signal, an abort) ends the worker and a hang stalls it: either is
recorded against the case it was running, and a new worker goes on from the next case.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# One thread each and few malloc arenas: the address-space cap counts every reservation,
# and a case's memory should not depend on the machine's core count.
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
# What a failure message quotes of a dead worker's stderr, and of an answer's detail.
STDERR_TAIL_BYTES = 500
MAX_DETAIL_CHARS = 3000


# -- worker side ---------------------------------------------------------------------------
def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    # Writing "5" to clear_refs resets VmHWM, the peak resident size (Linux 4.0 and up).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _process_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class PeakMeter:
    """How far one case raises the resident memory above where it started."""

    def __init__(self) -> None:
        self.per_case = _reset_peak()
        self.baseline = _process_peak()

    def begin(self) -> int:
        if not self.per_case:
            return self.baseline
        _reset_peak()
        return _status_bytes("VmRSS") or 0

    def peak(self) -> int:
        return (_status_bytes("VmHWM") or 0) if self.per_case else _process_peak()


def _cap_address_space(budget: int) -> None:
    size = _status_bytes("VmSize")
    if size is None:
        return  # no /proc (macOS): the per-case peak checks still apply
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + budget if hard == resource.RLIM_INFINITY else min(size + budget, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def serve(
    handle: Callable[[dict[str, Any]], tuple[str, str]],
    budget: int,
    warm_up: Callable[[], None],
    unexpected: str = "foreign",
) -> None:
    """The worker's loop: answers the parent's requests until stdin closes.

    Args:
        handle: runs one request; returns ``(outcome, detail)``, catching the one error
            type the code under test documents.
        budget: bytes the address space may grow beyond its size after ``warm_up``.
        warm_up: loads what every case needs, so the cap starts from a settled process.
        unexpected: the outcome of any exception ``handle`` lets through (its type,
            message and innermost frames are the detail): what the fuzz looks for.
    """
    import gometal as gm

    # Answers go to the original stdout; whatever a library prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gm.set_num_threads(1)
    warm_up()
    meter = PeakMeter()
    _cap_address_space(budget)
    answers.write(json.dumps({"ready": True, "per_case_peak": meter.per_case}) + "\n")
    answers.flush()
    for request in sys.stdin:
        start = meter.begin()
        try:
            outcome, detail = handle(json.loads(request))
        except Exception as err:  # noqa: BLE001  (any other type is what the fuzz looks for)
            frames = "".join(traceback.format_exception(err)[-4:])
            outcome, detail = unexpected, f"{type(err).__name__}: {err}\n{frames}"
        peak = max(0, meter.peak() - start)
        line = {"outcome": outcome, "detail": detail[:MAX_DETAIL_CHARS], "peak_bytes": peak}
        answers.write(json.dumps(line) + "\n")
        answers.flush()


# -- parent side ---------------------------------------------------------------------------
def _exit_status(code: int) -> str:
    return signal.Signals(-code).name if code < 0 else f"exit code {code}"


class Worker:
    """One worker process; ``ask`` sends a request and waits for its answer."""

    def __init__(self, command: list[str], log: Path, ready_timeout: float):
        self.log_path = log
        self.log = open(log, "ab")  # noqa: SIM115  (closed in close())
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # stderr goes to a file: a pipe nobody reads could fill up and stall the worker.
            stderr=self.log,
            cwd=Path(__file__).parent,
            env={**os.environ, **WORKER_ENV},
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        status, ready = self.ask(None, ready_timeout)
        if status != "answered" or not ready.get("ready"):
            self.close()
            raise RuntimeError(f"the fuzz worker did not start ({status}): {ready}")
        self.per_case_peak = bool(ready["per_case_peak"])

    def ask(self, request: dict[str, Any] | None, timeout: float) -> tuple[str, dict[str, Any]]:
        """``("answered", answer)``, or ``("timeout" | "died", exit status and stderr)``.

        ``None`` sends nothing and waits for the ready line.
        """
        if request is not None:
            try:
                self.process.stdin.write((json.dumps(request) + "\n").encode())
                self.process.stdin.flush()
            except BrokenPipeError:
                pass  # it died already: its exit status below says how
        if self.selector.select(timeout):
            line = self.process.stdout.readline()
            if line:
                return "answered", json.loads(line)
            status = "died"
        else:
            self.process.kill()
            status = "timeout"
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # stdout closed, yet it lives on
            self.process.kill()
            code = self.process.wait()
        return status, {"exit": _exit_status(code), "stderr": self._stderr_tail()}

    def _stderr_tail(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - STDERR_TAIL_BYTES))
            return log.read().decode(errors="replace")

    def close(self) -> None:
        # A live worker's loop ends with its input; a dead one may leave a request unsent.
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()
        self.selector.close()
        self.log.close()


def run_in_workers(
    command: list[str],
    requests: Sequence[dict[str, Any]],
    bounds: Sequence[int],
    log: Path,
    case_timeout: float,
    ready_timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """Runs every request through worker processes, one at a time, in order.

    Args:
        command: starts a worker (a script that calls ``serve``).
        requests: the cases, as the worker's ``handle`` reads them.
        bounds: the most each case's resident memory may rise, in bytes.
        log: the file the workers' stderr is appended to.
        case_timeout: seconds one case may take.
        ready_timeout: seconds a worker may take to start.

    Returns:
        One result per request: ``status`` (``"answered"``, ``"timeout"`` or ``"died"``),
        ``bound``, and the answer or else ``exit`` (a signal's name or the exit code)
        and the tail of the worker's ``stderr``.

    Example:
        >>> run_in_workers(command, [{"path": "a.bin"}], [2**27], log, 60.0)  # doctest: +SKIP
        [{'status': 'answered', 'bound': 134217728, 'outcome': 'refused', ...}]
    """
    results = []
    worker = Worker(command, log, ready_timeout)
    # Without a per-case peak (no /proc), a worker's peak so far answers for every case
    # it ran, so it is held to the largest bound among them.
    largest_bound = 0
    try:
        for request, bound in zip(requests, bounds, strict=True):
            status, answer = worker.ask(request, case_timeout)
            largest_bound = max(largest_bound, bound)
            if not worker.per_case_peak:
                bound = largest_bound
            results.append({"status": status, "bound": bound, **answer})
            if status != "answered":
                worker.close()
                worker = Worker(command, log, ready_timeout)  # the case stays recorded
                largest_bound = 0
    finally:
        worker.close()
    return results
