"""Importer handlers for ``ConvTranspose``, ``Resize``, ``Upsample``, ``Pad`` and
``GlobalMaxPool``, and ``Conv`` over one spatial axis.

Each maps onto a built-in layer (``Conv2DTranspose``, ``UpSampling2D``, ``ZeroPadding2D``,
``GlobalMaxPool2D``, ``Conv1D``) where the layer computes exactly what the operator does,
and refuses the rest by attribute and value. A ``Resize`` imports when the interpolation
ONNX specifies for the file's sizes equals the one the layer applies (torch's modes),
which is checked on the two index maps themselves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...nn import layers as L
from ...nn.tensor import SymbolicTensor
from ._shape_rules import check_window, spatial_pads
from ._spatial_ops import SpatialOperators

# ONNX nearest_mode: the input index a fractional source position rounds to.
NEAREST_ROUNDING = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def onnx_source_positions(in_size: int, out_size: int, scale: float, mode: str) -> np.ndarray:
    """Where each output index samples the input, by ONNX's coordinate_transformation_mode."""
    x = np.arange(out_size, dtype=np.float64)
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        # ONNX divides by the unrounded resized length, in_size * scale, not out_size - 1.
        length = in_size * scale - 1
        return x * (in_size - 1) / length if length > 0 else np.zeros(out_size)
    if mode == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(out_size)
    return (x + 0.5) / scale - 0.5


def onnx_resize_map(in_size: int, out_size: int, scale: float, attrs: dict[str, Any]) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix ONNX's ``Resize`` (nearest or linear) applies."""
    mode = attrs.get("mode", "nearest")
    source = onnx_source_positions(
        in_size, out_size, scale, attrs.get("coordinate_transformation_mode", "half_pixel")
    )
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if mode == "nearest":
        rounding = NEAREST_ROUNDING[attrs.get("nearest_mode", "round_prefer_floor")]
        index = np.clip(rounding(source), 0, in_size - 1).astype(np.int64)
        matrix[rows, index] = 1.0
        return matrix
    source = np.clip(source, 0, in_size - 1)  # linear reads edge values beyond the ends
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    np.add.at(matrix, (rows, low), 1.0 - (source - low))
    np.add.at(matrix, (rows, high), source - low)
    return matrix


