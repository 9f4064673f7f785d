"""The child process: time one framework on one workload and print one tagged JSON line."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
import traceback

from _frameworks import make_setup
from _timing import QUIET_CORES, time_window, time_windows, warm_up
from _workload import WORKLOADS, make_batch, step_flops

# Old-OpenBLAS workarounds set on some machines; they force a slower kernel.
UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RESULT_TAG = "BENCH_RESULT "
# Interleaved runs: the child says it is warm, then times one window per "window" line
# on stdin and answers each with a tagged [rate, other load, engine allocations during the
# window (None where the framework does not count them)]; "done" ends the timing.
READY_TAG = "BENCH_READY"
WINDOW_TAG = "BENCH_WINDOW "


def reexec_with_clean_environment(threads: int) -> None:
    """Runs this script again in a fresh process with ``threads`` BLAS and OpenMP threads and
    without the old-OpenBLAS workarounds; returns at once when the environment is already so.
    The BLAS reads these variables when it loads, so they cannot be changed in place.

    Args:
        threads: the thread count every variable of ``THREAD_VARS`` gets.
    """
    wanted = {var: str(threads) for var in THREAD_VARS}
    stale = [var for var in UNSET_VARS if var in os.environ]
    if not stale and all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    env = {k: v for k, v in os.environ.items() if k not in UNSET_VARS}
    env.update(wanted)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _allocations(engine_stats) -> int | None:
    stats = engine_stats() if engine_stats else None
    return stats.get("allocations") if stats else None


def _windows_on_request(step, warmup_s: float, window_s: float, engine_stats=None):
    warm_up(step, warmup_s, 5)
    print(READY_TAG, flush=True)
    rates, other, quiet = [], [], []
    for line in sys.stdin:
        if line.strip() != "window":
            break
        # Read outside the timed window, so the count costs the rate nothing.
        before = _allocations(engine_stats)
        rate, load = time_window(step, window_s)
        after = _allocations(engine_stats)
        allocations = None if before is None or after is None else after - before
        rates.append(rate)
        other.append(load)
        quiet.append(load is None or load < QUIET_CORES)
        print(WINDOW_TAG + json.dumps([rate, load, allocations]), flush=True)
    return rates, other, quiet


def _loaded_libraries() -> list[str]:
    """BLAS and OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    try:
        import threadpoolctl
    except ImportError:
        return ["(threadpoolctl not installed)"]
    out = []
    for lib in threadpoolctl.threadpool_info():
        desc = f"{lib.get('prefix')} {lib.get('version') or ''}".strip()
        if lib.get("architecture"):
            desc += f" kernel={lib['architecture']}"
        out.append(f"{desc} ({lib.get('user_api')}, {lib.get('num_threads')} threads)")
    return out


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:
        try:
            import psutil
        except ImportError:
            return None
        return psutil.Process().memory_info().peak_wset / 2**20  # Windows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def run_child(args) -> int:
    """Benchmark one framework on one workload; print one tagged JSON line."""
    spec = WORKLOADS[args.workload]
    x, y = make_batch(args.workload)
    fingerprint = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:12]
    result = {
        "framework": args.child,
        "workload": args.workload,
        "batch": len(x),
        "train": spec.train,
        "threads": args.threads,
        "data_sha256": fingerprint,
    }
    try:
        setup = make_setup(args.child, args.workload, x, y, args.threads)
        step, check_of, info = setup.step, setup.check_of, setup.info
        t0 = time.perf_counter()
        first_check = check_of(step())
        result["first_step_s"] = time.perf_counter() - t0  # includes any compilation
        stats_before = dict(setup.engine_stats()) if setup.engine_stats else None
        if args.interleave:
            rates, other, quiet = _windows_on_request(
                step, args.warmup_s, args.window_s, setup.engine_stats
            )
        else:
            rates, other, quiet = time_windows(
                step, args.warmup_s, 5, args.windows, args.window_s, args.max_windows
            )
        quiet_rates = [r for r, q in zip(rates, quiet) if q]
        # Headline from the quiet windows when there are enough of them.
        noisy = len(quiet_rates) < min(3, args.windows)
        head = rates if noisy else quiet_rates
        last_check = check_of(step())
        if stats_before is not None:
            info["engine_stats"] = after = dict(setup.engine_stats())
            if "allocations" in after and "allocations" in stats_before:
                # The steady state should make no allocation after the first call.
                info["allocations_after_first_step"] = (
                    after["allocations"] - stats_before["allocations"]
                )
        median = statistics.median(head)
        # Training loss before/after, or the mean of the outputs (inference).
        check = "loss" if spec.train else "output_mean"
        result.update(
            ok=True,
            steps_per_s=median,
            steps_per_s_min=min(head),
            steps_per_s_max=max(head),
            noisy=noisy,
            windows=[round(r, 2) for r in rates],
            other_load_cores=other,
            images_per_s=median * len(x),
            images_per_s_min=min(head) * len(x),
            images_per_s_max=max(head) * len(x),
            gflops=median * step_flops(args.workload) / 1e9,
            **{f"first_{check}": first_check, f"last_{check}": last_check},
            peak_rss_mb=_peak_rss_mb(),
            libraries=_loaded_libraries(),
            env={k: os.environ.get(k) for k in (*UNSET_VARS, *THREAD_VARS)},
            **info,
        )
        code = 0
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which prints it in the table
        result.update(
            ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8)
        )
        code = 1
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)
    return code
