"""The pieces transformer layers emit, shared by attention and the encoder and decoder
layers: linear maps on the last axis, dropout, head splitting, masks and the fused
``attention`` op. Weight names follow torch's ``state_dict`` (``in_proj_weight``,
``out_proj.weight``, ``linear1.weight``, ``norm1.weight``, ...), so torch weights map one
to one.
"""

from __future__ import annotations

import numpy as np

from ...graph.composites import const, gather, layer_norm, matmul, op
from ..initializers import Ones, Zeros, fan_in_uniform, named_initializer
from .base import EmitContext, WeightSpec

# Added to the scores of padded keys: exp() of it underflows to 0, as torch's -inf does,
# without the NaN that -inf times a 0 mask would give.
MASKED = -1e30
ACTIVATIONS = ("relu", "gelu")


def linear_specs(prefix: str, fan_in: int, fan_out: int, bias: bool) -> list[WeightSpec]:
    """``nn.Linear(fan_in, fan_out)``'s weights under ``prefix`` (torch's default init)."""
    init = fan_in_uniform(fan_in)
    specs = [WeightSpec(f"{prefix}weight", (fan_out, fan_in), init)]
    if bias:
        specs.append(WeightSpec(f"{prefix}bias", (fan_out,), init))
    return specs


def norm_specs(prefix: str, dim: int, bias: bool) -> list[WeightSpec]:
    """``nn.LayerNorm(dim)``'s weights under ``prefix``: ones and zeros."""
    specs = [WeightSpec(f"{prefix}weight", (dim,), Ones())]
    if bias:
        specs.append(WeightSpec(f"{prefix}bias", (dim,), Zeros()))
    return specs


def attention_specs(
    prefix: str, embed_dim: int, kdim: int, vdim: int, bias: bool
) -> list[WeightSpec]:
    """``nn.MultiheadAttention``'s weights under ``prefix``, with torch's init: one
    ``in_proj_weight`` (3E, E) when keys and values have the embedding's size, else
    ``q_proj_weight``, ``k_proj_weight`` and ``v_proj_weight``; ``out_proj``."""
    if kdim == embed_dim and vdim == embed_dim:
        init = named_initializer("glorot_uniform", embed_dim, 3 * embed_dim)
        specs = [WeightSpec(f"{prefix}in_proj_weight", (3 * embed_dim, embed_dim), init)]
    else:
        specs = [
            WeightSpec(
                f"{prefix}{part}_proj_weight",
                (embed_dim, size),
                named_initializer("glorot_uniform", size, embed_dim),
            )
            for part, size in (("q", embed_dim), ("k", kdim), ("v", vdim))
        ]
    if bias:
        specs.append(WeightSpec(f"{prefix}in_proj_bias", (3 * embed_dim,), Zeros()))
    out = linear_specs(f"{prefix}out_proj.", embed_dim, embed_dim, bias)
    if bias:
        # torch zeroes the output projection's bias.
        out[1] = WeightSpec(f"{prefix}out_proj.bias", (embed_dim,), Zeros())
    return specs + out


def linear(ctx: EmitContext, x: int, prefix: str, bias: bool) -> int:
    """``x @ weight.T + bias`` on the last axis, as ``nn.Linear``."""
    g = ctx.graph
    out = matmul(g, x, ctx.variable(f"{prefix}weight"), transpose_b=True)
    if bias:
        out = op(g, "add", out, ctx.variable(f"{prefix}bias"))
    return out


def dropout(ctx: EmitContext, x: int, rate: float) -> int:
    """Inverted dropout in training (``nn.Dropout``); the identity otherwise."""
    if not ctx.training or rate == 0.0:
        return x
    g = ctx.graph
    keep = op(g, "greater_equal", op(g, "random_uniform", x), const(g, rate))
    return op(g, "mul", op(g, "mul", x, const(g, 1.0 / (1.0 - rate))), keep)


def activation(ctx: EmitContext, x: int, name: str) -> int:
    """ReLU or exact GELU, the feed-forward activations of torch's transformer layers."""
    if name == "relu":
        return op(ctx.graph, "relu", x)
    return op(ctx.graph, "gelu", x)


def norm(ctx: EmitContext, x: int, prefix: str, eps: float, bias: bool) -> int:
    """``nn.LayerNorm`` over the last axis with the weights under ``prefix``."""
    weight = ctx.variable(f"{prefix}weight")
    return layer_norm(ctx.graph, x, weight, ctx.variable(f"{prefix}bias") if bias else None, eps)


