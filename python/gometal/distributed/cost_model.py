"""A ring all-reduce cost model: predicted scaling of data-parallel training to rank counts
this machine cannot run, from a measured step time and a measured link.

A model, not a measurement: the ring all-reduce of n bytes over p ranks takes 2 (p - 1)
steps that each move n / p bytes (Patarasuk and Yuan, 2009), so its time is
2 (p - 1) (latency + n / (p bandwidth)); a step's compute time stays that of one rank at
its own batch (weak scaling), and the part of the all-reduce hidden behind the backward
pass costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Link:
    """A link between ranks.

    Attributes:
        latency: seconds per message.
        bandwidth: bytes per second.
    """

    latency: float
    bandwidth: float


def ring_all_reduce_seconds(nbytes: float, ranks: int, link: Link) -> float:
    """The time a ring all-reduce of ``nbytes`` over ``ranks`` ranks takes on ``link``.

    Example:
        >>> ring_all_reduce_seconds(4e6, 4, Link(latency=1e-5, bandwidth=1e9))
        0.00606
    """
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    steps = 2 * (ranks - 1)
    return steps * (link.latency + nbytes / ranks / link.bandwidth) if ranks > 1 else 0.0


def fit_link(nbytes: Sequence[float], seconds: Sequence[float], ranks: int) -> Link:
    """The link whose ring all-reduce times best fit measured ones (least squares).

    Args:
        nbytes: the sizes measured.
        seconds: the time of one all-reduce of each size, over ``ranks`` ranks.
        ranks: the ranks of the measurement (at least 2).

    Returns:
        The fitted ``Link`` (latency and bandwidth kept positive).

    Example:
        >>> fit_link([1e3, 1e6], [2.1e-5, 1.02e-3], 2)  # doctest: +SKIP
        Link(latency=1.0e-05, bandwidth=1.0e09)
    """
    if ranks < 2:
        raise ValueError(f"a link is measured between at least 2 ranks, got {ranks}")
    steps = 2 * (ranks - 1)
    design = np.stack([np.full(len(nbytes), float(steps)), np.asarray(nbytes) * steps / ranks], 1)
    (latency, per_byte), *_ = np.linalg.lstsq(design, np.asarray(seconds, float), rcond=None)
    return Link(latency=max(float(latency), 1e-9), bandwidth=1.0 / max(float(per_byte), 1e-15))


def scaling_efficiency(
    step_seconds: float, gradient_bytes: float, ranks: int, link: Link, hidden: float = 0.0
) -> float:
    """Predicted throughput of ``ranks`` ranks over ``ranks`` times one rank's.

    Args:
        step_seconds: one rank's compute time per step, without communication.
        gradient_bytes: the bytes all-reduced per step.
        ranks: the rank count.
        link: the link between ranks.
        hidden: the fraction of the all-reduce overlapped with the backward pass (0 to 1).

    Returns:
        A number in (0, 1].

    Example:
        >>> round(scaling_efficiency(0.1, 4e6, 4, Link(1e-5, 1e9)), 4)
        0.9429
    """
    if not 0.0 <= hidden <= 1.0:
        raise ValueError(f"hidden must be in [0, 1], got {hidden}")
    exposed = ring_all_reduce_seconds(gradient_bytes, ranks, link) * (1.0 - hidden)
    return step_seconds / (step_seconds + exposed)
