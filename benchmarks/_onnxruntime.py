"""The onnxruntime peer of the inference workloads (C, D-infer, D-infer-1, E-infer): the
model exported by torch.onnx.export and by gometal's own export, each in a separate process;
both run by an onnxruntime InferenceSession on the CPU, and the faster one is timed."""

from __future__ import annotations

import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from _workload import WORKLOADS, Workload

_EXPORT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_export_onnx.py")
# Seconds each candidate export is timed for, in alternating rounds, to pick the faster.
_PICK_ROUNDS, _PICK_S = 3, 0.3


def _export(exporter: str, workload: str, path: str, batch: int) -> str | None:
    """Runs one export; None when it worked, else the tail of its error output."""
    proc = subprocess.run(
        [sys.executable, _EXPORT_SCRIPT, exporter, workload, path, str(batch)],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        return None
    return " | ".join(proc.stderr.strip().splitlines()[-3:])


def _session(ort, path: str, threads: int, options=None):
    options = options or ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _feed(session, x: np.ndarray) -> dict:
    # torch exports long tokens, gometal int32 ones: give each input the type it declares.
    declared = session.get_inputs()[0]
    dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(declared.type, np.float32)
    return {declared.name: np.ascontiguousarray(x.astype(dtype))}


def _median_call_s(call) -> float:
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < _PICK_S or len(times) < 3:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fastest_export(workload: str, x: np.ndarray, threads: int):
    """Exports ``workload``'s model with torch and with gometal, opens each in onnxruntime,
    and keeps the one whose call on ``x`` is faster.

    Args:
        workload: a workload name (its model is exported at ``len(x)`` rows).
        x: the inputs of one call (images, or (N, T) int32 token ids).
        threads: onnxruntime's intra-op threads (inter-op: 1, sequential execution).

    Returns:
        call() -> the first output of the faster session on ``x``; info, which names both
        exports, the median call time of each and the one kept.

    Example:
        >>> call, info = fastest_export("C", x, 2)  # doctest: +SKIP
    """
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    calls, failures, ops = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="gm-bench-onnx-") as folder:
        for exporter in ("torch", "gometal"):
            path = os.path.join(folder, f"{exporter}.onnx")
            error = _export(exporter, workload, path, len(x))
            if error:
                failures[exporter] = error
                continue
            ops[exporter] = dict(collections.Counter(n.op_type for n in onnx.load(path).graph.node))
            session = _session(ort, path, threads)
            feed = _feed(session, x)
            calls[exporter] = lambda s=session, f=feed: s.run(None, f)[0]
    if not calls:
        raise RuntimeError(f"no export of {workload} ran in onnxruntime: {failures}")
    export_s = time.perf_counter() - t0
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(_PICK_ROUNDS):  # alternate, so both meet the same machine conditions
        for name, call in calls.items():
            medians[name].append(_median_call_s(call))
    call_ms = {name: 1e3 * statistics.median(v) for name, v in medians.items()}
    chosen = min(call_ms, key=call_ms.get)
    info = {
        "version": ort.__version__,
        "blas": f"onnxruntime {ort.__version__} CPU kernels (MLAS); timed: the {chosen} export",
        "export_s": export_s,
        "export_call_ms": call_ms,
        "export_failures": failures,
        "timed_export": chosen,
        "onnx_ops": ops[chosen],
    }
    return calls[chosen], info


def setup_onnxruntime(spec: Workload, x: np.ndarray, threads: int):
    """(step, check_of, info) of onnxruntime running the faster export of the model on `x`.

    Args:
        spec: an inference workload.
        x: its batch (images, or (N, T) int32 token ids).
        threads: onnxruntime's intra-op threads (inter-op: 1, sequential execution).

    Returns:
        step() -> the outputs; check_of(outputs) -> their mean; info (see fastest_export).

    Example:
        >>> step, check_of, info = setup_onnxruntime(WORKLOADS["C"], x, 2)  # doctest: +SKIP
    """
    if spec.train:
        raise ValueError(f"onnxruntime runs inference workloads only, got {spec}")
    workload = next(name for name, w in WORKLOADS.items() if w == spec)
    call, info = fastest_export(workload, x, threads)
    return call, (lambda out: float(np.mean(out))), info
