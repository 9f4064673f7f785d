"""Attention and transformer layers with torch's layouts and weight names:
``nn.MultiheadAttention(batch_first=True)``, ``nn.TransformerEncoderLayer``,
``nn.TransformerDecoderLayer`` and their stacks. A torch ``state_dict`` maps one to one
onto ``model.set_weights`` under the layer's name (``encoder_0.self_attn.in_proj_weight``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...graph.composites import op
from . import attention_ops as ao
from .base import EmitContext, Layer, WeightSpec
from .registry import register_layer


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def _check_sequences(shapes: Sequence[tuple[int, ...]], width: int, what: str) -> None:
    for shape in shapes:
        if len(shape) != 3 or shape[2] != width:
            raise ValueError(f"expects {what} of shape (N, T, {width}), got {shape}")


@register_layer
class MultiHeadAttention(Layer):
    """Multi-head attention, as ``torch.nn.MultiheadAttention(batch_first=True)``.

    Called on ``x`` (self-attention), ``[query, key_value]`` or ``[query, key, value]``,
    each ``(N, T, E)`` (keys ``kdim``, values ``vdim`` wide), plus, with
    ``key_padding_mask=True``, a last float ``(N, Tk)`` input holding 1 where a key is
    padding. Weights: ``in_proj_weight`` ``(3E, E)`` (or ``q/k/v_proj_weight`` when
    ``kdim`` or ``vdim`` differ), ``in_proj_bias``, ``out_proj.weight`` and ``bias``.

    Args:
        embed_dim: ``E``.
        num_heads: heads; ``E`` divides by it.
        dropout: dropout on the attention weights, in training.
        bias: whether the projections have biases.
        kdim: the keys' width (``E`` by default).
        vdim: the values' width (``E`` by default).
        causal: mask every key after its query (torch's ``is_causal``).
        key_padding_mask: whether the last input is a key-padding mask.
        name: an explicit layer name.

    Example:
        >>> x = gm.Input((None, 64))
        >>> MultiHeadAttention(64, 4, causal=True)(x).shape
        (None, None, 64)
    """

    kind = "multi_head_attention"
    num_inputs = None
    min_inputs = 1

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        causal: bool = False,
        key_padding_mask: bool = False,
        name: str | None = None,
    ):
        super().__init__(name)
        label = "MultiHeadAttention" if name is None else f"MultiHeadAttention '{name}'"
        self.embed_dim = _positive(embed_dim, f"{label} embed_dim")
        self.num_heads = _positive(num_heads, f"{label} num_heads")
        ao.head_dim_check(embed_dim, num_heads, label)
        self.dropout = ao.check_rate(dropout, f"{label} dropout")
        self.bias = bool(bias)
        self.kdim = embed_dim if kdim is None else _positive(kdim, f"{label} kdim")
        self.vdim = embed_dim if vdim is None else _positive(vdim, f"{label} vdim")
        self.causal = bool(causal)
        self.key_padding_mask = bool(key_padding_mask)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "bias": self.bias,
            "kdim": self.kdim,
            "vdim": self.vdim,
            "causal": self.causal,
            "key_padding_mask": self.key_padding_mask,
        }

    def _split(self, items: Sequence[Any]) -> tuple[Any, Any, Any, Any]:
        items = list(items)
        mask = items.pop() if self.key_padding_mask else None
        if len(items) == 1:
            return items[0], items[0], items[0], mask
        if len(items) == 2:
            return items[0], items[1], items[1], mask
        if len(items) == 3:
            return items[0], items[1], items[2], mask
        raise ValueError(
            "takes x, [query, key_value] or [query, key, value] (then the key-padding mask), "
            f"got {len(items)} inputs"
        )

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        query, key, value, mask = self._split(input_shapes)
        _check_sequences([query], self.embed_dim, "queries")
        _check_sequences([key], self.kdim, "keys")
        _check_sequences([value], self.vdim, "values")
        if mask is not None and (len(mask) != 2 or mask[1] != key[1]):
            raise ValueError(f"the key-padding mask must be (N, Tk) = (N, {key[1]}), got {mask}")
        return ao.attention_specs("", self.embed_dim, self.kdim, self.vdim, self.bias)

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        query, key, value, mask = self._split(inputs)
        additive = None if mask is None else ao.padding_mask(ctx, mask)
        return ao.multi_head_attention(
            ctx,
            "",
            query,
            key,
            value,
            self.num_heads,
            self.bias,
            self.causal,
            additive,
            self.dropout,
        )


class _Block:
    """One encoder or decoder layer's weights and forward pass under a name prefix, so a
    single layer and a stack of them share the code (and torch's names)."""

    def __init__(self, layer: Any, decoder: bool):
        self.layer = layer
        self.decoder = decoder

    def specs(self, prefix: str) -> list[WeightSpec]:
        cfg, d = self.layer, self.layer.d_model
        specs = ao.attention_specs(f"{prefix}self_attn.", d, d, d, cfg.bias)
        if self.decoder:
            specs += ao.attention_specs(f"{prefix}multihead_attn.", d, d, d, cfg.bias)
        specs += ao.linear_specs(f"{prefix}linear1.", d, cfg.dim_feedforward, cfg.bias)
        specs += ao.linear_specs(f"{prefix}linear2.", cfg.dim_feedforward, d, cfg.bias)
        for index in range(1, 4 if self.decoder else 3):
            specs += ao.norm_specs(f"{prefix}norm{index}.", d, cfg.bias)
        return specs

    def forward(
        self, ctx: EmitContext, prefix: str, x: int, memory: int | None, padding: int | None
    ) -> int:
        """The layer's output; ``padding`` is an additive key-padding mask for the
        self-attention (encoder) or the attention over the memory (decoder)."""
        cfg, g = self.layer, ctx.graph
        self_padding = None if self.decoder else padding
        memory_padding = padding if self.decoder else None
        norms = [f"{prefix}norm{i}." for i in range(1, 4)]

        def norm(h: int, which: int) -> int:
            return ao.norm(ctx, h, norms[which], cfg.layer_norm_eps, cfg.bias)

        def self_block(h: int) -> int:
            out = ao.multi_head_attention(
                ctx,
                f"{prefix}self_attn.",
                h,
                h,
                h,
                cfg.nhead,
                cfg.bias,
                causal=cfg.causal,
                mask=self_padding,
                dropout_rate=cfg.dropout,
            )
            return ao.dropout(ctx, out, cfg.dropout)

        def cross_block(h: int) -> int:
            out = ao.multi_head_attention(
                ctx,
                f"{prefix}multihead_attn.",
                h,
                memory,
                memory,
                cfg.nhead,
                cfg.bias,
                mask=memory_padding,
                dropout_rate=cfg.dropout,
            )
            return ao.dropout(ctx, out, cfg.dropout)

        def feed_forward(h: int) -> int:
            inner = ao.activation(
                ctx, ao.linear(ctx, h, f"{prefix}linear1.", cfg.bias), cfg.activation
            )
            out = ao.linear(ctx, ao.dropout(ctx, inner, cfg.dropout), f"{prefix}linear2.", cfg.bias)
            return ao.dropout(ctx, out, cfg.dropout)

        blocks = [self_block, *([cross_block] if self.decoder else []), feed_forward]
        for which, block in enumerate(blocks):
            if cfg.norm_first:
                x = op(g, "add", x, block(norm(x, which)))
            else:
                x = norm(op(g, "add", x, block(x)), which)
        return x


class _TransformerLayerBase(Layer):
    """Arguments and checks shared by the encoder and decoder layers and stacks.

    With ``key_padding_mask=True`` the layer takes a last float ``(N, Tk)`` input, 1 where
    a key is padding (torch's ``src_key_padding_mask`` for an encoder, its
    ``memory_key_padding_mask`` for a decoder)."""

    decoder = False
    num_layers = 1
    num_inputs = None
    min_inputs = 1

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
        causal: bool = False,
        key_padding_mask: bool = False,
        name: str | None = None,
    ):
        super().__init__(name)
        label = type(self).__name__ if name is None else f"{type(self).__name__} '{name}'"
        self.d_model = _positive(d_model, f"{label} d_model")
        self.nhead = _positive(nhead, f"{label} nhead")
        ao.head_dim_check(d_model, nhead, label)
        self.dim_feedforward = _positive(dim_feedforward, f"{label} dim_feedforward")
        self.dropout = ao.check_rate(dropout, f"{label} dropout")
        self.activation = ao.check_activation(activation, label)
        if not (isinstance(layer_norm_eps, (int, float)) and layer_norm_eps > 0):
            raise ValueError(f"{label} layer_norm_eps must be > 0, got {layer_norm_eps!r}")
        self.layer_norm_eps = float(layer_norm_eps)
        self.norm_first = bool(norm_first)
        self.bias = bool(bias)
        self.causal = bool(causal)
        self.key_padding_mask = bool(key_padding_mask)
        self._block = _Block(self, self.decoder)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "nhead": self.nhead,
            "dim_feedforward": self.dim_feedforward,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_eps": self.layer_norm_eps,
            "norm_first": self.norm_first,
            "bias": self.bias,
            "causal": self.causal,
            "key_padding_mask": self.key_padding_mask,
        }

    def _prefixes(self) -> list[str]:
        return [""]

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        expected = (2 if self.decoder else 1) + self.key_padding_mask
        if len(input_shapes) != expected:
            what = "[target, memory" if self.decoder else "[x"
            what += ", key-padding mask]" if self.key_padding_mask else "]"
            raise ValueError(f"takes {what}, got {len(input_shapes)} inputs")
        sequences = list(input_shapes)
        if self.key_padding_mask:
            mask = sequences.pop()
            keys = sequences[-1]
            if len(mask) != 2 or mask[1] != keys[1]:
                raise ValueError(
                    f"the key-padding mask must be (N, Tk) = (N, {keys[1]}), got {mask}"
                )
        _check_sequences(sequences, self.d_model, "inputs")
        specs = [s for prefix in self._prefixes() for s in self._block.specs(prefix)]
        return specs + self._final_norm_specs()

    def _final_norm_specs(self) -> list[WeightSpec]:
        return []

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        x, memory = inputs[0], inputs[1] if self.decoder else None
        padding = ao.padding_mask(ctx, inputs[-1]) if self.key_padding_mask else None
        for prefix in self._prefixes():
            x = self._block.forward(ctx, prefix, x, memory, padding)
        return self._final_norm(ctx, x)

    def _final_norm(self, ctx: EmitContext, x: int) -> int:
        return x


