"""bench_conv.py --base: each pass timed in two builds' processes in alternating windows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_conv.py")
SHAPE = ["--threads", "1", "--batch", "4", "--in-channels", "8", "--out-channels", "16"]


def _run(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, SCRIPT, *SHAPE, "--size", "32", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_an_a_a_run_times_every_pass_in_both_children():
    done = _run("--base", "worktree", "--windows", "2")
    assert done.returncode == 0, done.stderr
    rows = re.findall(
        r"^  (forward|input grad|weight grad) +base / new: ([\d.]+) / ([\d.]+) ms",
        done.stdout,
        re.MULTILINE,
    )
    assert [name for name, _, _ in rows] == ["forward", "input grad", "weight grad"], done.stdout
    for _, base, new in rows:
        assert float(base) > 0 and float(new) > 0


def test_an_unknown_revision_is_refused_by_name():
    done = _run("--base", "no-such-revision-xyz")
    assert done.returncode != 0
    assert "--base" in done.stderr and "no-such-revision-xyz" in done.stderr
