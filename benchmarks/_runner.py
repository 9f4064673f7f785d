"""Starting the benchmark's child processes: one alone (--sequential), or all of a
workload's at once, timing their windows in turn."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

from _child import READY_TAG, RESULT_TAG, THREAD_VARS, UNSET_VARS, WINDOW_TAG
from _timing import QUIET_CORES

# The children run the benchmark script itself with --child.
_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_mlp.py")


def _child_env(threads: int, inductor_dir: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in UNSET_VARS}
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


def _child_cmd(framework: str, workload: str, args, interleave: bool) -> list[str]:
    cmd = [sys.executable, _SCRIPT, "--child", framework, "--workload", workload]
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
            env=_child_env(args.threads, inductor_dir),
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

    def __init__(self, framework: str, workload: str, args, pin: list[int] | None):
        self.framework, self.workload = framework, workload
        self.inductor_dir = (
            tempfile.mkdtemp(prefix="gm-bench-inductor-") if framework == "torch-compile" else None
        )
        # Lives as long as the child (closed in close()); a file, so a chatty child never
        # blocks on a full pipe.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            _child_cmd(framework, workload, args, interleave=True),
            env=_child_env(args.threads, self.inductor_dir),
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


def run_interleaved(frameworks: list[str], workload: str, args, pin) -> tuple[list[dict], dict]:
    """Runs every framework's child at once, each warming up in turn, then times windows
    round-robin (one child at a time), so all of them meet the same machine conditions.
    Returns the children's results and the per-round rates by framework."""
    children, rows = [], {}
    for name in frameworks:
        print(f"  warming up {name} on {workload} ...", end="", flush=True)
        child = _Child(name, workload, args, pin)
        if child.read_tagged(READY_TAG, args.timeout) is None:
            rows[name] = child.fail("did not get ready")
            print(" failed", flush=True)
            continue
        children.append(child)
        print(" ready", flush=True)
    rounds: dict[str, list[float]] = {c.framework: [] for c in children}
    loads: list[float] = []
    quiet_rounds = 0
    while children and quiet_rounds < args.windows and len(loads) < args.max_windows:
        worst = 0.0
        for child in list(children):
            reply = child.read_tagged(WINDOW_TAG, args.timeout) if child.send("window") else None
            if reply is None:
                rows[child.framework] = child.fail("stopped while timing")
                children.remove(child)
                rounds.pop(child.framework, None)
                continue
            rate, load = json.loads(reply)
            rounds[child.framework].append(rate)
            worst = max(worst, load or 0.0)
        loads.append(worst)
        quiet_rounds += worst < QUIET_CORES
    for child in children:
        rows[child.framework] = child.finish(args.timeout)
    return [rows[name] for name in frameworks if name in rows], rounds
