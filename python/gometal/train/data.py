"""Turning what a user passes to ``fit`` or ``evaluate`` into an iterable of batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base.arrays import as_class_labels, as_dense_targets, check_input_batch
from .array_loader import ArrayLoader
from .output_losses import check_targets, structured_inputs, structured_rows
from .sample_weights import as_sample_weights

if TYPE_CHECKING:
    from .session import TrainingSession


def is_array_pair(data: Any) -> bool:
    """Whether ``data`` is an ``(x, y)`` tuple of arrays (rather than a loader)."""
    return isinstance(data, tuple)


def is_batch_source(data: Any) -> bool:
    """Whether ``data`` looks like a loader: iterable, and not an array, string or mapping."""
    if isinstance(data, (np.ndarray, str, bytes, Mapping, tuple)):
        return False
    return hasattr(data, "__iter__")


def prepare_arrays(trainer: TrainingSession, x: Any, y: Any, name: str = "") -> tuple[Any, Any]:
    """Validates a whole ``(x, y)`` dataset once; ``x`` is converted batch by batch later.

    Args:
        trainer: the trainer whose model and loss define the expected shapes.
        x: inputs ``(N, *input_shape)`` (a list or dict of them for several inputs).
        y: labels or targets for the loss (a list or dict of them for several outputs).
        name: a prefix for error messages (``"validation"`` gives ``"validation x"``); the
            default names the arrays plain ``x`` and ``y``.

    Returns:
        ``(x, y)``: ``x`` as given (checked, not copied: a large float64 array or a
        broadcast view is converted one batch at a time), ``y`` as int32 labels or float32
        targets; for a model with several inputs or outputs, lists of them in the model's
        order (a dict when the model was given a dict).

    Example:
        >>> x, y = prepare_arrays(trainer, x, y, "train")  # doctest: +SKIP
    """
    # One finite check over the whole dataset here names the first bad sample, which the
    # engine's per-batch check cannot.
    prefix = f"{name} " if name else ""
    model = trainer.model
    if model.structured:
        xs = structured_inputs(model, x, f"{prefix}x", check_finite=True)
        ys = check_targets(trainer.output_losses, model, y, len(xs[0]), f"{prefix}y")
        return model.input_signature.pack(xs), model.output_signature.pack(ys)
    dtype = model.input_signature.dtype(0)
    x = check_input_batch(
        x, trainer.model.input_shape, f"{prefix}x", check_finite=True, dtype=dtype
    )
    if trainer.loss.integer_labels:
        output_shape = trainer.model.output_shape
        y = as_class_labels(
            y,
            len(x),
            output_shape[-1],
            f"{prefix}y",
            ignore_index=getattr(trainer.loss, "ignore_index", None),
            label_shape=output_shape[:-1],
        )
    else:
        y = as_dense_targets(y, len(x), trainer.model.output_shape, f"{prefix}y")
    return x, y


def _describe(data: Any) -> str:
    if isinstance(data, np.ndarray):
        return f"an ndarray of shape {data.shape}"
    return type(data).__name__


def as_batches(
    trainer: TrainingSession,
    data: Any,
    name: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    array_prefix: str = "",
    sample_weight: Any = None,
    shard: bool | None = None,
) -> Iterable[tuple[Any, ...]]:
    """Returns a loader for ``data``: the loader itself, or an ``ArrayLoader`` over arrays.

    Args:
        trainer: the trainer (shapes and loss).
        data: a loader (iterable of ``(x, y)`` batches) or a tuple ``(x, y)`` of arrays.
        name: the argument's name for error messages.
        batch_size: rows per batch for arrays.
        shuffle: shuffle arrays each epoch.
        seed: the arrays' shuffle seed.
        array_prefix: prefix of ``x`` and ``y`` in errors about the arrays' contents.
        sample_weight: per-sample weights for arrays (batches become triples).
        shard: the arrays' ``ArrayLoader(shard=...)``: ``None`` shards in a distributed job.

    Returns:
        An iterable of ``(x, y)`` batches; ``ArrayLoader`` for arrays.

    Raises:
        TypeError: ``data`` is neither a loader nor an ``(x, y)`` tuple.
        ValueError: the tuple does not hold two items, or the arrays are invalid.

    Example:
        >>> loader = as_batches(trainer, (x, y), "train", batch_size=32)  # doctest: +SKIP
    """
    if is_array_pair(data):
        if len(data) != 2:
            raise ValueError(
                f"{name} must be a tuple (x, y) of two arrays, got a tuple of {len(data)} items"
            )
        x, y = prepare_arrays(trainer, data[0], data[1], array_prefix)
        if sample_weight is not None:
            prefix = f"{array_prefix} " if array_prefix else ""
            sample_weight = as_sample_weights(
                sample_weight, structured_rows(trainer.model, x), f"{prefix}sample_weight"
            )
        # In a distributed job each rank trains on its padded shard (the same number of
        # steps everywhere) and evaluates its exact one (no sample counted twice).
        return ArrayLoader(
            x,
            y,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            sample_weight=sample_weight,
            shard=shard,
            pad_shards=name == "train",
        )
    if sample_weight is not None:
        raise ValueError(
            "sample_weight applies to (x, y) arrays; a loader gives weights by yielding "
            "(x, y, sample_weight) batches"
        )
    if is_batch_source(data):
        return data
    raise TypeError(
        f"{name} must be a loader yielding (x, y) batches (e.g. gm.vision.DataLoader) or a "
        f"tuple (x, y) of arrays, got {_describe(data)}"
    )


def loader_length(loader: Any) -> int | None:
    """``len(loader)``, or ``None`` when the loader does not know its length."""
    try:
        return len(loader)
    except TypeError:
        return None


def unpack_batch(batch: Any, name: str) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` from a loader's ``(x, y)`` pair or ``(x, y, w)`` triple.

    Raises:
        TypeError: the batch is neither (``name`` is the loader's role, e.g. ``train``).

    Example:
        >>> unpack_batch((1, 2), "train")
        (1, 2, None)
    """
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    size = f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else ""
    raise TypeError(
        f"the {name} loader must yield (x, y) pairs, got {type(batch).__name__}{size} "
        "((x, y, sample_weight) triples are accepted too)"
    )


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Calls ``loader.set_epoch(epoch)`` when the loader has it (its order depends on it)."""
    set_epoch = getattr(loader, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
