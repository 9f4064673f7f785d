"""Imports ONNX files in a child process under a memory limit: the child side of the ONNX
fuzz and hostile-file tests, and (``run_cases``) the parent side that drives it.

``python fuzz_onnx_worker.py CAP ADDRESS_BUDGET`` sets ``gometal.onnx``'s per-sample cap
to CAP bytes and serves requests ``{"path"}`` as ``fuzz_runner`` describes: it runs
``gm.onnx.load`` and, if the file loads, ``predict`` on two samples. ``run_cases``
records each file as ``{"case": name, "outcome": ..., "detail": ..., "peak": ...,
"bound": ...}``. Outcomes:

- ``"refused"``: ``OnnxImportError``, the importer's one documented error;
- ``"loaded"``: the model predicted two samples with the output shape it declares
  (``predict`` documents a ``ValueError`` for bad input only; these inputs are valid,
  so a loaded model must predict them);
- ``"error"``: anything else (another exception type, a wrong output shape);
- ``"over_memory"``: the case's peak resident memory grew past its bound;
- ``"crash"`` or ``"timeout"``: the worker died on the case or stopped answering
  (``peak`` and ``bound`` are missing then).

The bound of a case is ``(SAMPLES + 2) * CAP + 16 * file size + SLACK_BYTES``: the
intermediates of two samples, a convolution's scratch and the input within the cap,
the copies a file's weights go through, and room for the allocator. The process's
address space is limited (RLIMIT_AS) to its size after start-up plus the largest
bound and headroom, so a case that allocates far more fails instead of swapping.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from fuzz_runner import run_in_workers, serve

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


def worker_main(cap: int, budget: int) -> None:
    """The child: imports the files the parent names (see the module doc)."""
    import numpy as np

    import gometal as gm
    from gometal.io.onnx import _safety

    def warm_up() -> None:
        # The import and the engine, so the limit starts from a settled process.
        _safety.MAX_SAMPLE_BYTES = cap
        source = gm.Input((2,))
        gm.Model(source, gm.layers.Dense(2)(source)).predict(np.zeros((1, 2), np.float32))

    def handle(request: dict[str, Any]) -> tuple[str, str]:
        return _run_case(gm, Path(request["path"]))

    serve(handle, budget, warm_up, unexpected="error")


# -- parent side ---------------------------------------------------------------------------
def _record(name: str, result: dict[str, Any]) -> dict[str, Any]:
    if result["status"] != "answered":
        outcome = "crash" if result["status"] == "died" else "timeout"
        detail = f"{result['exit']}: {result['stderr']}"
        return {"case": name, "outcome": outcome, "detail": detail}
    outcome, detail = result["outcome"], result["detail"]
    peak, bound = result["peak_bytes"], result["bound"]
    if outcome != "error" and peak > bound:
        outcome, detail = "over_memory", f"{outcome}: {detail}"
    return {"case": name, "outcome": outcome, "detail": detail, "peak": peak, "bound": bound}


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
    paths = sorted(folder.glob("*.onnx"))
    if any(path.stat().st_size > MAX_FILE_BYTES for path in paths):
        raise ValueError(f"case files must be at most {MAX_FILE_BYTES} bytes")
    budget = case_bound(cap, MAX_FILE_BYTES) + ADDRESS_HEADROOM_BYTES
    command = [sys.executable, str(worker), str(cap), str(budget)]
    requests = [{"path": str(path)} for path in paths]
    bounds = [case_bound(cap, path.stat().st_size) for path in paths]
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "stderr.log"
        results = run_in_workers(command, requests, bounds, log, case_timeout)
    return {path.name: _record(path.name, result) for path, result in zip(paths, results)}


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), int(sys.argv[2]))
