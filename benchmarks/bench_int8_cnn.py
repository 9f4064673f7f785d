"""Workload C's CNN (the train job's three conv blocks and dense head, 3 x 32 x 32 inputs) in
inference: gometal float32 and int8 (``gm.quantize``) against onnxruntime running gometal's
float export and that export quantized by ``onnxruntime.quantization.quantize_static``
(QDQ, per-channel, the same calibration batch). Windows of each are interleaved; it prints
batches per second, the ratios to gometal float32, and the other processes' load.

Usage:
  python benchmarks/bench_int8_cnn.py --threads 1 --batch 64 --windows 5
  python benchmarks/bench_int8_cnn.py --threads 2 --batch 256 --windows 4 --input-fold-ab
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime import quantization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gometal as gm
from _timing import time_window, warm_up
from gometal.apps.train_job import build_cnn


class _Calibration(quantization.CalibrationDataReader):
    """Feeds onnxruntime's calibration the batches gometal calibrates on."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.items = iter([{name: batch} for batch in batches])

    def get_next(self):
        return next(self.items, None)


def onnxruntime_runner(path: str, x: np.ndarray, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})[0]


def _unfolded_input_runner(model, calibration, x):
    """The int8 model's predict with its input quantize in a step of its own: the plan compiles
    under GOMETAL_INT8_INPUT_FOLD=0 (read once, when the plan is made)."""
    unfolded = gm.quantize(model, calibration)
    previous = os.environ.get("GOMETAL_INT8_INPUT_FOLD")
    os.environ["GOMETAL_INT8_INPUT_FOLD"] = "0"
    try:
        unfolded.predict(x)
    finally:
        if previous is None:
            del os.environ["GOMETAL_INT8_INPUT_FOLD"]
        else:
            os.environ["GOMETAL_INT8_INPUT_FOLD"] = previous
    return lambda: unfolded.predict(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument(
        "--input-fold-ab",
        action="store_true",
        help="add the int8 model with its input quantize in a step of its own "
        "(GOMETAL_INT8_INPUT_FOLD=0), the A/B of folding it into the first convolution",
    )
    args = parser.parse_args()
    gm.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    model = build_cnn((3, 32, 32), 2, seed=0)
    calibration = [rng.random((args.batch, 3, 32, 32), dtype=np.float32) for _ in range(4)]
    x = rng.random((args.batch, 3, 32, 32), dtype=np.float32)
    int8_model = gm.quantize(model, calibration)
    with tempfile.TemporaryDirectory() as folder:
        float_path, int8_path = os.path.join(folder, "c.onnx"), os.path.join(folder, "c_int8.onnx")
        model.export_onnx(float_path)
        name = ort.InferenceSession(float_path).get_inputs()[0].name
        quantization.quantize_static(
            float_path,
            int8_path,
            _Calibration(name, calibration),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
        )
        runs = {
            "gometal float32": lambda: model.predict(x),
            "gometal int8": lambda: int8_model.predict(x),
            "onnxruntime float32": onnxruntime_runner(float_path, x, args.threads),
            "onnxruntime int8 (QDQ)": onnxruntime_runner(int8_path, x, args.threads),
        }
        if args.input_fold_ab:
            runs["gometal int8, input apart"] = _unfolded_input_runner(model, calibration, x)
        agree = np.mean(
            int8_model.predict(x).argmax(1) == runs["onnxruntime int8 (QDQ)"]().argmax(1)
        )
        for step in runs.values():
            warm_up(step, 0.5, 3)
        rates: dict[str, list[float]] = {name: [] for name in runs}
        loads: list[float] = []
        for _ in range(args.windows):
            for label, step in runs.items():
                rate, load = time_window(step, args.window_s)
                rates[label].append(rate)
                if load is not None:
                    loads.append(load)
    base = statistics.median(rates["gometal float32"])
    print(
        f"workload C CNN, batch {args.batch}, {args.threads} thread(s); other load: median "
        f"{statistics.median(loads or [0.0]):.2f} cores; top-1 agreement of the int8 models {agree:.3f}"
    )
    for label, values in rates.items():
        median = statistics.median(values)
        print(f"  {label:<24} {median:8.2f} batches/s   x{median / base:5.2f}")


if __name__ == "__main__":
    main()
