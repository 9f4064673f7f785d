"""Cross-entropy losses: from integer labels (``CrossEntropy``, with torch's
``label_smoothing``, ``ignore_index`` and ``reduction``) and from one-hot or probability
targets (``CategoricalCrossEntropy``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _core
from ..graph.composites import (
    as_float,
    clamped_log,
    const,
    log_softmax,
    op,
    reduce_mean,
    reduce_sum,
    softmax,
)
from .loss_base import Loss, check_class_scores
from .metrics import BatchAccuracy, argmax_agreement, argmax_matches
from .metrics._in_graph import ERROR_RATIO

REDUCTIONS = ("mean", "sum")
_DEFAULTS = {"label_smoothing": 0.0, "ignore_index": None, "reduction": "mean"}


def _label_smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"CrossEntropy label_smoothing must be a number, got {value!r}")
    if not (math.isfinite(float(value)) and 0.0 <= float(value) <= 1.0):
        raise ValueError(f"CrossEntropy label_smoothing must be in [0, 1], got {float(value)!r}")
    return float(value)


def _ignore_index(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"CrossEntropy ignore_index must be an integer label or None, got {value!r}"
        )
    return int(value)


def _reduction(value: Any) -> str:
    if value == "none":
        raise ValueError(
            "CrossEntropy reduction='none' gives one loss per sample, which a training step "
            "cannot minimize; use reduction='mean' or 'sum' (loss.per_sample(...) is the "
            "unreduced loss, and sample_weight= weighs samples)"
        )
    if value not in REDUCTIONS:
        raise ValueError(f"CrossEntropy reduction must be one of {list(REDUCTIONS)}, got {value!r}")
    return str(value)


class CrossEntropy(Loss):
    """Softmax cross entropy from logits with integer labels (``torch.nn.CrossEntropyLoss``).

    Targets: class indices of shape ``(N,)``, or ``(N, T)`` for outputs ``(N, T,
    classes)`` (a language model's next tokens; the mean is over every position, as
    torch's over ``(N, classes, T)``). Accuracy: argmax match (per position for
    sequences); with ``ignore_index``, the fraction of the samples (positions) not ignored
    whose argmax matches (the ignored ones count neither as right nor as wrong).

    Args:
        label_smoothing: as torch's, in ``[0, 1]``: the target mixes the label with the
            uniform distribution, ``(1 - s) * nll + s * mean over classes of -log p``.
        ignore_index: a label whose samples add nothing to the loss or its gradient, as
            torch's (``None``, the default, ignores none). With ``reduction="mean"`` the
            loss is the mean over the samples not ignored; a batch where every sample is
            ignored gives 0 (torch gives NaN there).
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch. ``"none"`` is
            refused: a step minimizes one number (``per_sample`` gives the unreduced
            losses).

    Example:
        >>> loss = gm.losses.CrossEntropy(label_smoothing=0.1, ignore_index=0)
    """

    name = "cross_entropy"
    integer_labels = True
    task = "multiclass"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ):
        self.label_smoothing = _label_smoothing(label_smoothing)
        self.ignore_index = _ignore_index(ignore_index)
        self.reduction = _reduction(reduction)

    @property
    def _plain(self) -> bool:
        return not self.label_smoothing and self.ignore_index is None and self.reduction == "mean"

    def _kept(self, g: _core.Graph, target: int) -> int:
        """1.0 for samples whose label is not ``ignore_index``, else 0.0: ``(N,)``."""
        ignored = op(g, "equal", as_float(g, target), const(g, float(self.ignore_index)))
        return op(g, "sub", const(g, 1.0), ignored)

    def _one_hot(self, g: _core.Graph, target: int, classes: int) -> int:
        if self.ignore_index is None:
            return op(g, "one_hot", target, depth=classes)
        # Compared with every class index, a label outside [0, classes) (torch's -100)
        # gives a row of zeros instead of an out-of-range index.
        column = op(g, "reshape", as_float(g, target), shape=[*g.shape(target), 1])
        indices = g.constant(np.arange(classes, dtype=np.float32))
        return op(g, "equal", column, indices)

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        if not self._plain:
            return self.reduce(g, self.per_sample(g, output, target), target)
        classes = g.shape(output)[-1]
        one_hot = op(g, "one_hot", target, depth=classes)
        picked = reduce_sum(g, op(g, "mul", one_hot, log_softmax(g, output, -1)), [-1])
        return op(g, "neg", reduce_mean(g, picked))

    def per_sample(self, g: _core.Graph, output: int, target: int) -> int:
        """Each sample's cross entropy, ``(N,)``; 0 for samples with ``ignore_index``."""
        classes = g.shape(output)[-1]
        log_p = log_softmax(g, output, -1)
        picked = reduce_sum(g, op(g, "mul", self._one_hot(g, target, classes), log_p), [-1])
        loss = op(g, "neg", picked)
        if self.label_smoothing:
            uniform = op(g, "neg", reduce_mean(g, log_p, [-1]))
            loss = op(
                g,
                "add",
                op(g, "mul", loss, const(g, 1.0 - self.label_smoothing)),
                op(g, "mul", uniform, const(g, self.label_smoothing)),
            )
        if self.ignore_index is not None:
            loss = op(g, "mul", loss, self._kept(g, target))
        return loss

    def reduce(self, g: _core.Graph, values: int, target: int) -> int:
        """The sum for ``reduction="sum"``; else the mean over the samples not ignored."""
        if self.reduction == "sum":
            return reduce_sum(g, values)
        if self.ignore_index is None:
            return reduce_mean(g, values)
        counted = op(g, "maximum", reduce_sum(g, self._kept(g, target)), const(g, 1.0))
        return op(g, "div", reduce_sum(g, values), counted)

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        # (classes,) per sample, or (T, classes) for one label per position (a sequence).
        check_class_scores(self, output_shape[-1:])
        if len(output_shape) > 1 and any(d == 0 for d in output_shape[:-1]):
            raise ValueError(f"loss '{self.name}' got outputs of shape (N, {output_shape})")

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        if self.ignore_index is None and len(g.shape(target)) == 1:
            return argmax_matches(g, output, target)
        if self.ignore_index is None:
            # One label per position: the fraction of positions right, pooled as
            # [misses, positions].
            hits = op(g, "equal", op(g, "argmax", output, axis=-1), as_float(g, target))
            misses = reduce_sum(g, op(g, "sub", const(g, 1.0), hits))
            # A 1 per position, shaped like the labels (whose length is known at run time).
            ones = op(g, "add", op(g, "mul", hits, const(g, 0.0)), const(g, 1.0))
            positions = reduce_sum(g, ones)
            sums = [op(g, "reshape", node, shape=[1]) for node in (misses, positions)]
            return BatchAccuracy(op(g, "concat", *sums, axis=0), ERROR_RATIO)
        # Read as [misses, counted samples]: an error ratio whose 1 - misses/counted is
        # the accuracy over the samples not ignored, and which pools over batches.
        kept = self._kept(g, target)
        hits = op(g, "equal", op(g, "argmax", output, axis=-1), as_float(g, target))
        misses = reduce_sum(g, op(g, "mul", kept, op(g, "sub", const(g, 1.0), hits)))
        sums = [op(g, "reshape", node, shape=[1]) for node in (misses, reduce_sum(g, kept))]
        return BatchAccuracy(op(g, "concat", *sums, axis=0), ERROR_RATIO)

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return softmax(g, output, -1)

    def get_config(self) -> dict[str, Any]:
        return {
            "label_smoothing": self.label_smoothing,
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
        }

    def __repr__(self) -> str:
        changed = [
            f"{key}={value!r}"
            for key, value in self.get_config().items()
            if value != _DEFAULTS[key]
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


class SparseCrossEntropy(CrossEntropy):
    """The same loss as ``CrossEntropy`` under its Keras name."""

    name = "sparse_cross_entropy"


class CategoricalCrossEntropy(Loss):
    """Cross entropy against one-hot or probability targets of shape ``(N, classes)``.

    Args:
        from_logits: ``True`` (default) when the model outputs logits; ``False`` when it
            already outputs probabilities (e.g. ends in softmax), whose log is clamped
            like PyTorch's.

    Example:
        >>> loss = gm.losses.CategoricalCrossEntropy(from_logits=False)
    """

    name = "categorical_cross_entropy"
    task = "multiclass"

    def __init__(self, from_logits: bool = True):
        self.from_logits = bool(from_logits)

    def _picked(self, g: _core.Graph, output: int, target: int) -> int:
        log_p = log_softmax(g, output, -1) if self.from_logits else clamped_log(g, output)
        return reduce_sum(g, op(g, "mul", target, log_p), [-1])

    def __call__(self, g: _core.Graph, output: int, target: int) -> int:
        return op(g, "neg", reduce_mean(g, self._picked(g, output, target)))

    def per_sample(self, g: _core.Graph, output: int, target: int) -> int:
        return op(g, "neg", self._picked(g, output, target))

    def check_output_shape(self, output_shape: tuple[int, ...]) -> None:
        check_class_scores(self, output_shape)

    def accuracy(self, g: _core.Graph, output: int, target: int) -> BatchAccuracy:
        return argmax_agreement(g, output, target)

    def probabilities(self, g: _core.Graph, output: int) -> int | None:
        return softmax(g, output, -1) if self.from_logits else output

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        return f"CategoricalCrossEntropy(from_logits={self.from_logits})"
