"""Mixed precision: the bf16 rounding primitives, the emulated bf16 graph pass, the float32
fallback, and dynamic loss scaling (skip on overflow, growth, checkpoints).

References: PyTorch's float32 -> bfloat16 conversion (round to nearest, ties to even),
NumPy float64 products of bf16-rounded operands, plain float32 training, and
scikit-learn's accuracy on the digits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

import gometal as gm
from gometal import _core
from gometal.train import precision as _precision
from gometal.train.mixed_precision import (
    GOOD_STEPS_VARIABLE,
    LOSS_SCALE_VARIABLE,
    SKIPPED_VARIABLE,
    Bf16Graph,
)

SCALER_VARIABLES = {LOSS_SCALE_VARIABLE, GOOD_STEPS_VARIABLE, SKIPPED_VARIABLE}


def torch_bf16(values: np.ndarray) -> np.ndarray:
    """PyTorch's rounding of float32 values to bfloat16, widened back to float32."""
    return torch.from_numpy(np.ascontiguousarray(values, np.float32)).bfloat16().float().numpy()


def run_unary(name: str, values: np.ndarray) -> np.ndarray:
    g = _core.Graph()
    x = g.input("x", (-1, *values.shape[1:]), "float32")
    out = g.op(name, [x], {})
    eng = _core.Engine(g, seed=0)
    eng.define("f", inputs=[x], outputs=[out], effects=[], advance_rng=False)
    return eng.run("f", [values])[0]


def run_rounding(values: np.ndarray) -> np.ndarray:
    """``round_bf16`` on values the engine refuses as inputs (NaN, inf): hold them in a
    variable instead."""
    g = _core.Graph()
    v = g.variable("v", values.shape)
    out = g.op("round_bf16", [v], {})
    eng = _core.Engine(g, seed=0)
    eng.set_variable("v", values)
    eng.define("f", inputs=[], outputs=[out], effects=[], advance_rng=False)
    return eng.run("f", [])[0]


def bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).view(np.uint32)


# -- the primitives ------------------------------------------------------------------------


def test_round_bf16_matches_torch_on_random_values(rng):
    values = rng.standard_normal((64, 33)) * 10.0 ** rng.integers(-30, 30, (64, 33))
    values = values.astype(np.float32)
    got = run_unary("round_bf16", values)
    np.testing.assert_array_equal(bits(got), bits(torch_bf16(values)))
    assert np.all(bits(got) & 0xFFFF == 0)
    assert not np.array_equal(got, values)


def test_round_bf16_ties_to_even_and_special_values():
    ulp = 2.0**-7  # bfloat16 keeps 7 fraction bits: the spacing just above 1.0
    values = np.array(
        [
            1.0 + ulp / 2,  # tie between 1 and 1 + ulp: to even (1)
            1.0 + 3 * ulp / 2,  # tie between 1 + ulp and 1 + 2 ulp: to even (1 + 2 ulp)
            1.0 + ulp / 2 + 2.0**-20,  # just above the tie: up
            -(1.0 + ulp / 2),
            np.finfo(np.float32).max,  # rounds up past bf16's largest value: inf
            -np.finfo(np.float32).max,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            1e-40,  # subnormal
            -3e-42,
            np.finfo(np.float32).tiny,
        ],
        np.float32,
    )
    expected = np.array(
        [1.0, 1.0 + 2 * ulp, 1.0 + ulp, -1.0, np.inf, -np.inf, np.inf, -np.inf, 0.0, -0.0],
        np.float32,
    )
    got = run_rounding(values)
    np.testing.assert_array_equal(bits(got[:10]), bits(expected))
    np.testing.assert_array_equal(bits(got), bits(torch_bf16(values)))
    assert got[10] != 0.0 and got[10] == pytest.approx(1e-40, rel=2**-7)


def test_round_bf16_keeps_nan():
    # A NaN whose payload sits in the low 16 bits must not round into inf.
    payloads = np.array([0x7FC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF], np.uint32)
    got = run_rounding(payloads.view(np.float32))
    assert np.all(np.isnan(got))
    np.testing.assert_array_equal(np.signbit(got), [False, False, True, False])


