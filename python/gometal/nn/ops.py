"""Functional helpers on symbolic tensors."""

from __future__ import annotations

from collections.abc import Sequence

from .layers.merge import Concatenate
from .tensor import SymbolicTensor


def concat(tensors: Sequence[SymbolicTensor], axis: int = -1) -> SymbolicTensor:
    """Concatenates symbolic tensors along ``axis`` (a ``Concatenate`` layer).

    Args:
        tensors: two or more symbolic tensors whose shapes agree outside ``axis``.
        axis: the axis to join along; the batch axis is not allowed.

    Returns:
        The concatenated symbolic tensor.

    Example:
        >>> joined = gm.ops.concat([a, b])  # doctest: +SKIP
    """
    return Concatenate(axis=axis)(list(tensors))
