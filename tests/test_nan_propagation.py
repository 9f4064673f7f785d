"""Every activation propagates NaN as torch does, forward and backward.

The engine refuses NaN inputs, so the NaN enters through a weight, as it does in a diverging
run: one row of a Dense weight is NaN, so one output feature is NaN for every sample.
"""

import numpy as np
import pytest
import torch

import gometal as gm
from gometal import _core

ACTIVATIONS = [
    ("relu", gm.layers.ReLU, torch.relu),
    (
        "leaky_relu",
        lambda: gm.layers.LeakyReLU(0.1),
        lambda t: torch.nn.functional.leaky_relu(t, 0.1),
    ),
    ("elu", gm.layers.ELU, torch.nn.functional.elu),
    ("sigmoid", gm.layers.Sigmoid, torch.sigmoid),
    ("tanh", gm.layers.Tanh, torch.tanh),
    ("swish", gm.layers.Swish, torch.nn.functional.silu),
    ("gelu", gm.layers.GELU, torch.nn.functional.gelu),
    ("softmax", gm.layers.Softmax, lambda t: torch.softmax(t, -1)),
]


def _weights_with_a_nan_row(features: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((features, features)).astype(np.float32)
    weight[1] = np.nan
    return weight, np.zeros(features, np.float32)


@pytest.mark.parametrize("name, layer, reference", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_propagates_nan_like_torch(name, layer, reference):
    x_in = gm.Input((4,))
    model = gm.Model(x_in, layer()(gm.layers.Dense(4, name="fc")(x_in)))
    weight, bias = _weights_with_a_nan_row(4)
    model.set_weights({"fc.weight": weight, "fc.bias": bias})
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)

    got = model.predict(x)
    expected = reference(torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight)))
    assert np.isnan(expected.numpy()).any(), "the reference must see the NaN"
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name, layer, reference", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_gradient_propagates_nan_like_torch(name, layer, reference):
    x_in = gm.Input((4,))
    model = gm.Model(x_in, layer()(gm.layers.Dense(4, name="fc")(x_in)))
    weight, bias = _weights_with_a_nan_row(4)
    model.set_weights({"fc.weight": weight, "fc.bias": bias})
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=1.0))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    target = np.full((5, 4), 0.25, np.float32)
    trainer.train_batch(x, target)

    w_t = torch.tensor(weight, requires_grad=True)
    b_t = torch.tensor(bias, requires_grad=True)
    out = reference(torch.nn.functional.linear(torch.from_numpy(x), w_t, b_t))
    torch.nn.functional.mse_loss(out, torch.from_numpy(target)).backward()
    got = model.get_weights()
    expected_bias = (b_t - b_t.grad).detach().numpy()
    assert np.isnan(expected_bias).any()
    np.testing.assert_allclose(got["fc.bias"], expected_bias, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(
        got["fc.weight"], (w_t - w_t.grad).detach().numpy(), rtol=1e-5, atol=1e-6, equal_nan=True
    )


@pytest.mark.parametrize(
    "kernel, stride, width, special",
    [(2, 2, 20, np.nan), (2, 2, 4, np.nan), (3, 2, 11, np.nan), (2, 2, 20, "infinities")],
)
def test_max_pool_propagates_nan_from_any_window_position_like_torch(
    kernel, stride, width, special
):
    # NaN at different places of otherwise finite windows; the 2x2 case covers the
    # eight-window vector path and its scalar tail. The NaN comes in through a weight.
    # Infinities of both signs (and no NaN) take the NaN-aware path too, and must route
    # as torch does.
    g = _core.Graph()
    x = g.input("x", (-1, 1, 4, width))
    w = g.variable("w", (1, 1, 4, width))
    pooled = g.op(
        "max_pool2d", [g.op("mul", [x, w])], {"kernel_size": [kernel] * 2, "stride": [stride] * 2}
    )
    (grad,) = g.gradients(g.op("sum", [g.op("mul", [pooled, pooled])]), [w])
    engine = _core.Engine(g)
    engine.define("f", inputs=[x], outputs=[pooled, grad])
    w_value = np.random.default_rng(3).standard_normal((1, 1, 4, width)).astype(np.float32)
    values = [np.inf, -np.inf, np.inf] if special == "infinities" else [special] * 3
    for position, value in zip([(0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 3, width - 1)], values):
        w_value[position] = value
    engine.set_variable("w", w_value)
    x_value = np.random.default_rng(4).standard_normal((2, 1, 4, width)).astype(np.float32)
    got, got_grad = engine.run("f", [x_value])

    w_t = torch.tensor(w_value, requires_grad=True)
    out = torch.nn.functional.max_pool2d(torch.from_numpy(x_value) * w_t, kernel, stride)
    (out * out).sum().backward()
    assert not np.isfinite(out.detach().numpy()).all()
    np.testing.assert_array_equal(got, out.detach().numpy())
    np.testing.assert_allclose(got_grad, w_t.grad.numpy(), rtol=1e-5, equal_nan=True)


def test_relu_gradient_passes_through_nan_like_torch():
    g = _core.Graph()
    x = g.input("x", (-1, 3))
    w = g.variable("w", (3,))
    y = g.op("relu", [g.op("mul", [x, w])])
    (grad,) = g.gradients(g.op("sum", [y], {}), [w])
    engine = _core.Engine(g)
    engine.define("grad", inputs=[x], outputs=[grad])
    w_value = np.array([np.nan, 2.0, -2.0], np.float32)
    engine.set_variable("w", w_value)
    x_value = np.ones((2, 3), np.float32)
    (got,) = engine.run("grad", [x_value])

    w_t = torch.tensor(w_value, requires_grad=True)
    torch.relu(torch.from_numpy(x_value) * w_t).sum().backward()
    np.testing.assert_array_equal(got, w_t.grad.numpy())


def test_relu_before_max_pool_passes_nan_gradient_like_torch():
    x_in = gm.Input((1, 4, 4))
    conv = gm.layers.Conv2D(2, 1, name="conv")
    pooled = gm.layers.MaxPool2D(2)(gm.layers.ReLU()(conv(x_in)))
    model = gm.Model(x_in, gm.layers.Flatten()(pooled))
    weight = np.array([np.nan, 1.0], np.float32).reshape(2, 1, 1, 1)
    model.set_weights({"conv.weight": weight, "conv.bias": np.zeros(2, np.float32)})
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=1.0))
    x = np.random.default_rng(2).standard_normal((2, 1, 4, 4)).astype(np.float32)
    target = np.zeros((2, 8), np.float32)
    trainer.train_batch(x, target)

    conv_t = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv_t.weight.copy_(torch.from_numpy(weight))
        conv_t.bias.zero_()
    out = torch.nn.functional.max_pool2d(torch.relu(conv_t(torch.from_numpy(x))), 2).flatten(1)
    torch.nn.functional.mse_loss(out, torch.from_numpy(target)).backward()
    with torch.no_grad():
        conv_t.weight -= conv_t.weight.grad
        conv_t.bias -= conv_t.bias.grad
    got = model.get_weights()
    np.testing.assert_allclose(
        got["conv.bias"], conv_t.bias.detach().numpy(), rtol=1e-5, equal_nan=True
    )
