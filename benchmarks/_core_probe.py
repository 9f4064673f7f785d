"""The round trip of one cache line between the two CPUs a 2-thread benchmark runs on.

About 50 ns when the CPUs share an L3; several times that when they sit on different dies.
On a VM the host moves its vCPUs between the two placements, and a 2-thread rate moves with
it (gometal's GPT step: about 39 steps/s at 55 ns, about 25 at 330 ns, 1 thread unchanged), so
the benchmark prints the probe beside each workload to say which placement its windows met.
The probe is ``cpp/core_round_trip.c``, compiled on first use with the system C compiler.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp", "core_round_trip.c")
SHARED_L3_NS = 120  # below this the two CPUs share a cache; above, the line crosses dies


def compiled(source: str, name: str, flags: tuple[str, ...] = ("-O2",)) -> str | None:
    """The program of the C file ``source``, compiled on first use with the system compiler
    into the temporary folder as ``name-<hash of the source>``; None without a compiler or
    where the build fails. Shared by the benchmarks' small native programs."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not os.path.exists(source):
        return None
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"{name}-{digest}")
    if not os.path.exists(path):
        # Built beside its final name, then renamed: two benchmarks never run half a file.
        partial = f"{path}.{os.getpid()}"
        build = subprocess.run(
            [compiler, *flags, source, "-o", partial],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if build.returncode != 0:
            return None
        os.replace(partial, path)
    return path


def _binary() -> str | None:
    return compiled(_SOURCE, "gometal-core-round-trip", ("-O2", "-pthread"))


def round_trip_ns(cpus: list[int] | None = None, trips: int = 200_000) -> float | None:
    """Mean round trip in ns between the first two of `cpus` (default: the CPUs this process
    may run on); None on a one-CPU machine, without a C compiler, or where pinning fails."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    binary = _binary() if len(cpus) >= 2 else None
    if binary is None:
        return None
    run = subprocess.run(
        [binary, str(cpus[0]), str(cpus[1]), str(trips)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return float(run.stdout) if run.returncode == 0 else None


def describe(before: float | None, after: float | None) -> str:
    """One line for the benchmark's output: the probe before and after a workload."""
    if before is None and after is None:
        return "  cross-CPU round trip: not measured (one CPU, no C compiler, or no pinning)"
    shown = " / ".join("-" if v is None else f"{v:.0f}" for v in (before, after))
    worst = max(v for v in (before, after) if v is not None)
    placement = (
        "the two CPUs share an L3"
        if worst < SHARED_L3_NS
        else "the CPUs sat on different dies for part of it: 2-thread rates run lower there"
    )
    return f"  cross-CPU round trip before / after: {shown} ns ({placement})"
