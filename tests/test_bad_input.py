"""Bad input raises ValueError or TypeError naming the argument and the offending values,
changes nothing, and leaves everything usable."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gometal as gm


@pytest.fixture
def setup(classification_data):
    x, y = classification_data
    model = gm.ModelBuilder((20,)).dense(16).relu().dense(5).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1), batch_size=8)
    return model, trainer, x[:8], y[:8]


def _mentions(message, *parts):
    for part in parts:
        assert re.search(part, message), f"{part!r} not in {message!r}"


def _still_works(model, trainer, x, y, weights_before):
    """The failed call changed nothing, and valid calls still work."""
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, weights_before[name], err_msg=name)
    result = trainer.train_batch(x, y)
    assert np.isfinite(result.loss)
    assert any(not np.array_equal(v, weights_before[k]) for k, v in model.get_weights().items())
    assert np.all(np.isfinite(model.predict(x)))


# -- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_x,patterns",
    [
        (lambda x: x[0], [r"\bx\b", r"20"]),  # a single sample, rank 1
        (lambda x: x[:, :19], [r"\bx\b", r"19", r"20"]),
        (lambda x: np.concatenate([x, x[:, :1]], axis=1), [r"\bx\b", r"21", r"20"]),
        (lambda x: x.reshape(8, 4, 5), [r"\bx\b", r"4, 5", r"20"]),
        (lambda x: x[None], [r"\bx\b", r"20"]),
    ],
    ids=["rank1", "too_few_features", "too_many_features", "rank3", "rank3_leading"],
)
def test_wrong_input_shape(setup, make_x, patterns):
    model, trainer, x, y = setup
    before = model.get_weights()
    bad = make_x(x)
    for call in (
        lambda: trainer.train_batch(bad, y[: len(bad)]),
        lambda: model.predict(bad),
        lambda: trainer.evaluate(bad, y[: len(bad)]),
    ):
        with pytest.raises(ValueError) as err:
            call()
        _mentions(str(err.value), *patterns)
    _still_works(model, trainer, x, y, before)


def test_float_labels_for_cross_entropy(setup):
    model, trainer, x, y = setup
    before = model.get_weights()
    with pytest.raises(TypeError) as err:
        trainer.train_batch(x, y.astype(np.float32))
    _mentions(str(err.value), r"\by\b", r"float32")
    with pytest.raises(TypeError):
        trainer.evaluate(x, y.astype(np.float64))
    _still_works(model, trainer, x, y, before)


@pytest.mark.parametrize("bad_label", [-1, 5, 1000])
def test_labels_out_of_range(setup, bad_label):
    model, trainer, x, y = setup
    before = model.get_weights()
    labels = y.copy()
    labels[3] = bad_label
    for call in (lambda: trainer.train_batch(x, labels), lambda: trainer.evaluate(x, labels)):
        with pytest.raises(ValueError) as err:
            call()
        _mentions(str(err.value), r"\by\b", re.escape(str(bad_label)), r"\b5\b")
    _still_works(model, trainer, x, y, before)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_inputs(setup, value):
    model, trainer, x, y = setup
    before = model.get_weights()
    bad = x.copy()
    bad[2, 7] = value
    for call in (
        lambda: trainer.train_batch(bad, y),
        lambda: model.predict(bad),
        lambda: trainer.evaluate(bad, y),
    ):
        with pytest.raises(ValueError) as err:
            call()
        _mentions(str(err.value), r"\bx\b", r"(?i)nan|inf|finite")
    _still_works(model, trainer, x, y, before)


def test_non_finite_regression_targets(regression_data):
    x, y = regression_data
    model = gm.ModelBuilder((6,)).dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.01))
    before = model.get_weights()
    bad = y[:8].copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError) as err:
        trainer.train_batch(x[:8], bad)
    _mentions(str(err.value), r"\by\b", r"(?i)nan|finite")
    _still_works(model, trainer, x[:8], y[:8], before)


def test_empty_batch(setup):
    model, trainer, x, y = setup
    before = model.get_weights()
    for call in (
        lambda: trainer.train_batch(x[:0], y[:0]),
        lambda: model.predict(x[:0]),
        lambda: trainer.evaluate(x[:0], y[:0]),
    ):
        with pytest.raises(ValueError) as err:
            call()
        _mentions(str(err.value), r"\bx\b", r"(?i)empty|\b0\b")
    _still_works(model, trainer, x, y, before)


def test_x_and_y_of_different_lengths(setup, regression_data):
    model, trainer, x, y = setup
    before = model.get_weights()
    with pytest.raises(ValueError) as err:
        trainer.train_batch(x, y[:7])
    _mentions(str(err.value), r"\bx\b", r"\by\b", r"\b8\b", r"\b7\b")
    with pytest.raises(ValueError):
        trainer.evaluate(x[:6], y)
    _still_works(model, trainer, x, y, before)

    rx, ry = regression_data
    reg = gm.Trainer(gm.ModelBuilder((6,)).dense(3).build(seed=0), loss="mse")
    with pytest.raises(ValueError) as err:
        reg.train_batch(rx[:10], ry[:9])
    _mentions(str(err.value), r"\b10\b", r"\b9\b")


def test_regression_targets_of_the_wrong_shape(regression_data):
    x, y = regression_data
    trainer = gm.Trainer(gm.ModelBuilder((6,)).dense(3).build(seed=0), loss="mse")
    with pytest.raises(ValueError) as err:
        trainer.train_batch(x[:8], y[:8, :2])
    _mentions(str(err.value), r"\by\b", r"\b3\b", r"\b2\b")
    assert np.isfinite(trainer.train_batch(x[:8], y[:8]).loss)


def test_non_numeric_input(setup):
    model, _, x, _ = setup
    with pytest.raises(TypeError) as err:
        model.predict(np.full((2, 20), "a"))
    _mentions(str(err.value), r"\bx\b")
    with pytest.raises(TypeError):
        model.predict(x.astype(np.complex64))
    assert np.all(np.isfinite(model.predict(x)))


# -- configuration -------------------------------------------------------------------------------


def test_unknown_loss_name():
    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    with pytest.raises(ValueError) as err:
        gm.Trainer(model, loss="hinge_squared_xyz")
    _mentions(str(err.value), "hinge_squared_xyz", "cross_entropy")
    assert gm.Trainer(model, loss="mse") is not None


def test_unknown_optimizer_name():
    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    with pytest.raises(ValueError) as err:
        gm.Trainer(model, loss="mse", optimizer="rmsprop_xyz")
    _mentions(str(err.value), "rmsprop_xyz", "(?i)adam", "(?i)sgd")
    assert gm.Trainer(model, loss="mse", optimizer="sgd") is not None


@pytest.mark.parametrize(
    "make",
    [
        lambda: gm.optim.SGD(lr=-0.1),
        lambda: gm.optim.Adam(lr=-0.1),
        lambda: gm.optim.SGD(-0.1, momentum=0.9),
    ],
    ids=["sgd", "adam", "sgd_momentum"],
)
def test_negative_learning_rate_in_constructor(make):
    with pytest.raises(ValueError) as err:
        make()
    _mentions(str(err.value), r"(?i)learning rate|\blr\b", r"-0\.1")


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_set_learning_rate(setup, bad):
    model, trainer, x, y = setup
    before = model.get_weights()
    with pytest.raises(ValueError) as err:
        trainer.set_learning_rate(bad)
    _mentions(str(err.value), r"(?i)learning rate|\blr\b", re.escape(str(bad)))
    _still_works(model, trainer, x, y, before)  # the old rate (0.1) still applies


def test_set_learning_rate_rejects_non_numbers(setup):
    _, trainer, _, _ = setup
    with pytest.raises(TypeError):
        trainer.set_learning_rate("fast")


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((4,)).dense(3).dropout(rate)
    _mentions(str(err.value), r"(?i)rate", re.escape(str(rate)))
    with pytest.raises(ValueError):
        gm.layers.Dropout(rate)
    model = gm.ModelBuilder((4,)).dense(3).dropout(0.99).dense(2).build(seed=0)
    assert model.predict(np.ones((1, 4), np.float32)).shape == (1, 2)


@pytest.mark.parametrize(
    "bad",
    [{"momentum": -0.1}, {"momentum": 1.0}, {"weight_decay": -1.0}],
    ids=["momentum_negative", "momentum_one", "weight_decay"],
)
def test_bad_sgd_hyperparameters(bad):
    with pytest.raises(ValueError) as err:
        gm.optim.SGD(lr=0.1, **bad)
    ((name, value),) = bad.items()
    _mentions(str(err.value), name, re.escape(str(value)))


@pytest.mark.parametrize(
    "bad",
    [{"betas": (1.0, 0.999)}, {"betas": (0.9, -0.1)}, {"eps": -1e-8}],
    ids=["beta1", "beta2", "eps"],
)
def test_bad_adam_hyperparameters(bad):
    with pytest.raises(ValueError):
        gm.optim.Adam(lr=1e-3, **bad)


def test_bad_batch_size_and_threads():
    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    for bad in (0, -3):
        with pytest.raises(ValueError) as err:
            gm.Trainer(model, loss="mse", batch_size=bad)
        _mentions(str(err.value), "batch_size", re.escape(str(bad)))
        with pytest.raises(ValueError):
            model.predict(np.ones((2, 4), np.float32), batch_size=bad)
    with pytest.raises(ValueError):
        gm.set_num_threads(0)
    assert gm.get_num_threads() >= 1


# -- model definition ----------------------------------------------------------------------------


def test_add_of_mismatched_shapes_names_both():
    a = gm.Input((8,))
    b = gm.Input((4,))
    with pytest.raises(ValueError) as err:
        gm.Model(a, a + b)
    _mentions(str(err.value), r"\b8\b", r"\b4\b")
    # The inputs are still usable.
    out = gm.layers.Dense(3)(a + a)
    assert gm.Model(a, out).predict(np.ones((2, 8), np.float32)).shape == (2, 3)


def test_multiply_and_concat_of_mismatched_shapes():
    a = gm.Input((3, 4))
    b = gm.Input((5, 6))
    with pytest.raises(ValueError) as err:
        gm.Model(a, a * b)
    _mentions(str(err.value), r"\b3\b", r"\b4\b", r"\b5\b", r"\b6\b")
    with pytest.raises(ValueError) as err:
        gm.Model(a, gm.ops.concat([a, b], axis=-1))
    _mentions(str(err.value), r"\b3\b", r"\b5\b")


def test_dense_on_a_3d_input_applies_to_the_last_axis_as_nn_linear():
    model = gm.ModelBuilder((3, 4)).dense(2).build(seed=0)
    assert (model.output_shape, model.count_params()) == ((3, 2), 10)
    assert gm.ModelBuilder((3, 4)).flatten().dense(2).build(seed=0).count_params() == 26


@pytest.mark.parametrize("units", [0, -3])
def test_bad_dense_units(units):
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((4,)).dense(units)
    _mentions(str(err.value), r"(?i)units", re.escape(str(units)))


@pytest.mark.parametrize("shape", [(0,), (4, -1), ()])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError):
        gm.ModelBuilder(shape)
    with pytest.raises(ValueError):
        gm.Input(shape)


def test_cross_entropy_needs_class_scores():
    # (N, 3, 4) is one label per position over 4 classes (a sequence); a last axis of one
    # output holds no class scores.
    x = gm.Input((3, 1))
    model = gm.Model(x, gm.layers.ReLU()(x))
    with pytest.raises(ValueError) as err:
        gm.Trainer(model, loss="cross_entropy")
    _mentions(str(err.value), "cross_entropy", "at least 2 classes", r"\b1 output")


# -- weights -------------------------------------------------------------------------------------


def test_set_weights_unknown_name(setup):
    model, trainer, x, y = setup
    before = model.get_weights()
    with pytest.raises(ValueError) as err:
        model.set_weights({"dense_7.weight": np.zeros((16, 20), np.float32)})
    _mentions(str(err.value), r"dense_7\.weight")
    _still_works(model, trainer, x, y, before)


def test_set_weights_wrong_shape_changes_nothing(setup):
    model, trainer, x, y = setup
    before = model.get_weights()
    with pytest.raises(ValueError) as err:
        model.set_weights(
            {
                "dense_0.bias": np.full(16, 3.0, np.float32),  # valid
                "dense_1.weight": np.zeros((5, 15), np.float32),  # wrong shape
            }
        )
    _mentions(str(err.value), r"dense_1\.weight", r"\(5, 16\)", r"\(5, 15\)")
    _still_works(model, trainer, x, y, before)


def test_set_weights_before_training_checks_too():
    model = gm.ModelBuilder((4,)).dense(2).build(seed=0)
    with pytest.raises(ValueError):
        model.set_weights({"dense_0.weight": np.zeros((4, 2), np.float32)})
    with pytest.raises(ValueError):
        model.set_weights({"dense_0.kernel": np.zeros((2, 4), np.float32)})
    model.set_weights({"dense_0.weight": np.ones((2, 4)), "dense_0.bias": np.zeros(2)})
    np.testing.assert_array_equal(model.predict(np.ones((1, 4), np.float32)), [[4.0, 4.0]])


def test_many_errors_in_a_row_leave_the_process_usable(setup):
    model, trainer, x, y = setup
    before = model.get_weights()
    for _ in range(50):
        with pytest.raises(ValueError):
            trainer.train_batch(x[:, :3], y)
        with pytest.raises(ValueError):
            trainer.train_batch(np.full_like(x, np.nan), y)
        with pytest.raises(ValueError):
            trainer.train_batch(x, np.full_like(y, 9))
    stats = trainer.engine_stats()
    _still_works(model, trainer, x, y, before)
    assert trainer.engine_stats()["steps"] == stats["steps"] + 1
