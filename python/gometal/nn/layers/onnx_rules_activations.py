"""ONNX export rules of the activations added beside the first ones (Hardswish, Mish,
PReLU), and of a layer's built-in ``activation=`` (the activation's own rule, applied to
the layer's result)."""

from __future__ import annotations

from ..tensor import LayerCall
from .base import Layer
from .registry import OnnxGraph, OnnxRule, entry_of


def hardswish(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Hardswish``: ``HardSwish`` from opset 14, else ``x * HardSigmoid(x)``."""
    if b.opset >= 14:
        b.node("HardSwish", inputs, out, name)
        return
    gate = b.unique(f"{name}/gate")
    b.node("HardSigmoid", inputs, gate, gate, alpha=1.0 / 6.0, beta=0.5)
    b.node("Mul", [inputs[0], gate], out, name)


def mish(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Mish``: ``Mish`` from opset 18, else ``x * Tanh(Softplus(x))``."""
    if b.opset >= 18:
        b.node("Mish", inputs, out, name)
        return
    softplus = b.unique(f"{name}/softplus")
    b.node("Softplus", inputs, softplus, softplus)
    gate = b.unique(f"{name}/tanh")
    b.node("Tanh", [softplus], gate, gate)
    b.node("Mul", [inputs[0], gate], out, name)


def prelu(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``PReLU``: ``PRelu``, the per-channel slope reshaped to ``(C, 1, ...)`` for images."""
    layer = call.layer
    slope = b.weight(layer, "weight")
    rank = call.inputs[0].ndim
    if layer.num_parameters != 1 and rank > 2:
        shape = b.int_constant(f"{name}/slope_shape", [layer.num_parameters] + [1] * (rank - 2))
        shaped = b.unique(f"{name}/slope")
        b.node("Reshape", [slope, shape], shaped, shaped)
        slope = shaped
    b.node("PRelu", [inputs[0], slope], out, name)


def then_activation(rule: OnnxRule) -> OnnxRule:
    """A rule writing ``rule``'s nodes, then the layer's ``activation`` (if any) on them.

    Args:
        rule: the rule of the layer without its activation.

    Returns:
        The combined rule.

    Example:
        >>> dense_rule = then_activation(onnx_rules.dense)  # doctest: +SKIP
    """

    def combined(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
        activation: Layer | None = call.layer.activation_layer
        if activation is None:
            rule(b, call, inputs, out, name)
            return
        linear = b.unique(f"{name}/linear")
        rule(b, call, inputs, linear, linear)
        entry = entry_of(type(activation))
        if entry is None or entry.onnx is None:
            raise ValueError(f"activation {type(activation).__name__} has no ONNX rule")
        inner = LayerCall(activation, [call.output], call.output.engine_shape)
        entry.onnx(b, inner, [linear], out, b.unique(f"{name}/activation"))

    return combined
