"""ONNX import: PyTorch-exported models against torch and onnxruntime, fine-tuning,
round trips, and malformed or hostile files.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import gometal as gm
from gometal import layers as L
from gometal.io.onnx import _safety
from gometal.io.onnx.importer import OnnxImportError, load
from onnx_runtime import run_ort

TOLERANCE = 1e-4


# -- PyTorch models ----------------------------------------------------------------------
class CatsDogsCNN(nn.Module):
    """Three conv 3x3 / batch norm / ReLU / max-pool blocks and a dense head."""

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 3
        for width in (8, 16, 16):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width)]
            blocks += [nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(ResidualBlock(8), ResidualBlock(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 4),
        nn.LogSoftmax(dim=1),
    )  # fmt: skip


def _randomize_statistics(module: nn.Module) -> None:
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.running_mean.uniform_(-0.5, 0.5)
            child.running_var.uniform_(0.5, 2.0)
            child.weight.data.uniform_(0.5, 1.5)
            child.bias.data.uniform_(-0.5, 0.5)


def export_torch(module: nn.Module, x: torch.Tensor, path: Path, fold: bool = True) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), os.fspath(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"], do_constant_folding=fold,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )  # fmt: skip
    return path


TORCH_MODELS = {
    "mlp": (_mlp, (20,)),
    "cats_dogs_cnn": (CatsDogsCNN, (3, 32, 32)),
    "small_resnet": (SmallResNet, (3, 16, 16)),
}


@pytest.mark.parametrize("fold", [True, False], ids=["folded_bn", "batch_norm_nodes"])
@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_torch_export_matches_torch_and_onnxruntime(name: str, fold: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    factory, sample = TORCH_MODELS[name]
    module = factory()
    _randomize_statistics(module)
    path = export_torch(module, torch.randn(2, *sample), tmp_path / "m.onnx", fold)
    model = load(path)
    ops = {n.op_type for n in onnx.load(os.fspath(path)).graph.node}
    if not fold and name != "mlp":
        assert "BatchNormalization" in ops
        assert any(isinstance(layer, L.BatchNorm) for layer in model.layers)
    rng = np.random.default_rng(1)
    for batch in (1, 5):  # the batch dimension is dynamic
        x = rng.standard_normal((batch, *sample)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        actual = model.predict(x)
        np.testing.assert_allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(actual, run_ort(path, x), rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("name", ["cats_dogs_cnn", "small_resnet"])
def test_imported_model_fine_tunes(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    factory, sample = TORCH_MODELS[name]
    module = factory()
    path = export_torch(module, torch.randn(2, *sample), tmp_path / "m.onnx", fold=False)
    model = load(path)
    assert model.count_params() == sum(p.numel() for p in module.parameters())
    before = model.get_weights()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, *sample)).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], size=16).astype(np.int32)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2), batch_size=16
    )
    losses = [trainer.train_batch(x, y).loss for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]
    after = model.get_weights()
    for weight in model.trainable_weight_names:
        assert not np.array_equal(before[weight], after[weight]), weight


def test_trainable_and_frozen_weights(tmp_path: Path) -> None:
    module = CatsDogsCNN()
    path = export_torch(module, torch.randn(2, 3, 32, 32), tmp_path / "m.onnx", fold=False)
    model = load(path)
    frozen = set(model.weight_shapes) - set(model.trainable_weight_names)
    assert frozen and all(n.endswith(("running_mean", "running_var")) for n in frozen)
    torch_names = {k for k, _ in module.named_parameters()}
    assert len(model.trainable_weight_names) == len(torch_names)


# -- round trip --------------------------------------------------------------------------
def _randomize(model: gm.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights(
        {
            name: rng.uniform(0.5, 2.0, shape) if name.endswith("running_var")
            else 0.5 * rng.standard_normal(shape)
            for name, shape in model.weight_shapes.items()
        }
    )  # fmt: skip


def _gometal_models() -> dict[str, gm.Model]:
    x = gm.Input((3, 12, 12))
    h = L.Conv2D(6, 3, padding=1)(x)
    h = L.BatchNorm()(h)
    h = L.ReLU()(h)
    h = L.MaxPool2D(2)(h)
    skip = L.AvgPool2D(3, stride=1, padding=1)(h)
    h = L.Add()([h, skip])
    h = L.Concatenate(axis=1)([h, L.ELU()(h)])
    h = L.Flatten()(h)
    h = L.Dense(16)(h)
    h = L.LeakyReLU(0.2)(h)
    h = L.Dropout(0.3)(h)
    cnn = gm.Model(x, L.Softmax()(L.Dense(5)(h)))
    v = gm.Input((10,))
    g = L.Dense(8)(v)
    mlp = gm.Model(v, L.Sigmoid()(L.Dense(2)(L.Tanh()(L.GELU()(g)))))
    return {"cnn": cnn, "mlp": mlp}


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_round_trip_gives_identical_predictions(name: str, tmp_path: Path) -> None:
    from gometal.io.onnx.export import export

    model = _gometal_models()[name]
    _randomize(model)
    export(model, tmp_path / "m.onnx")
    clone = load(tmp_path / "m.onnx")
    x = np.random.default_rng(3).standard_normal((7, *model.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))


def test_imported_custom_layers_survive_save_and_load(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["x", "c"], ["s"], name="centre"),
            helper.make_node("Div", ["s", "c"], ["d"], name="scale"),
            helper.make_node("Clip", ["d", "lo", ""], ["k"], name="clip"),
            helper.make_node("MatMul", ["k", "w"], ["m"], name="proj"),
            helper.make_node("LogSoftmax", ["m"], ["y"], name="logp", axis=-1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(np.array([1.0, 2.0, 3.0, 4.0], np.float32), "c"),
            numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
            numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w"),
        ],
    )
    path = _save(graph, tmp_path / "custom.onnx")
    model = load(path)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    expected = run_ort(path, x)
    np.testing.assert_allclose(model.predict(x), expected, rtol=TOLERANCE, atol=TOLERANCE)
    assert model.trainable_weight_names == ["proj.weight"]
    model.save(tmp_path / "model.safetensors")
    restored = gm.load_model(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))


# -- errors: unsupported operators, malformed and hostile files --------------------------
def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path.write_bytes(model.SerializeToString())
    return path


def _linear_graph(weight: TensorProto, sample: list[object] | None = None) -> onnx.GraphProto:
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", weight.name], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, sample or ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [weight],
    )


def test_unsupported_operators_are_listed_at_once(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Sin", ["x"], ["a"], name="wave"),
            helper.make_node("Relu", ["a"], ["b"], name="ok"),
            helper.make_node("Cos", ["b"], ["c"], name="other_wave"),
            helper.make_node("Sin", ["c"], ["y"], name="wave2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    with pytest.raises(OnnxImportError) as info:
        load(_save(graph, tmp_path / "m.onnx"))
    message = str(info.value)
    for fragment in ("Sin", "Cos", "'wave'", "'other_wave'", "'wave2'"):
        assert fragment in message
    assert "'ok'" not in message


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_a_clear_error(fraction: float, tmp_path: Path) -> None:
    path = export_torch(CatsDogsCNN(), torch.randn(2, 3, 32, 32), tmp_path / "full.onnx")
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(OnnxImportError):
        load(cut)


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    for name in ("empty.onnx", "junk.onnx", "missing.onnx"):
        with pytest.raises(OnnxImportError):
            load(tmp_path / name)


def _external_weight(location: str) -> TensorProto:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    (tmp_path / "weights.bin").write_bytes(weight.tobytes())
    model = load(_save(_linear_graph(_external_weight("weights.bin")), tmp_path / "m.onnx"))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(model.predict(x), x @ weight)


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused_unread(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(12, np.float32).tobytes())  # would load if it were read
    if kind == "parent":
        location = "../secret.bin"
    elif kind == "absolute":
        location = os.fspath(secret)
    else:
        (folder / "link.bin").symlink_to(secret)
        location = "link.bin"
    opened: list[str] = []
    real_open = open

    def recording_open(file: object, *args: object, **kwargs: object) -> object:
        opened.append(os.path.realpath(os.fspath(file)))  # type: ignore[arg-type]
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(_safety, "open", recording_open, raising=False)
    path = _save(_linear_graph(_external_weight(location)), folder / "m.onnx")
    with pytest.raises(OnnxImportError, match="outside|absolute"):
        load(path)
    assert os.path.realpath(secret) not in opened


def test_absurd_declared_sizes_are_refused_before_allocation(tmp_path: Path) -> None:
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20, 3])
    with pytest.raises(OnnxImportError, match="bytes allowed"):
        load(_save(_linear_graph(huge), tmp_path / "huge.onnx"))
    short = numpy_helper.from_array(np.zeros((4, 3), np.float32), "w")
    short.raw_data = short.raw_data[:20]
    with pytest.raises(OnnxImportError, match="holds 20 bytes"):
        load(_save(_linear_graph(short), tmp_path / "short.onnx"))
    weight = numpy_helper.from_array(np.zeros((4, 3), np.float32), "w")
    with pytest.raises(OnnxImportError, match="bytes allowed"):
        load(_save(_linear_graph(weight, ["n", 1 << 40]), tmp_path / "input.onnx"))


def test_inconsistent_shapes_are_clear_errors(tmp_path: Path) -> None:
    wrong = numpy_helper.from_array(np.zeros((5, 3), np.float32), "w")
    with pytest.raises(OnnxImportError, match="'fc'"):
        load(_save(_linear_graph(wrong), tmp_path / "inner.onnx"))
    gemm = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="dense", transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.zeros((3, 5), np.float32), "w")],
    )
    with pytest.raises(OnnxImportError, match=r"Gemm node 'dense'.*\(3, 4\)"):
        load(_save(gemm, tmp_path / "gemm.onnx"))
    graph = _linear_graph(numpy_helper.from_array(np.zeros((4, 3), np.float32), "w"))
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7
    with pytest.raises(OnnxImportError, match="declared with size 7"):
        load(_save(graph, tmp_path / "declared.onnx"))
    reshape = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.array([-1, 3], np.int64), "s")],
    )
    with pytest.raises(OnnxImportError, match="Reshape node 'r'"):
        load(_save(reshape, tmp_path / "reshape.onnx"))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="dynamic_batch"):
        load("m.onnx", dynamic_batch="yes")  # type: ignore[arg-type]


def _shape_ops_graph(batch: object) -> onnx.GraphProto:
    """Constant nodes, Identity, Reshape keeping the batch, Transpose, Concat, Softmax."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 3, -1])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [1, 3], [0.1, -0.2, 0.3])
    return helper.make_graph(
        [
            helper.make_node("Constant", [], ["s"], name="shape_const", value=shape),
            helper.make_node("Constant", [], ["b"], name="bias_const", value=bias),
            helper.make_node("Identity", ["x"], ["xi"], name="alias"),
            helper.make_node("Reshape", ["xi", "s"], ["r"], name="split"),
            helper.make_node("Transpose", ["r"], ["t"], name="swap", perm=[0, 2, 1]),
            helper.make_node("Add", ["t", "b"], ["a"], name="shift"),
            helper.make_node("Concat", ["a", "t"], ["c"], name="join", axis=1),
            helper.make_node("Softmax", ["c"], ["y"], name="norm", axis=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, 3])],
    )


