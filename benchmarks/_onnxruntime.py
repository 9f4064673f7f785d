"""The onnxruntime peer of E-infer: the torch peer's LSTM language model, exported by
torch.onnx.export in a separate process, run by an onnxruntime InferenceSession on the CPU."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _workload import Workload

_EXPORTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_lstm.py")


def _export(path: str, batch: int, length: int) -> None:
    proc = subprocess.run(
        [sys.executable, _EXPORTER, path, str(batch), str(length)],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"torch.onnx.export of the LSTM model failed: {tail}")


def setup_onnxruntime(spec: Workload, x: np.ndarray, threads: int):
    """(step, check_of, info) of onnxruntime running the exported model on the batch `x`.

    Args:
        spec: the workload (an LSTM inference workload).
        x: (N, T) int32 token ids.
        threads: onnxruntime's intra-op threads (inter-op: 1, sequential execution).

    Returns:
        step() -> the (N, T, vocab) logits; check_of(logits) -> their mean; info.

    Example:
        >>> step, check_of, info = setup_onnxruntime(WORKLOADS["E-infer"], x, 2)  # doctest: +SKIP
    """
    if spec.model != "lstm" or spec.train:
        raise ValueError(f"onnxruntime runs the LSTM inference workload only, got {spec}")
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gm-bench-onnx-") as folder:
        path = os.path.join(folder, "lstm.onnx")
        _export(path, *x.shape)
        export_s = time.perf_counter() - t0
        ops = collections.Counter(node.op_type for node in onnx.load(path).graph.node)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.astype(np.int64)}  # torch exports long tokens
    info = {
        "version": ort.__version__,
        "blas": f"onnxruntime {ort.__version__} CPU kernels (MLAS)",
        "export_s": export_s,
        "onnx_ops": dict(ops),
    }
    return (lambda: session.run(None, feed)[0]), (lambda out: float(np.mean(out))), info
