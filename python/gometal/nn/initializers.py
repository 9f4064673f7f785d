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


class Constant:
    """Every value ``value`` (PReLU's initial slope, say).

    Args:
        value: the fill value.

    Example:
        >>> Constant(0.25)(seed=0, stream=0, shape=(2,))
        array([0.25, 0.25], dtype=float32)
    """

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.full(shape, self.value, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Constant({self.value:g})"


class Normal:
    """``N(0, std ** 2)`` from the engine's counter-based generator (Box-Muller).

    Args:
        std: the standard deviation (>= 0).

    Example:
        >>> Normal(0.1)(seed=0, stream=3, shape=(2, 2)).shape
        (2, 2)
    """

    def __init__(self, std: float):
        if not std >= 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std = float(std)

    def __call__(self, seed: int, stream: int, shape: tuple[int, ...]) -> np.ndarray:
        pairs = np.asarray(
            _core.random_uniform(int(seed), int(stream), (2, *tuple(shape))), dtype=np.float64
        )
        # 1 - u lies in (0, 1], so the log is finite.
        radius = np.sqrt(-2.0 * np.log1p(-pairs[0]))
        return (radius * np.cos(2.0 * math.pi * pairs[1]) * self.std).astype(np.float32)

    def __repr__(self) -> str:
        return f"Normal(std={self.std:g})"


# Keras's names: (distribution, scale, mode) of a variance-scaling draw, whose variance is
# scale / n with n the fan in, the fan out, or their mean.
_VARIANCE_SCALING = {
    "glorot_uniform": ("uniform", 1.0, "fan_avg"),
    "glorot_normal": ("normal", 1.0, "fan_avg"),
    "he_uniform": ("uniform", 2.0, "fan_in"),
    "he_normal": ("normal", 2.0, "fan_in"),
    "lecun_uniform": ("uniform", 1.0, "fan_in"),
    "lecun_normal": ("normal", 1.0, "fan_in"),
}
INITIALIZER_NAMES = (
    "default",
    *_VARIANCE_SCALING,
    "zeros",
    "ones",
    "random_uniform",
    "random_normal",
)


def check_initializer_name(name: object, what: str) -> str:
    """Returns ``name`` if it names an initializer, else raises ``ValueError`` naming ``what``.

    Args:
        name: the proposed name.
        what: how errors name the argument, e.g. ``"Dense kernel_initializer"``.

    Returns:
        The name.

    Example:
        >>> check_initializer_name("he_normal", "kernel_initializer")
        'he_normal'
    """
    if not isinstance(name, str) or name not in INITIALIZER_NAMES:
        raise ValueError(f"{what} must be one of {list(INITIALIZER_NAMES)}, got {name!r}")
    return name


def named_initializer(name: str, fan_in: int, fan_out: int) -> Initializer:
    """The initializer Keras calls ``name``, for a weight with these fans.

    ``"default"`` is PyTorch's default for linear and convolution layers,
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. The variance-scaling names draw with variance
    ``scale / n``: ``glorot_*`` (``n = (fan_in + fan_out) / 2``, torch's ``xavier_*_``),
    ``he_*`` (scale 2, ``n = fan_in``, torch's ``kaiming_*_``) and ``lecun_*`` (scale 1,
    ``n = fan_in``); ``*_uniform`` from ``U(-sqrt(3 scale / n), sqrt(3 scale / n))``,
    ``*_normal`` from an untruncated normal (as torch; Keras truncates at two standard
    deviations). ``random_uniform`` is ``U(-0.05, 0.05)`` and ``random_normal``
    ``N(0, 0.05 ** 2)``, Keras's defaults.

    Args:
        name: one of ``INITIALIZER_NAMES``.
        fan_in: inputs per output unit (``in_features``, or ``C / groups * kh * kw``).
        fan_out: outputs per input unit (``out_features``, or ``O * kh * kw`` as torch).

    Returns:
        The initializer.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> named_initializer("glorot_uniform", 4, 2).bound
        1.0
    """
    check_initializer_name(name, "initializer")
    if name == "default":
        return fan_in_uniform(fan_in)
    if name == "zeros":
        return Zeros()
    if name == "ones":
        return Ones()
    if name == "random_uniform":
        return Uniform(0.05)
    if name == "random_normal":
        return Normal(0.05)
    distribution, scale, mode = _VARIANCE_SCALING[name]
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(float(n), 1.0)
    if distribution == "uniform":
        return Uniform(math.sqrt(3.0 * variance))
    return Normal(math.sqrt(variance))
