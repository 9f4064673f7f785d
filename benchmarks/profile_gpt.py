"""Per-kernel profile of one GPT or LSTM training step or forward (workloads D, D-long, D-infer, E, E-infer).

Runs the benchmark's gometal GPT for a number of steps with ``GOMETAL_PROFILE=1`` set, so
that the engine prints, when the plan is dropped, the share and the time of every kernel
of the compiled step; ``--top`` keeps the costliest lines, and ``--by-op`` sums them by
the kernel's description (its ops), over all layers. ``--onnxruntime`` profiles instead
the inference workload's model exported by torch, run by onnxruntime (its own profiler),
summed by node type: the peer's map of the same forward.

Usage:
  python benchmarks/profile_gpt.py --workload D --threads 1 --steps 200
  python benchmarks/profile_gpt.py --workload D-long --steps 20 --by-op
  python benchmarks/profile_gpt.py --cpu-time --by-op   # CPU time: a loaded machine's waits left out
  python benchmarks/profile_gpt.py --workload D-infer --threads 2 --onnxruntime
  python benchmarks/profile_gpt.py --workload E --steps 30 --cpu-time   # the character LSTM
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


def _profile_onnxruntime(workload: str, threads: int, steps: int, top: int) -> None:
    """Exports ``workload``'s torch model, runs it ``steps`` times in onnxruntime with its
    profiler on, and prints each node type's share and time per run."""
    import json
    import tempfile

    import onnxruntime as ort

    from _onnxruntime import _EXPORT_SCRIPT, _feed, _session
    from _workload import make_batch

    x, _ = make_batch(workload)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        command = [sys.executable, _EXPORT_SCRIPT, "torch", workload, path, str(len(x))]
        subprocess.run(command, check=True, capture_output=True)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = _session(ort, path, threads, options)
        feed = _feed(session, x)
        for _ in range(steps):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    totals: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            entry = totals.setdefault(event["args"]["op_name"], [0.0, 0])
            entry[0] += event["dur"] / steps
            entry[1] += 1
    whole = sum(us for us, _ in totals.values())
    print(f"onnxruntime profile: {steps} runs, {whole / 1000:.3f} ms of kernels per run (wall)")
    rows = sorted(((us, op, count // steps) for op, (us, count) in totals.items()), reverse=True)
    for us, op, count in rows[:top]:
        print(f"{100 * us / whole:6.1f}% {us:9.1f} us  {op}  x{count}")


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
    parser.add_argument(
        "--workload", default="D", choices=["D", "D-long", "D-infer", "D-infer-1", "E", "E-infer"]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--by-op", action="store_true", help="sum the kernels by their ops")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the calling thread's CPU time, not the wall clock (a loaded machine; 1 thread)",
    )
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="profile the torch export in onnxruntime instead (D-infer, D-infer-1, E-infer)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.onnxruntime:
        _profile_onnxruntime(args.workload, args.threads, args.steps, args.top)
        return
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
