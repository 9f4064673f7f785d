"""Process-wide engine settings."""

from __future__ import annotations

from .. import _core


def set_num_threads(n: int) -> None:
    """Sets the size of the engine's CPU thread pool.

    Args:
        n: the number of worker threads (>= 1).

    Example:
        >>> gm.set_num_threads(4)  # doctest: +SKIP
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be an int >= 1, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Returns the size of the engine's CPU thread pool.

    Returns:
        The number of worker threads.

    Example:
        >>> gm.get_num_threads() >= 1  # doctest: +SKIP
        True
    """
    return int(_core.get_num_threads())
