"""The convolution tests' shared reference: torch's conv2d in float64."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
