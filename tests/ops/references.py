"""NumPy references for op cases that need more than one NumPy call."""

from __future__ import annotations

import math

import numpy as np

erf = np.vectorize(math.erf, otypes=[np.float64])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def sign_like_torch(x: np.ndarray) -> np.ndarray:
    """np.sign, except that NaN maps to 0 as torch.sign does."""
    return np.where(np.isnan(x), 0.0, np.sign(x))


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Finite float32 values rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def channel_moments(x: np.ndarray) -> np.ndarray:
    """(2, C): per-channel (axis 1) mean and biased variance over every other axis."""
    axes = (0, *range(2, x.ndim))
    return np.stack([x.mean(axis=axes), x.var(axis=axes)])


def pair(v) -> list[int]:
    """An int or a pair as a two-element list (the engine's kernel, stride, padding attrs)."""
    return [v, v] if isinstance(v, int) else list(v)


def conv2d(x, w, stride, padding, dilation, groups) -> np.ndarray:
    """Cross-correlation of x (N, C, H, W) with w (O, C/groups, KH, KW), as torch's conv2d."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for gi in range(groups):
        xs = xp[:, gi * cg : (gi + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh]
                patch = patch[:, :, :, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                out[:, gi * og : (gi + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[gi * og : (gi + 1) * og, :, i, j]
                )
    return out


def pool2d(x, kind, kernel, stride, padding) -> np.ndarray:
    """Max pooling (padding counts as -inf) or average pooling (padding counts as zeros)."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    windows = np.stack(
        [
            xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]
    )
    return windows.max(axis=0) if kind == "max" else windows.mean(axis=0)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
