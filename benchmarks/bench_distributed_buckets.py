"""The default gradient buckets against another size, side by side in one MPI job.

Separate jobs (bench_distributed.py --bucket-mb) meet different moments of a loaded
machine; here every rank builds the workload's training step twice, with the default
buckets (data_parallel.default_bucket_floats) and at GOMETAL_BUCKET_MB=X, and times them in
alternating windows (the order flips every window), so each pair of windows saw the same
load. Ranks yield the CPU while they wait in a collective, as in bench_distributed.py.

Prints rank 0's median time per step of each and the median of the per-window ratios.

Usage:
  python benchmarks/bench_distributed_buckets.py --workload D --bucket-mb 25 --windows 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _child(workload: str, bucket_mb: str, windows: int, steps: int) -> None:
    """One rank: both step graphs, timed in alternating windows."""
    import gometal as gm
    from _frameworks import _setup_gometal
    from _workload import WORKLOADS, make_batch
    from gometal.train.data_parallel import BUCKET_VARIABLE

    job = gm.distributed.init()
    x, y = make_batch(workload)
    per_rank = len(x) // job.size
    mine = slice(job.rank * per_rank, (job.rank + 1) * per_rank)
    setups = {}
    for label, size in (("default", None), (f"{bucket_mb} MiB", bucket_mb)):
        os.environ.pop(BUCKET_VARIABLE, None)
        if size is not None:
            os.environ[BUCKET_VARIABLE] = size  # read when the step graph is built
        setups[label] = _setup_gometal(WORKLOADS[workload], x[mine], y[mine], 1)
        for _ in range(2):
            setups[label].step()  # compile and warm up
    milliseconds: dict[str, list[float]] = {label: [] for label in setups}
    for window in range(windows):
        for label in list(setups)[:: 1 if window % 2 == 0 else -1]:
            gm.distributed.barrier()
            start = time.perf_counter()
            for _ in range(steps):
                setups[label].step()
            gm.distributed.barrier()
            milliseconds[label].append((time.perf_counter() - start) / steps * 1e3)
    if job.rank == 0:
        for label, values in milliseconds.items():
            print(f"{label}: {statistics.median(values):.1f} ms per step (median of {windows})")
        default, other = milliseconds.values()
        ratios = [b / a for a, b in zip(default, other)]
        print(
            f"{bucket_mb} MiB time / default time: {statistics.median(ratios):.3f} "
            f"(windows {min(ratios):.2f}..{max(ratios):.2f}; above 1: the default is faster)"
        )


def main() -> None:
    """Starts the job and prints rank 0's lines and the machine's load."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="D")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--bucket-mb", default="25")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8, help="steps per window")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.workload, args.bucket_mb, args.windows, args.steps)
        return

    import gometal as gm

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    child_args = ["--child", "--workload", args.workload, "--bucket-mb", args.bucket_mb]
    child_args += ["--windows", str(args.windows), "--steps", str(args.steps)]
    command = gm.distributed.mpirun_command(
        args.ranks, os.path.abspath(__file__), child_args, launcher_args=["--oversubscribe"]
    )
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    print(f"workload {args.workload}, {args.ranks} ranks x 1 thread; load {os.getloadavg()[0]:.1f}")
    print(result.stdout.strip())


if __name__ == "__main__":
    main()
