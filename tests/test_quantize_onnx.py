"""QDQ ONNX export of quantized models: onnxruntime runs the digits MLP and CNN exported by
gometal and agrees with gometal's int8 predictions on at least 99.5 % of top-1 labels; the
graph holds QuantizeLinear/DequantizeLinear around Gemm/MatMul/Conv with int8 weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

import gometal as gm
from gometal.apps.train_job import build_cnn


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int32)


def trained(model, x, y, epochs=8):
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=2e-3), batch_size=32
    )
    trainer.fit((x, y), epochs=epochs, verbose=0)
    return model


def onnxruntime_outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def check_export(tmp_path, quantized, x):
    path = tmp_path / "int8.onnx"
    quantized.export_onnx(path)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    int8_weights = [
        node
        for node in graph.node
        if node.op_type == "Constant" and node.attribute[0].t.data_type == onnx.TensorProto.INT8
    ]
    assert int8_weights
    got = onnxruntime_outputs(path, x)
    want = quantized.predict(x)
    assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) >= 0.995
    return got, want


def test_the_quantized_mlp_exports_to_qdq_that_onnxruntime_runs(tmp_path, digits):
    x, y = digits
    model = trained(gm.ModelBuilder((64,)).dense(64).relu().dense(10).build(seed=0), x, y)
    quantized = gm.quantize(model, x[:512])
    got, want = check_export(tmp_path, quantized, x)
    ops = [node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("Gemm") == 2
    # The same int8 arithmetic, but onnxruntime quantizes by a reciprocal: an activation
    # near a rounding tie may land one step away, moving the logits by a few steps.
    np.testing.assert_allclose(got, want, atol=0.05)


def test_the_quantized_cnn_exports_to_qdq_that_onnxruntime_runs(tmp_path, digits):
    x, y = digits
    images = x.reshape(-1, 1, 8, 8)
    quantized = gm.quantize(trained(build_cnn((1, 8, 8), 10, seed=0), images, y), images[:512])
    check_export(tmp_path, quantized, images)
    ops = [node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("Conv") == 3


def test_a_dense_over_a_sequence_exports_as_a_matmul(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5, 8)).astype(np.float32)
    model = gm.ModelBuilder((5, 8)).dense(6, activation="relu").build(seed=0)
    quantized = gm.quantize(model, x)
    path = tmp_path / "seq.onnx"
    quantized.export_onnx(path)
    assert "MatMul" in [node.op_type for node in onnx.load(str(path)).graph.node]
    np.testing.assert_allclose(
        onnxruntime_outputs(path, x), quantized.predict(x), rtol=1e-4, atol=1e-4
    )
