"""ONNX export of Conv1D, Conv2DTranspose, UpSampling2D, ZeroPadding2D, GlobalMaxPool2D
and AdaptiveAvgPool2D, checked with onnxruntime, and the files read back by the importer
(ConvTranspose, Resize, Pad, GlobalMaxPool) predicting as the exported model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gometal as gm
from gometal import layers as L

TOLERANCE = 1e-4


def _model(input_shape, *layers_, seed=0):
    x = gm.Input(input_shape)
    h = x
    for layer in layers_:
        h = layer(h)
    model = gm.Model(x, h)
    rng = np.random.default_rng(seed)
    model.set_weights(
        {name: 0.5 * rng.standard_normal(shape) for name, shape in model.weight_shapes.items()}
    )
    return model


def _run_ort(path, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: x})
    return result


def export_and_check(model, tmp_path, opset=17):
    """Exports ``model``; onnxruntime and the importer both agree with ``predict``."""
    path = tmp_path / "model.onnx"
    model.export_onnx(path, opset=opset)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    imported = gm.onnx.load(path)
    rng = np.random.default_rng(7)
    for batch in (2, 5):
        x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
        expected = model.predict(x)
        np.testing.assert_allclose(_run_ort(path, x), expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(imported.predict(x), expected, rtol=0, atol=TOLERANCE)
    return [node.op_type for node in proto.graph.node]


@pytest.mark.parametrize(
    "layer",
    [
        gm.layers.Conv1D(4, 3),
        gm.layers.Conv1D(6, 3, stride=2, padding=2, dilation=2, groups=3, use_bias=False),
        gm.layers.Conv1D(4, 4, padding="same"),  # pads 1 left, 2 right
    ],
    ids=repr,
)
def test_conv1d_exports_as_conv(layer, tmp_path):
    assert "Conv" in export_and_check(_model((3, 12), layer), tmp_path)


@pytest.mark.parametrize(
    "layer",
    [
        L.Conv2DTranspose(4, 3),
        L.Conv2DTranspose(6, 3, stride=2, padding=1, output_padding=1, groups=3),
        L.Conv2DTranspose(2, (3, 2), stride=(2, 3), padding=(1, 0), dilation=(2, 1)),
    ],
    ids=repr,
)
def test_conv2d_transpose_exports_as_conv_transpose(layer, tmp_path):
    assert export_and_check(_model((3, 5, 4), layer), tmp_path) == ["ConvTranspose"]


@pytest.mark.parametrize(
    "scale, mode, align_corners",
    [
        (2, "nearest", False),
        ((2, 3), "nearest", False),
        (1.5, "nearest", False),
        (2, "bilinear", False),
        (2, "bilinear", True),
        ((1.5, 2.5), "bilinear", False),
        ((0.5, 1.5), "bilinear", True),
    ],
    ids=str,
)
@pytest.mark.parametrize("opset", [13, 23])
def test_upsampling_exports_as_resize(scale, mode, align_corners, opset, tmp_path):
    model = _model((2, 6, 5), L.UpSampling2D(scale, mode=mode, align_corners=align_corners))
    assert "Resize" in export_and_check(model, tmp_path, opset=opset)


@pytest.mark.parametrize("padding", [1, (2, 0), ((1, 0), (0, 3))], ids=str)
@pytest.mark.parametrize("opset", [13, 23])
def test_zero_padding_exports_as_pad(padding, opset, tmp_path):
    model = _model((2, 4, 5), L.ZeroPadding2D(padding))
    assert "Pad" in export_and_check(model, tmp_path, opset=opset)


def test_global_max_pool_exports(tmp_path):
    assert "GlobalMaxPool" in export_and_check(_model((3, 5, 4), L.GlobalMaxPool2D()), tmp_path)


@pytest.mark.parametrize(
    "output_size, op_type", [((2, 3), "AveragePool"), (3, "MatMul"), ((4, 4), "MatMul")]
)
def test_adaptive_avg_pool_exports(output_size, op_type, tmp_path):
    model = _model((3, 8, 6), L.AdaptiveAvgPool2D(output_size))
    assert op_type in export_and_check(model, tmp_path)


def test_a_decoder_of_every_spatial_layer_exports(tmp_path):
    x = gm.Input((4, 6, 6))
    h = L.ZeroPadding2D(((1, 0), (0, 1)))(x)
    h = L.Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1, groups=2)(h)
    h = L.UpSampling2D(1.5, mode="bilinear")(h)
    h = L.AdaptiveAvgPool2D((5, 4))(h)
    out = L.Add()([L.GlobalMaxPool2D()(h), L.GlobalAvgPool2D()(h)])
    model = gm.Model(x, out)
    model.set_weights({n: 0.3 * np.ones(s, np.float32) for n, s in model.weight_shapes.items()})
    export_and_check(model, tmp_path)
