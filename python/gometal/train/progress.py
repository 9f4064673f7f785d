"""What ``fit`` prints: a tqdm bar per epoch (verbose=1) and one line per epoch (1 and 2)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np

VERBOSITY_LEVELS = (0, 1, 2)


def check_verbose(verbose: Any) -> int:
    """Returns ``verbose`` if it is 0, 1 or 2; raises naming the argument otherwise."""
    if isinstance(verbose, bool) or verbose not in VERBOSITY_LEVELS:
        raise ValueError(
            f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch), "
            f"got {verbose!r}"
        )
    return int(verbose)


def _format(key: str, value: Any) -> str | None:
    if value is None or np.ndim(value) != 0:
        return None  # arrays (a confusion matrix) do not fit on one line
    if key == "lr":
        return f"lr {float(value):.3g}"
    return f"{key} {float(value):.4f}"


def format_epoch_line(
    epoch: int, last_epoch: int, logs: Mapping[str, Any], steps_per_second: float
) -> str:
    """The summary line of one epoch.

    Args:
        epoch: the epoch number (0-based; shown 1-based).
        last_epoch: the number of the last epoch this fit call runs (0-based).
        logs: the epoch's results (``History`` keys).
        steps_per_second: training steps per second over the epoch.

    Returns:
        E.g. ``"epoch 3/10  loss 0.2100  accuracy 0.9400  val_loss 0.2500  ...  lr 0.001
        412.3 steps/s  1.21 s"``.

    Example:
        >>> format_epoch_line(0, 1, {"loss": 0.5, "lr": 0.01, "time": 2.0}, 10.0)
        'epoch 1/2  loss 0.5000  lr 0.01  10.0 steps/s  2.00 s'
    """
    parts = [f"epoch {epoch + 1}/{last_epoch + 1}"]
    for key, value in logs.items():
        if key not in ("time",):
            text = _format(key, value)
            if text is not None:
                parts.append(text)
    parts.append(f"{steps_per_second:.1f} steps/s")
    if "time" in logs:
        parts.append(f"{float(logs['time']):.2f} s")
    return "  ".join(parts)


class Progress:
    """Reports one ``fit`` call's progress according to ``verbose``.

    Args:
        verbose: 0 silent; 1 a tqdm bar per epoch (loss, accuracy, lr, steps/s) that is
            replaced by the epoch's line when it ends; 2 only the lines.
        last_epoch: the 0-based number of the last epoch of this call.
        steps: batches per epoch, or ``None`` when the loader has no length.
        stream: where lines go (default ``sys.stdout``); the bar writes to ``sys.stderr``.

    Example:
        >>> progress = Progress(verbose=2, last_epoch=9, steps=100)  # doctest: +SKIP
    """

    def __init__(
        self, verbose: int, last_epoch: int, steps: int | None, stream: TextIO | None = None
    ):
        self.verbose = verbose
        self.last_epoch = last_epoch
        self.steps = steps
        self.stream = stream
        self._bar: Any = None
        self._next_refresh = 0.0
        self.epoch_started = 0.0

    def epoch_begin(self, epoch: int) -> None:
        """Starts the epoch's bar (verbose=1)."""
        self.epoch_started = time.perf_counter()
        if self.verbose != 1:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=self.steps,
            desc=f"epoch {epoch + 1}/{self.last_epoch + 1}",
            unit="step",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._next_refresh = 0.0

    def batch_end(self, steps_done: int, loss: float, accuracy: float, lr: float) -> None:
        """Advances the bar by one step; rewrites its postfix at most every ``mininterval``."""
        bar = self._bar
        if bar is None:
            return
        now = time.perf_counter()
        if now >= self._next_refresh:
            # Formatting the postfix costs more than a small step: do it only when shown.
            self._next_refresh = now + bar.mininterval
            rate = steps_done / max(now - self.epoch_started, 1e-9)
            bar.set_postfix_str(
                f"loss={loss:.4f}, accuracy={accuracy:.4f}, lr={lr:.3g}, steps/s={rate:.1f}",
                refresh=False,
            )
        bar.update(1)

    def epoch_end(self, epoch: int, logs: Mapping[str, Any], steps_per_second: float) -> None:
        """Closes the bar and prints the epoch's line (verbose 1 and 2)."""
        self.close()
        if self.verbose:
            line = format_epoch_line(epoch, self.last_epoch, logs, steps_per_second)
            print(line, file=self.stream or sys.stdout, flush=True)

    def message(self, text: str) -> None:
        """Prints a one-line notice to stderr (shown whatever ``verbose`` is)."""
        self.close()
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Removes the bar, if one is showing."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()
