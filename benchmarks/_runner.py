"""Starting the benchmark's child processes: one alone (--sequential), or all of a
workload's at once, timing their windows in turn. A child may run under another Python
(another build's environment), so two builds of one framework can be timed side by side."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

from _child import READY_TAG, RESULT_TAG, THREAD_VARS, UNSET_VARS, WINDOW_TAG
from _timing import QUIET_CORES

# The children run the benchmark script itself with --child.
_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_mlp.py")


class ChildSpec(NamedTuple):
    """One child of an interleaved run: `label` keys its rows and rounds; the child times
    `framework` under the interpreter `python` (for instance another build's environment)."""

    label: str
    framework: str
    python: str = sys.executable


class InterleavedRun(NamedTuple):
    """What run_rounds() measured: the children's results, and per round (by label) each
    child's rate, its window's other load and its engine allocations (None where unknown);
    `probes` holds what `before_round` returned for each round (empty without one)."""

    rows: list[dict]
    rates: dict[str, list[float]]
    loads: dict[str, list[float | None]]
    allocations: dict[str, list[int | None]]
    probes: tuple = ()


def child_env(threads: int, inductor_dir: str | None = None, python: str = sys.executable) -> dict:
    """A benchmark child's environment: BLAS and OpenMP thread counts set, the old-OpenBLAS
    workarounds removed."""
    dropped = set(UNSET_VARS)
    if python != sys.executable:
        # Another environment imports its own packages, not what this one's path points at.
        dropped |= {"PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    for var in THREAD_VARS:
        env[var] = str(threads)
    if inductor_dir:
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir  # cold compile, nothing left behind
    return env


def pin_cpus(threads: int) -> list[int] | None:
    """The CPUs to confine each child to when the machine has more than `threads`."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:threads] if len(cpus) > threads else None


def _child_cmd(
    framework: str, workload: str, args, interleave: bool, python: str = sys.executable
) -> list[str]:
    cmd = [python, _SCRIPT, "--child", framework, "--workload", workload]
    for flag in ("threads", "warmup_s", "windows", "window_s", "max_windows"):
        cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    return cmd + (["--interleave"] if interleave else [])


def run_one(framework: str, workload: str, args, pin: list[int] | None) -> dict:
    """One child timing alone (--sequential)."""
    inductor_dir = (
        tempfile.mkdtemp(prefix="gm-bench-inductor-") if framework == "torch-compile" else None
    )
    try:
        proc = subprocess.run(
            _child_cmd(framework, workload, args, interleave=False),
            check=False,
            env=child_env(args.threads, inductor_dir),
            capture_output=True,
            text=True,
            timeout=args.timeout,
            preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,
        )
    except subprocess.TimeoutExpired:
        return _failure(framework, workload, f"timed out after {args.timeout} s")
    finally:
        if inductor_dir:
            shutil.rmtree(inductor_dir, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return _failure(
        framework, workload, f"child exited with code {proc.returncode}: " + " | ".join(tail)
    )


def _failure(framework: str, workload: str, error: str) -> dict:
    return {"framework": framework, "workload": workload, "ok": False, "error": error}


class _Child:
    """One framework's child process, timing windows when the parent asks."""

    def __init__(self, spec: ChildSpec, workload: str, args, pin: list[int] | None):
        framework = spec.framework
        self.label, self.framework, self.workload = spec.label, framework, workload
        self.inductor_dir = (
            tempfile.mkdtemp(prefix="gm-bench-inductor-") if framework == "torch-compile" else None
        )
        # Lives as long as the child (closed in close()); a file, so a chatty child never
        # blocks on a full pipe.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            _child_cmd(framework, workload, args, interleave=True, python=spec.python),
            env=child_env(args.threads, self.inductor_dir, spec.python),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            # The parent has one thread, so preexec_fn is safe here.
            preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,  # noqa: PLW1509
        )
        self.result: dict | None = None

    def read_tagged(self, tag: str, timeout: float) -> str | None:
        """The rest of the next stdout line starting with `tag`; None on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return None
            if line.startswith(RESULT_TAG):  # the child failed and reported it early
                self.result = json.loads(line[len(RESULT_TAG) :])
                return None
            if line.startswith(tag):
                return line[len(tag) :].strip()

    def send(self, command: str) -> bool:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def fail(self, why: str) -> dict:
        if self.result is None:
            self.proc.kill()
            self.proc.wait()
            self.stderr.seek(0)
            tail = self.stderr.read().strip().splitlines()[-6:]
            self.result = _failure(
                self.framework,
                self.workload,
                f"{why}; child exit code {self.proc.returncode}: " + " | ".join(tail),
            )
        self.close()
        return self.result

    def finish(self, timeout: float) -> dict:
        if self.send("done"):
            self.read_tagged(RESULT_TAG, timeout)  # keeps the result line in self.result
        if self.result is None:
            return self.fail("no result")
        self.proc.wait(timeout=timeout)
        self.close()
        return self.result

    def close(self) -> None:
        self.stderr.close()
        if self.inductor_dir:
            shutil.rmtree(self.inductor_dir, ignore_errors=True)


def _as_spec(child: str | ChildSpec) -> ChildSpec:
    return child if isinstance(child, ChildSpec) else ChildSpec(child, child)


def round_order(children: list, round_index: int, alternate: bool) -> list:
    """The order children time their windows in round `round_index` (0-based): always the
    given order, or with `alternate` the reverse in every other round, so that neither
    child always runs right after the other."""
    return list(reversed(children)) if alternate and round_index % 2 else list(children)


def run_rounds(
    children: list[str | ChildSpec],
    workload: str,
    args,
    pin,
    alternate: bool = False,
    before_round: Callable[[], object] | None = None,
) -> InterleavedRun:
    """Runs every child at once, each warming up in turn, then times windows round-robin
    (one child at a time), so all of them meet the same machine conditions. Timing stops
    after `args.windows` quiet rounds or `args.max_windows` rounds in all. A child given by
    name times that framework under this interpreter. `before_round`, when given, runs
    before each round's windows (a probe of the machine's state); its results are kept."""
    specs = [_as_spec(c) for c in children]
    live, rows = [], {}
    for spec in specs:
        print(f"  warming up {spec.label} on {workload} ...", end="", flush=True)
        child = _Child(spec, workload, args, pin)
        if child.read_tagged(READY_TAG, args.timeout) is None:
            rows[spec.label] = child.fail("did not get ready")
            print(" failed", flush=True)
            continue
        live.append(child)
        print(" ready", flush=True)
    rates: dict[str, list[float]] = {c.label: [] for c in live}
    loads: dict[str, list[float | None]] = {c.label: [] for c in live}
    allocations: dict[str, list[int | None]] = {c.label: [] for c in live}
    rounds, quiet_rounds, probes = 0, 0, []
    while live and quiet_rounds < args.windows and rounds < args.max_windows:
        worst = 0.0
        if before_round is not None:
            probes.append(before_round())
        for child in round_order(live, rounds, alternate):
            reply = child.read_tagged(WINDOW_TAG, args.timeout) if child.send("window") else None
            if reply is None:
                rows[child.label] = child.fail("stopped while timing")
                live.remove(child)
                for table in (rates, loads, allocations):
                    table.pop(child.label, None)
                continue
            # [rate, other load] from older children; [rate, other load, allocations] now.
            rate, load, *rest = json.loads(reply)
            rates[child.label].append(rate)
            loads[child.label].append(load)
            allocations[child.label].append(rest[0] if rest else None)
            worst = max(worst, load or 0.0)
        rounds += 1
        quiet_rounds += worst < QUIET_CORES
    for child in live:
        rows[child.label] = child.finish(args.timeout)
    for spec in specs:
        if spec.label in rows:
            rows[spec.label]["label"] = spec.label
    return InterleavedRun(
        [rows[s.label] for s in specs if s.label in rows], rates, loads, allocations, tuple(probes)
    )


def run_interleaved(frameworks: list[str], workload: str, args, pin) -> tuple[list[dict], dict]:
    """run_rounds() for one child per framework: returns the children's results and the
    per-round rates by framework."""
    run = run_rounds(frameworks, workload, args, pin)
    return run.rows, run.rates
