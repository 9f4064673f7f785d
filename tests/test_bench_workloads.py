"""benchmarks/bench_mlp.py's workloads E and E-infer (the character LSTM language model), the GPT
inference workloads and C's onnxruntime target: their batches, FLOP counts, which peers run
them, and whose rate the targets are measured against.

No timing is asserted: these check the bookkeeping, not anyone's speed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _frameworks import FRAMEWORKS, skip_reason
from _workload import make_batch, step_flops
from bench_mlp import print_workload, rate_unit


@pytest.mark.parametrize(("workload", "shape"), [("E", (32, 64)), ("E-infer", (32, 256))])
def test_lstm_batches_are_token_windows_shifted_by_one(workload, shape):
    x, y = make_batch(workload)
    assert x.shape == y.shape == shape
    assert x.dtype == y.dtype == np.int32
    assert 0 <= x.min() and x.max() < 65
    assert np.array_equal(x[:, 1:], y[:, :-1])


def test_lstm_flops_count_the_gates_and_the_head():
    # Per token: each layer's four gates multiply [input, h] (64 + 256, then 256 + 256 wide)
    # by 256 columns; the head maps 256 to 65. Two FLOPs per multiply-add; training x3.
    per_token = 4 * 256 * (64 + 256) + 4 * 256 * (256 + 256) + 256 * 65
    assert step_flops("E") == 3 * 2 * per_token * 32 * 64
    assert step_flops("E-infer") == 2 * per_token * 32 * 256


def test_lstm_inference_is_reported_in_sequences_per_second():
    assert rate_unit("E-infer") == ("images_per_s", "sequences/s")
    assert rate_unit("C") == ("images_per_s", "images/s")
    assert rate_unit("E") == ("steps_per_s", "steps/s")


def test_onnxruntime_runs_the_inference_workloads_and_token_inference_has_the_issues_peers():
    runnable = {
        w: [f for f in FRAMEWORKS if f != "gometal" and skip_reason(f, w) is None]
        for w in ("E", "E-infer", "D-infer", "D-infer-1", "C")
    }
    assert "onnxruntime" not in runnable["E"]
    assert {"torch-eager", "torch-compile"} <= set(runnable["E"])
    # JAX is a peer of E wherever jax and optax are installed (the bench extra, not the
    # test extra): its only reason to stay out is their absence.
    jax_present = all(importlib.util.find_spec(m) for m in ("jax", "optax"))
    assert ("jax-jit" in runnable["E"]) == jax_present, skip_reason("jax-jit", "E")
    for workload in ("E-infer", "D-infer", "D-infer-1"):
        assert runnable[workload] == ["torch-eager", "onnxruntime"]
    assert {"torch-eager", "torch-compile", "onnxruntime"} <= set(runnable["C"])
    for workload in ("A", "B", "D", "E"):
        assert "inference workloads only" in (skip_reason("onnxruntime", workload) or "")


def test_gpt_inference_batches_and_flops_are_the_forward_of_d():
    for workload, batch in (("D-infer", 12), ("D-infer-1", 1)):
        x, _ = make_batch(workload)
        assert x.shape == (batch, 64) and x.dtype == np.int32
        assert step_flops(workload) * 3 * 12 == step_flops("D") * batch
    assert rate_unit("D-infer") == ("images_per_s", "sequences/s")


def _row(framework: str, rate: float) -> dict:
    return {
        "framework": framework,
        "ok": True,
        "images_per_s": rate,
        "images_per_s_min": rate,
        "images_per_s_max": rate,
        "gflops": 1.0,
        "peak_rss_mb": 100.0,
        "first_step_s": 0.1,
    }


def test_e_infer_target_is_against_onnxruntime_even_when_another_peer_is_faster(capsys):
    rows = [_row("gometal", 30.0), _row("torch-eager", 40.0), _row("onnxruntime", 20.0)]
    verdict = print_workload("E-infer", rows, {})
    assert verdict["best_peer"] == "onnxruntime"
    assert verdict["ratio_to_best_peer"] == pytest.approx(1.5)
    assert verdict["speed_target"] == 1.2 and verdict["speed_met"]
    assert "target peer: onnxruntime" in capsys.readouterr().out


def test_c_is_held_against_the_best_other_peer_and_against_onnxruntime(capsys):
    rows = [_row("gometal", 30.0), _row("torch-eager", 10.0), _row("onnxruntime", 40.0)]
    rows.append(_row("torch-compile", 15.0))
    verdict = print_workload("C", rows, {})
    best, ort = verdict["targets"]
    # The best-peer target leaves out onnxruntime, which C names on its own.
    assert (best["peer"], best["ratio"], best["target"]) == ("torch-compile", 2.0, 1.5)
    assert (ort["peer"], ort["ratio"], ort["target"]) == ("onnxruntime", 0.75, 1.1)
    assert not verdict["speed_met"]
    assert "target peer: onnxruntime 40.0 images/s" in capsys.readouterr().out


def test_a_skipped_gometal_entry_says_why_and_gives_no_verdict(capsys):
    reason = "its entry waits on the LSTM layer"
    verdict = print_workload("E-infer", [_row("onnxruntime", 20.0)], {}, reason)
    assert verdict["gometal_skipped"] == reason
    assert "speed_met" not in verdict
    assert f"gometal not run: {reason}" in capsys.readouterr().out
