"""Imports ONNX files in a child process under a memory limit: the child side of the ONNX
fuzz and hostile-file tests, and (``run_cases``) the parent side that drives it.

``python fuzz_onnx_worker.py FOLDER START CAP`` imports the ``*.onnx`` files of FOLDER in
sorted order from index START, with ``gometal.onnx``'s per-sample cap set to CAP bytes.
For each file it prints a JSON line ``{"start": name}``, then runs ``gm.onnx.load`` and,
if the file loads, ``predict`` on two samples, and prints ``{"case": name, "outcome":
..., "detail": ..., "peak": ..., "bound": ...}``. Outcomes:

- ``"refused"``: ``OnnxImportError``, the importer's one documented error;
- ``"loaded"``: the model predicted two samples with the output shape it declares
  (``predict`` documents a ``ValueError`` for bad input only; these inputs are valid,
  so a loaded model must predict them);
- ``"error"``: anything else (another exception type, a wrong output shape);
- ``"over_memory"``: the case's peak resident memory grew past its bound.

The bound of a case is ``(SAMPLES + 2) * CAP + 16 * file size + SLACK_BYTES``: the
intermediates of two samples, a convolution's scratch and the input within the cap,
the copies a file's weights go through, and room for the allocator. The process's
address space is limited (RLIMIT_AS) to its size after start-up plus the largest
bound and headroom, so a case that allocates far more fails instead of swapping.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any

SAMPLES = 2
SLACK_BYTES = 96 * 1024**2
# Reservations that are not resident (thread stacks, allocator arenas) need room too.
ADDRESS_HEADROOM_BYTES = 768 * 1024**2
MAX_FILE_BYTES = 1024**2
WORKER = Path(__file__).resolve()


def case_bound(cap: int, file_bytes: int) -> int:
    """The most a case's peak resident memory may grow, in bytes (see the module doc)."""
    return (SAMPLES + 2) * cap + 16 * file_bytes + SLACK_BYTES


# -- child side ----------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    # Linux resets VmHWM (the peak RSS) to the current RSS on "5" (since 4.0).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _process_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class _PeakMeter:
    """The peak resident memory of one case above the memory before it."""

    def __init__(self) -> None:
        self.per_case = _reset_peak()
        self.start = (_status_kib("VmRSS") or 0) * 1024 if self.per_case else _process_peak_bytes()

    def begin(self) -> int:
        if self.per_case:
            _reset_peak()
            return (_status_kib("VmRSS") or 0) * 1024
        # Without a per-case peak, the process's peak since start-up stands for every case.
        return self.start

    def peak(self) -> int:
        if self.per_case:
            return (_status_kib("VmHWM") or 0) * 1024
        return _process_peak_bytes()


def _limit_address_space(extra: int) -> None:
    size = (_status_kib("VmSize") or 0) * 1024
    if not size:
        return  # no /proc (macOS): the peak checks still apply
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = size + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _run_case(gm: Any, path: Path) -> tuple[str, str]:
    import numpy as np

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NaN weights warn by design
            model = gm.onnx.load(path)
    except gm.onnx.OnnxImportError as err:
        return "refused", str(err)[:300]
    x = np.random.default_rng(0).standard_normal((SAMPLES, *model.input_shape))
    out = model.predict(x.astype(np.float32))
    expected = (SAMPLES, *model.output_shape)
    if out.shape != expected:
        return "error", f"predict gave shape {out.shape}, expected {expected}"
    return "loaded", f"{model.input_shape} -> {model.output_shape}"


