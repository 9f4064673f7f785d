"""ONNX export rules of the transformer layers: ``Embedding``, ``PositionalEmbedding``,
``RMSNorm``, ``TiedLinear``, ``MultiHeadAttention`` and the encoder and decoder layers and stacks.

Attention is written out as torch exports it: ``MatMul``/``Add`` projections, a
``Reshape``/``Transpose`` into heads, scaled ``MatMul`` scores, additive masks, ``Softmax``,
``MatMul`` and the output projection. Shapes that depend on the sequence length are read
with ``Shape`` at run time (``Reshape`` copies them with ``0``), so a model exported with a
run-time sequence length runs at any length. Attention and the encoder and decoder layers
export from opset 17 (``LayerNormalization``); ``RMSNormalization`` exists from opset 23
and is decomposed below it.

Importing this module registers the rules with the layer classes.
"""

from __future__ import annotations

import math

import numpy as np

from ...graph.composites import FLOAT32_EPSILON
from ..tensor import LayerCall
from . import onnx_rules
from .attention_ops import MASKED, sinusoidal_table
from .base import Layer
from .embedding import Embedding, PositionalEmbedding, RMSNorm, TiedLinear
from .registry import OnnxGraph, register_layer
from .transformer import (
    MultiHeadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

# Attention and the encoder and decoder layers use LayerNormalization (opset 17), Trilu
# (14) and Shape's start (15): they export from opset 17, as the layers' torch peers do.
ATTENTION_OPSET = 17
RMS_NORM_OPSET = 23
# ReduceMean took its axes as an input instead of an attribute from opset 18 on.
REDUCE_AXES_INPUT_OPSET = 18


def _reduce_mean_last(b: OnnxGraph, x: str, name: str) -> str:
    mean = b.unique(name)
    if b.opset >= REDUCE_AXES_INPUT_OPSET:
        b.node("ReduceMean", [x, b.int_constant(f"{name}/axes", [-1])], mean, mean, keepdims=1)
    else:
        b.node("ReduceMean", [x], mean, mean, axes=[-1], keepdims=1)
    return mean


def _binary(b: OnnxGraph, op_type: str, left: str, right: str, name: str, out: str = "") -> str:
    target = out or b.unique(name)
    b.node(op_type, [left, right], target, name if out else target)
    return target


def _normalize_rms(b: OnnxGraph, x: str, eps: float, name: str) -> str:
    """``x / sqrt(mean(x^2, -1) + eps)``, the decomposed RMS normalization."""
    square = _binary(b, "Mul", x, x, f"{name}/square")
    shifted = _binary(
        b,
        "Add",
        _reduce_mean_last(b, square, f"{name}/mean_square"),
        b.constant(f"{name}/eps", np.float32(eps)),
        f"{name}/mean_square_eps",
    )
    root = b.unique(f"{name}/rms")
    b.node("Sqrt", [shifted], root, root)
    return _binary(b, "Div", x, root, f"{name}/normalized")


def _check_opset(b: OnnxGraph, layer: Layer) -> None:
    if b.opset < ATTENTION_OPSET:
        raise ValueError(
            f"layer '{layer.name}' of type {type(layer).__name__} exports from opset "
            f"{ATTENTION_OPSET} on (LayerNormalization, Trilu), got opset {b.opset}"
        )


def _linear(b: OnnxGraph, x: str, weight: str, bias: str | None, name: str, out: str = "") -> str:
    """``x @ weight.T + bias`` on the last axis (``nn.Linear``'s layout)."""
    transposed = b.unique(f"{name}/weight_t")
    b.node("Transpose", [weight], transposed, transposed, perm=[1, 0])
    if bias is None:
        return _binary(b, "MatMul", x, transposed, name, out)
    product = _binary(b, "MatMul", x, transposed, f"{name}/matmul")
    return _binary(b, "Add", product, bias, name, out)


def _rows(b: OnnxGraph, tensor: str, start: int, end: int, name: str) -> str:
    """Rows ``start:end`` of ``tensor`` (a third of a packed ``in_proj`` weight)."""
    rows = b.unique(name)
    starts, ends = b.int_constant(f"{name}/start", [start]), b.int_constant(f"{name}/end", [end])
    b.node("Slice", [tensor, starts, ends, b.int_constant(f"{name}/axis", [0])], rows, rows)
    return rows


def _heads(b: OnnxGraph, x: str, heads: int, perm: list[int], name: str) -> str:
    """(N, T, E) -> (N, heads, T, E / heads), or with ``perm`` [0, 2, 3, 1] the keys'
    (N, heads, E / heads, T)."""
    split = b.unique(f"{name}/split")
    b.node("Reshape", [x, b.int_constant(f"{name}/shape", [0, 0, heads, -1])], split, split)
    moved = b.unique(name)
    b.node("Transpose", [split], moved, moved, perm=perm)
    return moved


def _causal_mask(b: OnnxGraph, scores: str, name: str) -> str:
    """An additive (Tq, Tk) mask, ``MASKED`` above the diagonal, built from the scores'
    run-time shape with ``Trilu`` (top-left aligned, as torch's ``is_causal``)."""
    shape = b.unique(f"{name}/scores_shape")
    b.node("Shape", [scores], shape, shape, start=-2)
    ones = b.unique(f"{name}/ones")
    b.node("Expand", [b.constant(f"{name}/one", np.float32(1.0)), shape], ones, ones)
    lower = b.unique(f"{name}/lower")
    b.node("Trilu", [ones], lower, lower, upper=0)
    # lower - 1 is 0 on and below the diagonal and -1 above it.
    hidden = _binary(b, "Sub", lower, b.constant(f"{name}/one_again", np.float32(1.0)), name)
    return _binary(b, "Mul", hidden, b.constant(f"{name}/scale", np.float32(-MASKED)), name)


def _padding_mask(b: OnnxGraph, mask: str, name: str) -> str:
    """A float (N, Tk) key-padding mask (1 = padding) as an additive (N, 1, 1, Tk) one."""
    additive = _binary(b, "Mul", mask, b.constant(f"{name}/masked", np.float32(MASKED)), name)
    shaped = b.unique(f"{name}/shaped")
    b.node("Reshape", [additive, b.int_constant(f"{name}/shape", [0, 1, 1, -1])], shaped, shaped)
    return shaped


def _attention(
    b: OnnxGraph,
    layer: Layer,
    prefix: str,
    sources: tuple[str, str, str],
    settings: tuple[int, int, bool, bool],
    padding: str | None,
    out: str,
    name: str,
) -> str:
    """``nn.MultiheadAttention(batch_first=True)`` on (query, key, value) with the weights
    under ``prefix``; ``settings`` is (embed_dim, num_heads, bias, causal)."""
    embed, heads, bias, causal = settings
    # Keys and values of another width have their own projections (torch's layout).
    packed = getattr(layer, "kdim", embed) == embed and getattr(layer, "vdim", embed) == embed
    in_bias = b.weight(layer, f"{prefix}in_proj_bias") if bias else None
    projected = []
    for index, (source, part, perm) in enumerate(
        zip(sources, "qkv", ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3]))
    ):
        rows = (index * embed, (index + 1) * embed)
        if packed:
            weight = _rows(b, b.weight(layer, f"{prefix}in_proj_weight"), *rows, f"{name}/w{part}")
        else:
            weight = b.weight(layer, f"{prefix}{part}_proj_weight")
        part_bias = _rows(b, in_bias, *rows, f"{name}/b{part}") if in_bias else None
        linear = _linear(b, source, weight, part_bias, f"{name}/{part}_proj")
        projected.append(_heads(b, linear, heads, perm, f"{name}/{part}_heads"))
    query, keys_t, values = projected
    scores = _binary(b, "MatMul", query, keys_t, f"{name}/scores")
    scale = b.constant(f"{name}/scale", np.float32(1.0 / math.sqrt(embed // heads)))
    scores = _binary(b, "Mul", scores, scale, f"{name}/scaled_scores")
    if causal:
        scores = _binary(b, "Add", scores, _causal_mask(b, scores, f"{name}/causal"), name)
    if padding is not None:
        scores = _binary(b, "Add", scores, padding, f"{name}/padded_scores")
    weights = b.unique(f"{name}/weights")
    b.node("Softmax", [scores], weights, weights, axis=-1)
    attended = _binary(b, "MatMul", weights, values, f"{name}/attended")
    merged = b.unique(f"{name}/merged_t")
    b.node("Transpose", [attended], merged, merged, perm=[0, 2, 1, 3])
    flat = b.unique(f"{name}/merged")
    b.node("Reshape", [merged, b.int_constant(f"{name}/merge_shape", [0, 0, embed])], flat, flat)
    out_bias = b.weight(layer, f"{prefix}out_proj.bias") if bias else None
    return _linear(b, flat, b.weight(layer, f"{prefix}out_proj.weight"), out_bias, name, out)


def embedding(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Embedding``: ``Gather`` of the table's rows (the ``padding_idx`` row read as zeros,
    as the layer reads it)."""
    layer = call.layer
    table = b.weight(layer, "weight")
    if layer.padding_idx is not None:
        keep = np.ones((layer.num_embeddings, 1), np.float32)
        keep[layer.padding_idx] = 0.0
        table = _binary(b, "Mul", table, b.constant(f"{name}/keep", keep), f"{name}/table")
    b.node("Gather", [table, inputs[0]], out, name, axis=0)


def positional_embedding(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    """``PositionalEmbedding``: ``Add`` of the first ``T`` rows of the learned table (a
    ``Slice``) or of the sinusoid constant. A run-time ``T`` is read with ``Shape`` and ends
    a ``Slice`` of the whole table (``max_length`` rows), so the model runs at any length."""
    layer, length = call.layer, call.inputs[0].engine_shape[1]
    if length >= 0:
        if layer.encoding == "sinusoidal":
            table = b.constant(f"{name}/table", sinusoidal_table(length, layer.dim))
        else:
            table = _rows(b, b.weight(layer, "weight"), 0, length, f"{name}/table")
        b.node("Add", [inputs[0], table], out, name)
        return
    if layer.encoding == "sinusoidal":
        full = b.constant(f"{name}/table", sinusoidal_table(layer.max_length, layer.dim))
    else:
        full = b.weight(layer, "weight")
    # Shape then Slice rather than Shape's start/end attributes, which need opset 15.
    shape, length_name, rows = (b.unique(f"{name}/{part}") for part in ("shape", "T", "rows"))
    b.node("Shape", [inputs[0]], shape, shape)
    one, two = b.int_constant(f"{name}/one", [1]), b.int_constant(f"{name}/two", [2])
    b.node("Slice", [shape, one, two], length_name, length_name)
    zero = b.int_constant(f"{name}/zero", [0])
    b.node("Slice", [full, zero, length_name, zero], rows, rows)
    b.node("Add", [inputs[0], rows], out, name)


def rms_norm(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``RMSNorm``: ``RMSNormalization`` from opset 23, else its decomposition."""
    layer = call.layer
    eps = FLOAT32_EPSILON if layer.eps is None else layer.eps
    if layer.elementwise_affine:
        scale = b.weight(layer, "weight")
    else:
        scale = b.constant(f"{name}/unit_scale", np.ones(layer.normalized_shape, np.float32))
    if b.opset >= RMS_NORM_OPSET:
        b.node("RMSNormalization", [inputs[0], scale], out, name, axis=-1, epsilon=eps)
        return
    _binary(b, "Mul", _normalize_rms(b, inputs[0], eps, name), scale, name, out)


def multi_head_attention(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    """``MultiHeadAttention``: projections, heads, scaled scores with the causal and
    key-padding masks, ``Softmax``, the weighted values and the output projection."""
    layer = call.layer
    _check_opset(b, layer)
    sources = list(inputs)
    padding = _padding_mask(b, sources.pop(), f"{name}/padding") if layer.key_padding_mask else None
    # x, [query, key_value] or [query, key, value], as the layer takes them.
    query, key, value = sources[0], sources[min(1, len(sources) - 1)], sources[-1]
    settings = (layer.embed_dim, layer.num_heads, layer.bias, layer.causal)
    _attention(b, layer, "", (query, key, value), settings, padding, out, name)


def _block(
    b: OnnxGraph,
    layer: Layer,
    prefix: str,
    x: str,
    memory: str | None,
    padding: str | None,
    out: str,
    name: str,
) -> str:
    """One encoder (or, with ``memory``, decoder) layer under ``prefix``, as the layer's
    ``_Block.forward``: residual sub-blocks with LayerNorm after, or before (norm_first)."""
    bias = layer.bias

    def norm(h: str, index: int, target: str = "") -> str:
        target = target or b.unique(f"{name}/norm{index}")
        shift = b.weight(layer, f"{prefix}norm{index}.bias") if bias else None
        scale = b.weight(layer, f"{prefix}norm{index}.weight")
        operands = [h, scale, *([shift] if shift else [])]
        b.node(
            "LayerNormalization", operands, target, target, axis=-1, epsilon=layer.layer_norm_eps
        )
        return target

    def attend(h: str, part: str, kv: str, causal: bool, mask: str | None) -> str:
        settings = (layer.d_model, layer.nhead, bias, causal)
        return _attention(
            b, layer, f"{prefix}{part}.", (h, kv, kv), settings, mask, "", f"{name}/{part}"
        )

    def feed_forward(h: str) -> str:
        def part(index: int) -> tuple[str, str | None]:
            base = f"{prefix}linear{index}."
            return b.weight(layer, f"{base}weight"), (
                b.weight(layer, f"{base}bias") if bias else None
            )

        inner = _linear(b, h, *part(1), f"{name}/linear1")
        active = b.unique(f"{name}/{layer.activation}")
        if layer.activation == "relu":
            b.node("Relu", [inner], active, active)
        else:
            # The GELU layer's rule reads nothing off its call.
            onnx_rules.gelu(b, None, [inner], active, active)  # type: ignore[arg-type]
        return _linear(b, active, *part(2), f"{name}/linear2")

    self_padding = padding if memory is None else None
    blocks = [lambda h: attend(h, "self_attn", h, layer.causal, self_padding)]
    if memory is not None:
        blocks.append(lambda h: attend(h, "multihead_attn", memory, False, padding))
    blocks.append(feed_forward)
    for index, block in enumerate(blocks, start=1):
        last = index == len(blocks)
        if layer.norm_first:
            target = out if last else b.unique(f"{name}/residual{index}")
            x = _binary(b, "Add", x, block(norm(x, index)), target, target)
        else:
            residual = _binary(b, "Add", x, block(x), f"{name}/residual{index}")
            x = norm(residual, index, out if last else "")
    return x


def transformer_layers(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    """The encoder and decoder layers and stacks: each layer's block under ``layers.<i>.``
    (or no prefix for a single layer), then the stack's final LayerNorm."""
    layer = call.layer
    _check_opset(b, layer)
    memory = inputs[1] if isinstance(layer, (TransformerDecoderLayer, TransformerDecoder)) else None
    padding = _padding_mask(b, inputs[-1], f"{name}/padding") if layer.key_padding_mask else None
    stacked = isinstance(layer, (TransformerEncoder, TransformerDecoder))
    prefixes = [f"layers.{i}." for i in range(layer.num_layers)] if stacked else [""]
    final_norm = stacked and layer.final_norm
    x = inputs[0]
    for index, prefix in enumerate(prefixes):
        last = index == len(prefixes) - 1 and not final_norm
        target = out if last else b.unique(f"{name}/layer{index}")
        x = _block(b, layer, prefix, x, memory, padding, target, f"{name}/{prefix or 'layer'}")
    if final_norm:
        operands = [x, b.weight(layer, "norm.weight")]
        operands += [b.weight(layer, "norm.bias")] if layer.bias else []
        b.node("LayerNormalization", operands, out, name, axis=-1, epsilon=layer.layer_norm_eps)


class _TiedTable:
    """Stands for the ``Embedding`` layer a ``TiedLinear`` shares its table with: the
    graph names initializers by layer name, so both layers read the one ``<name>.weight``."""

    def __init__(self, name: str):
        self.name = name


def tied_linear(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``TiedLinear``: ``MatMul`` by the transposed table of the tied ``Embedding`` (the
    same initializer the ``Gather`` reads)."""
    table = b.weight(_TiedTable(call.layer.tied_to), "weight")  # type: ignore[arg-type]
    _linear(b, inputs[0], table, None, name, out)


register_layer(Embedding, onnx=embedding)
register_layer(TiedLinear, onnx=tied_linear)
register_layer(PositionalEmbedding, onnx=positional_embedding)
register_layer(RMSNorm, onnx=rms_norm)
register_layer(MultiHeadAttention, onnx=multi_head_attention)
for _layer_class in (
    TransformerEncoderLayer,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerDecoder,
):
    register_layer(_layer_class, onnx=transformer_layers)