def _gradient_through(name: str, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    g = _core.Graph()
    v = g.variable("v", values.shape)
    out = g.op(name, [v], {})
    loss = g.op("sum", [g.op("mul", [out, g.constant(weights)], {})], {"axes": []})
    (grad,) = g.gradients(loss, [v])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("v", values)
    eng.define("f", inputs=[], outputs=[out, grad], effects=[], advance_rng=False)
    return eng.run("f", [])


def test_round_bf16_gradient_passes_through(rng):
    values = rng.standard_normal((5, 7)).astype(np.float32)
    weights = rng.standard_normal((5, 7)).astype(np.float32)
    out, grad = _gradient_through("round_bf16", values, weights)
    np.testing.assert_array_equal(out, torch_bf16(values))
    np.testing.assert_array_equal(grad, weights)


def test_round_bf16_grad_is_identity_that_rounds_its_gradient(rng):
    values = rng.standard_normal((5, 7)).astype(np.float32)
    weights = rng.standard_normal((5, 7)).astype(np.float32)
    out, grad = _gradient_through("round_bf16_grad", values, weights)
    np.testing.assert_array_equal(out, values)
    np.testing.assert_array_equal(grad, torch_bf16(weights))


def test_emulated_matmul_forward_and_backward_use_bf16_operands(rng):
    x = rng.standard_normal((16, 40)).astype(np.float32)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    upstream = rng.standard_normal((16, 24)).astype(np.float32)
    g = _core.Graph()
    xv, wv = g.variable("x", x.shape), g.variable("w", w.shape)
    y = Bf16Graph(g).op("matmul", [xv, wv], {"transpose_b": True})
    loss = g.op("sum", [g.op("mul", [y, g.constant(upstream)], {})], {"axes": []})
    gx, gw = g.gradients(loss, [xv, wv])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.set_variable("w", w)
    eng.define("f", inputs=[], outputs=[y, gx, gw], effects=[], advance_rng=False)
    out, dx, dw = eng.run("f", [])

    xr, wr, ur = (torch_bf16(a).astype(np.float64) for a in (x, w, upstream))
    np.testing.assert_allclose(out, xr @ wr.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, ur @ wr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, ur.T @ xr, rtol=1e-5, atol=1e-5)
    # The arithmetic really changed: float32 operands give clearly different numbers.
    assert np.max(np.abs(out - x.astype(np.float64) @ w.T.astype(np.float64))) > 1e-3
    assert np.max(np.abs(dw - upstream.T.astype(np.float64) @ x)) > 1e-3


def test_emulated_dense_and_conv_predictions_match_bf16_references(rng):
    x = rng.standard_normal((6, 2, 7, 7)).astype(np.float32)
    model = (
        gm.ModelBuilder(input_shape=(2, 7, 7)).conv2d(3, 3, padding=1).flatten().dense(5)
    ).build(seed=3)
    plain = gm.Trainer(model, loss="cross_entropy")
    expected_plain = plain.predict(x)
    trainer = gm.Trainer(model, loss="cross_entropy", mixed_precision="bf16-emulated")
    weights = model.get_weights()
    names = sorted(weights)
    conv_w = next(n for n in names if n.startswith("conv2d") and n.endswith("weight"))
    conv_b = next(n for n in names if n.startswith("conv2d") and n.endswith("bias"))
    dense_w = next(n for n in names if n.startswith("dense") and n.endswith("weight"))
    dense_b = next(n for n in names if n.startswith("dense") and n.endswith("bias"))

    def as64(a):
        return torch.from_numpy(torch_bf16(a).astype(np.float64))

    h = torch.nn.functional.conv2d(as64(x), as64(weights[conv_w]), padding=1)
    h = (h + torch.from_numpy(weights[conv_b].astype(np.float64))[:, None, None]).numpy()
    h = h.reshape(len(x), -1).astype(np.float32)
    expected = (
        torch_bf16(h).astype(np.float64) @ torch_bf16(weights[dense_w]).T.astype(np.float64)
        + weights[dense_b]
    )
    got = trainer.predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(got - expected_plain)) > 1e-3


