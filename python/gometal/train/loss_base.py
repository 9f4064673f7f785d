"""The ``Loss`` base class and the graph helpers the built-in losses share.

A loss emits engine nodes: ``loss(g, output, target)`` is the scalar the step minimizes,
``loss.per_sample(g, output, target)`` the loss of each sample before the batch reduction
(what sample and class weights scale), and ``loss.reduce`` turns per-sample values back
into the loss's batch reduction.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import _core
from ..graph.composites import reduce_mean
from .metrics import BatchAccuracy, one_minus_nmae


class Loss:
    """Base class: ``loss(g, output, target) -> scalar node``.

    Besides the batch loss, every built-in loss gives ``per_sample(g, output, target)``:
    a node of shape ``(N,)`` holding each sample's loss before the batch reduction. For
    a loss that averages several elements of a sample (MSE on ``(N, 3)`` outputs, BCE on
    multi-label outputs) that is the sample's mean, so with the default arguments
    ``mean(per_sample) == loss``. ``reduce(g, values, target)`` applies the loss's own
    batch reduction to per-sample values (a weighted ``per_sample`` for instance): the
    mean by default, the sum for ``reduction="sum"``, the mean over the samples not
    ignored for ``CrossEntropy(ignore_index=...)``.

    Class attributes:
        name: the string name accepted by ``Trainer(loss=...)``.
        integer_labels: ``True`` when targets are class indices of shape ``(N,)``.
        task: ``"multiclass"``, ``"binary"`` or ``"regression"``.
        ignore_index: a class label whose samples the loss ignores (``CrossEntropy``'s
            argument; ``None`` for every other loss): label checks must let it through,
            even outside ``[0, classes)`` (torch's ``-100``).

    Example:
        >>> per_sample = gm.losses.mse.per_sample(g, output, target)  # doctest: +SKIP
        >>> weighted = op(g, "mul", per_sample, sample_weights)  # doctest: +SKIP
        >>> total = gm.losses.mse.reduce(g, weighted, target)  # doctest: +SKIP
    """

    name: ClassVar[str] = ""
    integer_labels: ClassVar[bool] = False
    task: ClassVar[str] = "regression"
    ignore_index: int | None = None

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        """Emits the batch loss of ``output`` against ``target``; returns a scalar node."""
        return self.reduce(g, self.per_sample(g, output, target), target)

    def per_sample(self, g: _core.Graph, output: int, target: int) -> int:
        """Emits each sample's loss, shape ``(N,)``, before the batch reduction.

        Args:
            g: the graph being built.
            output: the model's output node, ``(N, ...)``.
            target: the target node (``(N,)`` int32 labels when ``integer_labels``).

        Returns:
            A ``(N,)`` node; with default arguments its mean is ``loss(g, output, target)``.

        Raises:
            NotImplementedError: a loss that only defines the batch value.
        """
        raise NotImplementedError(f"loss {self!r} does not define per_sample")

    def reduce(self, g: _core.Graph, values: int, target: int) -> int:
        """Emits the batch reduction of per-sample ``values`` (shape ``(N,)``): the mean.

        Args:
            g: the graph being built.
            values: per-sample values, e.g. ``per_sample`` times sample weights.
            target: the batch's target node (a loss that ignores some labels reads it).

        Returns:
            A scalar node.
        """
        return reduce_mean(g, values)

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` when the model's per-sample output shape does not fit."""

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        """Emits the batch accuracy node matching this loss."""
        return one_minus_nmae(g, output, target)

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        """Emits probabilities from raw outputs, or returns ``None`` for regression losses."""
        return None

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments as JSON values (what a checkpoint saves)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def mean_per_sample(g: _core.Graph, values: int) -> int:
    """``values`` of shape ``(N, ...)`` averaged over every axis but the batch: ``(N,)``."""
    rank = len(g.shape(values))
    if rank == 1:
        return values
    return reduce_mean(g, values, list(range(1, rank)))


def elements_per_sample(g: _core.Graph, output: int) -> int:
    """How many values one sample of ``output`` holds."""
    count = 1
    for d in g.shape(output)[1:]:
        count *= d
    return count


def check_class_scores(loss: Loss, output_shape: tuple[int, ...]) -> None:
    """Raises ``ValueError`` unless ``output_shape`` is ``(classes,)`` with two or more."""
    if len(output_shape) != 1:
        raise ValueError(
            f"loss '{loss.name}' expects model outputs of shape (N, classes), got "
            f"(N, {', '.join(map(str, output_shape))})"
        )
    if output_shape[0] < 2:
        # A softmax over one class is always 1: the loss is 0 and nothing would train.
        raise ValueError(
            f"loss '{loss.name}' needs at least 2 classes, but the model has "
            f"{output_shape[0]} output; for two classes with one output use "
            "loss='bce_with_logits' (or 'binary_cross_entropy' after a sigmoid), or give "
            "the last layer one output per class"
        )
