"""Primitives outside the elementwise and reduce/layout families (argmax, cast, one_hot,
random_uniform, assign, scalars) and the errors the graph verifier and the engine raise."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gometal import _core
from primitive_checks import _distinct, check_op

# -- argmax --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", [((4, 5), 1), ((4, 5), 0), ((4, 5), -1), ((2, 3, 4), 1)])
def test_argmax_forward(shape, axis, rng):
    x = _distinct(rng, shape)
    got = check_op(
        "argmax",
        [x],
        {"axis": axis},
        lambda v: np.argmax(v, axis=axis).astype(np.float64),
        check_grad=False,
    )
    assert np.all(got == np.round(got))


# -- dtype ops -----------------------------------------------------------------------------------


def test_cast_round_trip_and_dtypes():
    values = np.array([[-3.0, 0.0, 2.0], [7.0, -1.0, 5.0]], np.float32)
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    as_int = g.op("cast", [x], {"dtype": "int32"})
    back = g.op("cast", [as_int], {"dtype": "float32"})
    assert g.dtype(as_int) == "int32"
    assert g.dtype(back) == "float32"
    assert tuple(g.shape(back)) == (-1, 3)
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[x], outputs=[back], effects=[], advance_rng=False)
    np.testing.assert_array_equal(eng.run("f", [values])[0], values)


def test_cast_int_labels_to_float():
    labels = np.array([4, 0, 2, 9, 1], np.int32)
    g = _core.Graph()
    y = g.input("y", (-1,), "int32")
    out = g.op("cast", [y], {"dtype": "float32"})
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[y], outputs=[out], effects=[], advance_rng=False)
    np.testing.assert_array_equal(eng.run("f", [labels])[0], labels.astype(np.float32))


@pytest.mark.parametrize("depth", [3, 10])
def test_one_hot(depth, rng):
    g = _core.Graph()
    y = g.input("y", (-1,), "int32")
    out = g.op("one_hot", [y], {"depth": depth})
    assert g.dtype(out) == "float32"
    assert tuple(g.shape(out)) == (-1, depth)
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[y], outputs=[out], effects=[], advance_rng=False)
    for n in (6, 2, 6):  # a second batch size, then the first again
        labels = rng.integers(0, depth, n).astype(np.int32)
        np.testing.assert_array_equal(eng.run("f", [labels])[0], np.eye(depth)[labels])


# -- random_uniform ------------------------------------------------------------------------------


def _uniform_engine(seed, shape=(200, 100)):
    g = _core.Graph()
    z = g.variable("z", shape)
    r = g.op("random_uniform", [z], {})
    assert tuple(g.shape(r)) == shape
    eng = _core.Engine(g, seed=seed)
    eng.define("draw", inputs=[], outputs=[r], effects=[], advance_rng=True)
    eng.define("peek", inputs=[], outputs=[r], effects=[], advance_rng=False)
    return eng


def _check_uniform_statistics(u):
    u = np.asarray(u, dtype=np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1.0 / 12.0) < 0.005
    counts, _ = np.histogram(u, bins=10, range=(0.0, 1.0))
    np.testing.assert_allclose(counts / u.size, 0.1, atol=0.01)


def test_random_uniform_statistics():
    eng = _uniform_engine(seed=3)
    _check_uniform_statistics(eng.run("draw", [])[0])


def test_random_uniform_advances_between_steps():
    eng = _uniform_engine(seed=3)
    first = np.asarray(eng.run("draw", [])[0])
    second = np.asarray(eng.run("draw", [])[0])
    assert not np.array_equal(first, second)
    # Successive draws are uncorrelated.
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.03


def test_random_uniform_without_advancing_repeats():
    eng = _uniform_engine(seed=3)
    first = np.asarray(eng.run("peek", [])[0])
    np.testing.assert_array_equal(eng.run("peek", [])[0], first)


def test_random_uniform_is_deterministic_per_seed():
    a, b, c = _uniform_engine(seed=11), _uniform_engine(seed=11), _uniform_engine(seed=12)
    for _ in range(3):
        da, db, dc = (np.asarray(e.run("draw", [])[0]) for e in (a, b, c))
        np.testing.assert_array_equal(da, db)
        assert not np.array_equal(da, dc)


def test_core_random_uniform_streams():
    first = np.asarray(_core.random_uniform(5, 0, (200, 100)))
    assert first.shape == (200, 100)
    _check_uniform_statistics(first)
    np.testing.assert_array_equal(_core.random_uniform(5, 0, (200, 100)), first)
    assert not np.array_equal(_core.random_uniform(5, 1, (200, 100)), first)
    assert not np.array_equal(_core.random_uniform(6, 0, (200, 100)), first)


# -- variables, scalars, assign ------------------------------------------------------------------


def test_assign_updates_variables_and_scalars_do_not_recompile(rng):
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    lr = g.scalar("lr", 0.5)
    loss = g.op("sum", [g.op("mul", [x, w], {})], {"axes": [], "keepdims": False})
    (grad,) = g.gradients(loss, [w])
    update = g.op("assign", [w, g.op("sub", [w, g.op("mul", [grad, lr], {})], {})], {})
    eng = _core.Engine(g, seed=0)
    assert "w" in eng.variable_names()
    np.testing.assert_array_equal(eng.get_variable("w"), np.zeros(3, np.float32))
    w0 = np.array([1.0, 2.0, 3.0], np.float32)
    eng.set_variable("w", w0)
    eng.define("step", inputs=[x], outputs=[loss], effects=[update], advance_rng=False)
    v = rng.standard_normal((4, 3)).astype(np.float32)

    value = eng.run("step", [v])[0]
    assert value == pytest.approx(float((v.astype(np.float64) @ w0).sum()), rel=1e-5)
    w1 = w0 - 0.5 * v.sum(0)
    np.testing.assert_allclose(eng.get_variable("w"), w1, rtol=1e-5)
    plans = eng.stats()["plans"]

    assert eng.get_scalar("lr") == pytest.approx(0.5)
    eng.set_scalar("lr", 0.25)
    assert eng.get_scalar("lr") == pytest.approx(0.25)
    eng.run("step", [v])
    np.testing.assert_allclose(eng.get_variable("w"), w1 - 0.25 * v.sum(0), rtol=1e-5)
    stats = eng.stats()
    assert stats["plans"] == plans
    assert stats["steps"] == 2
    # get_variable returns a copy.
    copy = eng.get_variable("w")
    copy[...] = 123.0
    assert not np.any(np.asarray(eng.get_variable("w")) == 123.0)


# -- verifier errors -----------------------------------------------------------------------------


def _shape_pattern(shape):
    return r"\(" + r",\s*".join(str(d) for d in shape) + r",?\)"


def test_matmul_shape_error_names_op_and_shapes():
    g = _core.Graph()
    a = g.variable("a", (2, 3))
    b = g.variable("b", (4, 5))
    with pytest.raises(ValueError) as err:
        g.op("matmul", [a, b], {})
    message = str(err.value)
    assert "matmul" in message
    assert re.search(_shape_pattern((2, 3)), message), message
    assert re.search(_shape_pattern((4, 5)), message), message


@pytest.mark.parametrize(
    "name,shapes,attrs",
    [
        ("add", [(4, 3), (5,)], {}),
        ("mul", [(2, 3), (3, 2)], {}),
        ("select", [(4, 3), (4, 3), (2, 3)], {}),
        ("concat", [(2, 3), (3, 4)], {"axis": 0}),
        ("reshape", [(2, 3)], {"shape": [4, 2]}),
        ("broadcast_to", [(3, 2)], {"shape": [3, 4]}),
        ("matmul", [(2, 3), (2, 3)], {"transpose_a": False, "transpose_b": False}),
        ("matmul", [(2, 3, 4), (4, 5)], {}),
    ],
    ids=lambda v: str(v),
)
def test_shape_errors_name_op_and_shapes(name, shapes, attrs):
    g = _core.Graph()
    nodes = [g.variable(f"v{i}", s) for i, s in enumerate(shapes)]
    with pytest.raises(ValueError) as err:
        g.op(name, nodes, attrs)
    message = str(err.value)
    assert name in message, message
    assert re.search(_shape_pattern(shapes[0]), message), message


@pytest.mark.parametrize(
    "name,shape,attrs",
    [
        ("sum", (2, 3), {"axes": [2]}),
        ("mean", (2, 3), {"axes": [-3]}),
        ("argmax", (2, 3), {"axis": 5}),
        ("transpose", (2, 3), {"perm": [0, 0]}),
        ("transpose", (2, 3, 4), {"perm": [1, 0]}),
        ("slice", (5, 4), {"axis": 0, "start": 3, "end": 7}),
        ("slice", (5, 4), {"axis": 2, "start": 0, "end": 1}),
    ],
    ids=lambda v: str(v),
)
def test_bad_attributes_raise(name, shape, attrs):
    g = _core.Graph()
    x = g.variable("x", shape)
    with pytest.raises(ValueError, match=name):
        g.op(name, [x], attrs)


def test_unknown_op_and_wrong_arity_raise():
    g = _core.Graph()
    x = g.variable("x", (2, 3))
    with pytest.raises(ValueError, match="frobnicate"):
        g.op("frobnicate", [x], {})
    with pytest.raises(ValueError, match="add"):
        g.op("add", [x], {})
    with pytest.raises(ValueError, match="exp"):
        g.op("exp", [x, x], {})
    # The graph is still usable afterwards.
    y = g.op("add", [x, x], {})
    assert tuple(g.shape(y)) == (2, 3)


def test_dtype_errors_raise():
    g = _core.Graph()
    labels = g.input("y", (-1,), "int32")
    x = g.variable("x", (4,))
    with pytest.raises(ValueError, match="one_hot"):
        g.op("one_hot", [x], {"depth": 3})
    with pytest.raises(ValueError, match="one_hot"):
        g.op("one_hot", [labels], {"depth": 0})
    with pytest.raises(ValueError, match="exp"):
        g.op("exp", [labels], {})


def test_assign_checks_target_and_shape():
    g = _core.Graph()
    w = g.variable("w", (3,))
    other = g.op("exp", [w], {})
    with pytest.raises(ValueError, match="assign"):
        g.op("assign", [w, g.variable("v", (4,))], {})
    with pytest.raises(ValueError, match="assign"):
        g.op("assign", [other, w], {})


def test_engine_rejects_bad_run_inputs():
    g = _core.Graph()
    x = g.input("x", (-1, 3), "float32")
    w = g.variable("w", (3,))
    out = g.op("mul", [x, w], {})
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[x], outputs=[out], effects=[], advance_rng=False)
    with pytest.raises(ValueError, match=r"(?i)nan|finite"):
        eng.run("f", [np.array([[1.0, np.nan, 0.0]], np.float32)])
    with pytest.raises(ValueError, match=r"(?i)inf|finite"):
        eng.run("f", [np.array([[1.0, np.inf, 0.0]], np.float32)])
    with pytest.raises(ValueError):
        eng.run("f", [np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError):
        eng.set_variable("w", np.ones(4, np.float32))
    with pytest.raises((ValueError, KeyError)):
        eng.set_variable("no_such_variable", np.ones(3, np.float32))
    # Still works after the errors.
    eng.set_variable("w", np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_array_equal(
        eng.run("f", [np.ones((2, 3), np.float32)])[0], np.tile([1.0, 2.0, 3.0], (2, 1))
    )


def test_gradient_of_non_scalar_raises():
    g = _core.Graph()
    w = g.variable("w", (3,))
    with pytest.raises(ValueError):
        g.gradients(g.op("exp", [w], {}), [w])
