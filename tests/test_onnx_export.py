"""ONNX export: every layer type, checked by onnx's full checker and run by onnxruntime.

The reference is onnxruntime, an independent ONNX implementation: its outputs on the
exported file must equal gometal's own predictions at two batch sizes (dynamic batch).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import gometal as gm
from gometal import layers as L
from gometal.apps.train_job import build_cnn

TOLERANCE = 1e-4
BATCH_SIZES = (3, 7)


def randomize(model: gm.Model, seed: int = 0) -> None:
    """Gives every weight non-trivial values; running variances stay positive."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in model.weight_shapes.items():
        if name.endswith("running_var"):
            weights[name] = rng.uniform(0.3, 2.5, shape)
        else:
            weights[name] = 0.5 * rng.standard_normal(shape)
    model.set_weights(weights)


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (input_meta,) = session.get_inputs()
    (result,) = session.run(None, {input_meta.name: x})
    return result


def export_and_compare(model, tmp_path, predict=None, opset=17, seed=0) -> onnx.ModelProto:
    """Exports ``model``, runs the full checker, and compares onnxruntime with predict."""
    predict = predict or model.predict
    path = tmp_path / "model.onnx"
    model.export_onnx(path, opset=opset)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    rng = np.random.default_rng(seed + 100)
    for batch in BATCH_SIZES:
        x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
        expected = predict(x)
        got = run_onnx(path, x)
        assert got.shape == expected.shape == (batch, *model.output_shape)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]
    return proto


def sequential(input_shape, *layers_):
    x = gm.Input(input_shape)
    h = x
    for layer in layers_:
        h = layer(h)
    model = gm.Model(x, h)
    randomize(model)
    return model


