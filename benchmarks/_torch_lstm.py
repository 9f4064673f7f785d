"""The character-level LSTM language model of workloads E and E-infer, in torch: the PyTorch
peer (``nn.LSTM``), and the model exported for the onnxruntime peer of E-infer."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from _workload import LSTM_EMBED, LSTM_HIDDEN, LSTM_LAYERS, LSTM_VOCAB


class TorchCharLSTM(nn.Module):
    """Embedding -> ``nn.LSTM`` (batch first, zero initial states) -> Linear to the vocabulary.

    ``forward(tokens)`` gives the (N, T, vocab) logits; ``loss(tokens, targets)`` the mean
    next-token cross-entropy over every position.
    """

    def __init__(self, vocab: int, embed: int, hidden: int, num_layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        outputs, _ = self.lstm(self.embedding(tokens))
        return self.head(outputs)

    def loss(self, tokens, targets):
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def build_torch_lstm(torch) -> TorchCharLSTM:
    """The peers' model, its weights drawn from torch's default initialisation at seed 0 (the
    torch peers and the exported ONNX model hold the same weights)."""
    torch.manual_seed(0)
    return TorchCharLSTM(LSTM_VOCAB, LSTM_EMBED, LSTM_HIDDEN, LSTM_LAYERS)


def export_onnx(path: str, batch: int, length: int) -> None:
    """Writes the model (eval mode, (batch, length) int64 tokens -> logits) to `path` with
    torch.onnx.export (the dynamo exporter: each nn.LSTM becomes one ONNX LSTM node)."""
    import contextlib
    import sys

    import torch

    model = build_torch_lstm(torch).eval()
    tokens = torch.zeros((batch, length), dtype=torch.long)
    # The exporter reports its progress on stdout, where the child's tagged lines go.
    with contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(
            model,
            (tokens,),
            path,
            input_names=["tokens"],
            output_names=["logits"],
            dynamo=True,
            optimize=True,
        )


if __name__ == "__main__":
    # python _torch_lstm.py OUT BATCH LENGTH: the onnxruntime peer exports in its own process,
    # so torch never counts in that peer's peak memory.
    import sys

    export_onnx(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
