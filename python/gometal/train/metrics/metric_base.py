"""The base class of the streaming metrics, and the tagged dicts their states travel in.

A state names the metric class and the settings that change what it counts, so that
``merge_state`` refuses another metric's state with a clear error rather than adding
counts that mean something else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike


class Metric:
    """Base class of the streaming metrics.

    Subclasses implement ``update``, ``result`` and ``reset``; ``name`` is the key the
    trainer records the result under. A metric whose accumulation merges also implements
    ``state()`` (a dict of NumPy arrays and ints, tagged by ``tagged_state``) and
    ``merge_state(state)`` (adds another metric's state, checked by ``checked_state``): a
    distributed evaluation then merges the ranks' states, in rank order, instead of
    feeding every rank's outputs to every rank's metric. Merging ``a.state()`` into ``b``
    gives what ``b`` would hold had it been fed ``a``'s batches after its own.

    Attributes:
        name: the metric's name (for example ``"precision_macro"``).

    Example:
        >>> metric = gm.metrics.Accuracy()  # doctest: +SKIP
        >>> for x, y in batches:  # doctest: +SKIP
        ...     metric.update(y, trainer.predict_proba(x))
        >>> metric.result()  # doctest: +SKIP
        0.93
        >>> whole = gm.metrics.Accuracy()  # doctest: +SKIP
        >>> for part in parts_metrics:  # doctest: +SKIP
        ...     whole.merge_state(part.state())
    """

    name: str = "metric"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"name must be a non-empty string; got {name!r}")
            self.name = name
        self.reset()

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        """Adds one batch.

        Args:
            y_true: the batch's true labels or targets.
            y_pred: the batch's probabilities (classification) or predictions (regression).
        """
        raise NotImplementedError

    def result(self) -> float | np.ndarray:
        """The metric over every batch since the last ``reset``.

        Returns:
            A float (an array for the confusion matrix and for per-class averages).
        """
        raise NotImplementedError

    def reset(self) -> None:
        """Forgets every batch."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def tagged_state(metric: Metric, settings: tuple, **values: Any) -> dict[str, Any]:
    """A metric's state: ``values`` plus the metric's class name and ``settings``.

    Args:
        metric: the metric whose state this is.
        settings: the settings another state must share to merge with it.
        **values: the accumulated arrays and ints.

    Returns:
        ``{"metric": <class name>, "settings": settings, **values}``.

    Example:
        >>> tagged_state(Metric.__new__(Metric), (5,), hits=1)
        {'metric': 'Metric', 'settings': (5,), 'hits': 1}
    """
    return {"metric": type(metric).__name__, "settings": tuple(settings), **values}


def checked_state(
    metric: Metric, state: Any, settings: tuple, keys: tuple[str, ...]
) -> dict[str, Any]:
    """``state`` if ``tagged_state`` made it for ``metric``'s class and ``settings``.

    Args:
        metric: the metric merging ``state``.
        state: the state to check.
        settings: ``metric``'s settings, as it tags its own states.
        keys: the values the state must hold.

    Returns:
        ``state`` itself.

    Raises:
        TypeError: ``state`` is not a dict holding ``keys``.
        ValueError: the state of another metric class, or of other settings.

    Example:
        >>> metric = Metric.__new__(Metric)
        >>> checked_state(metric, tagged_state(metric, (), n=1), (), ("n",))["n"]
        1
    """
    name = getattr(metric, "name", type(metric).__name__)
    expected = (type(metric).__name__, tuple(settings))
    tagged = isinstance(state, dict) and {"metric", "settings"} <= set(state)
    if tagged:
        settings = state["settings"]
        got = (state["metric"], tuple(settings) if isinstance(settings, list) else settings)
        if got != expected:
            raise ValueError(
                f"{name}.merge_state: expected the state of {expected[0]} with settings "
                f"{expected[1]}; got the state of {got[0]} with settings {got[1]}"
            )
    if not tagged or not set(keys) <= set(state):
        raise TypeError(
            f"{name}.merge_state: expected a dict from {expected[0]}.state() with keys "
            f"{sorted(keys)}; got {type(state).__name__} {state!r:.80}"
        )
    return state
