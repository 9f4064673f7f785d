"""Import of ``torch.onnx.export``ed ``nn.TransformerEncoder`` models that take a
``src_key_padding_mask`` as a second model input (both exporters): outputs within 1e-5 of
torch's (and onnxruntime's) for masks with padding, and fine-tuning that tracks torch's
steps from the same weights.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import gometal as gm
from gometal.io.onnx import OnnxImportError, load

TOLERANCE = 1e-5
FEATURES, WIDTH, HEADS, FFN, CLASSES = 6, 32, 4, 64, 3
EXPORT_BATCH, EXPORT_LENGTH = 2, 5


class MaskedEncoder(nn.Module):
    """A Linear, a 2-layer ``nn.TransformerEncoder`` given a key-padding mask, a Linear."""

    def __init__(self, norm_first: bool, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(FEATURES, WIDTH)
        layer = nn.TransformerEncoderLayer(
            WIDTH, HEADS, FFN, 0.0, "gelu" if norm_first else "relu", batch_first=True,
            norm_first=norm_first,
        )  # fmt: skip
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, CLASSES)
        with torch.no_grad():
            for param in self.parameters():
                param.add_(0.2 * torch.randn_like(param))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x), src_key_padding_mask=padding))


class CausalMaskedEncoder(MaskedEncoder):
    """The same with a causal mask too (torch adds the two masks before the scores)."""

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype)
        hidden = self.enc(self.inp(x), mask=causal, src_key_padding_mask=padding, is_causal=True)
        return self.head(hidden)


def _padding(batch: int, length: int, seed: int) -> np.ndarray:
    """A boolean key-padding mask: row i pads its last few steps (row 0 none)."""
    pads = np.random.default_rng(seed).integers(0, length - 1, batch)
    pads[0] = 0
    return np.arange(length)[None, :] >= (length - pads)[:, None]


def export(module: nn.Module, path: Path, dynamo: bool) -> Path:
    """Exports with a dynamic batch (dynamo: and a run-time length) on both inputs."""
    module.eval()
    x = torch.randn(EXPORT_BATCH, EXPORT_LENGTH, FEATURES)
    padding = torch.from_numpy(_padding(EXPORT_BATCH, EXPORT_LENGTH, 0))
    names = {"input_names": ["x", "padding"], "output_names": ["y"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            shapes = ({0: batch, 1: seq}, {0: batch, 1: seq})
            torch.onnx.export(
                module, (x, padding), os.fspath(path), dynamo=True, dynamic_shapes=shapes,
                **names,
            )  # fmt: skip
        else:
            axes = {"x": {0: "batch"}, "padding": {0: "batch"}, "y": {0: "batch"}}
            torch.onnx.export(
                module, (x, padding), os.fspath(path), dynamo=False, opset_version=17,
                dynamic_axes=axes, **names,
            )  # fmt: skip
    return path


def _inputs(batch: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((batch, length, FEATURES))
    return x.astype(np.float32), _padding(batch, length, seed + 1)


def _torch(module: nn.Module, x: np.ndarray, padding: np.ndarray) -> torch.Tensor:
    return module(torch.from_numpy(x), torch.from_numpy(padding))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_padded_batches_match_torch_and_onnxruntime(
    dynamo: bool, norm_first: bool, tmp_path: Path
) -> None:
    module = MaskedEncoder(norm_first)
    path = export(MaskedEncoder(norm_first), tmp_path / "m.onnx", dynamo)
    model = load(path)
    module.eval()
    for batch, length in ((3, EXPORT_LENGTH), (4, 8) if dynamo else (5, EXPORT_LENGTH)):
        x, padding = _inputs(batch, length, seed=batch)
        assert padding.any(), "the masks pad some steps"
        got = model.predict([x, padding.astype(np.float32)])
        with torch.no_grad():
            expected = _torch(module, x, padding).numpy()
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)
        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        (reference,) = session.run(None, {"x": x, "padding": padding})
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo-adam", "torchscript-sgd"])
def test_fine_tuning_with_padding_matches_torch(dynamo: bool, tmp_path: Path) -> None:
    module = MaskedEncoder(True)
    model = load(export(MaskedEncoder(True), tmp_path / "m.onnx", dynamo))
    trainable = sum(int(np.prod(model.weight_shapes[n])) for n in model.trainable_weight_names)
    assert trainable == sum(p.numel() for p in module.parameters())
    x, padding = _inputs(4, EXPORT_LENGTH, seed=7)
    y = np.random.default_rng(8).standard_normal((4, EXPORT_LENGTH, CLASSES)).astype(np.float32)
    if dynamo:
        ours: object = gm.optim.Adam(lr=1e-2)
        theirs: torch.optim.Optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    else:
        ours, theirs = gm.optim.SGD(lr=0.1), torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = gm.Trainer(model, loss="mse", optimizer=ours)
    module.train()
    for _ in range(4):
        got = trainer.train_batch([x, padding.astype(np.float32)], y).loss
        theirs.zero_grad()
        loss = nn.functional.mse_loss(_torch(module, x, padding), torch.from_numpy(y))
        loss.backward()
        theirs.step()
        np.testing.assert_allclose(got, loss.item(), rtol=1e-4)


def test_a_causal_mask_with_padding_at_a_fixed_length(tmp_path: Path) -> None:
    # TorchScript fixes the length: the causal mask is a constant, added to the padding.
    module = CausalMaskedEncoder(True)
    model = load(export(CausalMaskedEncoder(True), tmp_path / "m.onnx", dynamo=False))
    module.eval()
    x, padding = _inputs(3, EXPORT_LENGTH, seed=1)
    assert padding.any()
    with torch.no_grad():
        expected = _torch(module, x, padding).numpy()
    got = model.predict([x, padding.astype(np.float32)])
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_a_causal_mask_with_padding_at_a_run_time_length_is_refused(tmp_path: Path) -> None:
    # The run-time causal mask imports only as attention's own causal flag, which takes no
    # padding beside it.
    path = export(CausalMaskedEncoder(True), tmp_path / "m.onnx", dynamo=True)
    with pytest.raises(OnnxImportError, match=r"mask built from a run-time sequence length"):
        load(path)
