"""The epoch counter every loader shares: ``set_epoch(e)`` makes the next iteration epoch
``e``, so a resumed run visits the data in the order an uninterrupted one would have."""

from __future__ import annotations

import numpy as np


class EpochCounter:
    """Mixin: the ``epoch`` the next iteration runs, ``set_epoch`` and ``next_epoch``.

    Example:
        >>> class Loader(EpochCounter): ...
        >>> loader = Loader(); loader.set_epoch(3); loader.next_epoch()
        3
    """

    _next_epoch: int = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs."""
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration epoch ``epoch`` (later ones count on from there).

        Args:
            epoch: a non-negative epoch number.

        Raises:
            ValueError: ``epoch`` is not a non-negative int.

        Example:
            >>> loader.set_epoch(3)  # doctest: +SKIP
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._next_epoch = int(epoch)

    def next_epoch(self) -> int:
        """The epoch an iteration starting now runs; the one after it counts on from it."""
        epoch = self._next_epoch
        self._next_epoch += 1
        return epoch
