"""Token and position embeddings, and RMSNorm: the input side of transformer models, as
``torch.nn.Embedding``, learned and sinusoidal positional encodings, and ``nn.RMSNorm``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...graph.composites import matmul, op, rms_norm
from ..initializers import Normal, Ones
from .attention_ops import embedding_lookup, sinusoidal_table
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


class _ZeroRow:
    """``N(0, 1)`` with one row of zeros (torch's ``padding_idx`` initialization)."""

    def __init__(self, row: int | None):
        self.row = row

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
        table = Normal(1.0)(seed, stream, shape)
        if self.row is not None:
            table[self.row] = 0.0
        return table


@register_layer
class Embedding(Layer):
    """A lookup table of ``num_embeddings`` vectors of ``embedding_dim``, as
    ``torch.nn.Embedding``: int32 token ids ``(N, ...)`` give ``(N, ..., embedding_dim)``.

    ``weight`` is ``(num_embeddings, embedding_dim)`` from ``N(0, 1)``. Its gradient is a
    scatter-add of the rows used, never a one-hot matrix. An id outside
    ``[0, num_embeddings)`` fails the step with an error naming it.

    Args:
        num_embeddings: the vocabulary size.
        embedding_dim: each vector's size.
        padding_idx: an id whose row starts at zeros and gets no gradient (torch's), or
            ``None``.
        name: an explicit layer name.

    Example:
        >>> ids = gm.Input((None,), dtype="int32")
        >>> Embedding(65, 32)(ids).shape
        (None, None, 32)
    """

    kind = "embedding"
    input_dtypes = ("int32",)

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name)
        label = "Embedding" if name is None else f"Embedding '{name}'"
        self.num_embeddings = _positive(num_embeddings, f"{label} num_embeddings")
        self.embedding_dim = _positive(embedding_dim, f"{label} embedding_dim")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
                raise TypeError(f"{label} padding_idx must be an int or None, got {padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"{label} padding_idx must be in [-{num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx}"
                )
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        shape = (self.num_embeddings, self.embedding_dim)
        return [WeightSpec("weight", shape, _ZeroRow(self.padding_idx))]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        if self.padding_idx is None:
            return embedding_lookup(ctx, inputs[0])
        g = ctx.graph
        # The padding row's gradient is zero, as torch's: the table is read through a mask.
        keep = np.ones((self.num_embeddings, 1), np.float32)
        keep[self.padding_idx] = 0.0
        table = op(g, "mul", ctx.variable("weight"), g.constant(keep))
        return op(g, "gather", table, inputs[0])

    def __repr__(self) -> str:
        extras = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        name = f", name={self.name!r}" if self.name else ""
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extras}{name})"


@register_layer
class PositionalEmbedding(Layer):
    """Adds a position vector to each position of ``(N, T, D)`` inputs: learned (a
    ``(max_length, D)`` table from ``N(0, 0.02)``, GPT's) or the fixed sinusoids of
    "Attention is all you need".

    The sequence length may be fixed when the model is built (``gm.Input((T, D))``, at most
    ``max_length``) or left to run time (``gm.Input((None, D))``): then each step adds rows
    ``0..T-1`` of the table, gathered by position (a learned table's gradient lands in those
    rows only), and a ``T`` above ``max_length`` fails the step with an error naming the
    layer, ``T`` and ``max_length``, changing nothing.

    Args:
        max_length: the most positions (a learned table's rows).
        dim: the embedding size ``D``.
        kind: ``"learned"`` or ``"sinusoidal"``.
        name: an explicit layer name.

    Example:
        >>> ids = gm.Input((None,), dtype="int32")
        >>> PositionalEmbedding(64, 32)(Embedding(65, 32)(ids)).shape
        (None, None, 32)
    """

    kind = "positional_embedding"
    KINDS = ("learned", "sinusoidal")

    def __init__(self, max_length: int, dim: int, kind: str = "learned", name: str | None = None):
        super().__init__(name)
        label = "PositionalEmbedding" if name is None else f"PositionalEmbedding '{name}'"
        self.max_length = _positive(max_length, f"{label} max_length")
        self.dim = _positive(dim, f"{label} dim")
        if kind not in self.KINDS:
            raise ValueError(f"{label} kind must be one of {list(self.KINDS)}, got {kind!r}")
        self.encoding = kind

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "dim": self.dim,
            "kind": self.encoding,
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if len(shape) != 3 or shape[2] != self.dim:
            raise ValueError(f"expects inputs (N, T, {self.dim}), got {shape}")
        if shape[1] > self.max_length:
            raise ValueError(f"sequence length {shape[1]} exceeds max_length {self.max_length}")
        if self.encoding == "sinusoidal":
            return []
        return [WeightSpec("weight", (self.max_length, self.dim), Normal(0.02))]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g = ctx.graph
        length = g.shape(inputs[0])[1]
        if length >= 0:
            if self.encoding == "sinusoidal":
                table = g.constant(sinusoidal_table(length, self.dim))
            else:
                table = op(g, "slice", ctx.variable("weight"), axis=0, start=0, end=length)
            return op(g, "add", inputs[0], table)
        # A run-time length: gather rows 0..T-1; the positions op checks T <= max_length.
        positions = op(
            g,
            "positions",
            inputs[0],
            axis=1,
            limit=self.max_length,
            label=f"PositionalEmbedding '{ctx.scope or self.kind}'",
            message=f"sequence length must be at most max_length {self.max_length}",
        )
        if self.encoding == "sinusoidal":
            table = g.constant(sinusoidal_table(self.max_length, self.dim))
        else:
            table = ctx.variable("weight")
        return op(g, "add", inputs[0], op(g, "gather", table, positions))


