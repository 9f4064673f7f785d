"""Per-kernel profile of one GPT training step (workloads D and D-long).

Runs the benchmark's gometal GPT for a number of steps with ``GOMETAL_PROFILE=1`` set, so
that the engine prints, when the plan is dropped, the share and the time of every kernel
of the compiled step; ``--top`` keeps the costliest lines, and ``--by-op`` sums them by
the kernel's description (its ops), over all layers.

Usage:
  python benchmarks/profile_gpt.py --workload D --threads 1 --steps 200
  python benchmarks/profile_gpt.py --workload D-long --steps 20 --by-op
  python benchmarks/profile_gpt.py --cpu-time --by-op   # CPU time: a loaded machine's waits left out
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _run_steps(workload: str, threads: int, steps: int) -> None:
    import gometal as gm
    from _frameworks import _setup_gometal
    from _workload import WORKLOADS, make_batch

    x, y = make_batch(workload)
    setup = _setup_gometal(WORKLOADS[workload], x, y, threads)
    for _ in range(steps):
        setup.step()
    del setup
    gm.set_num_threads(threads)  # keeps the module referenced until the plans are dropped


def _summarise(lines: list[str], top: int, by_op: bool) -> None:
    rows = []
    for line in lines:
        match = re.match(r"\s+([\d.]+)%\s+([\d.]+) us\s+(.*)", line)
        if match:
            rows.append((float(match.group(2)), float(match.group(1)), match.group(3)))
        elif line.startswith("gometal profile"):
            print(line)
    if by_op:
        totals: dict[str, list[float]] = {}
        for us, share, text in rows:
            key = re.sub(r"\(\d[\d, ]*\)", "", text).strip()
            entry = totals.setdefault(key, [0.0, 0.0, 0])
            entry[0] += us
            entry[1] += share
            entry[2] += 1
        rows = [(us, share, f"{key}  x{count}") for key, (us, share, count) in totals.items()]
    for us, share, text in sorted(rows, reverse=True)[:top]:
        print(f"{share:6.1f}% {us:9.1f} us  {text}")


def main() -> None:
    """Parses the arguments, runs the steps in a child with profiling on, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="D", choices=["D", "D-long"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--by-op", action="store_true", help="sum the kernels by their ops")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the calling thread's CPU time, not the wall clock (a loaded machine; 1 thread)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_steps(args.workload, args.threads, args.steps)
        return
    command = [sys.executable, __file__, "--child", "--workload", args.workload]
    command += ["--threads", str(args.threads), "--steps", str(args.steps)]
    env = dict(os.environ, GOMETAL_PROFILE="cpu" if args.cpu_time else "1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr)
    _summarise(done.stderr.splitlines(), args.top, args.by_op)


if __name__ == "__main__":
    main()
