"""Weight initializers drawn from the engine's Philox generator.

Every weight gets its own stream (a stable index assigned by the model), so the values
depend only on the model seed and the weight's position, never on draw order elsewhere.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from .. import _core


class Initializer(Protocol):
    """A callable ``(seed, stream, shape) -> float32 array``."""

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray: ...


class Uniform:
    """``U(-bound, bound)`` from the engine's counter-based generator.

    Args:
        bound: half-width of the interval.

    Example:
        >>> Uniform(0.5)(seed=0, stream=3, shape=(2, 2)).shape
        (2, 2)
    """

    def __init__(self, bound: float):
        if not bound >= 0:
            raise ValueError(f"bound must be >= 0, got {bound}")
        self.bound = float(bound)

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
        unit = np.asarray(
            _core.random_uniform(int(seed), int(stream), tuple(shape)), dtype=np.float64
        )
        return ((2.0 * unit - 1.0) * self.bound).astype(np.float32)

    def __repr__(self) -> str:
        return f"Uniform(bound={self.bound:g})"


def fan_in_uniform(fan_in: int) -> Uniform:
    """PyTorch's ``nn.Linear`` default for weight and bias: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    (Kaiming-uniform with ``a = sqrt(5)`` reduces to exactly this bound for the weight.)

    Args:
        fan_in: the number of input features.

    Returns:
        The initializer.

    Example:
        >>> fan_in_uniform(64).bound
        0.125
    """
    return Uniform(1.0 / math.sqrt(fan_in))


class Zeros:
    """All zeros."""

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def __repr__(self) -> str:
        return "Zeros()"


class Ones:
    """All ones."""

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.ones(shape, dtype=np.float32)

    def __repr__(self) -> str:
        return "Ones()"
