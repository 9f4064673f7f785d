"""Conv1D, Conv2DTranspose, UpSampling2D, ZeroPadding2D, GlobalMaxPool2D and
AdaptiveAvgPool2D against PyTorch: with the same weights, the engine's outputs and its
gradients with respect to the input and every weight match torch's (float64 autograd)
within 1e-5 relative; models built with ModelBuilder predict as torch modules do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gometal as gm
from gometal import _core

RTOL = 1e-5


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def engine_outputs_and_gradients(layer, x, weights, cotangent):
    """The layer's output on ``x`` and the gradients of ``sum(output * cotangent)`` with
    respect to ``x`` and each weight (in ``weights``' order), run by the engine."""
    g = _core.Graph()
    source = g.input("x", (-1, *x.shape[1:]), "float32")
    specs = layer.build([tuple(g.shape(source))])
    assert [spec.name for spec in specs] == list(weights)
    variables = {
        f"layer.{spec.name}": g.variable(f"layer.{spec.name}", spec.shape) for spec in specs
    }
    ctx = gm.layers.EmitContext(g, True, variables)
    ctx.scope = "layer"
    out = layer.emit(ctx, [source])
    weigher = g.input("r", (-1, *cotangent.shape[1:]), "float32")
    loss = g.op("sum", [g.op("mul", [out, weigher])], {"axes": [], "keepdims": False})
    grads = g.gradients(loss, [source, *variables.values()])
    engine = _core.Engine(g, seed=0)
    for name, value in weights.items():
        engine.set_variable(f"layer.{name}", value)
    engine.define("f", inputs=[source, weigher], outputs=[out, *grads])
    result = engine.run("f", [x, cotangent])
    return result[0], result[1:]


def torch_outputs_and_gradients(fn, x, weights, cotangent):
    """``fn(x, *weights)`` and the gradients of ``sum(output * cotangent)``, in float64."""
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, *weights)]
    out = fn(*leaves)
    (out * torch.tensor(cotangent, dtype=torch.float64)).sum().backward()
    return out.detach().numpy(), [leaf.grad.numpy() for leaf in leaves]


def check_against_torch(layer, fn, x, weights=None, seed=1):
    """Asserts the layer's output and gradients equal torch's ``fn``'s within RTOL."""
    weights = weights or {}
    expected_out = fn(*(torch.tensor(a, dtype=torch.float64) for a in (x, *weights.values())))
    cotangent = _random(expected_out.shape, seed)
    out, grads = engine_outputs_and_gradients(layer, x, weights, cotangent)
    want_out, want_grads = torch_outputs_and_gradients(fn, x, list(weights.values()), cotangent)
    assert out.shape == want_out.shape
    scale = max(1.0, float(np.abs(want_out).max()))
    np.testing.assert_allclose(out, want_out, rtol=RTOL, atol=RTOL * scale)
    for name, got, want in zip(["x", *weights], grads, want_grads):
        assert got.shape == want.shape, name
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=name)


# -- Conv1D ----------------------------------------------------------------------------------

# (N, C, L), out_channels, kernel, stride, padding, dilation, groups, bias
CONV1D_CASES = [
    ((2, 3, 11), 4, 3, 1, 0, 1, 1, True),
    ((2, 4, 12), 6, 3, 2, 1, 1, 2, False),
    ((3, 2, 10), 3, 2, 3, 2, 2, 1, True),
    ((2, 3, 9), 5, 3, 1, "same", 2, 1, True),
    ((2, 4, 9), 4, 4, 1, "same", 1, 4, True),  # even kernel: one more zero on the right
    ((1, 3, 7), 2, 3, 1, "valid", 1, 1, False),
]


@pytest.mark.parametrize("case", CONV1D_CASES, ids=str)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv1d_matches_torch(case):
    shape, out_channels, kernel, stride, padding, dilation, groups, bias = case
    net = nn.Conv1d(shape[1], out_channels, kernel, stride, padding, dilation, groups, bias)
    layer = gm.layers.Conv1D(out_channels, kernel, stride, padding, dilation, groups, bias)
    weights = {"weight": net.weight.detach().numpy()}
    if bias:
        weights["bias"] = net.bias.detach().numpy()

    def conv(x, w, b=None):
        return F.conv1d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    check_against_torch(layer, conv, _random(shape, 0), weights)


