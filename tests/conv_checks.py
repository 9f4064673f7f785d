"""The convolution tests' shared pieces: a conv2d's attributes, torch's conv2d in float64 as
the reference, and a training step through a 3x3 convolution checked against torch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def conv_attrs(stride, padding, dilation, groups: int) -> dict:
    """A gometal conv2d's attributes from (height, width) pairs and a group count."""
    return {
        "stride": list(stride),
        "padding": list(padding),
        "dilation": list(dilation),
        "groups": groups,
    }


def torch_conv2d(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    """conv2d of x (N, C, H, W) by w (O, C / groups, KH, KW) in float64, with the stride,
    padding, dilation and groups of a gometal conv2d's ``attrs``."""
    return F.conv2d(
        torch.from_numpy(x).double(),
        torch.from_numpy(w).double(),
        stride=attrs["stride"],
        padding=attrs["padding"],
        dilation=attrs["dilation"],
        groups=attrs["groups"],
    ).numpy()


def conv_case_arrays(x_shape, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (x_shape), 3x3 weights of `channels` outputs and their bias (channels, 1, 1): unit
    normals in float32, seeded by the shape."""
    rng = np.random.default_rng(sum(x_shape) + channels)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((channels, x_shape[1], 3, 3)).astype(np.float32)
    bias = rng.standard_normal((channels, 1, 1)).astype(np.float32)
    return x, w, bias


def check_conv_relu_pool_step(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> list[str]:
    """conv2d (3x3, padding 1) + bias -> ReLU -> 2x2 max pool -> squared sum, one engine step:
    asserts the loss and the gradients of x, w and bias against torch in float64; returns the
    plan's lines."""
    from gometal import _core

    g = _core.Graph()
    xi = g.input("x", x.shape, "float32")
    wv, bv = g.variable("w", w.shape), g.variable("bias", bias.shape)
    y = g.op("conv2d", [xi, wv], conv_attrs((1, 1), (1, 1), (1, 1), 1))
    y = g.op("max_pool2d", [g.op("relu", [g.op("add", [y, bv])])], {"kernel_size": [2, 2]})
    loss = g.op("sum", [g.op("mul", [y, y])], {"axes": []})
    grads = g.gradients(loss, [xi, wv, bv])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.set_variable("bias", bias)
    engine.define("step", inputs=[xi], outputs=[loss, *grads], effects=[])
    got = engine.run("step", [x])
    xt, wt, bt = (torch.from_numpy(a).double().requires_grad_() for a in (x, w, bias))
    yt = F.max_pool2d(torch.relu(F.conv2d(xt, wt, padding=1) + bt), 2)
    want_loss = (yt * yt).sum()
    want_loss.backward()
    np.testing.assert_allclose(got[0], want_loss.item(), rtol=1e-5)
    for value, tensor in zip(got[1:], (xt, wt, bt)):
        want = tensor.grad.numpy()
        np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    return engine.describe("step", x.shape[0])


def assert_torchs_non_finite_cells(got: np.ndarray, want: np.ndarray) -> None:
    """torch's pattern of NaN, +Inf and -Inf exactly, and its finite cells within float32 sums."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-3)
