"""One convolution, forward and both gradients: gometal's kernels against PyTorch.

    python benchmarks/bench_conv.py [--batch 32 --in-channels 32 --out-channels 64 --size 32]
    python benchmarks/bench_conv.py --layers --threads 1 --batch 256

The default is the reference layer of ../shared/bench/README.md (N=32, 32->64 channels,
32x32, 3x3, padding 1; 1.21 GFLOP forward), 2 threads each. ``--layers`` times the inference
layers of workload C's CNN and of the batch-norm CNN instead (conv, bias or batch norm, ReLU
and 2x2 max pooling, fused) against onnxruntime on the same layer (_conv_layers.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gometal as gm
from gometal import _core


def timed_ms(fn, repeats: int = 20) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=32)
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", action="store_true", help="the CNNs' fused inference layers")
    parser.add_argument("--windows", type=int, default=5, help="with --layers: windows per kernel")
    args = parser.parse_args()
    if args.layers:
        from _conv_layers import compare_layers

        compare_layers(args.batch, args.threads, args.windows)
        return
    n, c, o, s = args.batch, args.in_channels, args.out_channels, args.size
    gm.set_num_threads(args.threads)
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}

    g = _core.Graph()
    x = g.input("x", (n, c, s, s))
    w = g.variable("w", (o, c, 3, 3))
    dy = g.variable("dy", (n, o, s, s))
    y = g.op("conv2d", [x, w], attrs)
    dx = g.op("conv2d_input_grad", [dy, w], {**attrs, "shape": [n, c, s, s]})
    dw = g.op("conv2d_weight_grad", [x, dy], {**attrs, "shape": [o, c, 3, 3]})
    engine = _core.Engine(g)
    for name, node in (("forward", y), ("input grad", dx), ("weight grad", dw)):
        engine.define(name, [x], [node])
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((n, c, s, s), dtype=np.float32)
    flops = 2 * n * o * s * s * c * 9
    print(f"conv {n}x{c}x{s}x{s} -> {o} channels, 3x3, pad 1: {flops / 1e9:.2f} GFLOP per pass")
    for name in ("forward", "input grad", "weight grad"):
        ms = timed_ms(lambda name=name: engine.run(name, [x_np]))
        print(f"  gometal {name:12s} {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")

    import torch

    torch.set_num_threads(args.threads)
    tx, tw = torch.from_numpy(x_np), torch.randn(o, c, 3, 3)
    with torch.no_grad():
        ms = timed_ms(lambda: torch.nn.functional.conv2d(tx, tw, padding=1))
        print(f"  torch NCHW forward       {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")
        cx = tx.contiguous(memory_format=torch.channels_last)
        cw = tw.contiguous(memory_format=torch.channels_last)
        ms = timed_ms(lambda: torch.nn.functional.conv2d(cx, cw, padding=1))
        print(f"  torch channels_last fwd  {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