# -- Conv2DTranspose -------------------------------------------------------------------------

# (N, C, H, W), out_channels, kernel, stride, padding, output_padding, dilation, groups, bias
TRANSPOSE_CASES = [
    ((2, 3, 5, 4), 4, 3, 1, 0, 0, 1, 1, True),
    ((2, 4, 4, 5), 6, 3, 2, 1, 1, 1, 2, True),
    ((1, 2, 3, 4), 3, (3, 2), (2, 3), (1, 0), (1, 2), 1, 1, False),
    ((2, 3, 4, 4), 2, 3, 2, 0, 0, (2, 1), 1, True),
    ((2, 6, 3, 3), 3, 2, 3, 1, 2, 2, 3, True),
    ((3, 2, 6, 5), 5, 4, 2, 1, 0, 1, 1, True),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=str)
def test_conv2d_transpose_matches_torch(case):
    shape, out_channels, kernel, stride, padding, output_padding, dilation, groups, bias = case
    net = nn.ConvTranspose2d(
        shape[1], out_channels, kernel, stride, padding, output_padding, groups, bias, dilation
    )
    layer = gm.layers.Conv2DTranspose(
        out_channels, kernel, stride, padding, output_padding, dilation, groups, bias
    )
    weights = {"weight": net.weight.detach().numpy()}
    if bias:
        weights["bias"] = net.bias.detach().numpy()
    geometry = {
        "stride": _pair(stride),
        "padding": _pair(padding),
        "output_padding": _pair(output_padding),
        "dilation": _pair(dilation),
        "groups": groups,
    }

    def transposed(x, w, b=None):
        return F.conv_transpose2d(x, w, b, **geometry)

    check_against_torch(layer, transposed, _random(shape, 0), weights)


def test_conv2d_transpose_model_predicts_and_trains_as_torch():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
    )
    model = (
        gm.ModelBuilder((3, 5, 5))
        .conv2d_transpose(4, 3, stride=2, padding=1, output_padding=1)
        .relu()
        .conv2d(2, 1)
        .build(seed=0)
    )
    names = list(model.weight_shapes)
    state = [v.detach().numpy() for v in net.state_dict().values()]
    model.set_weights(dict(zip(names, state)))
    x = _random((4, 3, 5, 5), 3)
    expected = net(torch.tensor(x)).detach().numpy()
    assert model.predict(x).shape == (4, 2, 10, 10)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)

    targets = _random(expected.shape, 4)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1), batch_size=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        got = trainer.train_batch(x, targets).loss
        opt.zero_grad()
        loss = F.mse_loss(net(torch.tensor(x)), torch.tensor(targets))
        loss.backward()
        opt.step()
        assert got == pytest.approx(loss.item(), rel=1e-5)
    for name, value in zip(names, net.state_dict().values()):
        np.testing.assert_allclose(model.get_weights()[name], value.numpy(), rtol=1e-5, atol=1e-6)


def test_conv_variants_initialise_within_torch_bounds():
    model = gm.ModelBuilder((6, 10)).conv1d(4, 3, groups=2).build(seed=0)
    bound = 1 / np.sqrt(3 * 3)  # fan_in = C / groups * kernel
    weight = model.get_weights()["conv1d_0.weight"]
    assert weight.shape == (4, 3, 3) and np.abs(weight).max() <= bound
    assert np.abs(weight).max() > 0.5 * bound
    model = gm.ModelBuilder((6, 4, 4)).conv2d_transpose(4, 3, groups=2).build(seed=0)
    bound = 1 / np.sqrt(2 * 3 * 3)  # fan_in = out_channels / groups * kh * kw, as torch
    weight = model.get_weights()["conv2d_transpose_0.weight"]
    assert weight.shape == (6, 2, 3, 3) and np.abs(weight).max() <= bound
    assert np.abs(model.get_weights()["conv2d_transpose_0.bias"]).max() <= bound


# -- resampling and padding ------------------------------------------------------------------

