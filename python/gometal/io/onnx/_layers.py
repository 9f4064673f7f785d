"""Layers for ONNX operators that no built-in gometal layer expresses exactly.

Each is registered for ``model.save`` / ``gm.load_model`` when this module is imported
(importing ``gometal.onnx.importer`` does), so an imported model saves and loads like any
other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...graph.composites import const, op
from ...nn.initializers import Zeros
from ...nn.layers.base import EmitContext, Layer, WeightSpec
from ...nn.layers.registry import register_layer


def _int_list(values: Sequence[int]) -> list[int]:
    return [int(v) for v in values]


@register_layer
class OnnxConstant(Layer):
    """Outputs a fixed tensor (an ONNX initializer or Constant), held as a weight.

    The layer takes any tensor as a placeholder input and ignores it, so constants fit
    the one-input functional graph. The value is a non-trainable weight by default, so
    it is saved with the model.

    Args:
        shape: the constant's full shape (it has no batch dimension).
        trainable: whether the optimizer may update the value.
        name: an explicit layer name.

    Example:
        >>> c = OnnxConstant((3, 1, 1))(x)  # doctest: +SKIP
    """

    kind = "onnx_constant"
    # The placeholder is ignored: a model whose input is token ids holds constants too.
    input_dtypes = ("float32", "int32")

    def __init__(self, shape: Sequence[int], trainable: bool = False, name: str | None = None):
        super().__init__(name)
        self.shape = tuple(_int_list(shape))
        self.trainable = bool(trainable)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.shape), "trainable": self.trainable}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        return [WeightSpec("value", self.shape, Zeros(), trainable=self.trainable)]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return ctx.variable("value")


@register_layer
class OnnxBinary(Layer):
    """One broadcasting binary primitive (``add``, ``sub``, ``mul``, ``div``) of two inputs.

    Args:
        primitive: the engine primitive.
        name: an explicit layer name.

    Example:
        >>> d = OnnxBinary("div")([a, b])  # doctest: +SKIP
    """

    kind = "onnx_binary"
    num_inputs = 2

    def __init__(self, primitive: str, name: str | None = None):
        super().__init__(name)
        if primitive not in ("add", "sub", "mul", "div"):
            raise ValueError(f"OnnxBinary primitive must be add/sub/mul/div, got {primitive!r}")
        self.primitive = primitive

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "primitive": self.primitive}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, self.primitive, inputs[0], inputs[1])


@register_layer
class OnnxUnary(Layer):
    """One elementwise primitive without arguments (``erf``, ``identity`` …).

    Args:
        primitive: an engine unary primitive, or ``"identity"``.
        name: an explicit layer name.

    Example:
        >>> y = OnnxUnary("erf")(x)  # doctest: +SKIP
    """

    kind = "onnx_unary"
    _ALLOWED = ("erf", "identity", "exp", "log", "neg", "abs", "sqrt")

    def __init__(self, primitive: str, name: str | None = None):
        super().__init__(name)
        if primitive not in self._ALLOWED:
            raise ValueError(
                f"OnnxUnary primitive must be one of {self._ALLOWED}, got {primitive!r}"
            )
        self.primitive = primitive

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "primitive": self.primitive}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        if self.primitive == "identity":
            # A reshape to the same shape gives the output its own node.
            return op(g, "reshape", x, shape=list(g.shape(x)))
        return op(g, self.primitive, x)


@register_layer
class OnnxClip(Layer):
    """``min(max(x, low), high)``; ``None`` leaves a side open (ONNX ``Clip``).

    Args:
        low: the lower bound or ``None``.
        high: the upper bound or ``None``.
        name: an explicit layer name.

    Example:
        >>> y = OnnxClip(0.0, 6.0)(x)  # doctest: +SKIP
    """

    kind = "onnx_clip"

    def __init__(
        self, low: float | None = None, high: float | None = None, name: str | None = None
    ):
        super().__init__(name)
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "low": self.low, "high": self.high}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, out = ctx.graph, inputs[0]
        if self.low is not None:
            out = op(g, "maximum", out, const(g, self.low))
        if self.high is not None:
            out = op(g, "minimum", out, const(g, self.high))
        if self.low is None and self.high is None:
            out = op(g, "reshape", out, shape=list(g.shape(out)))
        return out


@register_layer
class OnnxGeluTanh(Layer):
    """GELU's tanh approximation, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Example:
        >>> y = OnnxGeluTanh()(x)  # doctest: +SKIP
    """

    kind = "onnx_gelu_tanh"

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        cube = op(g, "mul", op(g, "square", x), x)
        inner = op(g, "add", x, op(g, "mul", cube, const(g, 0.044715)))
        gate = op(g, "tanh", op(g, "mul", inner, const(g, math.sqrt(2.0 / math.pi))))
        return op(g, "mul", op(g, "mul", x, const(g, 0.5)), op(g, "add", gate, const(g, 1.0)))


@register_layer
class OnnxSoftmax(Layer):
    """Softmax or log-softmax jointly over ``axes`` (non-negative; the batch axis allowed
    when the batch is fixed).

    Args:
        axes: the axes normalized together (one axis since opset 13).
        log: log-softmax instead of softmax.
        name: an explicit layer name.

    Example:
        >>> y = OnnxSoftmax([1], log=True)(x)  # doctest: +SKIP
    """

    kind = "onnx_softmax"

    def __init__(self, axes: Sequence[int], log: bool = False, name: str | None = None):
        super().__init__(name)
        self.axes = _int_list(axes)
        self.log = bool(log)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axes": list(self.axes), "log": self.log}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, z = ctx.graph, inputs[0]
        shift = op(g, "stop_gradient", op(g, "max", z, axes=self.axes, keepdims=True))
        shifted = op(g, "sub", z, shift)
        total = op(g, "sum", op(g, "exp", shifted), axes=self.axes, keepdims=True)
        if self.log:
            return op(g, "sub", shifted, op(g, "log", total))
        return op(g, "div", op(g, "exp", shifted), total)


@register_layer
class OnnxTranspose(Layer):
    """Permutes the axes (ONNX ``Transpose``).

    Args:
        perm: the permutation.
        name: an explicit layer name.

    Example:
        >>> y = OnnxTranspose([0, 2, 1])(x)  # doctest: +SKIP
    """

    kind = "onnx_transpose"

    def __init__(self, perm: Sequence[int], name: str | None = None):
        super().__init__(name)
        self.perm = _int_list(perm)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "perm": list(self.perm)}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "transpose", inputs[0], perm=self.perm)


@register_layer
class OnnxReshape(Layer):
    """Reshapes to a fixed shape (``-1`` at position 0 is the batch).

    Args:
        shape: the target engine shape, resolved at import.
        name: an explicit layer name.

    Example:
        >>> y = OnnxReshape([-1, 64])(x)  # doctest: +SKIP
    """

    kind = "onnx_reshape"

    def __init__(self, shape: Sequence[int], name: str | None = None):
        super().__init__(name)
        self.shape = _int_list(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.shape)}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "reshape", inputs[0], shape=self.shape)


@register_layer
class OnnxReduceMean(Layer):
    """The mean over ``axes`` (ONNX ``GlobalAveragePool`` keeps them as size 1).

    Args:
        axes: the axes to average.
        keepdims: keep the reduced axes with size 1.
        name: an explicit layer name.

    Example:
        >>> y = OnnxReduceMean([2, 3], keepdims=True)(x)  # doctest: +SKIP
    """

    kind = "onnx_reduce_mean"

    def __init__(self, axes: Sequence[int], keepdims: bool = True, name: str | None = None):
        super().__init__(name)
        self.axes = _int_list(axes)
        self.keepdims = bool(keepdims)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axes": list(self.axes), "keepdims": self.keepdims}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "mean", inputs[0], axes=self.axes, keepdims=self.keepdims)


@register_layer
class OnnxMatMul(Layer):
    """``x @ weight`` with NumPy ``matmul`` broadcasting and a trainable ``weight``.

    A 2-D ``x`` against a 2-D weight is one ``matmul``; other ranks multiply with
    broadcasting and sum over the shared axis, which autodiff handles like any product.

    Args:
        weight_shape: the shape of the (constant, trainable) right operand.
        name: an explicit layer name.

    Example:
        >>> y = OnnxMatMul((64, 10))(x)  # doctest: +SKIP
    """

    kind = "onnx_matmul"

    def __init__(self, weight_shape: Sequence[int], name: str | None = None):
        super().__init__(name)
        self.weight_shape = tuple(_int_list(weight_shape))
        if not self.weight_shape:
            raise ValueError("OnnxMatMul weight_shape must have at least one dimension")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_shape": list(self.weight_shape)}

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[WeightSpec]:
        return [WeightSpec("weight", self.weight_shape, Zeros())]

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x, w = ctx.graph, inputs[0], ctx.variable("weight")
        x_shape, w_shape = tuple(g.shape(x)), self.weight_shape
        if len(x_shape) == 2 and len(w_shape) == 2:
            return op(g, "matmul", x, w)
        x_vector, w_vector = len(x_shape) == 1, len(w_shape) == 1
        if x_vector:
            x = op(g, "reshape", x, shape=[1, x_shape[0]])
        if w_vector:
            w = op(g, "reshape", w, shape=[w_shape[0], 1])
        xs, ws = tuple(g.shape(x)), tuple(g.shape(w))
        if len(ws) > 2:
            # A batch of matrices: a size-1 axis for M so (..., M, K, 1) meets (..., 1, K, N).
            w = op(g, "reshape", w, shape=[*ws[:-2], 1, *ws[-2:]])
        product = op(g, "mul", op(g, "reshape", x, shape=[*xs, 1]), w)
        out = op(g, "sum", product, axes=[-2], keepdims=False)
        shape = list(g.shape(out))
        if w_vector:
            shape = shape[:-1]
        if x_vector:
            shape = shape[:-1] if w_vector else shape[:-2] + shape[-1:]
        if list(g.shape(out)) != shape:
            out = op(g, "reshape", out, shape=shape)
        return out


LOWEST_FLOAT32 = float(np.finfo(np.float32).min)


def pad_nchw(g: Any, x: int, pads: Sequence[int], value: float) -> int:
    """Pads the last two axes of ``x`` by ``pads = (top, left, bottom, right)`` with ``value``.

    The fill rows are ``0 * x`` slices plus ``value`` (inputs are finite), so they carry the
    batch size without a batch-shaped constant and pass no gradient back to ``x``. Each side
    is one broadcast of such a slice, so the graph does not grow with the padding.

    Args:
        g: the graph.
        x: a ``(N, C, H, W)`` node.
        pads: the padding per side.
        value: the fill value.

    Returns:
        The padded node.

    Example:
        >>> y = pad_nchw(g, x, (0, 0, 1, 1), 0.0)  # doctest: +SKIP
    """
    top, left, bottom, right = (int(p) for p in pads)
    for axis, before, after in ((2, top, bottom), (3, left, right)):
        if before == 0 and after == 0:
            continue
        edge = op(g, "slice", x, axis=axis, start=0, end=1)
        fill = op(g, "add", op(g, "mul", edge, const(g, 0.0)), const(g, value))
        sides = []
        for size in (before, after):
            shape = list(g.shape(fill))
            shape[axis] = size
            sides.append(op(g, "broadcast_to", fill, shape=shape) if size else None)
        parts = [sides[0], x, sides[1]]
        x = op(g, "concat", *(part for part in parts if part is not None), axis=axis)
    return x


@register_layer
class OnnxPad2D(Layer):
    """Constant padding of ``(N, C, H, W)`` inputs, possibly different on each side.

    Args:
        pads: ``(top, left, bottom, right)``.
        value: the fill value.
        name: an explicit layer name.

    Example:
        >>> y = OnnxPad2D((0, 0, 1, 1))(x)  # doctest: +SKIP
    """

    kind = "onnx_pad2d"

    def __init__(self, pads: Sequence[int], value: float = 0.0, name: str | None = None):
        super().__init__(name)
        self.pads = _int_list(pads)
        if len(self.pads) != 4 or min(self.pads) < 0:
            raise ValueError(f"OnnxPad2D pads must be 4 non-negative ints, got {pads!r}")
        self.value = float(value)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pads": list(self.pads), "value": self.value}

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        return pad_nchw(ctx.graph, inputs[0], self.pads, self.value)


@register_layer
class OnnxPool2D(Layer):
    """ONNX ``MaxPool`` / ``AveragePool`` with any padding: explicit padding, then an
    unpadded pool; averages divide by the count of cells ONNX includes.

    Args:
        mode: ``"max"`` or ``"avg"``.
        kernel_size: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        pads: ``(top, left, bottom, right)`` declared padding.
        extra: ``(bottom, right)`` padding added by ``ceil_mode``; never counted.
        count_include_pad: averages count the declared padding.
        name: an explicit layer name.

    Example:
        >>> y = OnnxPool2D("avg", (3, 3), (1, 1), (1, 1, 1, 1))(x)  # doctest: +SKIP
    """

    kind = "onnx_pool2d"

    def __init__(
        self,
        mode: str,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        pads: Sequence[int],
        extra: Sequence[int] = (0, 0),
        count_include_pad: bool = False,
        name: str | None = None,
    ):
        super().__init__(name)
        if mode not in ("max", "avg"):
            raise ValueError(f"OnnxPool2D mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode
        self.kernel_size = _int_list(kernel_size)
        self.stride = _int_list(stride)
        self.pads = _int_list(pads)
        self.extra = _int_list(extra)
        self.count_include_pad = bool(count_include_pad)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mode": self.mode,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "pads": list(self.pads),
            "extra": list(self.extra),
            "count_include_pad": self.count_include_pad,
        }

    def emit(self, ctx: EmitContext, inputs: Sequence[int]) -> int:
        g, x = ctx.graph, inputs[0]
        top, left, bottom, right = self.pads
        full = (top, left, bottom + self.extra[0], right + self.extra[1])
        attrs = {"kernel_size": self.kernel_size, "stride": self.stride, "padding": [0, 0]}
        if self.mode == "max":
            return op(g, "max_pool2d", pad_nchw(g, x, full, LOWEST_FLOAT32), **attrs)
        pooled = op(g, "avg_pool2d", pad_nchw(g, x, full, 0.0), **attrs)
        height, width = g.shape(x)[2:]
        counted = np.pad(
            np.ones((height, width), np.float32),
            ((top, bottom), (left, right)),
            constant_values=1.0 if self.count_include_pad else 0.0,
        )
        counted = np.pad(counted, ((0, self.extra[0]), (0, self.extra[1])))
        fraction = op(g, "avg_pool2d", g.constant(counted[None, None]), **attrs)
        return op(g, "div", pooled, fraction)