@register_layer
class RMSNorm(Layer):
    """RMS normalization over the last axis, as ``torch.nn.RMSNorm``:
    ``x / sqrt(mean(x ** 2) + eps) * weight`` (one fused op forward and backward).

    Args:
        normalized_shape: the last axis's size.
        eps: added to the mean square; ``None`` is float32's machine epsilon (torch's).
        elementwise_affine: whether to learn ``weight`` (ones).
        name: an explicit layer name.

    Example:
        >>> h = RMSNorm(64)(gm.Input((None, 64)))
    """

    kind = "rms_norm"

    def __init__(
        self,
        normalized_shape: int,
        eps: float | None = None,
        elementwise_affine: bool = True,
        name: str | None = None,
    ):
        super().__init__(name)
        label = "RMSNorm" if name is None else f"RMSNorm '{name}'"
        self.normalized_shape = _positive(normalized_shape, f"{label} normalized_shape")
        if eps is not None and not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"{label} eps must be a number > 0 or None, got {eps!r}")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "normalized_shape": self.normalized_shape,
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if shape[-1] != self.normalized_shape:
            raise ValueError(
                f"normalized_shape {self.normalized_shape} must equal the last axis of the "
                f"input, got {shape}"
            )
        if not self.elementwise_affine:
            return []
        return [WeightSpec("weight", (self.normalized_shape,), Ones())]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        weight = ctx.variable("weight") if self.elementwise_affine else None
        return rms_norm(ctx.graph, inputs[0], weight, self.eps)


@register_layer
class TiedLinear(Layer):
    """A linear map without weights of its own: ``x @ E.T`` with ``E`` the table of the
    ``Embedding`` layer named ``tied_to`` (weight tying, as a GPT's language-model head
    shares its token embedding). The one variable gets both gradients, summed.

    Args:
        tied_to: the name of the ``Embedding`` layer in the same model.
        num_embeddings: that table's rows (the output size).
        embedding_dim: that table's width (the input size).
        name: an explicit layer name.

    Example:
        >>> head = TiedLinear("wte", 65, 128, name="lm_head")
    """

    kind = "tied_linear"

    def __init__(
        self, tied_to: str, num_embeddings: int, embedding_dim: int, name: str | None = None
    ):
        super().__init__(name)
        if not isinstance(tied_to, str) or not tied_to:
            raise ValueError(f"TiedLinear tied_to must name an Embedding layer, got {tied_to!r}")
        self.tied_to = tied_to
        self.num_embeddings = _positive(num_embeddings, "TiedLinear num_embeddings")
        self.embedding_dim = _positive(embedding_dim, "TiedLinear embedding_dim")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "tied_to": self.tied_to,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
        }

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        (shape,) = input_shapes
        if shape[-1] != self.embedding_dim:
            raise ValueError(f"expects inputs (..., {self.embedding_dim}), got {shape}")
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        table = ctx.shared_variable(
            f"{self.tied_to}.weight", (self.num_embeddings, self.embedding_dim)
        )
        return matmul(ctx.graph, inputs[0], table, transpose_b=True)