def worker_main(folder: Path, start: int, cap: int) -> None:
    """The child: imports the files of ``folder`` from index ``start`` (see the module doc)."""
    import numpy as np

    import gometal as gm
    from gometal.onnx import _safety

    # Results go to the original stdout; anything the libraries print goes to stderr.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gm.set_num_threads(1)
    _safety.MAX_SAMPLE_BYTES = cap
    files = sorted(folder.glob("*.onnx"))
    meter = _PeakMeter()
    # Warm up the import and the engine, so the limit starts from a settled process.
    source = gm.Input((2,))
    gm.Model(source, gm.layers.Dense(2)(source)).predict(np.zeros((1, 2), np.float32))
    _limit_address_space(case_bound(cap, MAX_FILE_BYTES) + ADDRESS_HEADROOM_BYTES)
    for path in files[start:]:
        print(json.dumps({"start": path.name}), file=results, flush=True)
        before = meter.begin()
        try:
            outcome, detail = _run_case(gm, path)
        except Exception as err:  # noqa: BLE001 - every other type is what the fuzz looks for
            lines = traceback.format_exception(type(err), err, err.__traceback__)
            outcome, detail = "error", f"{type(err).__name__}: {err}"[:300] + " | " + lines[-2]
        grown = meter.peak() - before
        bound = case_bound(cap, path.stat().st_size)
        if outcome != "error" and grown > bound:
            outcome, detail = "over_memory", f"{outcome}: {detail}"
        record = {"case": path.name, "outcome": outcome, "detail": detail}
        print(json.dumps({**record, "peak": grown, "bound": bound}), file=results, flush=True)


# -- parent side ---------------------------------------------------------------------------
def _read_lines(process: subprocess.Popen[str], timeout: float) -> Any:
    """Yields the child's JSON lines; ``None`` when ``timeout`` seconds pass without one."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        while True:
            if not selector.select(timeout):
                yield None
                return
            line = process.stdout.readline()
            if not line:
                return
            yield json.loads(line)
    finally:
        selector.close()


def run_cases(
    folder: Path, cap: int, case_timeout: float = 60.0, worker: Path = WORKER
) -> dict[str, dict[str, Any]]:
    """Runs every ``*.onnx`` file of ``folder`` through worker processes.

    A worker that dies (a signal, an abort) or stops answering for ``case_timeout``
    seconds is recorded against the case it had started (``"crash"`` with the exit
    status, or ``"timeout"``), and a new worker goes on from the next case.

    Args:
        folder: the files.
        cap: ``MAX_SAMPLE_BYTES`` in the workers.
        case_timeout: seconds one case may take.
        worker: the worker script (this file), taking the arguments the module doc gives.

    Returns:
        A record per file name, as the module doc describes.

    Example:
        >>> run_cases(tmp_path, 64 * 1024**2)["pad.onnx"]["outcome"]  # doctest: +SKIP
        'refused'
    """
    names = [path.name for path in sorted(folder.glob("*.onnx"))]
    if any(path.stat().st_size > MAX_FILE_BYTES for path in folder.glob("*.onnx")):
        raise ValueError(f"case files must be at most {MAX_FILE_BYTES} bytes")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(names):
        start = len(results)
        command = [sys.executable, str(worker), str(folder), str(start), str(cap)]
        # stderr goes to a file: a pipe nobody reads could fill up and stall the worker.
        with tempfile.TemporaryFile("w+") as errors:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
            )
            current, timed_out = None, False
            for message in _read_lines(process, case_timeout):
                if message is None:
                    timed_out = True
                    process.kill()
                    break
                if "start" in message:
                    current = message["start"]
                else:
                    results[message["case"]] = message
                    current = None
            process.communicate()
            errors.seek(0)
            stderr = errors.read()
        if current is None and len(results) == start:
            raise RuntimeError(f"the fuzz worker failed before any case: {stderr[-2000:]}")
        if current is not None:
            results[current] = {
                "case": current,
                "outcome": "timeout" if timed_out else "crash",
                "detail": f"exit status {process.returncode}: {stderr[-500:]}",
            }
    return results


if __name__ == "__main__":
    folder_arg, start_arg, cap_arg = sys.argv[1:4]
    worker_main(Path(folder_arg), int(start_arg), int(cap_arg))