class ResamplingOperators(SpatialOperators):
    """The transposed-convolution, resize, pad and global-max handlers."""

    def op_conv_transpose(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``ConvTranspose`` (2-D) as ``Conv2DTranspose``."""
        x, w, kernel, strides, dilations = self.conv_window(node, attrs, "transposed convolution")
        groups = int(attrs.get("group", 1))
        extra = [int(p) for p in attrs.get("output_padding", [0, 0])]
        spatial = x.engine_shape[2:]
        full = [
            (n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(spatial, strides, kernel, dilations)
        ]
        begins, ends = self._transpose_pads(attrs, full, extra, strides)
        # The layer crops `padding` from the start and keeps `output_padding` more at the
        # end: begins become the padding, and a shorter end becomes output padding.
        output_padding = [e + b - a for e, b, a in zip(extra, begins, ends)]
        if min(begins) < 0 or any(not 0 <= p < s for p, s in zip(output_padding, strides)):
            self.fail(
                f"pads begin {begins} and end {ends} with output_padding {extra} leave an "
                f"end crop that Conv2DTranspose cannot express (output padding "
                f"{output_padding} must be in [0, stride {strides}))"
            )
        weights = self.conv_weights(node, w, "ConvTranspose")
        layer = L.Conv2DTranspose(
            w.shape[1] * groups, tuple(kernel), tuple(strides), tuple(begins),
            tuple(output_padding), tuple(dilations), groups, use_bias="bias" in weights,
            name=self.layer_name(),
        )  # fmt: skip
        return self.call(layer, x, weights)

    def _transpose_pads(
        self, attrs: dict[str, Any], full: list[int], extra: list[int], strides: list[int]
    ) -> tuple[list[int], list[int]]:
        auto_pad = attrs.get("auto_pad", "NOTSET")
        wanted = attrs.get("output_shape")
        if wanted is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            wanted = [
                n * s for n, s in zip(self.runtime(self.node.input[0]).engine_shape[2:], strides)
            ]
        if wanted is None:
            return spatial_pads(auto_pad, attrs.get("pads"), full, [1, 1], [1, 1], [1, 1])
        wanted = [int(v) for v in wanted][-2:]
        # ONNX's rule; a negative total (a larger output_shape) pads the end.
        totals = [f + e - o for f, e, o in zip(full, extra, wanted)]
        halves = [t // 2 for t in totals]
        if auto_pad == "SAME_UPPER":
            return halves, [t - h for t, h in zip(totals, halves)]
        return [t - h for t, h in zip(totals, halves)], halves

    def op_conv1d(self, x: SymbolicTensor, w: np.ndarray, attrs: dict[str, Any]) -> Any:
        """ONNX ``Conv`` over one spatial axis as ``Conv1D``."""
        kernel = [int(k) for k in attrs.get("kernel_shape", w.shape[2:])]
        strides = [int(s) for s in attrs.get("strides", [1])]
        dilations = [int(d) for d in attrs.get("dilations", [1])]
        check_window(kernel, strides, dilations, 1)
        if kernel != [w.shape[2]]:
            self.fail(f"kernel_shape {kernel} differs from the weight's length {w.shape[2]}")
        begins, ends = self._spatial_pads(attrs, x, kernel, strides, dilations)
        padding: int | str = begins[0]
        if begins != ends:
            total = dilations[0] * (kernel[0] - 1)
            if strides != [1] or [begins[0], ends[0]] != [total // 2, total - total // 2]:
                self.fail(
                    f"1-D pads {[begins[0], ends[0]]} are uneven in a way Conv1D does not "
                    "take (only an even 'same' kernel pads one more on the right)"
                )
            padding = "same"
        weights = self.conv_weights(self.node, w, "Conv")
        layer = L.Conv1D(
            w.shape[0], kernel[0], strides[0], padding, dilations[0], int(attrs.get("group", 1)),
            use_bias="bias" in weights, name=self.layer_name(),
        )  # fmt: skip
        return self.call(layer, x, weights)

    def op_global_max_pool(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``GlobalMaxPool`` (2-D) as ``GlobalMaxPool2D``, kept as ``(N, C, 1, 1)``."""
        x = self.runtime(node.input[0])
        if len(x.engine_shape) != 4:
            self.fail(
                f"only 2-D global max pooling is supported, got input rank {len(x.engine_shape)}"
            )
        pooled = self.call(L.GlobalMaxPool2D(name=self.layer_name()), x)
        batch, channels = pooled.engine_shape
        return self.reshape_to(pooled, [batch, channels, 1, 1])

    def op_pad(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``Pad`` with zeros around the two spatial axes as ``ZeroPadding2D``."""
        x = self.runtime(node.input[0])
        rank = len(x.engine_shape)
        mode = attrs.get("mode", "constant")
        if mode != "constant":
            self.fail(f"mode {mode!r} is not supported; only constant zero padding is")
        if self.opset < 11:
            pads, value = [int(p) for p in attrs.get("pads", [])], float(attrs.get("value", 0.0))
        else:
            pads = self.int_list(node.input[1], "Pad pads")
            given = node.input[2] if len(node.input) > 2 else ""
            value = (
                float(np.asarray(self.const(given, "Pad constant_value")).reshape(-1)[0])
                if given
                else 0.0
            )
        if value != 0.0:
            self.fail(f"constant_value {value} is not supported; only zero padding is")
        axes = list(range(rank))
        if len(node.input) > 3 and node.input[3]:
            axes = [a + rank if a < 0 else a for a in self.int_list(node.input[3], "Pad axes")]
        if len(pads) != 2 * len(axes) or min(pads, default=0) < 0:
            self.fail(f"pads {pads} must be {2 * len(axes)} non-negative ints")
        before = dict(zip(axes, pads[: len(axes)]))
        after = dict(zip(axes, pads[len(axes) :]))
        if rank != 4 or any(before.get(a, 0) or after.get(a, 0) for a in (0, 1)):
            self.fail(
                f"only padding of the two spatial axes of a 4-D input is supported, got pads "
                f"{pads} on axes {axes} of an input of rank {rank}"
            )
        padding = ((before.get(2, 0), after.get(2, 0)), (before.get(3, 0), after.get(3, 0)))
        return self.call(L.ZeroPadding2D(padding, name=self.layer_name()), x)

    def op_resize(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``Resize`` / ``Upsample`` (nearest or linear, 2-D) as ``UpSampling2D``."""
        x = self.runtime(node.input[0])
        if len(x.engine_shape) != 4:
            self.fail(
                f"only 2-D resizing of (N, C, H, W) is supported, got rank {len(x.engine_shape)}"
            )
        for key, default in (("antialias", 0), ("exclude_outside", 0)):
            if int(attrs.get(key, default)) != default:
                self.fail(f"{key}={attrs[key]} is not supported")
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            self.fail(f"keep_aspect_ratio_policy {policy!r} is not supported (only 'stretch')")
        mode = attrs.get("mode", "nearest")
        if mode not in ("nearest", "linear", "bilinear"):
            self.fail(f"mode {mode!r} is not supported (only 'nearest' and 'linear')")
        if node.op_type == "Upsample":
            attrs = {
                **attrs,
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            }
        transform = attrs.get("coordinate_transformation_mode", "half_pixel")
        if transform not in COORDINATE_MODES:
            self.fail(f"coordinate_transformation_mode {transform!r} is not supported")
        scales = self._resize_scales(node, attrs, x)
        spatial = x.engine_shape[2:]
        outputs = [math.floor(n * s) for n, s in zip(spatial, scales)]
        onnx_maps = [onnx_resize_map(n, o, s, attrs) for n, o, s in zip(spatial, outputs, scales)]
        layer_mode = "nearest" if mode == "nearest" else "bilinear"
        candidates = [False, True] if layer_mode == "bilinear" else [False]
        name = self.layer_name()
        for align_corners in candidates:
            layer = L.UpSampling2D(tuple(scales), layer_mode, align_corners, name=name)
            maps = layer.interpolation_maps(*spatial)
            if all(
                m.shape == o.shape and np.allclose(m, o, atol=1e-6) for m, o in zip(maps, onnx_maps)
            ):
                return self.call(layer, x)
        self.fail(
            f"mode {mode!r} with coordinate_transformation_mode {transform!r}"
            + (
                f" and nearest_mode {attrs.get('nearest_mode', 'round_prefer_floor')!r}"
                if mode == "nearest"
                else ""
            )
            + f" samples other pixels than torch's {layer_mode!r} for {tuple(spatial)} -> "
            f"{tuple(outputs)}; not supported"
        )

    def _resize_scales(self, node: Any, attrs: dict[str, Any], x: SymbolicTensor) -> list[float]:
        """The (height, width) scales of a Resize, from scales or sizes (and axes)."""
        rank = len(x.engine_shape)
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in attrs.get("axes", range(rank))]
        inputs = list(node.input)
        if node.op_type == "Upsample" and "scales" in attrs:  # before opset 9
            return [float(s) for s in attrs["scales"]][2:]
        if node.op_type == "Upsample" or self.opset < 11:
            scales_name, sizes_name = inputs[1], ""
        else:
            scales_name = inputs[2] if len(inputs) > 2 else ""
            sizes_name = inputs[3] if len(inputs) > 3 else ""
            if inputs[1] and attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
                self.fail("coordinate_transformation_mode 'tf_crop_and_resize' is not supported")
        per_axis: dict[int, float] = {}
        if scales_name and self.const(scales_name, "Resize scales").size:
            values = self.float_const(scales_name, "Resize scales").reshape(-1)
            per_axis = {a: float(v) for a, v in zip(axes, values)}
        elif sizes_name:
            sizes = self.int_list(sizes_name, "Resize sizes")
            shape = x.engine_shape
            per_axis = {a: int(n) / shape[a] for a, n in zip(axes, sizes) if a >= 2}
            per_axis.update({a: 1.0 for a, n in zip(axes, sizes) if a == 1 and n == shape[1]})
            per_axis.update({a: 1.0 for a, n in zip(axes, sizes) if a == 0})
        else:
            self.fail("needs scales or sizes")
        for a in (0, 1):
            if per_axis.get(a, 1.0) != 1.0:
                self.fail(
                    f"only the spatial axes may be resized, got scale {per_axis[a]} on axis {a}"
                )
        scales = [per_axis.get(2, 1.0), per_axis.get(3, 1.0)]
        if min(scales) <= 0:
            self.fail(f"scales {scales} must be positive")
        return scales

    def op_conv(self, node: Any, attrs: dict[str, Any]) -> SymbolicTensor:
        """ONNX ``Conv``: over one spatial axis as ``Conv1D``, over two as ``Conv2D``."""
        w = self.const(node.input[1], "Conv weight W")
        x = self.runtime(node.input[0])
        if w.ndim == 3 and len(x.engine_shape) == 3:
            return self.op_conv1d(x, self.float_const(node.input[1], "Conv weight W"), attrs)
        return super().op_conv(node, attrs)


RESAMPLING_OPS = frozenset({"ConvTranspose", "Resize", "Upsample", "Pad", "GlobalMaxPool"})
RESAMPLING_HANDLERS = {
    "Conv": ResamplingOperators.op_conv,
    "ConvTranspose": ResamplingOperators.op_conv_transpose,
    "Resize": ResamplingOperators.op_resize,
    "Upsample": ResamplingOperators.op_resize,
    "Pad": ResamplingOperators.op_pad,
    "GlobalMaxPool": ResamplingOperators.op_global_max_pool,
}
