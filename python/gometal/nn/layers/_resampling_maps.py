"""Resampling along the spatial axes as constant linear maps (interpolation and bin means).

Nearest and bilinear resizing and adaptive average pooling each take every output row
(column) as a fixed weighted sum of input rows (columns): one matrix per axis, built here
in NumPy with torch's index formulas, applied in the graph as two 1x1 convolutions over
the moved axis. The gradient is the transposed map, derived by the engine.
"""

from __future__ import annotations

import math

import numpy as np

from ... import _core
from ...graph.composites import op


def nearest_map(in_size: int, out_size: int, scale_factor: float | None) -> np.ndarray:
    """The ``(out_size, in_size)`` 0/1 matrix of torch's ``mode="nearest"``.

    Output index ``i`` reads input ``min(floor(i * scale), in_size - 1)`` with ``scale =
    1 / scale_factor`` when a factor is given, else ``in_size / out_size``, in float32 as
    torch computes it.

    Example:
        >>> nearest_map(2, 4, 2.0).argmax(axis=1).tolist()
        [0, 0, 1, 1]
    """
    scale = np.float32(1.0 / scale_factor if scale_factor else in_size / out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    matrix = np.zeros((out_size, in_size), np.float32)
    matrix[np.arange(out_size), np.minimum(index, in_size - 1)] = 1.0
    return matrix


def linear_map(
    in_size: int, out_size: int, scale_factor: float | None, align_corners: bool
) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of torch's linear interpolation along one axis.

    With ``align_corners`` the corner samples line up: ``src = i * (in - 1) / (out - 1)``;
    otherwise pixel centres do: ``src = (i + 0.5) * scale - 0.5``, clamped at 0, with
    ``scale = 1 / scale_factor`` when given. Each row mixes ``floor(src)`` and the next
    index (the last index twice at the edge).

    Example:
        >>> linear_map(2, 4, 2.0, False)[1].tolist()
        [0.75, 0.25]
    """
    positions = np.arange(out_size, dtype=np.float32)
    if align_corners:
        scale = np.float32((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
        source = positions * scale
    else:
        scale = np.float32(1.0 / scale_factor if scale_factor else in_size / out_size)
        source = np.maximum((positions + np.float32(0.5)) * scale - np.float32(0.5), 0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    upper_weight = (source - low).astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - upper_weight)
    np.add.at(matrix, (rows, high), upper_weight)
    return matrix


def adaptive_bins(in_size: int, out_size: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins: ``[floor(i * in / out), ceil((i + 1) * in / out))``.

    Example:
        >>> adaptive_bins(5, 3)
        [(0, 2), (1, 4), (3, 5)]
    """
    return [
        (i * in_size // out_size, math.ceil((i + 1) * in_size / out_size)) for i in range(out_size)
    ]


def adaptive_mean_map(in_size: int, out_size: int) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix averaging each of torch's adaptive bins.

    Example:
        >>> adaptive_mean_map(4, 2).tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    matrix = np.zeros((out_size, in_size), np.float32)
    for row, (start, end) in enumerate(adaptive_bins(in_size, out_size)):
        matrix[row, start:end] = 1.0 / (end - start)
    return matrix


def apply_separable_maps(
    g: _core.Graph, x: int, height_map: np.ndarray, width_map: np.ndarray
) -> int:
    """``height_map @ x @ width_map.T`` for every (sample, channel) image of ``x``.

    Each map acts as a 1x1 convolution over the axis it maps, moved to the channel
    position, so the batch stays a free dimension.

    Args:
        g: the graph.
        x: a ``(N, C, H, W)`` node.
        height_map: ``(OH, H)``.
        width_map: ``(OW, W)``.

    Returns:
        The ``(N, C, OH, OW)`` node.

    Example:
        >>> y = apply_separable_maps(g, x, nearest_map(4, 8, 2), nearest_map(4, 8, 2))  # doctest: +SKIP
    """

    def as_kernel(matrix: np.ndarray) -> int:
        return g.constant(np.ascontiguousarray(matrix[:, :, None, None], dtype=np.float32))

    by_width = op(g, "transpose", x, perm=[0, 3, 1, 2])  # (N, W, C, H)
    by_width = op(g, "conv2d", by_width, as_kernel(width_map))  # (N, OW, C, H)
    by_height = op(g, "transpose", by_width, perm=[0, 3, 2, 1])  # (N, H, C, OW)
    by_height = op(g, "conv2d", by_height, as_kernel(height_map))  # (N, OH, C, OW)
    return op(g, "transpose", by_height, perm=[0, 2, 1, 3])