def test_shape_operators_with_a_dynamic_batch(tmp_path: Path) -> None:
    path = _save(_shape_ops_graph("n"), tmp_path / "m.onnx")
    model = load(path)
    for batch in (1, 6):
        x = np.random.default_rng(batch).standard_normal((batch, 12)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=TOLERANCE, atol=1e-6)


def test_fixed_batch_files_and_the_dynamic_batch_option(tmp_path: Path) -> None:
    fixed = _save(_shape_ops_graph(2), tmp_path / "fixed.onnx")
    x = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    expected = run_ort(fixed, x)
    x5 = np.concatenate([x, x, x[:1]])
    # The size the file fixes is read as the batch, so other batch sizes work too.
    for flexible in (load(fixed), load(fixed, dynamic_batch=True)):
        np.testing.assert_allclose(flexible.predict(x5)[:2], expected, rtol=TOLERANCE, atol=1e-6)
    kept = load(fixed, dynamic_batch=False)
    np.testing.assert_allclose(kept.predict(x), expected, rtol=TOLERANCE, atol=1e-6)
    with pytest.raises(ValueError, match=r"expects shape \(2, 12\)"):
        kept.predict(x5)
    symbolic = _save(_shape_ops_graph("n"), tmp_path / "symbolic.onnx")
    with pytest.raises(OnnxImportError, match="dynamic_batch=False"):
        load(symbolic, dynamic_batch=False)


