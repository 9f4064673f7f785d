"""The benchmark's cross-CPU probe (benchmarks/_core_probe.py and cpp/core_round_trip.c): it
compiles, measures a positive round trip between two CPUs, refuses a CPU it cannot pin
instead of spinning forever, and says which placement a number means. No timing is asserted
beyond the round trip being positive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _core_probe

CPUS = sorted(os.sched_getaffinity(0))


def test_two_cpus_give_a_positive_round_trip():
    assert len(CPUS) >= 2, f"the project's machines have 2 CPUs; this process may use {CPUS}"
    trip = _core_probe.round_trip_ns(CPUS[:2], trips=20_000)
    assert trip is not None and trip > 0


def test_one_cpu_gives_none():
    assert _core_probe.round_trip_ns(CPUS[:1]) is None


@pytest.mark.parametrize("cpus", [["4096", "0"], ["0", "4096"]])
def test_a_cpu_it_cannot_pin_exits_2_naming_it(cpus):
    binary = _core_probe._binary()
    assert binary is not None, "no C compiler found"
    run = subprocess.run(
        [binary, *cpus, "1000"], capture_output=True, text=True, timeout=20, check=False
    )
    assert run.returncode == 2
    assert "cannot pin to CPU 4096" in run.stderr


def test_describe_names_the_placement():
    assert "share an L3" in _core_probe.describe(55.0, 60.4)
    assert "different dies" in _core_probe.describe(55.0, 331.9)
    assert "55 / - ns" in _core_probe.describe(55.0, None)
    assert "not measured" in _core_probe.describe(None, None)
