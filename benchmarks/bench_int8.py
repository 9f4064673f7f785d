"""int8 dense and convolution kernels against the float32 path on this CPU.

Each case builds the float layer (matmul or conv2d, plus bias and relu) and its int8 twin
(quantize the float input, then quantized_matmul / quantized_conv2d with bias and relu in
the epilogue, float32 out), runs the int8 one once per kernel path this CPU has
(GOMETAL_INT8_KERNEL), and times them in interleaved windows; it prints calls per second,
the int8 / float32 ratio of the medians, and the other processes' load during the windows.

Usage:
  python benchmarks/bench_int8.py --threads 1 --windows 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import gometal as gm
from _timing import time_window, warm_up
from gometal import _core
from ops.cases_quantized import int8_path, int8_paths

# name -> (input shape, weight shape, conv attributes or None for a dense)
CASES = {
    "dense 256x1024 -> 1024": ((256, 1024), (1024, 1024), None),
    "dense 32x784 -> 512": ((32, 784), (512, 784), None),
    "conv 32x64x32x32 3x3 -> 64": ((32, 64, 32, 32), (64, 64, 3, 3), {"padding": [1, 1]}),
    "conv 32x3x32x32 3x3 -> 32": ((32, 3, 32, 32), (32, 3, 3, 3), {"padding": [1, 1]}),
}


def build(x_shape, w_shape, conv, int8: bool):
    """An engine computing relu(layer(x) + bias), float32 or int8; returns (run, feed)."""
    rng = np.random.default_rng(0)
    g = _core.Graph()
    x = g.input("x", (-1, *x_shape[1:]))
    bias = g.variable("bias", (w_shape[0],))
    if int8:
        q = g.op("quantize", [x], {"scale": 0.02, "zero_point": 128, "dtype": "uint8"})
        w = g.variable("w", w_shape, "int8")
        scale = g.variable("scale", (w_shape[0],))
        name = "quantized_conv2d" if conv else "quantized_matmul"
        y = g.op(name, [q, w, scale, bias], {"zero_point": 128, "relu": True, **(conv or {})})
    else:
        w = g.variable("w", w_shape)
        if conv:
            z = g.op("conv2d", [x, w], conv)
            b = g.op("reshape", [bias], {"shape": [1, w_shape[0], 1, 1]})
        else:
            z, b = g.op("matmul", [x, w], {"transpose_b": True}), bias
        y = g.op("relu", [g.op("add", [z, b])])
    engine = _core.Engine(g, seed=0, backend="cpu")
    engine.define("f", inputs=[x], outputs=[y])
    weights = rng.integers(-127, 128, w_shape) if int8 else rng.standard_normal(w_shape) * 0.05
    engine.set_variable("w", weights.astype(np.int8 if int8 else np.float32))
    engine.set_variable("bias", rng.standard_normal(w_shape[0]).astype(np.float32))
    if int8:
        engine.set_variable("scale", np.full(w_shape[0], 1e-3, np.float32))
    feed = rng.standard_normal(x_shape).astype(np.float32)
    return (lambda: engine.run("f", [feed])), engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=0.5)
    args = parser.parse_args()
    gm.set_num_threads(args.threads)
    print(f"threads {args.threads}; int8 paths on this CPU: {', '.join(int8_paths())}")
    for case, (x_shape, w_shape, conv) in CASES.items():
        runs = {"float32": build(x_shape, w_shape, conv, False)}
        for path in int8_paths():
            with int8_path(path):
                runs[path] = build(x_shape, w_shape, conv, True)
                runs[path][0]()  # compiles the plan under this path
        rates: dict[str, list[float]] = {name: [] for name in runs}
        loads: list[float] = []
        for name, (step, _) in runs.items():
            warm_up(step, 0.2, 3)
        for _ in range(args.windows):
            for name, (step, _) in runs.items():
                rate, load = time_window(step, args.window_s)
                rates[name].append(rate)
                if load is not None:
                    loads.append(load)
        base = statistics.median(rates["float32"])
        print(f"\n{case}  (other load: median {statistics.median(loads or [0.0]):.2f} cores)")
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"  {name:<11} {median:9.1f} calls/s   x{median / base:5.2f} vs float32")


if __name__ == "__main__":
    main()
