"""Import of ``torch.onnx.export``ed ``nn.TransformerEncoder`` models (a Linear in front, a
Linear head), from both of torch's exporters (dynamo and TorchScript), post-norm with ReLU
and pre-norm with GELU, with and without a causal mask, with a run-time sequence length
and a fixed one.

References: torch's own forward pass and onnxruntime on the exported file (outputs within
1e-4); torch's training steps from the same weights (losses within 1e-4 relative), so the
imported weights train as torch's parameters do.
"""

from __future__ import annotations

import contextlib
import io
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
from gometal.io.onnx import OnnxImportError, load
from onnx_runtime import run_ort

TOLERANCE = 1e-4
FEATURES, WIDTH, HEADS, FFN, CLASSES = 8, 32, 4, 64, 3
EXPORT_BATCH, EXPORT_LENGTH = 2, 5
VOCAB = 20


class EncoderModel(nn.Module):
    """A Linear in front of a 2-layer ``nn.TransformerEncoder`` and a Linear head."""

    def __init__(self, norm_first: bool, activation: str, causal: bool, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.causal = causal
        self.inp = nn.Linear(FEATURES, WIDTH)
        layer = nn.TransformerEncoderLayer(
            WIDTH, HEADS, FFN, 0.0, activation, batch_first=True, norm_first=norm_first
        )
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, CLASSES)
        with torch.no_grad():
            # As a trained model's: no two parameters equal (the exporters share equal
            # initializers, such as the norms' initial ones).
            for param in self.parameters():
                param.add_(0.2 * torch.randn_like(param))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.inp(x)
        mask = None
        if self.causal:
            length = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(length, dtype=hidden.dtype)
        return self.head(self.enc(hidden, mask=mask, is_causal=self.causal))


class TokenEncoder(EncoderModel):
    """An Embedding of token ids in front of the encoder instead of the Linear."""

    def __init__(self, norm_first: bool, activation: str, causal: bool, seed: int = 0):
        super().__init__(norm_first, activation, causal, seed)
        self.inp = nn.Embedding(VOCAB, WIDTH)


