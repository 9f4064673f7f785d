"""ONNX export rules of ``Conv1D``, ``Conv2DTranspose``, ``UpSampling2D``,
``ZeroPadding2D``, ``GlobalMaxPool2D`` and ``AdaptiveAvgPool2D`` (standard operators,
weights in torch's layouts as the layers keep them)."""

from __future__ import annotations

import numpy as np

from ..tensor import LayerCall
from ._resampling_maps import adaptive_mean_map
from .onnx_rules import conv_attributes, weight_operands
from .registry import OnnxGraph


def conv1d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Conv1D``: one 1-D ``Conv`` (its pads may differ left and right, as "same" needs)."""
    layer = call.layer
    operands = weight_operands(b, layer, inputs[0])
    b.node(
        "Conv",
        operands,
        out,
        name,
        kernel_shape=[layer.kernel_size],
        strides=[layer.stride],
        pads=list(layer.pads),
        dilations=[layer.dilation],
        group=layer.groups,
    )


def conv2d_transpose(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``Conv2DTranspose``: one ``ConvTranspose`` (the weight is ``(C, O / groups, kh, kw)``
    in both)."""
    layer = call.layer
    operands = weight_operands(b, layer, inputs[0])
    b.node(
        "ConvTranspose",
        operands,
        out,
        name,
        **conv_attributes(layer),
        output_padding=list(layer.output_padding),
        group=layer.groups,
    )


def upsampling2d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``UpSampling2D``: ``Resize`` by scales, with the coordinate mapping torch uses."""
    layer = call.layer
    factors = np.array(layer.scale_factor, np.float32)
    if layer.align_corners:
        # ONNX's reference divides by the unrounded in * scale - 1, torch by the output
        # size - 1: a scale giving the output size exactly makes both agree.
        _, _, height, width = call.inputs[0].engine_shape
        out_sizes = layer.output_size(height, width)
        factors = np.array([_exact_scale(n, o) for n, o in zip((height, width), out_sizes)])
    scales = b.constant(f"{name}/scales", np.concatenate([[1.0, 1.0], factors]))
    if layer.mode == "nearest":
        modes = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}
        modes["nearest_mode"] = "floor"
    else:
        # torch's align_corners=False is half_pixel (pytorch_half_pixel differs for a
        # single output pixel, which torch still interpolates).
        mapping = "align_corners" if layer.align_corners else "half_pixel"
        modes = {"mode": "linear", "coordinate_transformation_mode": mapping}
    b.node("Resize", [inputs[0], "", scales], out, name, **modes)


def _exact_scale(size: int, out_size: int) -> np.float32:
    """The smallest float32 scale with ``size * scale >= out_size`` (``out_size / size``
    rounded up to the float32 above, when it is not exact)."""
    scale = np.float32(out_size / size)
    while size * float(scale) < out_size:  # exact in float64, as shape inference computes
        scale = np.nextafter(scale, np.float32(np.inf))
    return scale


def zero_padding2d(b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str) -> None:
    """``ZeroPadding2D``: a constant ``Pad`` of the two spatial axes."""
    top, bottom, left, right = call.layer.pads
    pads = b.int_constant(f"{name}/pads", [0, 0, top, left, 0, 0, bottom, right])
    b.node("Pad", [inputs[0], pads], out, name, mode="constant")


def global_max_pool2d(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    """``GlobalMaxPool2D``: ``GlobalMaxPool`` then ``Flatten`` to ``(N, C)``."""
    pooled = b.unique(f"{name}/pooled")
    b.node("GlobalMaxPool", inputs, pooled, pooled)
    b.node("Flatten", [pooled], out, name, axis=1)


def adaptive_avg_pool2d(
    b: OnnxGraph, call: LayerCall, inputs: list[str], out: str, name: str
) -> None:
    """``AdaptiveAvgPool2D``: one ``AveragePool`` when the sizes divide, else the bin means
    as ``MatMul`` with constant matrices on the right: ``((x @ A_w^T)^T @ A_h^T)^T`` over the
    last two axes."""
    layer = call.layer
    _, _, height, width = call.inputs[0].engine_shape
    window = layer.even_window(height, width)
    if window is not None:
        b.node("AveragePool", inputs, out, name, kernel_shape=list(window), strides=list(window))
        return
    oh, ow = layer.output_size
    width_map = b.constant(f"{name}/width_map", adaptive_mean_map(width, ow).T)
    height_map = b.constant(f"{name}/height_map", adaptive_mean_map(height, oh).T)
    by_width = b.unique(f"{name}/by_width")
    b.node("MatMul", [inputs[0], width_map], by_width, by_width)
    swapped = b.unique(f"{name}/swapped")
    b.node("Transpose", [by_width], swapped, swapped, perm=[0, 1, 3, 2])
    by_height = b.unique(f"{name}/by_height")
    b.node("MatMul", [swapped, height_map], by_height, by_height)
    b.node("Transpose", [by_height], out, name, perm=[0, 1, 3, 2])
