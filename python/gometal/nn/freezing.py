"""Freezing layers by name pattern: ``model.freeze("conv2d_*")`` / ``model.unfreeze()``."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from .layers.base import Layer


def set_trainable(layers: Sequence[Layer], patterns: Sequence[str], trainable: bool) -> list[str]:
    """Sets ``trainable`` on the layers whose names match any pattern (all, without any).

    Args:
        layers: the model's layers.
        patterns: ``fnmatch`` patterns of layer names.
        trainable: the flag to set.

    Returns:
        The names of the layers matched, in layer order.

    Raises:
        TypeError: a pattern is not a string.
        ValueError: a pattern matches no layer.

    Example:
        >>> set_trainable(model.layers, ["dense_*"], False)  # doctest: +SKIP
        ['dense_0', 'dense_1']
    """
    names = [str(layer.name) for layer in layers]
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"layer name patterns must be strings, got {pattern!r}")
        if not fnmatch.filter(names, pattern):
            raise ValueError(f"the pattern {pattern!r} matches no layer; the layers are {names}")
    matched = []
    for layer, name in zip(layers, names):
        if not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns):
            layer.trainable = trainable
            matched.append(name)
    return matched
