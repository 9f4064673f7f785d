"""Functions a layer calls but a layer above it provides.

A layer imports only the layers below it, yet ``Model.save`` (nn) writes a file format
that io defines, and ``fit(plots=...)`` (train) builds a viz dashboard. The lower layer
declares a :class:`ProvidedFunction`; the upper layer provides the implementation when
it is imported, and ``import gometal`` imports (or wires, for lazily loaded layers)
every provider, so the lower layer never imports the upper one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

Function = TypeVar("Function", bound=Callable[..., Any])


class ProvidedFunction(Generic[Function]):
    """A function declared by one layer and implemented by a layer above it.

    Args:
        name: what calls it, for error messages (``"Model.save"``).
        provider: the module that provides it (``"gometal.io"``).

    Example:
        >>> save = ProvidedFunction("Model.save", "gometal.io")
        >>> save.provide(lambda model, path: print("saving", path))  # doctest: +ELLIPSIS
        <function <lambda> at ...>
        >>> save(None, "m.safetensors")
        saving m.safetensors
    """

    def __init__(self, name: str, provider: str):
        self.name = name
        self.provider = provider
        self._function: Function | None = None

    @property
    def provided(self) -> bool:
        """Whether the upper layer has provided the function."""
        return self._function is not None

    def provide(self, function: Function) -> Function:
        """Sets the implementation (a later call replaces it).

        Args:
            function: the implementation.

        Returns:
            ``function``, so this works as a decorator.

        Raises:
            TypeError: ``function`` is not callable.

        Example:
            >>> ProvidedFunction("f", "m").provide(print) is print
            True
        """
        if not callable(function):
            raise TypeError(f"{self.name} must be provided as a callable, got {function!r}")
        self._function = function
        return function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._function is None:
            raise RuntimeError(
                f"{self.name} is provided by {self.provider}, which has not been imported; "
                "import gometal (which imports it) first"
            )
        return self._function(*args, **kwargs)

    def __repr__(self) -> str:
        state = "provided" if self.provided else "not provided"
        return f"ProvidedFunction({self.name!r} by {self.provider}, {state})"
