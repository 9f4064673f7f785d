"""The machine's float32 product ceiling, for ``bench_mlp.py --ceiling``.

The best rate of large square float32 matrix products by the two BLAS libraries the peers
use (OpenBLAS through NumPy, oneMKL through torch) at the benchmark's thread count, timed in a
child with the benchmark's clean environment. A workload's counted FLOPs (its products only)
over that rate is the least time any framework needs per step with every product kept in
float32, so a speed target whose required rate is above the ceiling cannot be met on this
machine, however the rest of the step is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

CEILING_TAG = "BENCH_CEILING "
SIZES = (1024, 2048)


def _best_gflops(product, n: int, windows: int = 5, window_s: float = 0.3) -> float:
    product()  # warm: first-call allocations and thread start-up stay out of the windows
    best = float("inf")
    for _ in range(windows):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < window_s:
            product()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * n**3 / best / 1e9


def _numpy_product(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    return lambda: np.matmul(a, b, out=out)


def _torch_product(n: int):
    import torch

    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    return lambda: torch.mm(a, b, out=out)


def _measure_here(threads: int) -> dict[str, float]:
    libraries = {"openblas (numpy)": _numpy_product}
    try:
        import torch

        torch.set_num_threads(threads)
        libraries["mkl (torch)"] = _torch_product
    except ImportError:
        pass
    return {name: max(_best_gflops(make(n), n) for n in SIZES) for name, make in libraries.items()}


def measure(threads: int, clean_env: dict[str, str], timeout: float = 120) -> dict[str, float]:
    """GFLOP/s of each library's best large float32 product, timed in a child process run
    with ``clean_env`` (the benchmark children's environment: BLAS thread counts set, the
    old-OpenBLAS workarounds removed). Returns {} when the child fails."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(threads)],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(CEILING_TAG):
            return json.loads(line[len(CEILING_TAG) :])
    return {}


def ceiling_lines(
    flops: float,
    unit: str,
    ceiling: dict[str, float],
    rates: dict[str, float],
    targets: list[tuple[str, float]],
) -> list[str]:
    """The lines bench_mlp prints under a workload's table: the ceiling's rate in the
    workload's unit, each framework's share of it, and the share each target needs.

    Args:
        flops: the workload's counted FLOPs per step (or per inference batch).
        unit: its rate's unit ("steps/s", "images/s", "sequences/s").
        ceiling: GFLOP/s per library, as `measure` returns them.
        rates: each framework's rate in `unit`, per step or per sample as the table prints.
        targets: (peer, ratio) pairs: gometal must run at `ratio` times that peer's rate.
    """
    if not ceiling:
        return ["  ceiling: not measured (the product timing child failed)"]
    best_lib, peak = max(ceiling.items(), key=lambda kv: kv[1])
    per_rate = flops / 1e9  # GFLOP per unit of the rate
    sizes = "/".join(map(str, SIZES))
    head = (
        f"  ceiling: float32 products at most {peak:.0f} GFLOP/s here ({best_lib}, {sizes} "
        f"square) -> at most {peak / per_rate:.1f} {unit} with every counted product kept"
    )
    lines = [head]
    shares = ", ".join(f"{name} {rate * per_rate / peak:.0%}" for name, rate in rates.items())
    lines.append(f"  share of the ceiling: {shares}")
    for peer, ratio in targets:
        if peer not in rates:
            continue
        need = ratio * rates[peer] * per_rate / peak
        verdict = "out of reach on this machine" if need > 1 else "within the ceiling"
        lines.append(f"  target {ratio}x {peer} needs {need:.0%} of the ceiling: {verdict}")
    return lines


if __name__ == "__main__":
    print(CEILING_TAG + json.dumps(_measure_here(int(sys.argv[1]))), flush=True)