def export(module: nn.Module, path: Path, dynamo: bool, axes: str) -> Path:
    """Exports ``module``; ``axes``: "seq" (batch and sequence dynamic), "batch" or "none"."""
    module.eval()
    example = torch.randn(EXPORT_BATCH, EXPORT_LENGTH, FEATURES)
    if isinstance(module, TokenEncoder):
        example = torch.randint(0, VOCAB, (EXPORT_BATCH, EXPORT_LENGTH))
    names = {"input_names": ["x"], "output_names": ["y"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {"none": None, "batch": {0: torch.export.Dim("batch")}}.get(axes)
            if axes == "seq":
                dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
            shapes = None if dims is None else (dims,)
            torch.onnx.export(
                module, (example,), os.fspath(path), dynamo=True, dynamic_shapes=shapes, **names
            )
        else:
            dynamic = {"none": None, "batch": {0: "batch"}, "seq": {0: "batch", 1: "seq"}}[axes]
            torch.onnx.export(
                module, (example,), os.fspath(path), dynamo=False, opset_version=17,
                dynamic_axes=None if dynamic is None else {"x": dynamic, "y": dynamic}, **names,
            )  # fmt: skip
    return path


def _torch_predict(module: nn.Module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _inputs(batch: int, length: int, seed: int = 0, tokens: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if tokens:
        return rng.integers(0, VOCAB, (batch, length))  # int64, as torch's ids
    return rng.standard_normal((batch, length, FEATURES)).astype(np.float32)


# (norm_first, activation) where the exporter and the axes also vary; the run-time length
# test crosses all four.
VARIANTS = [(False, "relu"), (True, "gelu")]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("causal", [False, True])
def test_dynamo_export_with_a_run_time_sequence_length(
    norm_first: bool, activation: str, causal: bool, tmp_path: Path
) -> None:
    module = EncoderModel(norm_first, activation, causal)
    path = export(module, tmp_path / "m.onnx", dynamo=True, axes="seq")
    model = load(path)
    for batch, length in ((2, 5), (3, 9)):
        x = _inputs(batch, length, seed=length)
        got = model.predict(x)
        np.testing.assert_allclose(got, _torch_predict(module, x), rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(got, run_ort(path, x), rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize(("norm_first", "activation"), VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_export_with_a_fixed_sequence_length(
    dynamo: bool, norm_first: bool, activation: str, causal: bool, tmp_path: Path
) -> None:
    module = EncoderModel(norm_first, activation, causal)
    path = export(module, tmp_path / "m.onnx", dynamo=dynamo, axes="batch")
    model = load(path)
    for batch in (1, 3):
        x = _inputs(batch, EXPORT_LENGTH, seed=batch)
        got = model.predict(x)
        np.testing.assert_allclose(got, _torch_predict(module, x), rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(got, run_ort(path, x), rtol=TOLERANCE, atol=TOLERANCE)


def test_a_fully_fixed_export_loads_with_its_batch(tmp_path: Path) -> None:
    module = EncoderModel(False, "relu", True)
    path = export(module, tmp_path / "m.onnx", dynamo=False, axes="none")
    with pytest.raises(OnnxImportError, match="fixed batch size of 2.*dynamic_batch=False"):
        load(path)
    model = load(path, dynamic_batch=False)
    x = _inputs(EXPORT_BATCH, EXPORT_LENGTH)
    np.testing.assert_allclose(
        model.predict(x), _torch_predict(module, x), rtol=TOLERANCE, atol=TOLERANCE
    )


def test_torchscript_export_that_fixes_the_length_is_refused(tmp_path: Path) -> None:
    # The TorchScript exporter writes the example's length into the heads' Reshape, so
    # the file runs only at that length (onnxruntime fails at any other): refused at load.
    module = EncoderModel(False, "relu", False)
    path = export(module, tmp_path / "m.onnx", dynamo=False, axes="seq")
    with pytest.raises(
        OnnxImportError, match=r"Reshape node .*\[seq, batch, 32\] to \[5, .*dynamo=True"
    ):
        load(path)


def _train(model: gm.Model, module: nn.Module, optimizer: str, length: int) -> None:
    """A few steps in gometal and in torch on the same batch: the same losses."""
    x = _inputs(4, length, seed=5, tokens=isinstance(module, TokenEncoder))
    y = np.random.default_rng(6).standard_normal((4, length, CLASSES)).astype(np.float32)
    if optimizer == "adam":
        ours: object = gm.optim.Adam(lr=1e-2)
        theirs: torch.optim.Optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    else:
        ours, theirs = gm.optim.SGD(lr=0.1), torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = gm.Trainer(model, loss="mse", optimizer=ours)
    module.train()
    for _ in range(4):
        got = trainer.train_batch(x, y).loss
        theirs.zero_grad()
        loss = nn.functional.mse_loss(module(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        theirs.step()
        np.testing.assert_allclose(got, loss.item(), rtol=1e-4)


@pytest.mark.parametrize(
    ("dynamo", "axes", "optimizer"),
    [(True, "seq", "adam"), (False, "batch", "sgd")],
    ids=["dynamo-adam", "torchscript-sgd"],
)
def test_fine_tuning_matches_torch(dynamo: bool, axes: str, optimizer: str, tmp_path: Path) -> None:
    module = EncoderModel(True, "gelu", True)
    model = load(export(EncoderModel(True, "gelu", True), tmp_path / "m.onnx", dynamo, axes))
    # Every torch parameter is a trainable weight of the import (the biases included).
    trainable = sum(int(np.prod(model.weight_shapes[n])) for n in model.trainable_weight_names)
    assert trainable == sum(p.numel() for p in module.parameters())
    _train(model, module, optimizer, length=7 if axes == "seq" else EXPORT_LENGTH)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_token_ids_through_an_embedding(dynamo: bool, tmp_path: Path) -> None:
    module = TokenEncoder(True, "gelu", True)
    axes = "seq" if dynamo else "batch"
    path = export(TokenEncoder(True, "gelu", True), tmp_path / "m.onnx", dynamo, axes)
    model = load(path)
    lengths = (5, 8) if dynamo else (EXPORT_LENGTH,)
    for length in lengths:
        ids = _inputs(3, length, seed=length, tokens=True)
        got = model.predict(ids)
        np.testing.assert_allclose(got, _torch_predict(module, ids), rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_allclose(got, run_ort(path, ids), rtol=TOLERANCE, atol=TOLERANCE)
    _train(model, module, "adam", length=lengths[-1])


class HandWrittenAttention(nn.Module):
    """Causal self-attention written out, as models outside torch.nn often do: q, k and v
    unbound from one projection, scores scaled, generate_square_subsequent_mask added."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.qkv, self.out = nn.Linear(FEATURES, 3 * WIDTH), nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / (WIDTH // HEADS) ** 0.5
        scores = scores + nn.Transformer.generate_square_subsequent_mask(t)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, WIDTH)
        return self.out(attended)


def test_hand_written_causal_attention_with_a_run_time_length(tmp_path: Path) -> None:
    module = HandWrittenAttention()
    model = load(export(HandWrittenAttention(), tmp_path / "m.onnx", True, "seq"))
    for batch, length in ((2, 5), (3, 9)):
        x = _inputs(batch, length, seed=length)
        np.testing.assert_allclose(
            model.predict(x), _torch_predict(module, x), rtol=TOLERANCE, atol=TOLERANCE
        )
    _train(model, module, "sgd", length=6)


def test_imported_encoder_survives_save_and_load(tmp_path: Path) -> None:
    model = load(export(EncoderModel(False, "relu", True), tmp_path / "m.onnx", True, "seq"))
    model.save(tmp_path / "model.safetensors")
    restored = gm.load_model(tmp_path / "model.safetensors")
    x = _inputs(2, 6)
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))


# -- errors ---------------------------------------------------------------------------------
class CumulativeEncoder(EncoderModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).cumsum(1)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_an_unsupported_node_is_named(dynamo: bool, tmp_path: Path) -> None:
    path = export(CumulativeEncoder(False, "relu", False), tmp_path / "m.onnx", dynamo, "batch")
    with pytest.raises(OnnxImportError, match=r"unsupported ONNX operator type\(s\) \['CumSum'\]"):
        load(path)


def test_token_ids_used_as_data_are_a_clear_error(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["y"], name="as_float", to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxImportError, match="Cast node 'as_float'.*'ids'.*token ids"):
        load(path)


def _int64(name: str, values: object) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _mask_graph(tmp_path: Path, use: str) -> Path:
    """A causal mask built from the run-time length of x (batch, seq, seq), then ``use``d."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=1),
        helper.make_node("Expand", ["one", "s"], ["ones"], name="ones"),
        helper.make_node("Trilu", ["ones"], ["lower"], name="lower", upper=0),
        helper.make_node("Equal", ["lower", "zero"], ["above"], name="above"),
        helper.make_node("Where", ["above", "hidden", "zero"], ["mask"], name="mask"),
        helper.make_node(use, ["x", "mask"], ["y"], name="use"),
    ]
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(-np.inf, np.float32), "hidden"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "seq", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "seq", "seq"])],
        inits,
    )  # fmt: skip
    path = tmp_path / f"{use}.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("use", ["Add", "Mul"])
def test_a_run_time_mask_outside_attention_is_a_clear_error(use: str, tmp_path: Path) -> None:
    # The same mask with a fixed length is a constant, which imports anywhere.
    with pytest.raises(OnnxImportError, match=f"{use} node 'use'.*'mask'.*run-time sequence"):
        load(_mask_graph(tmp_path, use))


def test_a_fixed_length_mask_is_a_constant(tmp_path: Path) -> None:
    path = _mask_graph(tmp_path, "Add")
    proto = onnx.load(path)
    for dim in (*proto.graph.input[0].type.tensor_type.shape.dim[1:],
                *proto.graph.output[0].type.tensor_type.shape.dim[1:]):  # fmt: skip
        dim.dim_value = 4
    path.write_bytes(proto.SerializeToString())
    x = _inputs(3, 4)[..., :4]
    np.testing.assert_allclose(load(path).predict(x), run_ort(path, x), rtol=TOLERANCE)