def test_operations_across_the_dynamic_batch_are_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], name="flip", perm=[1, 0])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "n"])],
    )
    with pytest.raises(OnnxImportError, match="Transpose node 'flip'.*batch"):
        load(_save(graph, tmp_path / "m.onnx"))


def test_asymmetric_padding_and_ceil_mode_with_a_dynamic_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[0, 1, 1, 0]),
            helper.make_node(
                "MaxPool", ["c"], ["m"], name="max", kernel_shape=[2, 2], auto_pad="SAME_UPPER"
            ),
            helper.make_node(
                "AveragePool",
                ["m"],
                ["a"],
                name="avg",
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                ceil_mode=1,
            ),
            helper.make_node("Flatten", ["a"], ["y"], name="flat"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", None])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = _save(graph, tmp_path / "m.onnx")
    model = load(path)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 2, 7, 6)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), run_ort(path, x), rtol=TOLERANCE, atol=1e-5)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1), batch_size=3)
    before = model.get_weights()["conv.weight"]
    target = np.zeros((3, *model.output_shape), np.float32)
    step = trainer.train_batch(rng.standard_normal((3, 2, 7, 6)).astype(np.float32), target)
    assert np.isfinite(step.loss)
    assert not np.array_equal(before, model.get_weights()["conv.weight"])
