"""Input generators for op cases: `domain(rng, shape) -> np.ndarray`.

A domain keeps a case's inputs where its reference is smooth enough for central differences
(positive values for log and sqrt, no ties for max and argmax, no values near a kink).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Shape = tuple[int, ...]
Domain = Callable[[np.random.Generator, Shape], np.ndarray]


def any_values(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Uniform on [-2, 2)."""
    return rng.uniform(-2.0, 2.0, shape)


def unit(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Uniform on [-1, 1): the scale of convolution and pooling inputs."""
    return rng.uniform(-1.0, 1.0, shape)


def positive(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Uniform on [0.5, 2.5): inside the domain of log, sqrt and rsqrt."""
    return rng.uniform(0.5, 2.5, shape)


def away_from_zero(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Magnitudes in [0.2, 2) with random signs: clear of the kinks of relu, abs and sign."""
    return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def denominators(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Magnitudes in [0.5, 2) with random signs: a divisor whose quotient stays moderate."""
    values = away_from_zero(rng, shape)
    return np.where(np.abs(values) < 0.5, np.sign(values) * 0.5, values)


def distinct(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Values at least 0.1 apart, so max and argmax have unique winners away from kinks."""
    n = int(np.prod(shape, dtype=np.int64))
    return (rng.permutation(n) * 0.1 - 0.05 * n).reshape(shape)


def distinct_small(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """`distinct` scaled into about [-0.05, 0.05): unique window maxima for pooling."""
    return distinct(rng, shape) / np.prod(shape)


def half_steps(offset: float) -> Domain:
    """Multiples of 0.5 plus `offset` and a little noise: two operands drawn with offsets 0.25
    apart differ by at least 0.15 wherever they meet (maximum and minimum stay off their kink)."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return 0.5 * rng.integers(-4, 4, shape) + offset + rng.uniform(-0.05, 0.05, shape)

    return draw


def small_integers(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Integers in [-2, 2] as floats, so comparisons meet ties."""
    return rng.integers(-2, 3, shape).astype(np.float64)


def conditions(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """0/1 floats: the condition of a select."""
    return (rng.uniform(size=shape) > 0.5).astype(np.float64)


def labels(depth: int) -> Domain:
    """int32 class indices in [0, depth)."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return rng.integers(0, depth, shape).astype(np.int32)

    return draw


def fixed(values: Sequence) -> Domain:
    """The given values, whatever the generator (edge cases written out by hand)."""
    array = np.asarray(values, dtype=np.float64)

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        assert array.shape == tuple(shape), (array.shape, shape)
        return array.copy()

    return draw


def near(center: float) -> Domain:
    """`center` plus standard normal noise: a large mean over a small spread."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return center + rng.standard_normal(shape)

    return draw


def ties(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """0/1 floats with the first plane all ones: windows whose maximum occurs many times."""
    values = rng.integers(0, 2, shape).astype(np.float64)
    values[0, 0] = 1.0
    return values


def negative_corner(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """`unit` with the top-left 4x4 of every plane negative: windows relu zeroes entirely."""
    values = unit(rng, shape)
    values[:, :, :4, :4] = -np.abs(values[:, :, :4, :4])
    return values


def with_nan(domain: Domain, every: int = 3) -> Domain:
    """`domain` with NaN at every `every`-th element (the engine refuses NaN inputs, so such
    an argument is held in a variable)."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        values = np.array(domain(rng, shape), dtype=np.float64)
        values.reshape(-1)[::every] = np.nan
        return values

    return draw
