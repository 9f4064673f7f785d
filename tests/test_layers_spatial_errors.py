"""Conv1D, Conv2DTranspose, UpSampling2D, ZeroPadding2D, GlobalMaxPool2D and
AdaptiveAvgPool2D given bad arguments or inputs raise errors naming the layer, the argument
and the values; a model of them saves and loads."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gometal as gm
from gometal import layers as L


def _mentions(message, *parts):
    for part in parts:
        assert re.search(part, message), f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "make, parts",
    [
        (lambda: gm.layers.Conv1D(0, 3), ("Conv1D", "out_channels", r"\b0\b")),
        (lambda: gm.layers.Conv1D(4, (3, 3)), ("Conv1D", "kernel_size", r"\(3, 3\)")),
        (lambda: gm.layers.Conv1D(4, 3, stride=2, padding="same"), ("same", "stride 2")),
        (lambda: gm.layers.Conv1D(4, 3, padding="full"), ("padding", "'full'", "same")),
        (lambda: gm.layers.Conv1D(4, 3, padding=-1), ("padding", "-1")),
        (lambda: gm.layers.Conv1D(6, 3, groups=4, name="c"), ("'c'", "groups=4", "out_channels=6")),
        (
            lambda: L.Conv2DTranspose(4, 3, stride=2, output_padding=2),
            ("output_padding", r"\(2, 2\)", "stride"),
        ),
        (lambda: L.Conv2DTranspose(4, 0), ("Conv2DTranspose", "kernel_size", r"\b0\b")),
        (lambda: L.Conv2DTranspose(4, 3, padding=-1), ("padding", "-1")),
        (lambda: L.Conv2DTranspose(5, 3, groups=2), ("groups=2", "out_channels=5")),
        (lambda: L.UpSampling2D(0), ("UpSampling2D", "scale_factor", r"\b0\b")),
        (lambda: L.UpSampling2D((2, 2, 2)), ("scale_factor", r"\(2, 2, 2\)")),
        (lambda: L.UpSampling2D(2, mode="bicubic"), ("mode", "'bicubic'", "nearest", "bilinear")),
        (lambda: L.UpSampling2D(2, align_corners=True), ("align_corners", "bilinear", "'nearest'")),
        (lambda: L.ZeroPadding2D(-1), ("ZeroPadding2D", "padding", "-1")),
        (lambda: L.ZeroPadding2D(((1, 2), (3,))), ("padding", r"\(\(1, 2\), \(3,\)\)")),
        (lambda: L.ZeroPadding2D("same"), ("padding", "'same'")),
        (lambda: L.AdaptiveAvgPool2D(0), ("AdaptiveAvgPool2D", "output_size", r"\b0\b")),
        (lambda: L.AdaptiveAvgPool2D((2, 2, 2)), ("output_size", r"\(2, 2, 2\)")),
    ],
)
def test_bad_arguments_name_the_layer_argument_and_value(make, parts):
    with pytest.raises(ValueError) as err:
        make()
    _mentions(str(err.value), *parts)


def test_align_corners_must_be_a_bool():
    with pytest.raises(TypeError) as err:
        L.UpSampling2D(2, mode="bilinear", align_corners="yes")
    _mentions(str(err.value), "align_corners", "'yes'")


@pytest.mark.parametrize(
    "input_shape, layer, parts",
    [
        ((3, 8, 8), gm.layers.Conv1D(4, 3), ("conv1d_0", "3-D", r"\(None, 3, 8, 8\)")),
        ((3, 4), gm.layers.Conv1D(4, 5), ("conv1d_0", r"\b5\b", r"\(None, 3, 4\)")),
        ((3, 10), gm.layers.Conv1D(4, 3, groups=2), ("groups=2", r"\b3 channels")),
        ((3, 8), L.Conv2DTranspose(4, 3), ("conv2d_transpose_0", "4-D", r"\(None, 3, 8\)")),
        ((3, 4, 4), L.Conv2DTranspose(4, 3, groups=2), ("groups=2", r"\b3 channels")),
        ((3, 1, 1), L.Conv2DTranspose(4, 1, padding=1), ("padding", "empty", r"\(-1, -1\)")),
        ((3, 8), L.UpSampling2D(2), ("upsampling2d_0", "4-D", r"\(None, 3, 8\)")),
        ((3, 2, 2), L.UpSampling2D(0.4), ("scale_factor", "empty", r"\(0, 0\)")),
        ((8,), L.ZeroPadding2D(1), ("zero_padding2d_0", "4-D", r"\(None, 8\)")),
        ((8,), L.GlobalMaxPool2D(), ("global_max_pool2d_0", "4-D", r"\(None, 8\)")),
        ((3, 4, 5), L.AdaptiveAvgPool2D((2, 6)), ("output_size", r"\(2, 6\)", r"\(4, 5\)")),
    ],
)
def test_inputs_the_layer_cannot_take_name_the_layer_and_shapes(input_shape, layer, parts):
    builder = gm.ModelBuilder(input_shape)
    with pytest.raises(ValueError) as err:
        builder.add(layer)
    _mentions(str(err.value), *parts)


def test_a_model_of_every_spatial_layer_saves_and_loads(tmp_path):
    x = gm.Input((4, 12))
    h = gm.layers.Conv1D(6, 4, padding="same", groups=2)(x)  # (6, 12)
    one_d = gm.Model(x, h, seed=3)
    images = gm.Input((4, 6, 6))
    g = L.ZeroPadding2D(((1, 0), (2, 1)))(images)
    g = L.Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1, groups=2)(g)
    g = L.UpSampling2D((1.5, 0.5), mode="bilinear", align_corners=True)(g)
    g = L.AdaptiveAvgPool2D((3, 2))(g)
    two_d = gm.Model(images, L.Add()([L.GlobalMaxPool2D()(g), L.GlobalMaxPool2D()(images)]))
    for model, shape in ((one_d, (4, 12)), (two_d, (4, 6, 6))):
        rng = np.random.default_rng(0)
        model.set_weights({n: rng.standard_normal(s) for n, s in model.weight_shapes.items()})
        path = tmp_path / f"{len(shape)}.safetensors"
        model.save(path)
        loaded = gm.load_model(path)
        x_values = rng.standard_normal((3, *shape)).astype(np.float32)
        np.testing.assert_array_equal(loaded.predict(x_values), model.predict(x_values))
        assert [layer.get_config() for layer in loaded.layers] == [
            layer.get_config() for layer in model.layers
        ]
