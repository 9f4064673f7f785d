"""Causal attention, forward and forward+backward: gometal's fused kernel against the op's
decomposition (batched matmuls and a softmax, run through `without_kernels`) and against
torch's scaled_dot_product_attention.

    python benchmarks/bench_attention.py [--threads 2] [--repeats 10]

Two shapes: (N=12, H=4, T=64, D=32), nanoGPT's CPU configuration, and (N=4, H=4, T=1024,
D=32), a long context. "fused, saved lse" is how training uses the op: the forward pass
keeps each row's log-sum-exp (with_lse) and the backward pass reads it instead of
recomputing it. Each line gives the best time of `repeats` runs and the ratio of
each peer's time to the fused kernel's (above 1: the fused kernel is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gometal as gm
from gometal import _core

SHAPES = [(12, 4, 64, 32), (4, 4, 1024, 32)]
ATTENTION_OPS = ["attention", "attention_lse", "attention_grad_q", "attention_grad_kv"]


def best_ms(fn, repeats: int) -> float:
    """The fastest of `repeats` calls after two warm-up calls: the least disturbed by other
    work on a shared machine."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def gometal_runs(shape, values, weights, options, with_lse=False):
    """(forward, forward+backward) callables of a causal attention engine; `with_lse` saves
    the log-sum-exps in the forward pass instead of recomputing them for the backward."""
    g = _core.Graph()
    q, k, v = (g.input(name, shape) for name in "qkv")
    out = g.op("attention", [q, k, v], {"causal": True, "with_lse": with_lse})
    if with_lse:
        out = g.op("slice", [out], {"axis": 3, "start": 0, "end": shape[3]})
    loss = g.op("sum", [g.op("mul", [out, g.constant(weights)])], {"axes": []})
    grads = g.gradients(loss, [q, k, v])
    engine = _core.Engine(g, seed=0, backend="cpu", options=options)
    engine.define("forward", [q, k, v], [out], effects=[], advance_rng=False)
    engine.define("backward", [q, k, v], grads, effects=[], advance_rng=False)
    return (lambda: engine.run("forward", values)), (lambda: engine.run("backward", values))


def torch_runs(values, weights):
    import torch
    import torch.nn.functional as F

    tensors = [torch.from_numpy(a) for a in values]
    grad_out = torch.from_numpy(weights)

    def forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(*tensors, is_causal=True)

    def backward():
        leaves = [t.detach().requires_grad_() for t in tensors]
        F.scaled_dot_product_attention(*leaves, is_causal=True).backward(grad_out)

    return forward, backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    gm.set_num_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print(f"causal attention, {args.threads} threads, best of {args.repeats}")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        values = [rng.standard_normal(shape, dtype=np.float32) for _ in range(3)]
        weights = rng.standard_normal(shape, dtype=np.float32)
        runs = {
            "fused": gometal_runs(shape, values, weights, {}),
            "fused, saved lse": gometal_runs(shape, values, weights, {}, with_lse=True),
            "decomposition": gometal_runs(
                shape, values, weights, {"without_kernels": ATTENTION_OPS}
            ),
            "torch sdpa": torch_runs(values, weights),
        }
        n, h, t, d = shape
        print(f"(N={n}, H={h}, T={t}, D={d})")
        for index, label in enumerate(("forward", "forward+backward")):
            ms = {name: best_ms(pair[index], args.repeats) for name, pair in runs.items()}
            peers = "  ".join(
                f"{name} {ms[name]:8.2f} ms ({ms[name] / ms['fused']:5.2f}x)"
                for name in ("fused, saved lse", "decomposition", "torch sdpa")
            )
            print(f"  {label:17s} fused {ms['fused']:8.2f} ms   {peers}")


if __name__ == "__main__":
    main()
