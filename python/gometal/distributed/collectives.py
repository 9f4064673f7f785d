"""Collectives on NumPy arrays, through the communicator the engine uses."""

from __future__ import annotations

import numpy as np

from .. import _core


def all_reduce_mean(x: np.ndarray) -> np.ndarray:
    """The element-wise mean of ``x`` over every rank (float32); ``x`` outside a job.

    Args:
        x: an array of the same shape on every rank.

    Returns:
        A new float32 array.

    Example:
        >>> gm.distributed.all_reduce_mean(np.ones(3))
        array([1., 1., 1.], dtype=float32)
    """
    values = np.ascontiguousarray(x, dtype=np.float32)
    _, size, attached = _core.communicator_info()
    if not attached:
        return values.copy()
    return _core.all_reduce_sum(values) / np.float32(size)


def broadcast(x: np.ndarray, root: int = 0) -> np.ndarray:
    """``root``'s ``x`` on every rank (``x`` must have the same shape and dtype on each).

    Args:
        x: the array (read on ``root``, its shape and dtype on the others).
        root: the rank whose values every rank gets.

    Returns:
        A new array holding root's values.

    Example:
        >>> gm.distributed.broadcast(np.arange(3))
        array([0, 1, 2])
    """
    values = np.array(x, copy=True, order="C")
    if _core.communicator_info()[2]:
        _core.broadcast_bytes(values, root)
    return values
