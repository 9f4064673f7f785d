"""Importer handlers for convolution and pooling (``Conv``, ``MaxPool``, ``AveragePool``,
``GlobalAveragePool``).

Window attributes are checked first (positive kernel, strides and dilations, one per
spatial axis), then the padded input and any pooling count map are checked against the
per-sample budget from the attributes alone, before a layer is made: a few bytes of
attributes must not ask for gigabytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...nn import layers as L
from ...nn.tensor import SymbolicTensor
from . import _layers as X
from ._budget import sample_bytes
from ._shape_ops import ShapeOperators
from ._shape_rules import ceil_extra, check_window, spatial_pads


class SpatialOperators(ShapeOperators):
    """The convolution and pooling handlers (see the module docstring)."""

    def _spatial_pads(
        self, attrs: dict[str, Any], x: SymbolicTensor, kernel: list[int], strides: list[int],
        dilations: list[int],
    ) -> tuple[list[int], list[int]]:  # fmt: skip
        return spatial_pads(
            attrs.get("auto_pad", "NOTSET"), attrs.get("pads"), x.engine_shape[2:], kernel,
            strides, dilations,
        )  # fmt: skip

    def _check_padded(self, x: SymbolicTensor, padded: list[int], count_map: bool) -> None:
        # The padded copy (or a direct convolution's padded scratch) and the count map
        # grow with the pads, whatever the input's size.
        shape = (x.engine_shape[1], *padded)
        size = sample_bytes(shape) + (sample_bytes(padded) if count_map else 0)
        what = f"the padded input {shape}" + (" and its count map" if count_map else "")
        self.budget.check(self.where(), size, what)

    def conv_window(
        self, node: Any, attrs: dict[str, Any], what: str
    ) -> tuple[SymbolicTensor, np.ndarray, list[int], list[int], list[int]]:
        """A 2-D ``Conv`` or ``ConvTranspose`` node's input, weight, kernel, strides and
        dilations, checked (``what``: "convolution" or "transposed convolution")."""
        op = "Conv" if what == "convolution" else "ConvTranspose"
        x = self.runtime(node.input[0])
        w = self.float_const(node.input[1], f"{op} weight W")
        if w.ndim != 4 or len(x.engine_shape) != 4:
            self.fail(f"only 2-D {what} is supported, got weight shape {w.shape}")
        kernel = [int(k) for k in attrs.get("kernel_shape", w.shape[2:])]
        if kernel != list(w.shape[2:]):
            self.fail(
                f"kernel_shape {kernel} differs from the weight's spatial shape {w.shape[2:]}"
            )
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        dilations = [int(d) for d in attrs.get("dilations", [1, 1])]
        check_window(kernel, strides, dilations, 2)
        return x, w, kernel, strides, dilations

    def conv_weights(self, node: Any, w: np.ndarray, op: str) -> dict[str, np.ndarray]:
        """A convolution layer's weights: ``w``, and the node's bias B when it has one."""
        weights = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            weights["bias"] = self.float_const(node.input[2], f"{op} bias B")
        return weights

    def op_conv(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``Conv`` (2-D) as ``Conv2D``, after an ``OnnxPad2D`` for uneven padding."""
        x, w, kernel, strides, dilations = self.conv_window(node, attrs, "convolution")
        begins, ends = self._spatial_pads(attrs, x, kernel, strides, dilations)
        spatial = x.engine_shape[2:]
        self._check_padded(x, [s + b + e for s, b, e in zip(spatial, begins, ends)], False)
        if begins != ends:
            pad = X.OnnxPad2D([*begins, *ends], name=self.name(f"{self.node.name}_pad"))
            x, begins = self.call(pad, x), [0, 0]
        pads = begins
        weights = self.conv_weights(node, w, "Conv")
        layer = L.Conv2D(
            w.shape[0], tuple(kernel), tuple(strides), tuple(pads), tuple(dilations),
            int(attrs.get("group", 1)), use_bias="bias" in weights, name=self.layer_name(),
        )  # fmt: skip
        return self.call(layer, x, weights)

    def op_pool(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``MaxPool`` / ``AveragePool`` over 1 or 2 spatial axes."""
        x = self.runtime(node.input[0])
        kernel = [int(k) for k in attrs.get("kernel_shape", [])]
        rank = len(x.engine_shape)
        if len(kernel) not in (1, 2) or rank != len(kernel) + 2:
            self.fail(f"only 1-D and 2-D pooling are supported, got kernel_shape {kernel}")
        strides = [int(s) for s in attrs.get("strides", [1] * len(kernel))]
        dilations = [int(d) for d in attrs.get("dilations", [1] * len(kernel))]
        check_window(kernel, strides, dilations, len(kernel))
        if any(d != 1 for d in dilations):
            self.fail(f"dilations {dilations} are not supported")
        begins, ends = self._spatial_pads(attrs, x, kernel, strides, dilations)
        spatial = list(x.engine_shape[2:])
        extra = ceil_extra(spatial, kernel, strides, begins, ends)
        if not int(attrs.get("ceil_mode", 0)):
            extra = [0] * len(kernel)
        padded = [s + b + e + c for s, b, e, c in zip(spatial, begins, ends, extra)]
        self._check_padded(x, padded, node.op_type == "AveragePool")
        if len(kernel) == 1:
            # A 1-D pool is a 2-D pool over a height of one.
            batch, channels, length = x.engine_shape
            x = self.reshape_to(x, [batch, channels, 1, length])
            kernel, strides, spatial = [1, *kernel], [1, *strides], [1, *spatial]
            begins, ends, extra = [0, *begins], [0, *ends], [0, *extra]
        out = self._pool2d(node.op_type, x, kernel, strides, (begins, ends, extra), attrs)
        if rank == 3:
            batch, channels, _, length = out.engine_shape
            out = self.reshape_to(out, [batch, channels, length])
        return out

    def _pool2d(
        self, op_type: str, x: SymbolicTensor, kernel: list[int], strides: list[int],
        padding: tuple[list[int], list[int], list[int]], attrs: dict[str, Any],
    ) -> SymbolicTensor:  # fmt: skip
        begins, ends, extra = padding
        include = bool(int(attrs.get("count_include_pad", 0)))
        mode = "max" if op_type == "MaxPool" else "avg"
        name = self.layer_name()
        simple = (
            begins == ends
            and extra == [0, 0]
            and all(2 * p <= k for p, k in zip(begins, kernel))
            and (mode == "max" or include or begins == [0, 0])
        )
        if simple:
            cls = L.MaxPool2D if mode == "max" else L.AvgPool2D
            return self.call(cls(tuple(kernel), tuple(strides), tuple(begins), name=name), x)
        layer = X.OnnxPool2D(mode, kernel, strides, [*begins, *ends], extra, include, name=name)
        return self.call(layer, x)

    def op_global_pool(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``GlobalAveragePool``: the mean over the spatial axes, kept as size 1."""
        x = self.runtime(node.input[0])
        axes = list(range(2, len(x.engine_shape)))
        return self.call(X.OnnxReduceMean(axes, keepdims=True, name=self.layer_name()), x)
