"""torch recurrent models and their ONNX exports, for the recurrent import tests."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT, HIDDEN, VOCAB = 6, 8, 11
EXPORT_BATCH, EXPORT_LENGTH = 2, 5
CELLS = {
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
    "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
}


class Recurrent(nn.Module):
    """One torch recurrent layer; with ``states``, initial states in and final states out."""

    def __init__(self, cell: str, layers: int, bidirectional: bool, states: bool, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        cls, options = CELLS[cell]
        self.rnn = cls(
            INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional, batch_first=True,
            **options,
        )  # fmt: skip
        self.states = states
        self.lstm = cell == "lstm"
        self.rows = layers * (2 if bidirectional else 1)

    def forward(self, x, h0=None, c0=None):
        if not self.states:
            return self.rnn(x)[0]
        y, final = self.rnn(x, (h0, c0) if self.lstm else h0)
        return (y, *final) if self.lstm else (y, final)

    def example(self, batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """An input and, with ``states``, random initial states (torch's layouts)."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, length, INPUT, generator=generator)
        if not self.states:
            return (x,)
        count = 2 if self.lstm else 1
        return (
            x,
            *(torch.randn(self.rows, batch, HIDDEN, generator=generator) for _ in range(count)),
        )


class CharModel(nn.Module):
    """A character language model: Embedding, a 2-layer LSTM and a Linear head."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, INPUT)
        self.lstm = nn.LSTM(INPUT, HIDDEN, num_layers=2, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, ids):
        return self.head(self.lstm(self.embed(ids))[0])


def export(module: nn.Module, args: tuple, path: Path, dynamo: bool, seq: bool = True) -> Path:
    """Exports ``module`` with a dynamic batch (and, with ``seq``, a run-time length).

    Initial states get their batch named on axis 1. torch's dynamo exporter specializes the
    sequence length of a recurrent layer after its first export in a process, so tests that
    need a run-time length with it export in a fresh process (see ``export_in_subprocess``).
    """
    module.eval()
    names = ["x", "h0", "c0"][: len(args)]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            first = {0: batch, 1: torch.export.Dim("seq")} if seq else {0: batch}
            shapes = (first, *({1: batch} for _ in args[1:]))
            torch.onnx.export(
                module, args, os.fspath(path), dynamo=True, dynamic_shapes=shapes,
                input_names=names,
            )  # fmt: skip
        else:
            axes = {"x": {0: "batch", 1: "seq"} if seq else {0: "batch"}}
            axes.update({name: {1: "batch"} for name in names[1:]})
            torch.onnx.export(
                module, args, os.fspath(path), dynamo=False, input_names=names,
                dynamic_axes=axes,
            )  # fmt: skip
    return path


def gometal_inputs(args: tuple) -> list[np.ndarray] | np.ndarray:
    """torch's inputs as the imported model takes them: states batch-first."""
    arrays = [args[0].numpy()] + [a.transpose(0, 1).contiguous().numpy() for a in args[1:]]
    return arrays if len(arrays) > 1 else arrays[0]


def torch_outputs(module: nn.Module, args: tuple) -> list[np.ndarray]:
    """torch's outputs as the imported model gives them: states batch-first."""
    module.eval()
    with torch.no_grad():
        out = module(*args)
    out = out if isinstance(out, tuple) else (out,)
    return [out[0].numpy()] + [s.transpose(0, 1).contiguous().numpy() for s in out[1:]]
