"""The convolution tests' shared pieces: a conv2d's attributes, and torch's conv2d in
float64 as the reference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def conv_attrs(stride, padding, dilation, groups: int) -> dict:
    """A gometal conv2d's attributes from (height, width) pairs and a group count."""
    return {
        "stride": list(stride),
        "padding": list(padding),
        "dilation": list(dilation),
        "groups": groups,
    }


def torch_conv2d(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    """conv2d of x (N, C, H, W) by w (O, C / groups, KH, KW) in float64, with the stride,
    padding, dilation and groups of a gometal conv2d's ``attrs``."""
    return F.conv2d(
        torch.from_numpy(x).double(),
        torch.from_numpy(w).double(),
        stride=attrs["stride"],
        padding=attrs["padding"],
        dilation=attrs["dilation"],
        groups=attrs["groups"],
    ).numpy()
