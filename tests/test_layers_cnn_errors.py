"""Convolution, pooling and batch-norm layers given bad configurations or inputs raise
ValueError naming the layer and the values, and leave the builder usable."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gometal as gm


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _mentions(message, *parts):
    for part in parts:
        assert re.search(part, message), f"{part!r} not in {message!r}"


def test_conv_on_a_wrong_rank_input_names_the_layer_and_shape():
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((20,)).dense(8).conv2d(4, 3)
    _mentions(str(err.value), "conv2d_0", "Conv2D", r"4-D", r"\(None, 8\)")
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((28, 28)).conv2d(4, 3, name="first")
    _mentions(str(err.value), "'first'", r"\(None, 28, 28\)", r"\(1, 28, 28\)")


def test_channel_mismatch_names_the_layer_and_shapes():
    conv = gm.layers.Conv2D(4, 3, name="shared")
    conv(gm.Input((3, 8, 8)))
    with pytest.raises(ValueError) as err:
        conv(gm.Input((5, 8, 8)))
    _mentions(str(err.value), "shared", r"\(None, 3, 8, 8\)", r"\(None, 5, 8, 8\)")

    x = gm.Input((3, 8, 8))
    with pytest.raises(ValueError) as err:
        gm.layers.Add(name="skip")([gm.layers.Conv2D(4, 3, padding=1)(x), x])
    _mentions(str(err.value), "skip", r"4, 8, 8", r"3, 8, 8")

    model = gm.ModelBuilder((3, 8, 8)).conv2d(4, 3).build(seed=0)
    with pytest.raises(ValueError) as err:
        model.set_weights({"conv2d_0.weight": np.zeros((4, 5, 3, 3))})
    _mentions(str(err.value), "conv2d_0.weight", r"\(4, 3, 3, 3\)", r"\(4, 5, 3, 3\)")


def test_groups_must_divide_the_channels():
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((3, 8, 8)).conv2d(4, 3, groups=2)
    _mentions(str(err.value), "conv2d_0", "groups=2", r"\b3\b")
    with pytest.raises(ValueError) as err:
        gm.layers.Conv2D(6, 3, groups=4, name="grouped")
    _mentions(str(err.value), "grouped", "groups=4", "out_channels=6")


def test_same_padding_with_stride_or_even_kernel_is_rejected():
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((3, 8, 8)).conv2d(4, 3, stride=2, padding="same", name="down")
    _mentions(str(err.value), "down", "same", "stride", r"\(2, 2\)")
    with pytest.raises(ValueError) as err:
        gm.layers.Conv2D(4, 2, padding="same")
    _mentions(str(err.value), "Conv2D", "same", r"\(2, 2\)", "odd")
    with pytest.raises(ValueError) as err:
        gm.layers.Conv2D(4, 3, padding="full")
    _mentions(str(err.value), "padding", "'full'")


def test_windows_larger_than_the_padded_input_are_rejected():
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((2, 3, 3)).max_pool2d(5)
    _mentions(str(err.value), "max_pool2d_0", "MaxPool2D", r"\(5, 5\)", r"\(3, 3\)")
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((2, 1, 6)).avg_pool2d((4, 2), padding=(1, 0))
    _mentions(str(err.value), "avg_pool2d_0", r"\(4, 2\)", r"\(3, 6\)")
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((2, 6, 6)).conv2d(3, 3, dilation=3)
    _mentions(str(err.value), "conv2d_0", r"\(7, 7\)", r"\(6, 6\)", "dilation")
    with pytest.raises(ValueError) as err:
        gm.ModelBuilder((2, 6, 6)).global_avg_pool2d().global_avg_pool2d()
    _mentions(str(err.value), "global_avg_pool2d_1", r"\(None, 2\)")


@pytest.mark.parametrize(
    "make,patterns",
    [
        (lambda: gm.layers.MaxPool2D(3, padding=2), ["MaxPool2D", r"\(2, 2\)", "half"]),
        (lambda: gm.layers.AvgPool2D(0), ["kernel_size", "0"]),
        (lambda: gm.layers.Conv2D(0, 3), ["out_channels", "0"]),
        (lambda: gm.layers.Conv2D(4, (3, 3, 3)), ["kernel_size", r"\(3, 3, 3\)"]),
        (lambda: gm.layers.Conv2D(4, 3, padding=-1), ["padding", "-1"]),
        (lambda: gm.layers.Conv2D(4, 3, stride=0), ["stride", "0"]),
        (lambda: gm.layers.BatchNorm(eps=0.0), ["eps", r"0\.0"]),
        (lambda: gm.layers.BatchNorm(momentum=1.5), ["momentum", r"1\.5"]),
    ],
    ids=["pool_pad", "pool_kernel", "channels", "kernel_rank", "padding", "stride", "eps", "mom"],
)
def test_bad_layer_arguments(make, patterns):
    with pytest.raises(ValueError) as err:
        make()
    _mentions(str(err.value), *patterns)


def test_a_failed_call_leaves_the_builder_usable():
    builder = gm.ModelBuilder((3, 8, 8)).conv2d(4, 3, padding=1)
    with pytest.raises(ValueError):
        builder.max_pool2d(9)
    model = builder.max_pool2d(2).flatten().dense(2).build(seed=0)
    names = [layer.name for layer in model.layers]
    assert names == ["conv2d_0", "max_pool2d_0", "flatten_0", "dense_0"]
    assert model.predict(_images((2, 3, 8, 8))).shape == (2, 2)
