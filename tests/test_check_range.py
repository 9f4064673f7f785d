"""The ``check_range`` primitive: its message, NaN, its attributes, and its place in a plan
(before every effect, whatever fusion and image-by-image tiling do)."""

import numpy as np
import pytest

import gometal as gm
from gometal import _core

ATTRS = {"low": -1.0, "high": 2.0, "label": "my_op", "message": "values must lie in [-1, 2]"}


def _graph_with_update(shape=(-1, 3)):
    g = _core.Graph()
    x = g.input("x", shape)
    w = g.variable("w", shape[1:])
    check = g.op("check_range", [x], ATTRS)
    loss = g.op("add", [g.op("sum", [g.op("mul", [x, w])], {}), check])
    (grad,) = g.gradients(loss, [w])
    update = g.op("assign", [w, g.op("sub", [w, grad])])
    engine = _core.Engine(g)
    engine.define("step", inputs=[x], outputs=[loss], effects=[update])
    return engine


@pytest.mark.parametrize("bad, index, shown", [(2.5, (1, 2), "2.5"), (-1.5, (0, 0), "-1.5")])
def test_a_value_outside_the_range_fails_the_step_and_writes_nothing(bad, index, shown):
    engine = _graph_with_update()
    engine.set_variable("w", np.ones(3, np.float32))
    x = np.zeros((2, 3), np.float32)
    x[index] = bad
    with pytest.raises(ValueError) as caught:
        engine.run("step", [x])
    assert str(caught.value) == (
        f"[my_op] values must lie in [-1, 2], got {shown} at index {index} of shape (2, 3)"
    )
    np.testing.assert_array_equal(engine.get_variable("w"), np.ones(3, np.float32))
    assert engine.stats()["steps"] == 0


@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_nan_and_infinities_fail_the_check(bad, shown):
    # Inputs are refused for NaN and inf before any kernel runs: the value comes in through
    # a weight.
    g = _core.Graph()
    x = g.input("x", (-1, 3))
    w = g.variable("w", (3,))
    check = g.op("check_range", [g.op("mul", [x, w])], ATTRS)
    engine = _core.Engine(g)
    engine.define("f", inputs=[x], outputs=[check])
    engine.set_variable("w", np.array([1.0, bad, 1.0], np.float32))
    with pytest.raises(ValueError) as caught:
        engine.run("f", [np.ones((2, 3), np.float32)])
    assert str(caught.value) == (
        f"[my_op] values must lie in [-1, 2], got {shown} at index (0, 1) of shape (2, 3)"
    )


def test_values_inside_the_range_pass_and_the_check_is_zero():
    engine = _graph_with_update()
    engine.set_variable("w", np.ones(3, np.float32))
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    (loss,) = engine.run("step", [x])
    assert loss == pytest.approx(1.5)
    np.testing.assert_allclose(engine.get_variable("w"), 1.0 - x[0])


@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"low": 1.0, "high": 0.0, "label": "a", "message": "b"}, "needs low <= high"),
        ({"low": 0.0, "high": 1.0, "message": "b"}, "needs a label"),
        ({"low": 0.0, "high": 1.0, "label": "a"}, "needs a label"),
    ],
)
def test_bad_attributes_are_refused_when_the_graph_is_built(attrs, match):
    g = _core.Graph()
    x = g.input("x", (-1, 2))
    with pytest.raises(ValueError, match=rf"\[check_range\] {match}"):
        g.op("check_range", [x], attrs)


@pytest.mark.parametrize("batch", [1, 2, 32])
def test_every_effect_runs_after_the_checks_in_a_tiled_cnn_plan(batch):
    # Batch norm's running statistics are effects that need no gradient: the plan would
    # run them early (fused with the statistics, or hoisted above a tiled run) but for the
    # checks. Binary cross entropy adds two checks.
    model = (
        gm.ModelBuilder((3, 16, 16)).conv2d(8, 3, padding=1).batch_norm().relu().max_pool2d(2)
        .conv2d(8, 3, padding=1).batch_norm().relu().flatten().dense(1).sigmoid().build(seed=0)
    )  # fmt: skip
    trainer = gm.Trainer(model, loss="binary_cross_entropy", optimizer="adam")
    plan = trainer._engine.describe("train", batch)
    last_check = max(i for i, line in enumerate(plan) if line.startswith("check_range"))
    effects = [
        i for i, line in enumerate(plan) if "assign" in line or line.startswith("adam_update")
    ]
    assert effects and min(effects) > last_check, plan
    if batch > 1:
        assert any(line.startswith("tiled{") for line in plan)
