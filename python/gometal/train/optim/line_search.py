"""Strong-Wolfe line search with cubic interpolation (Nocedal & Wright, Algorithms 3.5/3.6).

The choices where the textbook leaves freedom (how far a trial step may extrapolate,
when an interpolated point is too close to the bracket's ends, the stopping tests) are
those of ``torch.optim.LBFGS``, so both take the same steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def cubic_minimizer(
    x1: float,
    f1: float,
    g1: float,
    x2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """The minimizer of the cubic through two points with given values and slopes.

    Nocedal & Wright, eq. (3.59), clamped to ``bounds`` (default: the interval between
    the points). Without a real minimizer, or for degenerate input, returns the middle of
    the bounds.

    Args:
        x1, f1, g1: first point, its value and its derivative.
        x2, f2, g2: second point, its value and its derivative.
        bounds: ``(low, high)`` to clamp the result to.

    Returns:
        The step inside the bounds.

    Example:
        >>> cubic_minimizer(0.0, 1.0, -2.0, 2.0, 1.0, 2.0)  # f(x) = (x - 1)^2
        1.0
    """
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    middle = (low + high) / 2.0
    if x1 == x2:
        return middle
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    discriminant = d1 * d1 - g1 * g2
    if not discriminant >= 0.0:
        return middle
    d2 = math.sqrt(discriminant)
    # Written from the point farther along the line, as N&W's formula.
    if x1 <= x2:
        near, far, g_near, g_far = x1, x2, g1, g2
    else:
        near, far, g_near, g_far = x2, x1, g2, g1
    denominator = g_far - g_near + 2.0 * d2
    if denominator == 0.0:
        return middle
    minimizer = far - (far - near) * ((g_far + d2 - d1) / denominator)
    if not math.isfinite(minimizer):
        return middle
    return min(max(minimizer, low), high)


@dataclass
class _Trial:
    """One evaluated step along the search direction."""

    step: float
    value: float
    grad: np.ndarray
    slope: float  # directional derivative: grad . direction


def strong_wolfe(
    evaluate: Callable[[float], tuple[float, np.ndarray]],
    step: float,
    direction: np.ndarray,
    value: float,
    grad: np.ndarray,
    slope: float,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_iterations: int = 25,
) -> tuple[float, np.ndarray, float, int]:
    """Finds a step satisfying the strong Wolfe conditions along ``direction``.

    Args:
        evaluate: step -> (value, gradient) at ``x + step * direction``.
        step: the first step to try.
        direction: the search direction (float32).
        value: the value at ``x``.
        grad: the gradient at ``x``.
        slope: ``grad . direction`` (negative for a descent direction).
        c1: sufficient-decrease constant.
        c2: curvature constant.
        tolerance_change: stop when the bracket is this short, in units of the largest
            direction element.
        max_iterations: the most calls to ``evaluate`` after the first one.

    Returns:
        ``(value, gradient, step, evaluations)`` at the accepted step.

    Example:
        >>> value, grad, step, calls = strong_wolfe(phi, 1.0, d, f0, g0, g0 @ d)  # doctest: +SKIP
    """
    direction_size = float(np.max(np.abs(direction)))

    def trial(at: float) -> _Trial:
        new_value, new_grad = evaluate(at)
        return _Trial(at, new_value, new_grad, float(np.dot(new_grad, direction)))

    def sufficient_decrease(point: _Trial) -> bool:
        return point.value <= value + c1 * point.step * slope

    def curvature_holds(point: _Trial) -> bool:
        return abs(point.slope) <= -c2 * slope

    # Phase 1 (N&W Algorithm 3.5): grow the step until an interval holds an acceptable one.
    start = _Trial(0.0, value, grad, slope)
    previous, current = start, trial(step)
    evaluations, iterations = 1, 0
    bracket: list[_Trial] | None = None
    done = False
    while iterations < max_iterations:
        if not sufficient_decrease(current) or (iterations > 1 and current.value >= previous.value):
            bracket = [previous, current]
            break
        if curvature_holds(current):
            bracket, done = [current], True
            break
        if current.slope >= 0:
            bracket = [previous, current]
            break
        # Extrapolate: at least 1% beyond the current step, at most ten times it.
        lower = current.step + 0.01 * (current.step - previous.step)
        upper = current.step * 10.0
        next_step = cubic_minimizer(
            previous.step,
            previous.value,
            previous.slope,
            current.step,
            current.value,
            current.slope,
            bounds=(lower, upper),
        )
        previous, current = current, trial(next_step)
        evaluations += 1
        iterations += 1
    if bracket is None:
        # Out of evaluations while still descending: choose between the start and the last.
        bracket = [start, current]

    # Phase 2 (N&W Algorithm 3.6, "zoom"): shrink the interval to an acceptable step.
    low, high = (0, 1) if bracket[0].value <= bracket[-1].value else (1, 0)
    insufficient_progress = False
    while not done and iterations < max_iterations:
        if abs(bracket[1].step - bracket[0].step) * direction_size < tolerance_change:
            break
        a, b = bracket
        candidate = cubic_minimizer(a.step, a.value, a.slope, b.step, b.value, b.slope)
        left, right = min(a.step, b.step), max(a.step, b.step)
        margin = 0.1 * (right - left)
        # A point too near an end of the interval shrinks it little; after one such point,
        # or one outside the interval, move it to 10% of the width from the nearer end.
        if min(right - candidate, candidate - left) < margin:
            if insufficient_progress or candidate >= right or candidate <= left:
                if abs(candidate - right) < abs(candidate - left):
                    candidate = right - margin
                else:
                    candidate = left + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        point = trial(candidate)
        evaluations += 1
        iterations += 1
        if not sufficient_decrease(point) or point.value >= bracket[low].value:
            bracket[high] = point
            low, high = (0, 1) if bracket[0].value <= bracket[1].value else (1, 0)
        else:
            if curvature_holds(point):
                done = True
            elif point.slope * (bracket[high].step - bracket[low].step) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = point

    best = bracket[low]
    return best.value, best.grad, best.step, evaluations