def op_types(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


# -- one model per layer type and configuration ---------------------------------------------
ACTIVATIONS = {
    "relu": (L.ReLU, "Relu"),
    "leaky_relu": (lambda: L.LeakyReLU(0.2), "LeakyRelu"),
    "elu": (lambda: L.ELU(0.7), "Elu"),
    "sigmoid": (L.Sigmoid, "Sigmoid"),
    "tanh": (L.Tanh, "Tanh"),
    "swish": (L.Swish, "Sigmoid"),
    "gelu": (L.GELU, "Erf"),
    "softmax": (L.Softmax, "Softmax"),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_after_dense(name, tmp_path):
    make, expected_op = ACTIVATIONS[name]
    model = sequential((6,), L.Dense(9), make(), L.Dense(4))
    proto = export_and_compare(model, tmp_path)
    assert expected_op in op_types(proto)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_on_images(name, tmp_path):
    make, _ = ACTIVATIONS[name]
    export_and_compare(sequential((3, 5, 4), L.Conv2D(4, 3, padding=1), make()), tmp_path)


def test_softmax_over_channels(tmp_path):
    export_and_compare(sequential((3, 4, 4), L.Softmax(axis=1)), tmp_path)


def test_dense_layout_and_names(tmp_path):
    model = sequential((5,), L.Dense(7, name="hidden"), L.Dense(3, use_bias=False, name="head"))
    proto = export_and_compare(model, tmp_path)
    assert op_types(proto) == ["Gemm", "Gemm"]
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert set(initializers) == {"hidden.weight", "hidden.bias", "head.weight"}
    weights = model.get_weights()
    for name, value in initializers.items():
        np.testing.assert_array_equal(value, weights[name])
    # The weights keep nn.Linear's (out, in) layout; Gemm transposes them.
    assert initializers["hidden.weight"].shape == (7, 5)
    for node in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["transB"] == 1
    assert [n.name for n in proto.graph.node] == ["hidden", "head"]


@pytest.mark.parametrize(
    "conv",
    [
        {"out_channels": 6, "kernel_size": 3},
        {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1},
        {"out_channels": 6, "kernel_size": (3, 5), "padding": "same"},
        {"out_channels": 6, "kernel_size": 3, "padding": "valid"},
        {"out_channels": 6, "kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 2)},
        {"out_channels": 6, "kernel_size": 3, "dilation": 2, "padding": "same"},
        {"out_channels": 6, "kernel_size": 3, "dilation": (2, 1), "padding": (0, 1)},
        {"out_channels": 6, "kernel_size": 3, "groups": 2, "padding": 1},
        {"out_channels": 4, "kernel_size": 3, "groups": 4, "padding": 1, "use_bias": False},
        {"out_channels": 6, "kernel_size": 1, "use_bias": False},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items() if k != "out_channels"),
)
def test_conv2d(conv, tmp_path):
    proto = export_and_compare(sequential((4, 9, 10), L.Conv2D(**conv)), tmp_path)
    assert op_types(proto) == ["Conv"]


@pytest.mark.parametrize(
    "pool",
    [
        lambda: L.MaxPool2D(2),
        lambda: L.MaxPool2D(3, stride=2, padding=1),
        lambda: L.MaxPool2D((2, 3), stride=(1, 2), padding=(1, 1)),
        lambda: L.AvgPool2D(2),
        # Padded windows: zeros count in the mean (count_include_pad).
        lambda: L.AvgPool2D(3, stride=2, padding=1),
        lambda: L.AvgPool2D((2, 3), stride=1, padding=(1, 0)),
        L.GlobalAvgPool2D,
    ],
    ids=["max2", "max3s2p1", "max_rect", "avg2", "avg3s2p1", "avg_rect", "global_avg"],
)
def test_pooling(pool, tmp_path):
    # Negative inputs make max pooling's -inf padding and average's zero padding matter.
    export_and_compare(sequential((3, 7, 8), pool()), tmp_path)


def test_flatten_and_dropout(tmp_path):
    model = sequential((2, 4, 3), L.Flatten(), L.Dropout(0.5), L.Dense(5), L.Flatten())
    proto = export_and_compare(model, tmp_path)
    assert op_types(proto) == ["Flatten", "Identity", "Gemm", "Identity"]


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_1d_after_dense(affine, tmp_path):
    model = sequential((6,), L.Dense(8), L.BatchNorm(eps=1e-3, momentum=0.2, affine=affine))
    proto = export_and_compare(model, tmp_path)
    (bn,) = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in bn.attribute}
    assert attrs["epsilon"] == pytest.approx(1e-3)
    assert attrs["momentum"] == pytest.approx(0.8)
    assert "dense_0.running_mean" not in bn.input
    assert bn.input[3:] == ["batch_norm_0.running_mean", "batch_norm_0.running_var"]


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_2d(affine, tmp_path):
    model = sequential((3, 5, 5), L.Conv2D(4, 3), L.BatchNorm(affine=affine), L.ReLU())
    export_and_compare(model, tmp_path)


def test_merges(tmp_path):
    x = gm.Input((3, 4, 4), name="image")
    a = L.Conv2D(4, 3, padding=1)(x)
    b = L.Conv2D(4, 1)(x)
    c = L.Conv2D(4, 3, padding="same", use_bias=False)(x)
    summed = L.Add()([a, b, c])
    product = L.Multiply()([a, L.Sigmoid()(b)])
    channels = L.Concatenate(axis=1)([summed, product, x])
    flat = L.Flatten()(channels)
    features = L.Concatenate()([L.Dense(3)(flat), L.Dense(2)(flat)])
    model = gm.Model(x, features)
    randomize(model)
    proto = export_and_compare(model, tmp_path)
    assert proto.graph.input[0].name == "image"
    assert op_types(proto).count("Add") == 2
    assert op_types(proto).count("Concat") == 2


def test_shared_layer_exports_its_weights_once(tmp_path):
    x = gm.Input((5,))
    shared = L.Dense(5, name="shared")
    model = gm.Model(x, shared(L.Tanh()(shared(x))))
    randomize(model)
    proto = export_and_compare(model, tmp_path)
    assert [t.name for t in proto.graph.initializer] == ["shared.weight", "shared.bias"]
    names = [n.name for n in proto.graph.node]
    assert len(set(names)) == len(names) == 3


def test_graph_interface(tmp_path):
    model = sequential((3, 6, 6), L.Conv2D(2, 3), L.Flatten(), L.Dense(4))
    proto = export_and_compare(model, tmp_path, opset=15)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == "input" and graph_output.name == "output"
    in_dims = graph_input.type.tensor_type.shape.dim
    out_dims = graph_output.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in in_dims] == ["batch", 3, 6, 6]
    assert [d.dim_param or d.dim_value for d in out_dims] == ["batch", 4]
    assert proto.producer_name == "gometal"
    assert proto.producer_version == gm.__version__
    assert "Model(" in proto.doc_string
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 15)]
    assert {t.name for t in proto.graph.initializer} == set(model.weight_shapes)


def test_definition_in_metadata_rebuilds_the_model(tmp_path):
    model = sequential((3, 6, 6), L.Conv2D(4, 3), L.Dropout(0.25, name="drop"), L.Flatten())
    proto = export_and_compare(model, tmp_path)
    props = {p.key: p.value for p in proto.metadata_props}
    rebuilt = gm.serialization.model_from_config(json.loads(props["gometal.model_config"]))
    rebuilt.set_weights(model.get_weights())
    assert [layer.get_config() for layer in rebuilt.layers] == [
        layer.get_config() for layer in model.layers
    ]
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "model.onnx", x), rebuilt.predict(x), atol=1e-5)


def test_input_only_model_and_name_clash(tmp_path):
    x = gm.Input((3,), name="output")
    proto = export_and_compare(gm.Model(x, x), tmp_path)
    assert proto.graph.input[0].name == "output"
    assert proto.graph.output[0].name == "output_1"
    assert op_types(proto) == ["Identity"]