# (N, C, H, W), scale_factor, mode, align_corners
UPSAMPLING_CASES = [
    ((2, 3, 4, 5), 2, "nearest", False),
    ((2, 2, 3, 4), (2, 3), "nearest", False),
    ((2, 2, 4, 5), 1.5, "nearest", False),
    ((2, 2, 6, 5), (0.5, 0.6), "nearest", False),
    ((2, 3, 4, 5), 2, "bilinear", False),
    ((2, 3, 4, 5), 2, "bilinear", True),
    ((2, 2, 5, 4), (1.5, 2.5), "bilinear", False),
    ((2, 2, 5, 4), (1.5, 2.5), "bilinear", True),
    ((1, 2, 7, 6), (0.6, 0.5), "bilinear", False),
    ((1, 2, 3, 3), (0.4, 0.34), "bilinear", False),  # one output pixel
]


@pytest.mark.parametrize("case", UPSAMPLING_CASES, ids=str)
def test_upsampling_matches_torch_interpolate(case):
    shape, scale, mode, align_corners = case
    layer = gm.layers.UpSampling2D(scale, mode=mode, align_corners=align_corners)
    corners = align_corners if mode == "bilinear" else None
    factors = tuple(float(s) for s in scale) if isinstance(scale, tuple) else scale

    def upsample(x):
        return F.interpolate(x, scale_factor=factors, mode=mode, align_corners=corners)

    check_against_torch(layer, upsample, _random(shape, 0))


def test_upsampling_model_matches_nn_upsample():
    model = gm.ModelBuilder((2, 4, 4)).upsampling2d(2, mode="bilinear").build(seed=0)
    x = _random((3, 2, 4, 4), 5)
    expected = nn.Upsample(scale_factor=2, mode="bilinear")(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "padding, torch_pads",
    [(1, (1, 1, 1, 1)), ((2, 1), (1, 1, 2, 2)), (((1, 0), (2, 3)), (2, 3, 1, 0)), (0, (0,) * 4)],
    ids=str,
)
def test_zero_padding_matches_torch_pad(padding, torch_pads):
    layer = gm.layers.ZeroPadding2D(padding)
    check_against_torch(layer, lambda x: F.pad(x, torch_pads), _random((2, 3, 4, 5), 0))


def test_global_max_pool_matches_torch():
    check_against_torch(
        gm.layers.GlobalMaxPool2D(), lambda x: x.amax(dim=(2, 3)), _random((3, 4, 5, 6), 0)
    )


@pytest.mark.parametrize(
    "shape, output_size",
    [
        ((2, 3, 8, 6), 2),  # sizes divide: one average pool
        ((2, 3, 8, 6), (4, 3)),
        ((2, 3, 7, 5), 3),  # overlapping bins
        ((2, 2, 10, 9), (4, 7)),
        ((1, 2, 5, 5), (5, 1)),
        ((2, 2, 6, 7), 1),
    ],
    ids=str,
)
def test_adaptive_avg_pool_matches_torch(shape, output_size):
    layer = gm.layers.AdaptiveAvgPool2D(output_size)
    check_against_torch(layer, lambda x: F.adaptive_avg_pool2d(x, output_size), _random(shape, 0))


def test_spatial_builder_chain_predicts_as_torch_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.ZeroPad2d((1, 1, 2, 0)),
        nn.Conv2d(3, 4, 3),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.AdaptiveAvgPool2d((3, 4)),
    )
    model = (
        gm.ModelBuilder((3, 6, 6))
        .zero_padding2d(((2, 0), (1, 1)))
        .conv2d(4, 3)
        .upsampling2d(2)
        .adaptive_avg_pool2d((3, 4))
        .build(seed=0)
    )
    names = list(model.weight_shapes)
    model.set_weights({n: v.numpy() for n, v in zip(names, net.state_dict().values())})
    x = _random((5, 3, 6, 6), 1)
    expected = net(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)
    pooled = gm.ModelBuilder((3, 6, 6)).global_max_pool2d().build(seed=0)
    np.testing.assert_array_equal(pooled.predict(x), x.max(axis=(2, 3)))