def _split_heads(g: object, x: int, heads: int) -> int:
    """(N, T, E) -> (N, heads, T, E / heads)."""
    batch, length, width = g.shape(x)  # type: ignore[attr-defined]
    split = op(g, "reshape", x, shape=[batch, length, heads, width // heads])
    return op(g, "transpose", split, perm=[0, 2, 1, 3])


def _merge_heads(g: object, x: int) -> int:
    """(N, heads, T, D) -> (N, T, heads * D)."""
    batch, heads, length, width = g.shape(x)  # type: ignore[attr-defined]
    moved = op(g, "transpose", x, perm=[0, 2, 1, 3])
    return op(g, "reshape", moved, shape=[batch, length, heads * width])


def _packed_self_projection(
    ctx: EmitContext, prefix: str, x: int, heads: int, bias: bool
) -> list[int]:
    """q, k and v (each (N, heads, T, E / heads)) of a self-attention from one product by the
    whole packed ``in_proj_weight``: one larger product and one head transpose instead of
    three, and the autodiff joins the three gradients back into ``attention_grad``'s stacked
    output, so the input's gradient is one product too (no sum of three)."""
    g = ctx.graph
    out = matmul(g, x, ctx.variable(f"{prefix}in_proj_weight"), transpose_b=True)
    if bias:
        out = op(g, "add", out, ctx.variable(f"{prefix}in_proj_bias"))
    batch, length, width = g.shape(out)  # type: ignore[attr-defined]
    head_dim = width // (3 * heads)
    split = op(g, "reshape", out, shape=[batch, length, 3, heads, head_dim])
    stacked = op(g, "transpose", split, perm=[2, 0, 3, 1, 4])
    return [
        op(
            g,
            "reshape",
            op(g, "slice", stacked, axis=0, start=index, end=index + 1),
            shape=[batch, heads, length, head_dim],
        )
        for index in range(3)
    ]


def padding_mask(ctx: EmitContext, mask: int) -> int:
    """A key-padding mask (N, Tk), 1 where a key is padding (torch's ``True``), as an
    additive mask broadcastable to (N, heads, Tq, Tk)."""
    g = ctx.graph
    batch, keys = g.shape(mask)
    additive = op(g, "mul", mask, const(g, MASKED))
    return op(g, "reshape", additive, shape=[batch, 1, 1, keys])


def multi_head_attention(
    ctx: EmitContext,
    prefix: str,
    query: int,
    key: int,
    value: int,
    num_heads: int,
    bias: bool,
    causal: bool = False,
    mask: int | None = None,
    dropout_rate: float = 0.0,
) -> int:
    """``nn.MultiheadAttention(batch_first=True)``'s output for (N, T, E) inputs.

    Args:
        ctx: the emit context of the layer holding the weights.
        prefix: the weights' prefix (``"self_attn."``, or ``""`` for the layer itself).
        query: (N, Tq, E).
        key: (N, Tk, kdim).
        value: (N, Tk, vdim).
        num_heads: heads; E divides by it.
        bias: whether the projections have biases.
        causal: mask every key after its query (``is_causal``).
        mask: an additive mask broadcastable to (N, heads, Tq, Tk), or ``None``.
        dropout_rate: dropout on the attention weights, in training.

    Returns:
        The (N, Tq, E) output.
    """
    g = ctx.graph
    embed = g.shape(query)[-1]
    packed = ctx.has_variable(f"{prefix}in_proj_weight")

    def rows(name: str, index: int) -> int:
        """Part ``index`` (q, k or v) of a packed (3E, ...) weight or bias."""
        start = index * embed
        return op(g, "slice", ctx.variable(name), axis=0, start=start, end=start + embed)

    def separate(index: int, x: int, part: str) -> int:
        """q, k or v by its own product."""
        if packed:
            weight = rows(f"{prefix}in_proj_weight", index)
        else:
            weight = ctx.variable(f"{prefix}{part}_proj_weight")
        out = matmul(g, x, weight, transpose_b=True)
        if bias:
            out = op(g, "add", out, rows(f"{prefix}in_proj_bias", index))
        return _split_heads(g, out, num_heads)

    # Training keeps one product by the whole weight (one input gradient); inference runs three
    # by its rows in place, each on packed weights with its bias, then a head transpose each,
    # where the one product's (3, N, heads, T, D) transpose and three slice copies cost more.
    if packed and query == key == value and ctx.training:
        projected = _packed_self_projection(ctx, prefix, query, num_heads, bias)
    else:
        parts = ((query, "q"), (key, "k"), (value, "v"))
        projected = [separate(index, x, part) for index, (x, part) in enumerate(parts)]
    rate = dropout_rate if ctx.training else 0.0
    inputs = [*projected, *([mask] if mask is not None else [])]
    attended = op(g, "attention", *inputs, causal=causal, scale=0.0, dropout=rate)
    return linear(ctx, _merge_heads(g, attended), f"{prefix}out_proj.", bias)


def head_dim_check(embed_dim: int, num_heads: int, label: str) -> None:
    """Raises unless ``num_heads`` divides ``embed_dim`` (torch's rule)."""
    if embed_dim % num_heads:
        raise ValueError(
            f"{label}: embed_dim {embed_dim} must be divisible by num_heads {num_heads}"
        )


def embedding_lookup(ctx: EmitContext, ids: int, weight: str = "weight") -> int:
    """Rows of the layer's ``weight`` table for int32 ``ids``."""
    return gather(ctx.graph, ctx.variable(weight), ids)


def sinusoidal_table(positions: int, dim: int) -> np.ndarray:
    """The "Attention is all you need" positional encodings, (positions, dim) float32:
    sines on even features, cosines on odd ones."""
    pos = np.arange(positions, dtype=np.float64)[:, None]
    pairs = np.arange(dim, dtype=np.float64)[None, :] // 2
    angle = pos / np.power(10000.0, 2.0 * pairs / dim)
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def check_activation(name: str, label: str) -> str:
    """Raises unless ``name`` is one of torch's transformer activations."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{label} activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return name


def check_rate(rate: float, what: str) -> float:
    """A dropout rate in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {rate!r}")
    return float(rate)