# -- several opsets, whole networks, trained weights ----------------------------------------
def every_layer_model() -> gm.Model:
    x = gm.Input((3, 8, 8))
    h = L.Conv2D(6, 3, padding="same", dilation=1)(x)
    h = L.BatchNorm()(h)
    h = L.GELU()(h)
    h = L.MaxPool2D(2, padding=1)(h)
    h = L.Conv2D(6, 3, stride=(2, 1), padding=(1, 0), groups=3, use_bias=False)(h)
    h = L.Swish()(h)
    branch = L.AvgPool2D(3, stride=1, padding=1)(h)
    h = L.Add()([h, L.ELU()(branch)])
    pooled = L.GlobalAvgPool2D()(h)
    flat = L.Flatten()(h)
    h = L.Concatenate()([pooled, L.Dense(6)(flat)])
    h = L.Multiply()([h, L.Sigmoid()(h)])
    h = L.Dense(10)(L.Dropout(0.3)(h))
    h = L.BatchNorm()(h)
    h = L.LeakyReLU(0.1)(h)
    h = L.Tanh()(L.ReLU()(h))
    return gm.Model(x, L.Softmax()(L.Dense(4)(h)))


@pytest.mark.parametrize("opset", [13, 14, 17, 18, 20, 21, 23])
def test_every_layer_at_opset(opset, tmp_path):
    model = every_layer_model()
    randomize(model, seed=opset)
    proto = export_and_compare(model, tmp_path, opset=opset)
    assert ("Gelu" in op_types(proto)) == (opset >= 20)


def test_cats_vs_dogs_cnn(tmp_path):
    model = build_cnn((3, 64, 64), 2)
    randomize(model)
    # Keep activations in a moderate range so float32 rounding stays far below 1e-4.
    scaled = {
        name: value * 0.3
        for name, value in model.get_weights().items()
        if name.endswith("weight") and "batch_norm" not in name
    }
    model.set_weights(scaled)
    export_and_compare(model, tmp_path)


def residual_network() -> gm.Model:
    x = gm.Input((4, 8, 8))
    stem = L.ReLU()(L.BatchNorm()(L.Conv2D(8, 3, padding=1)(x)))
    h = L.ReLU()(L.BatchNorm()(L.Conv2D(8, 3, padding=1)(stem)))
    h = L.BatchNorm()(L.Conv2D(8, 3, padding=1)(h))
    h = L.ReLU()(h + stem)
    return gm.Model(x, L.Dense(3)(L.GlobalAvgPool2D()(h)))


def test_residual_network(tmp_path):
    model = residual_network()
    randomize(model)
    export_and_compare(model, tmp_path)


def test_trained_model_exports_engine_weights(tmp_path):
    model = residual_network()
    initial = model.get_weights()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2))
    rng = np.random.default_rng(3)
    for _ in range(4):
        x = rng.standard_normal((16, 4, 8, 8)).astype(np.float32)
        trainer.train_batch(x, rng.integers(0, 3, 16).astype(np.int32))
    proto = export_and_compare(model, tmp_path, predict=trainer.predict)
    exported = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    trained = model.get_weights()
    for name in ("batch_norm_0.running_mean", "batch_norm_2.running_var", "dense_0.weight"):
        np.testing.assert_array_equal(exported[name], trained[name])
        assert not np.allclose(exported[name], initial[name])


def test_export_function_replaces_existing_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    model = sequential((4,), L.Dense(2))
    gm.onnx.export(model, str(path))
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [12, 24, 0, -17])
def test_opset_out_of_range(opset, tmp_path):
    model = sequential((4,), L.Dense(2))
    with pytest.raises(ValueError, match=rf"opset must be between 13 and 23.*got {opset}"):
        model.export_onnx(tmp_path / "m.onnx", opset=opset)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opset", ["17", 17.0, True, None])
def test_opset_wrong_type(opset, tmp_path):
    model = sequential((4,), L.Dense(2))
    with pytest.raises(TypeError, match="opset must be an int"):
        model.export_onnx(tmp_path / "m.onnx", opset=opset)


class Scale(L.Layer):
    kind = "scale"

    def emit(self, ctx, inputs):
        return ctx.graph.op("mul", [inputs[0], ctx.graph.constant(2.0)], {})


class ClippedReLU(L.ReLU):
    pass


@pytest.mark.parametrize("layer_class", [Scale, ClippedReLU])
def test_layer_without_rule(layer_class, tmp_path):
    model = sequential((4,), L.Dense(3), layer_class(name="odd"))
    pattern = rf"layer 'odd' of type {layer_class.__name__} has no ONNX export rule"
    with pytest.raises(NotImplementedError, match=pattern):
        model.export_onnx(tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_unwritable_paths(tmp_path):
    model = sequential((4,), L.Dense(2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.export_onnx(tmp_path / "missing" / "m.onnx")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        model.export_onnx(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        model.export_onnx(3)
    assert os.listdir(tmp_path) == []


def test_not_a_model(tmp_path):
    with pytest.raises(TypeError, match="model must be a gm.Model, got Dense"):
        gm.onnx.export(L.Dense(2), tmp_path / "m.onnx")