@register_layer
class TransformerEncoderLayer(_TransformerLayerBase):
    """``torch.nn.TransformerEncoderLayer(batch_first=True)`` on ``(N, T, d_model)``:
    self-attention then a feed-forward block, each with dropout, a residual and a
    LayerNorm (after, or before with ``norm_first``). ``causal`` masks later positions.

    Example:
        >>> h = TransformerEncoderLayer(64, 4, dim_feedforward=128)(gm.Input((None, 64)))
    """

    kind = "encoder_layer"


@register_layer
class TransformerDecoderLayer(_TransformerLayerBase):
    """``torch.nn.TransformerDecoderLayer(batch_first=True)``, called on ``[target,
    memory]``: self-attention over the target (``causal`` for a language model), attention
    over the memory, then the feed-forward block; ``norm1``-``norm3`` as torch's.

    Example:
        >>> t, m = gm.Input((None, 64)), gm.Input((None, 64))
        >>> h = TransformerDecoderLayer(64, 4, causal=True)([t, m])
    """

    kind = "decoder_layer"
    min_inputs = 2
    decoder = True


class _Stack(_TransformerLayerBase):
    """``num_layers`` copies of a layer with their own weights (``layers.<i>.``) and an
    optional final LayerNorm (``norm.``), as torch's ``TransformerEncoder(layer, n, norm)``."""

    def __init__(self, num_layers: int, *args: Any, final_norm: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_layers = _positive(num_layers, f"{type(self).__name__} num_layers")
        self.final_norm = bool(final_norm)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "final_norm": self.final_norm,
        }

    def _prefixes(self) -> list[str]:
        return [f"layers.{i}." for i in range(self.num_layers)]

    def _final_norm_specs(self) -> list[WeightSpec]:
        return ao.norm_specs("norm.", self.d_model, self.bias) if self.final_norm else []

    def _final_norm(self, ctx: EmitContext, x: int) -> int:
        if not self.final_norm:
            return x
        return ao.norm(ctx, x, "norm.", self.layer_norm_eps, self.bias)


@register_layer
class TransformerEncoder(_Stack):
    """A stack of ``TransformerEncoderLayer``s, as ``torch.nn.TransformerEncoder``:
    ``TransformerEncoder(num_layers, d_model, nhead, ..., final_norm=False)``.

    Example:
        >>> h = TransformerEncoder(2, 64, 4, dim_feedforward=128)(gm.Input((None, 64)))
    """

    kind = "encoder"


@register_layer
class TransformerDecoder(_Stack):
    """A stack of ``TransformerDecoderLayer``s on ``[target, memory]``, as
    ``torch.nn.TransformerDecoder``.

    Example:
        >>> t, m = gm.Input((None, 64)), gm.Input((None, 64))
        >>> h = TransformerDecoder(2, 64, 4, causal=True)([t, m])
    """

    kind = "decoder"
    min_inputs = 2
    decoder = True
