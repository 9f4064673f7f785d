"""Process-wide engine settings."""

from __future__ import annotations

import os

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


BACKENDS = ("cpu", "metal")
BACKEND_VARIABLE = "GOMETAL_BACKEND"


def resolve_backend(backend: str | None) -> str:
    """The backend an engine is built for: ``backend``, else ``$GOMETAL_BACKEND``, else cpu.

    Args:
        backend: ``"cpu"``, ``"metal"`` or ``None``.

    Returns:
        The backend's name.

    Raises:
        ValueError: an unknown name, or ``"metal"`` where this build has no Metal backend.

    Example:
        >>> resolve_backend(None)  # doctest: +SKIP
        'cpu'
    """
    source = "backend"
    if backend is None:
        backend, source = os.environ.get(BACKEND_VARIABLE, "cpu") or "cpu", BACKEND_VARIABLE
    if backend not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {backend!r}")
    if backend == "metal" and not _core.metal_available():
        raise ValueError(
            f"{source} is 'metal', but this gometal was built without the Metal backend "
            "(it needs macOS on Apple Silicon and GOMETAL_METAL=ON); use 'cpu'"
        )
    return backend
