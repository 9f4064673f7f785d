"""How much of the gradient all-reduce one training step hides behind its backward pass.

Runs a workload's training step (D, the GPT, by default) on N MPI ranks twice: with blocking
all-reduces (``GOMETAL_OVERLAP_ALLREDUCE=0``: every bucket's exchange stops the step) and with
overlapped ones (each bucket started when its last gradient exists, waited on before its
update). With ``GOMETAL_PROFILE=1`` on rank 0 the engine times every kernel; the exposed
all-reduce time is what the step spends inside the collective kernels:

    hidden = 1 - (time in the overlapped run's start and wait kernels)
                 / (time in the blocking run's all_reduce_mean kernels)

Both runs are in one job, interleaved window by window, so the machine's load falls on both.

Read the exposed milliseconds per step beside the share: a blocking collective's time holds
the transfer and the wait for the slower rank, and the latter is what the machine's other
load and the wait mode (GOMETAL_MPI_WAIT) change most. D, 2 ranks x 1 thread, load 7-9: with
MPI's own waits (block) the blocking run spent 85-171 ms per step in its all-reduces, the
overlapped one 21-34 ms (60-88 % "hidden"); with the default sleeping waits 14-16 ms and
11-16 ms (-10 to 30 %), in steps of 59-113 ms. A progress thread testing every 500 us rather
than 50 left 40 ms exposed.

Usage:
  python benchmarks/profile_allreduce.py --workload D --ranks 2 --threads 1 --steps 40
  python benchmarks/profile_allreduce.py --bucket-mb 25      # one bucket, as torch's default
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODES = {"blocking": "0", "overlapped": "1"}
COLLECTIVE_KERNEL = re.compile(r"all_reduce_mean(_start|_wait)? ")
PROFILE_LINE = re.compile(r"\s+([\d.]+)%\s+([\d.]+) us\s+(.*)")


def _child(workload: str, threads: int, steps: int, windows: int) -> None:
    """One rank: both modes' steps, window by window; rank 0 profiles its kernels."""
    import gc

    import gometal as gm
    from _frameworks import _setup_gometal
    from _workload import WORKLOADS, make_batch
    from gometal.train.data_parallel import OVERLAP_VARIABLE

    job = gm.distributed.init()
    if job.rank == 0:
        os.environ["GOMETAL_PROFILE"] = "1"
    x, y = make_batch(workload)
    per_rank = len(x) // job.size
    if per_rank * job.size != len(x):
        raise SystemExit(f"{workload}'s batch of {len(x)} does not split over {job.size} ranks")
    mine = slice(job.rank * per_rank, (job.rank + 1) * per_rank)
    setups = {}
    for mode, overlap in MODES.items():
        os.environ[OVERLAP_VARIABLE] = overlap
        setups[mode] = _setup_gometal(WORKLOADS[workload], x[mine], y[mine], threads)
        for _ in range(2):
            setups[mode].step()  # compile and warm up
    seconds = dict.fromkeys(MODES, 0.0)
    for _ in range(windows):
        for mode, setup in setups.items():
            gm.distributed.barrier()
            start = time.perf_counter()
            for _ in range(steps // windows):
                setup.step()
            gm.distributed.barrier()
            seconds[mode] += time.perf_counter() - start
    if job.rank == 0:
        for mode in MODES:
            print(
                f"step {mode}: {seconds[mode] / (steps // windows * windows) * 1e3:.2f} ms",
                flush=True,
            )
    for mode in MODES:
        # Dropping the plan prints its kernel table (stderr); the marker says whose it is.
        if job.rank == 0:
            print(f"== profile {mode}", file=sys.stderr, flush=True)
        setups[mode] = None
        gc.collect()
    gm.set_num_threads(threads)  # keeps the module referenced until the plans are dropped


def _collective_microseconds(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per mode: the microseconds per step in collective kernels, and in all kernels."""
    collective: dict[str, float] = {}
    total: dict[str, float] = {}
    mode = None
    for line in text.splitlines():
        if line.startswith("== profile "):
            mode = line.split()[-1]
            collective[mode] = total[mode] = 0.0
            continue
        match = PROFILE_LINE.match(line)
        if mode is None or match is None:
            continue
        micros = float(match.group(2))
        total[mode] += micros
        if COLLECTIVE_KERNEL.match(match.group(3)):
            collective[mode] += micros
    return collective, total


def _progress_mode(env: dict[str, str]) -> str:
    """How the buckets in flight progress under ``env``, in words."""
    if env.get("GOMETAL_MPI_PROGRESS", "steps") in ("", "steps"):
        return "between kernels"
    return f"on a thread every {env.get('GOMETAL_MPI_PROGRESS_US', '50')} us"


def main() -> None:
    """Runs the job, then prints the step times and the hidden share of the all-reduce."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="D")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--bucket-mb", type=float, default=None, help="GOMETAL_BUCKET_MB")
    parser.add_argument(
        "--progress", choices=["steps", "thread"], default=None, help="GOMETAL_MPI_PROGRESS"
    )
    parser.add_argument("--progress-us", type=int, default=None, help="GOMETAL_MPI_PROGRESS_US")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.workload, args.threads, args.steps, args.windows)
        return

    import gometal as gm

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if args.bucket_mb is not None:
        env["GOMETAL_BUCKET_MB"] = str(args.bucket_mb)
    if args.progress is not None:
        env["GOMETAL_MPI_PROGRESS"] = args.progress
    if args.progress_us is not None:
        env["GOMETAL_MPI_PROGRESS_US"] = str(args.progress_us)
    child_args = ["--child", "--workload", args.workload, "--threads", str(args.threads)]
    child_args += ["--steps", str(args.steps), "--windows", str(args.windows)]
    command = gm.distributed.mpirun_command(
        args.ranks, os.path.abspath(__file__), child_args, launcher_args=["--oversubscribe"]
    )
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    bucket = f"{env['GOMETAL_BUCKET_MB']} MiB" if "GOMETAL_BUCKET_MB" in env else "the default"
    print(
        f"workload {args.workload}, {args.ranks} ranks x {args.threads} thread(s), "
        f"bucket {bucket}, "
        f"progress {_progress_mode(env)}, "
        f"waits {env.get('GOMETAL_MPI_WAIT') or 'poll'}; load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith("step ")))
    collective, total = _collective_microseconds(result.stderr)
    for mode in MODES:
        print(
            f"{mode}: {collective[mode] / 1e3:.2f} ms of {total[mode] / 1e3:.2f} ms per step "
            f"in the all-reduce kernels (rank 0)"
        )
    blocking = collective["blocking"]
    hidden = 1.0 - collective["overlapped"] / blocking if blocking > 0 else float("nan")
    print(f"all-reduce hidden behind the backward pass: {100 * hidden:.1f} %")


if __name__ == "__main__":
    main()
