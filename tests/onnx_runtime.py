"""onnxruntime as the reference runtime of the ONNX tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort


def run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    """Runs the one-input model at ``path`` on ``x`` with onnxruntime's CPU provider."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]
