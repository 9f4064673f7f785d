"""bench_mlp.py --ceiling: the float32 product ceiling's arithmetic, checked by hand, and the
child that times the BLAS libraries. No timing is asserted: only that rates come back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _ceiling
from _runner import child_env
from _workload import WORKLOADS, step_flops
from bench_mlp import print_ceiling


def test_lines_give_the_ceiling_rate_and_each_share():
    # 2 GFLOP a step against a best library of 200 GFLOP/s: at most 100 steps/s.
    lines = _ceiling.ceiling_lines(
        2e9, "steps/s", {"slow": 120.0, "fast": 200.0}, {"gometal": 60.0, "peer": 40.0}, []
    )
    assert "at most 200 GFLOP/s here (fast," in lines[0]
    assert "at most 100.0 steps/s" in lines[0]
    assert lines[1] == "  share of the ceiling: gometal 60%, peer 40%"


@pytest.mark.parametrize(
    ("peer_rate", "share", "verdict"),
    [(40.0, "60%", "within the ceiling"), (80.0, "120%", "out of reach on this machine")],
)
def test_a_target_above_the_ceiling_is_out_of_reach(peer_rate, share, verdict):
    # 1.5 x the peer's steps at 2 GFLOP each, over 200 GFLOP/s.
    lines = _ceiling.ceiling_lines(
        2e9, "steps/s", {"fast": 200.0}, {"gometal": 50.0, "peer": peer_rate}, [("peer", 1.5)]
    )
    assert lines[-1] == f"  target 1.5x peer needs {share} of the ceiling: {verdict}"


def test_a_failed_timing_says_so():
    assert "not measured" in _ceiling.ceiling_lines(1e9, "steps/s", {}, {"gometal": 1.0}, [])[0]


def test_inference_rates_are_per_sample(capsys):
    # E-infer's rate is sequences/s: each sequence is one 32nd of the batch's FLOPs.
    per_sequence = step_flops("E-infer") / WORKLOADS["E-infer"].batch
    ceiling = {"lib": 100.0}
    rows = [{"framework": "gometal", "ok": True, "images_per_s": 1e9 / per_sequence}]
    print_ceiling("E-infer", rows, {"targets": []}, ceiling, {"lib": 50.0})
    out = capsys.readouterr().out
    assert "gometal 1%" in out  # 1 GFLOP/s of 100
    assert f"at most {100e9 / per_sequence:.1f} sequences/s" in out


def test_the_child_times_every_library():
    rates = _ceiling.measure(1, child_env(1))
    assert set(rates) == {"openblas (numpy)", "mkl (torch)"}
    assert all(rate > 0 for rate in rates.values())
