"""ONNX export of the layers Keras and torch users reach for, run by onnxruntime at the
opsets where their export differs (LayerNormalization from 17, HardSwish from 14, Mish
and ReduceMean's axes input from 18), and read back by the importer."""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from gometal import layers as L
from test_onnx_export import export_and_compare, op_types, randomize, sequential

OPSETS = (13, 17, 18, 21)

MODELS = {
    "dense_rank3_activations": lambda: sequential(
        (5, 6), L.Dense(7, activation="gelu"), L.Dense(4, use_bias=False, activation="softmax")
    ),
    "conv_activation": lambda: sequential(
        (3, 6, 6), L.Conv2D(4, 3, padding=1, activation="silu"), L.Conv2D(2, 3, activation="tanh")
    ),
    "norms": lambda: sequential(
        (4, 5, 5),
        L.GroupNorm(2, 4),
        L.InstanceNorm2D(4),
        L.InstanceNorm2D(4, affine=True),
        L.GroupNorm(4, 4, affine=False),
        L.LayerNorm((5, 5)),
        L.LayerNorm(5, elementwise_affine=False),
        L.LayerNorm(5, bias=False),
    ),
    "activations": lambda: sequential(
        (3, 4, 4), L.PReLU(3), L.Hardswish(), L.PReLU(), L.Mish(), L.SiLU()
    ),
    "prelu_features": lambda: sequential((6,), L.PReLU(6), L.Dense(3)),
    "shapes": lambda: sequential(
        (2, 3, 4, 5),
        L.Flatten(2, 3),
        L.Permute((3, 1, 2)),
        L.Reshape((5, -1)),
        L.Flatten(1, -2),
        L.Flatten(),
    ),
    "lambda": lambda: sequential(
        (3, 4),
        L.Lambda(
            lambda x: (
                gm.ops.softmax(
                    gm.ops.sqrt(gm.ops.square(x) + 1.0) - gm.ops.mean(x, axis=-1, keepdims=True)
                )
                * gm.ops.max(x, axis=(1, 2), keepdims=True)
                + gm.ops.sum(gm.ops.abs(x), axis=1, keepdims=True) / 2.0
                - 1.0 / (gm.ops.exp(-x) + 1.0)
            )
        ),
        L.Lambda(lambda x: gm.ops.reshape(gm.ops.transpose(x, (0, 2, 1)), (-1, 12))),
        L.Lambda(lambda x: gm.ops.clip(gm.ops.relu(x) ** 2.0, 0.0, 3.0) + gm.ops.maximum(x, 0.5)),
    ),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exports_run_in_onnxruntime(name, opset, tmp_path):
    model = MODELS[name]()
    randomize(model, seed=opset)
    export_and_compare(model, tmp_path, opset=opset)


@pytest.mark.parametrize(
    ("opset", "expected", "absent"),
    [
        (13, {"ReduceMean", "HardSigmoid", "Softplus"}, {"LayerNormalization", "Mish"}),
        (18, {"LayerNormalization", "HardSwish", "Mish"}, {"HardSigmoid", "Softplus"}),
    ],
)
def test_the_operators_follow_the_opset(opset, expected, absent, tmp_path):
    model = sequential((4,), L.LayerNorm(4), L.Hardswish(), L.Mish())
    randomize(model)
    types = set(op_types(export_and_compare(model, tmp_path, opset=opset)))
    assert expected <= types
    assert not absent & types


@pytest.mark.parametrize(
    "name", ["norms", "activations", "prelu_features", "dense_rank3_activations"]
)
def test_exported_files_import_back_with_the_same_predictions(name, tmp_path):
    model = MODELS[name]()
    randomize(model, seed=5)
    path = tmp_path / "model.onnx"
    model.export_onnx(path, opset=18)
    imported = gm.onnx.load(path)
    x = np.random.default_rng(1).standard_normal((3, *model.input_shape)).astype(np.float32)
    np.testing.assert_allclose(imported.predict(x), model.predict(x), rtol=1e-5, atol=1e-5)