# -- arguments and the float32 fallback -----------------------------------------------------


def _mlp(seed: int = 0) -> gm.Model:
    return gm.ModelBuilder(input_shape=(20,)).dense(16).relu().dense(5).build(seed=seed)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"mixed_precision": "fp32"}, ValueError, "'fp32'"),
        ({"mixed_precision": "BF16"}, ValueError, "'bf16-emulated'"),
        ({"mixed_precision": 16}, TypeError, "int 16"),
        ({"loss_scaling": "yes"}, TypeError, "loss_scaling"),
        ({"growth_interval": 0}, ValueError, "growth_interval must be an int >= 1, got 0"),
        ({"growth_interval": 2.5}, ValueError, "growth_interval"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        gm.Trainer(_mlp(), loss="cross_entropy", **kwargs)


def test_loss_scaling_needs_an_in_graph_optimizer():
    with pytest.raises(ValueError, match="host-driven LBFGS"):
        gm.Trainer(_mlp(), loss="cross_entropy", optimizer=gm.optim.LBFGS(), loss_scaling=True)
    # By default a host-driven optimizer trains without loss scaling.
    trainer = gm.Trainer(
        _mlp(), loss="cross_entropy", optimizer=gm.optim.LBFGS(), mixed_precision="bf16-emulated"
    )
    assert trainer.loss_scaling is False
    assert "loss_scale" not in trainer.engine_stats()


def _train(trainer: gm.Trainer, x, y, steps: int) -> list[float]:
    return [trainer.train_batch(x, y).loss for _ in range(steps)]


def test_bf16_without_hardware_warns_once_and_trains_in_float32(monkeypatch, classification_data):
    monkeypatch.setattr(_precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    x, y = classification_data
    optimizer = gm.optim.SGD(lr=0.05, momentum=0.9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = gm.Trainer(
            _mlp(), loss="cross_entropy", optimizer=optimizer, mixed_precision="bf16"
        )
        losses = _train(trainer, x, y, 5)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "avx512_bf16" in messages[0] and "float32" in messages[0]
    assert trainer.precision.compute == "float32"

    reference = gm.Trainer(_mlp(), loss="cross_entropy", optimizer=optimizer)
    assert losses == _train(reference, x, y, 5)
    for name, value in reference.model.get_weights().items():
        np.testing.assert_array_equal(trainer.model.get_weights()[name], value)
    # Loss scaling is on in the fallback too, and saw only clean steps.
    stats = trainer.engine_stats()
    assert stats["loss_scale"] == 65536.0 and stats["skipped_steps"] == 0


def test_bf16_hardware_without_bf16_kernels_still_falls_back_with_a_warning(monkeypatch):
    # Emulating bf16 on bf16 hardware would be slower than float32: say so and use float32.
    monkeypatch.setattr(_precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    with pytest.warns(
        UserWarning, match="has avx512_bf16, but the CPU backend has no bfloat16"
    ) as caught:
        trainer = gm.Trainer(_mlp(), loss="cross_entropy", mixed_precision="bf16")
    assert len(caught) == 1
    assert trainer.precision.compute == "float32"


def test_fp16_on_the_cpu_backend_warns_and_names_metal():
    with pytest.warns(UserWarning, match="Metal") as caught:
        trainer = gm.Trainer(_mlp(), loss="cross_entropy", mixed_precision="fp16")
    assert len(caught) == 1
    assert trainer.precision.compute == "float32"


def test_no_mixed_precision_has_no_scaler():
    trainer = gm.Trainer(_mlp(), loss="cross_entropy")
    assert trainer.mixed_precision is None and trainer.loss_scaling is False
    assert "loss_scale" not in trainer.engine_stats()
    assert not SCALER_VARIABLES & set(trainer._engine.variable_names())


# -- dynamic loss scaling -------------------------------------------------------------------


def _engine_state(trainer: gm.Trainer) -> dict[str, np.ndarray]:
    engine = trainer._engine
    return {name: np.array(engine.get_variable(name)) for name in engine.variable_names()}


OPTIMIZERS = [
    pytest.param(lambda: gm.optim.Adam(lr=1e-2), id="adam-fused"),
    pytest.param(lambda: gm.optim.AdamW(lr=1e-2, weight_decay=0.1), id="adamw"),
    pytest.param(lambda: gm.optim.SGD(lr=0.05, momentum=0.9), id="sgd-momentum"),
    pytest.param(lambda: gm.optim.RMSprop(lr=1e-2), id="rmsprop"),
]


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
def test_overflow_skips_the_step_and_halves_the_scale(make_optimizer, classification_data):
    x, y = classification_data
    trainer = gm.Trainer(
        _mlp(), loss="cross_entropy", optimizer=make_optimizer(), mixed_precision="bf16-emulated"
    )
    _train(trainer, x, y, 2)
    # A scale of 2**127 times gradients of inputs this large cannot stay finite.
    trainer._engine.set_variable(LOSS_SCALE_VARIABLE, np.array(2.0**127, np.float32))
    before = _engine_state(trainer)
    trainer.train_batch(x * 100.0, y)
    after = _engine_state(trainer)

    for name, value in before.items():
        if name not in SCALER_VARIABLES:
            np.testing.assert_array_equal(bits(after[name]), bits(value), err_msg=name)
    assert trainer.step == 2
    assert float(after[LOSS_SCALE_VARIABLE]) == 2.0**126
    assert float(after[GOOD_STEPS_VARIABLE]) == 0.0
    assert trainer.engine_stats()["skipped_steps"] == 1
    assert trainer.engine_stats()["loss_scale"] == 2.0**126

    # Training goes on once the scale fits again.
    trainer._engine.set_variable(LOSS_SCALE_VARIABLE, np.array(1024.0, np.float32))
    trainer.train_batch(x, y)
    assert trainer.step == 3
    assert trainer.engine_stats()["skipped_steps"] == 1
    changed = trainer.model.get_weights()["dense_0.weight"]
    assert not np.array_equal(changed, before["dense_0.weight"])


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
def test_scaled_training_matches_unscaled(make_optimizer, classification_data):
    """Scaling by a power of two and unscaling is exact; the guarded updates keep the math."""
    x, y = classification_data
    scaled = gm.Trainer(_mlp(), loss="cross_entropy", optimizer=make_optimizer(), loss_scaling=True)
    plain = gm.Trainer(_mlp(), loss="cross_entropy", optimizer=make_optimizer())
    np.testing.assert_allclose(_train(scaled, x, y, 6), _train(plain, x, y, 6), rtol=1e-6)
    for name, value in plain.model.get_weights().items():
        np.testing.assert_allclose(
            scaled.model.get_weights()[name], value, rtol=1e-5, atol=1e-7, err_msg=name
        )
    assert scaled.step == plain.step == 6


def test_scale_grows_after_the_growth_interval(classification_data):
    x, y = classification_data
    trainer = gm.Trainer(
        _mlp(), loss="cross_entropy", mixed_precision="bf16-emulated", growth_interval=3
    )
    scales, good = [], []
    for _ in range(7):
        trainer.train_batch(x, y)
        scales.append(trainer.engine_stats()["loss_scale"])
        good.append(float(trainer._engine.get_variable(GOOD_STEPS_VARIABLE)))
    base = 65536.0
    assert scales == [base, base, 2 * base, 2 * base, 2 * base, 4 * base, 4 * base]
    assert good == [1, 2, 0, 1, 2, 0, 1]
    # An overflow resets the run of clean steps.
    trainer._engine.set_variable(LOSS_SCALE_VARIABLE, np.array(2.0**127, np.float32))
    trainer.train_batch(x * 100.0, y)
    assert float(trainer._engine.get_variable(GOOD_STEPS_VARIABLE)) == 0.0
    assert trainer.engine_stats()["loss_scale"] == 2.0**126


def test_scale_stops_growing_below_inf(classification_data):
    x, y = classification_data
    trainer = gm.Trainer(
        _mlp(),
        loss="cross_entropy",
        optimizer=gm.optim.SGD(lr=0.0),
        loss_scaling=True,
        growth_interval=1,
    )
    trainer._engine.set_variable(LOSS_SCALE_VARIABLE, np.array(2.0**127, np.float32))
    trainer.train_batch(x * 1e-30, y)  # tiny inputs: finite gradients even at this scale
    assert trainer.engine_stats()["skipped_steps"] == 0
    assert trainer.engine_stats()["loss_scale"] == 2.0**127


def test_scaler_survives_a_checkpoint(tmp_path, classification_data):
    x, y = classification_data
    trainer = gm.Trainer(
        _mlp(),
        loss="cross_entropy",
        optimizer=gm.optim.Adam(lr=1e-2),
        mixed_precision="bf16-emulated",
        growth_interval=3,
    )
    _train(trainer, x, y, 4)
    trainer._engine.set_variable(LOSS_SCALE_VARIABLE, np.array(2.0**127, np.float32))
    trainer.train_batch(x * 100.0, y)
    _train(trainer, x, y, 1)
    path = tmp_path / "ckpt.safetensors"
    trainer.save(path)
    loaded = gm.Trainer.load(path)

    assert loaded.mixed_precision == "bf16-emulated"
    assert loaded.loss_scaling is True and loaded.growth_interval == 3
    assert loaded.engine_stats()["loss_scale"] == trainer.engine_stats()["loss_scale"] == 2.0**126
    assert loaded.engine_stats()["skipped_steps"] == 1
    for _ in range(4):
        assert loaded.train_batch(x, y).loss == trainer.train_batch(x, y).loss
    for name, value in _engine_state(trainer).items():
        np.testing.assert_array_equal(_engine_state(loaded)[name], value, err_msg=name)


# -- training on real data ------------------------------------------------------------------


def test_bf16_emulated_digits_accuracy_within_one_point_of_float32():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    accuracies, weights = {}, {}
    for mode in (None, "bf16-emulated"):
        model = gm.ModelBuilder((64,)).dense(128).relu().dense(10).build(seed=0)
        trainer = gm.Trainer(
            model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-3), mixed_precision=mode
        )
        trainer.fit((x_train, y_train), epochs=30, batch_size=32, verbose=0, seed=0)
        accuracies[mode] = accuracy_score(y_test, trainer.predict(x_test).argmax(axis=1))
        weights[mode] = model.get_weights()["dense_0.weight"]
    assert accuracies[None] >= 0.95
    assert abs(accuracies["bf16-emulated"] - accuracies[None]) <= 0.01
    assert not np.array_equal(weights[None], weights["bf16-emulated"])


def test_emulated_conv_backward_uses_bf16_operands(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    upstream = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    g = _core.Graph()
    xv, wv = g.variable("x", x.shape), g.variable("w", w.shape)
    y = Bf16Graph(g).op("conv2d", [xv, wv], attrs)
    loss = g.op("sum", [g.op("mul", [y, g.constant(upstream)], {})], {"axes": []})
    gx, gw = g.gradients(loss, [xv, wv])
    eng = _core.Engine(g, seed=0)
    eng.set_variable("x", x)
    eng.set_variable("w", w)
    eng.define("f", inputs=[], outputs=[y, gx, gw], effects=[], advance_rng=False)
    out, dx, dw = eng.run("f", [])

    xr, wr = (torch.from_numpy(torch_bf16(a).astype(np.float64)).requires_grad_() for a in (x, w))
    ref = torch.nn.functional.conv2d(xr, wr, padding=1)
    ref.backward(torch.from_numpy(torch_bf16(upstream).astype(np.float64)))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xr.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, wr.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_loss_scaling_keeps_the_fused_adam_kernel():
    # The finite flag is the kernel's seventh input: no composed chain of elementwise passes.
    model = gm.ModelBuilder((8,)).dense(16).relu().dense(3).build(seed=0)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer="adam", loss_scaling=True)
    plan = trainer._engine.describe("train", 4)
    assert sum(line.startswith("adam_update") for line in plan) == 4, plan
    # No composed update left: a fused pass over a parameter taking a sqrt and writing it.
    composed = [line for line in plan if "sqrt" in line and "assign" in line]
    assert all(line.endswith("()") for line in composed), plan  # only the scalar bookkeeping
