"""The ``fit`` loop: epochs of engine steps, validation, scheduler, callbacks, Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base.arrays import check_batch_size, check_seed
from . import provided
from .array_loader import count_rows, is_array_collection, take_rows
from .callback_base import Callback, overrides
from .callbacks import check_callbacks
from .data import as_batches, is_array_pair, loader_length, set_loader_epoch, unpack_batch
from .data_parallel import is_leading_rank
from .evaluation import metric_keys, resolve_session_metrics, run_evaluation
from .evaluation_sums import gather_from_ranks, pools_over_ranks
from .history import History
from .interrupt import InterruptGuard
from .metrics import AccuracyTotals
from .output_losses import structured_rows
from .progress import Progress, check_verbose
from .sample_weights import as_sample_weights, class_weight_table

if TYPE_CHECKING:
    from .session import TrainingSession

SCHEDULER_INTERVALS = ("epoch", "batch")


def _check_epochs(epochs: Any) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"epochs must be a non-negative int, got {epochs!r}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0 (the number of epochs to train), got {epochs}")
    return epochs


def _check_scheduler(scheduler: Any) -> None:
    for method in ("attach", "step"):
        if not callable(getattr(scheduler, method, None)):
            raise TypeError(
                f"scheduler must be a gm.schedulers scheduler (with attach, step and interval), "
                f"got {scheduler!r}"
            )
    interval = getattr(scheduler, "interval", None)
    if interval not in SCHEDULER_INTERVALS:
        raise ValueError(
            f"scheduler.interval must be 'epoch' or 'batch', got {interval!r} from {scheduler!r}"
        )


def bind_scheduler(trainer: TrainingSession, scheduler: Any) -> Any:
    """Attaches ``scheduler`` to ``trainer`` the first time it is passed; returns the
    scheduler this fit call steps (``trainer.scheduler``, possibly from an earlier call)."""
    if scheduler is not None:
        _check_scheduler(scheduler)
        if scheduler is not trainer.scheduler:
            scheduler.attach(trainer)
            trainer.scheduler = scheduler
    if trainer.scheduler is not None:
        _check_scheduler(trainer.scheduler)
    return trainer.scheduler


@dataclass
class _EpochResult:
    steps: int
    samples: int
    loss_sum: float
    accuracy: float
    lr: float
    seconds: float
    complete: bool
    # Each output's "<output>_loss" and "<output>_accuracy" (several outputs only).
    per_output: dict[str, float]
    # The sums behind accuracy and per_output, for pooling over a job's ranks.
    totals: AccuracyTotals | None = None
    output_sums: _OutputSums | None = None

    def pooled_over_ranks(self) -> _EpochResult:
        """The epoch's loss and accuracy over every rank's samples (a sharded loader in a
        distributed job), so every rank logs, schedules and stops on the same numbers."""
        mine = (self.samples, self.loss_sum, self.totals, self.output_sums)
        samples, loss_sum, totals, outputs = 0, 0.0, None, _OutputSums()
        for rank_samples, rank_loss, rank_totals, rank_outputs in gather_from_ranks(mine):
            samples += rank_samples
            loss_sum += rank_loss
            if rank_totals is not None:
                totals = rank_totals if totals is None else totals + rank_totals
            outputs.merge(rank_outputs)
        accuracy = totals.value if totals is not None else 0.0
        per_output = outputs.logs(samples) if samples else {}
        return replace(
            self,
            samples=samples,
            loss_sum=loss_sum,
            accuracy=accuracy,
            per_output=per_output,
            totals=totals,
            output_sums=outputs,
        )


class _OutputSums:
    """Each output's loss sum and accuracy totals over an epoch's steps."""

    def __init__(self) -> None:
        self.loss_sums: dict[str, float] = {}
        self.totals: dict[str, AccuracyTotals] = {}

    def add(self, result: Any, count: int) -> None:
        for name, loss in result.losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + loss * count
            batch = result.output_totals[name]
            earlier = self.totals.get(name)
            self.totals[name] = batch if earlier is None else earlier + batch

    def merge(self, other: _OutputSums | None) -> None:
        """Adds another rank's sums."""
        if other is None:
            return
        for name, loss_sum in other.loss_sums.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + loss_sum
            earlier = self.totals.get(name)
            batch = other.totals[name]
            self.totals[name] = batch if earlier is None else earlier + batch

    def logs(self, samples: int) -> dict[str, float]:
        logs = {}
        for name, loss_sum in self.loss_sums.items():
            logs[f"{name}_loss"] = loss_sum / samples
            logs[f"{name}_accuracy"] = self.totals[name].value
        return logs


def _train_epoch(
    trainer: TrainingSession,
    loader: Any,
    steps: int | None,
    batch_scheduler: Any,
    listeners: Sequence[Callback],
    progress: Progress,
    guard: InterruptGuard,
    class_table: np.ndarray | None,
) -> _EpochResult:
    loss_sum = 0.0
    totals: AccuracyTotals | None = None
    per_output = _OutputSums()
    samples = done = 0
    lr = trainer.learning_rate
    started = time.perf_counter()
    iterator = iter(loader)
    try:
        # The flag is checked before fetching each batch: a Ctrl-C lets the running step
        # and its callbacks finish, then stops.
        while not guard.interrupted:
            try:
                batch = next(iterator)
            except StopIteration:
                break
            x, y, weights = unpack_batch(batch, "train")
            if class_table is not None:
                weights = class_weights_of(class_table, y, weights)
            lr = trainer.learning_rate
            if weights is None:
                result = trainer.train_batch(x, y)
            else:
                result = trainer.train_batch(x, y, sample_weight=weights)
            count = structured_rows(trainer.model, x)
            samples += count
            loss_sum += result.loss * count
            per_output.add(result, count)
            # A result without totals (a custom train_batch) counts as correct samples.
            batch_totals = result.totals or AccuracyTotals("count", result.accuracy * count, count)
            totals = batch_totals if totals is None else totals + batch_totals
            if batch_scheduler is not None:
                batch_scheduler.step()
            if listeners:
                logs = {"loss": result.loss, "accuracy": result.accuracy, "size": count, "lr": lr}
                for callback in listeners:
                    callback.on_batch_end(done, logs)
            done += 1
            progress.batch_end(done, loss_sum / samples, totals.value, lr)
            if trainer.stop_training:
                # A callback stopped training within the epoch (TerminateOnNaN): as Keras,
                # no further batch runs.
                break
    finally:
        # Stops a prefetching loader's pending work when the epoch ends early.
        close = getattr(iterator, "close", None)
        if callable(close):
            close()
    complete = not guard.interrupted or (steps is not None and done == steps)
    seconds = time.perf_counter() - started
    accuracy = totals.value if totals is not None else 0.0
    output_logs = per_output.logs(samples) if samples else {}
    return _EpochResult(
        done, samples, loss_sum, accuracy, lr, seconds, complete, output_logs, totals, per_output
    )


def keras_fit_arguments(
    train: Any,
    positional: Sequence[Any],
    epochs: Any,
    batch_size: Any,
    validation: Any,
    validation_data: Any,
) -> tuple[Any, int, Any, Any]:
    """Reads ``fit``'s two call forms: ``fit(train, epochs)`` (``train`` a loader or an
    ``(x, y)`` tuple) and Keras's ``fit(x, y, batch_size, epochs)``.

    Args:
        train: the first positional argument.
        positional: the other positional arguments.
        epochs: the ``epochs`` keyword (``None`` when not given).
        batch_size: the ``batch_size`` keyword.
        validation: the ``validation`` keyword.
        validation_data: Keras's name for ``validation``.

    Returns:
        ``(train, epochs, batch_size, validation)``; ``epochs`` is 1 when given nowhere,
        as Keras's default.

    Raises:
        TypeError: an argument given twice or too many positional arguments.

    Example:
        >>> keras_fit_arguments(x, (y,), 3, None, None, None)[1]  # doctest: +SKIP
        3
    """
    if validation_data is not None:
        if validation is not None:
            raise TypeError("fit got validation and validation_data: pass one of them")
        validation = validation_data
    given = list(positional)
    first = given[0] if given else None
    if given and (isinstance(first, int) and not isinstance(first, bool)):
        # fit(train, epochs): the epochs come second.
        if len(given) > 1:
            raise TypeError(
                "fit(train, epochs) takes the other arguments by keyword, got "
                f"{len(given) + 1} positional arguments"
            )
        if epochs is not None:
            raise TypeError("fit got epochs twice (positionally and by keyword)")
        return train, first, batch_size, validation
    if given:
        # Keras's fit(x, y, batch_size, epochs).
        if len(given) > 3:
            raise TypeError(
                f"fit(x, y, batch_size, epochs) takes at most 4 positional arguments, got "
                f"{len(given) + 1}"
            )
        train = (train, given[0])
        for name, value in zip(("batch_size", "epochs"), given[1:]):
            if (batch_size if name == "batch_size" else epochs) is not None:
                raise TypeError(f"fit got {name} twice (positionally and by keyword)")
            if name == "batch_size":
                batch_size = value
            else:
                epochs = value
    return train, 1 if epochs is None else epochs, batch_size, validation


def _class_table(trainer: TrainingSession, class_weight: Any) -> np.ndarray:
    model = trainer.model
    if model.output_signature.structured or not trainer.loss.integer_labels:
        raise ValueError(
            "class_weight applies to a model with one output trained on class labels "
            f"(a cross-entropy loss), got loss '{trainer.loss.name}'"
            + (" on several outputs" if model.output_signature.structured else "")
        )
    return class_weight_table(class_weight, model.output_shape[-1])


def class_weights_of(table: np.ndarray, labels: Any, weights: Any) -> np.ndarray:
    """Each sample's class weight (times its sample weight, when given)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise TypeError(
            f"class_weight needs integer class labels (N,), got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(table)):
        raise ValueError(f"labels must be in [0, {len(table)}), got {labels.min()}..{labels.max()}")
    found = table[labels]
    if weights is None:
        return found
    return found * as_sample_weights(weights, len(found))


def split_validation(
    train: Any, validation: Any, sample_weight: Any, fraction: Any
) -> tuple[Any, Any, Any]:
    """Keras's ``validation_split``: the last ``fraction`` of the arrays' samples (taken
    before any shuffling) become the validation data.

    Args:
        train: ``(x, y)`` arrays (lists or dicts of them for several inputs or outputs).
        validation: must be ``None``.
        sample_weight: the training samples' weights, or ``None`` (split alike).
        fraction: a float in ``(0, 1)``.

    Returns:
        ``(train, validation, sample_weight)`` after the split.

    Raises:
        TypeError, ValueError: not arrays, validation data given too, a fraction out of
            range, or a split that leaves one side empty.

    Example:
        >>> (x1, y1), (xv, yv), _ = split_validation((x, y), None, None, 0.2)  # doctest: +SKIP
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"validation_split must be a float in (0, 1), got {fraction!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction!r}")
    if validation is not None:
        raise ValueError("pass validation data or validation_split, not both")
    if not is_array_pair(train) or len(train) != 2:
        raise ValueError(
            "validation_split applies to (x, y) arrays; split a loader's data yourself"
        )
    total = count_rows(train[0], "x")
    held_out = int(total * fraction)
    cut = total - held_out
    if held_out == 0 or cut == 0:
        raise ValueError(
            f"validation_split={fraction} of {total} samples leaves "
            f"{'no validation' if held_out == 0 else 'no training'} sample"
        )
    x, y = (
        data if hasattr(data, "shape") or is_array_collection(data) else np.asarray(data)
        for data in train
    )
    head = (take_rows(x, slice(0, cut)), take_rows(y, slice(0, cut)))
    tail = (take_rows(x, slice(cut, None)), take_rows(y, slice(cut, None)))
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight)[:cut]
    return head, tail, sample_weight


def _interrupt_message(trainer: TrainingSession, epoch: int, result: _EpochResult | None) -> str:
    where = (
        f"after epoch {epoch + 1}"
        if result is None
        else f"in epoch {epoch + 1} after {result.steps} step(s)"
    )
    return (
        f"fit: interrupted by Ctrl-C {where}; stopped cleanly with {trainer.epoch} complete "
        f"epoch(s); the trainer is usable and fit continues from epoch {trainer.epoch + 1}"
    )


def fit(
    trainer: TrainingSession,
    train: Any,
    epochs: int,
    validation: Any = None,
    scheduler: Any = None,
    callbacks: Any = (),
    verbose: int = 1,
    metrics: Any = (),
    shuffle: bool = True,
    seed: int | None = None,
    batch_size: int | None = None,
    plots: str | None = None,
    plots_dir: Any = "gometal-plots",
    validation_split: float | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
) -> History:
    """``Trainer.fit``; see its docstring for the arguments and semantics.

    Args:
        trainer: the trainer to fit.
        train: a loader of ``(x, y)`` batches, or a tuple ``(x, y)`` of arrays. A loader
            whose ``stateful`` is true (``gm.text.TokenStreamLoader``) has the model's
            stateful layers reset at each epoch's start (``model.reset_states()``).
        epochs: how many more epochs to train.
        validation: like ``train`` (arrays are not shuffled), or ``None``.
        scheduler: a ``gm.schedulers`` scheduler, attached on first use.
        callbacks: ``gm.callbacks.Callback`` instances.
        verbose: 0, 1 or 2.
        metrics: metric names or objects computed on the validation data.
        shuffle: shuffle ``(x, y)`` arrays each epoch.
        seed: the arrays' shuffle seed (``None``: 0).
        batch_size: rows per batch for arrays (``None``: ``trainer.batch_size``).
        plots: ``None``, ``"html"`` (write ``<plots_dir>/dashboard.html`` at the end) or
            ``"sidecar"`` (send plot payloads to the sidecar): sugar for appending
            ``gm.viz.Dashboard(plots, plots_dir, validation=validation)`` to ``callbacks``.
        plots_dir: the dashboard's folder for ``plots="html"``.
        validation_split: the fraction of ``(x, y)`` arrays (their last samples, before
            shuffling) held out as the validation data.
        sample_weight: per-sample loss weights for ``(x, y)`` arrays.
        class_weight: ``{class index: weight}`` scaling each sample's loss by its class.

    Returns:
        ``trainer.history``.

    Example:
        >>> fit(trainer, (x, y), epochs=3)  # doctest: +SKIP
    """
    epochs = _check_epochs(epochs)
    verbose = check_verbose(verbose)
    callbacks = check_callbacks(callbacks)
    if plots is not None:
        # gm.viz.Dashboard, from the viz layer above (loaded now: plotly and scipy).
        callbacks = [*callbacks, provided.plots_callback(plots, plots_dir, validation)]
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
    train_arrays = is_array_pair(train)
    val_arrays = validation is not None and is_array_pair(validation)
    if batch_size is not None:
        batch_size = check_batch_size(batch_size)
        if not (train_arrays or val_arrays):
            raise ValueError(
                f"batch_size applies to (x, y) arrays; the loaders keep their own batch size "
                f"(got batch_size={batch_size})"
            )
    if not train_arrays and (seed is not None or not shuffle):
        given = f"seed={seed!r}" if seed is not None else "shuffle=False"
        raise ValueError(
            f"{given} applies to (x, y) arrays; a loader shuffles as it was built "
            "(e.g. DataLoader(..., shuffle=..., seed=...))"
        )
    seed = 0 if seed is None else check_seed(seed)
    if validation_split is not None:
        train, validation, sample_weight = split_validation(
            train, validation, sample_weight, validation_split
        )
    class_table = None
    if class_weight is not None:
        class_table = _class_table(trainer, class_weight)
    rows = trainer.batch_size if batch_size is None else batch_size
    train_loader = as_batches(
        trainer,
        train,
        "train",
        batch_size=rows,
        shuffle=shuffle,
        seed=seed,
        sample_weight=sample_weight,
    )
    val_loader = None
    if validation is not None:
        val_loader = as_batches(
            trainer,
            validation,
            "validation",
            batch_size=rows,
            array_prefix="validation",
            shard=trainer.distributed,
        )
    resolved = resolve_session_metrics(trainer, metrics)
    if metric_keys(resolved) and val_loader is None:
        raise ValueError("metrics are computed on the validation data: pass validation=...")
    scheduler = bind_scheduler(trainer, scheduler)
    batch_scheduler = scheduler if scheduler is not None and scheduler.interval == "batch" else None

    signature = trainer.model.output_signature
    per_output_keys = [
        f"{name}_{what}" for name in signature.names for what in ("loss", "accuracy")
    ]
    if not signature.structured:
        per_output_keys = []
    log_keys = ["loss", "accuracy", *per_output_keys]
    if val_loader is not None:
        log_keys += ["val_loss", "val_accuracy", *(f"val_{key}" for key in per_output_keys)]
        log_keys += [f"val_{key}" for key in metric_keys(resolved)]
    log_keys += ["lr", "time"]
    steps = loader_length(train_loader)
    params = {
        "epochs": epochs,
        "initial_epoch": trainer.epoch,
        "steps": steps,
        "verbose": verbose,
        "log_keys": list(log_keys),
    }
    for callback in callbacks:
        callback.set_trainer(trainer)
        callback.set_params(params)
    listeners = [cb for cb in callbacks if overrides(cb, "on_batch_end")]

    history = trainer.history
    history.interrupted = False
    trainer.stop_training = False
    # In a distributed job only rank 0 prints.
    progress = Progress(verbose if is_leading_rank() else 0, trainer.epoch + epochs - 1, steps)
    last_logs: dict[str, Any] = {}
    with InterruptGuard() as guard:
        try:
            for callback in callbacks:
                callback.on_train_begin({})
            for _ in range(epochs):
                epoch = trainer.epoch
                for callback in callbacks:
                    callback.on_epoch_begin(epoch, {})
                set_loader_epoch(train_loader, epoch)
                if getattr(train_loader, "stateful", False):
                    # Consecutive batches continue each other's rows: each epoch's streams
                    # start afresh, so the states carried from the last epoch go.
                    trainer.model.reset_states()
                progress.epoch_begin(epoch)
                result = _train_epoch(
                    trainer,
                    train_loader,
                    steps,
                    batch_scheduler,
                    listeners,
                    progress,
                    guard,
                    class_table,
                )
                if not result.complete:
                    progress.message(_interrupt_message(trainer, epoch, result))
                    break
                if pools_over_ranks(trainer, train_loader):
                    result = result.pooled_over_ranks()
                if result.samples == 0:
                    raise ValueError(f"train yielded no batch in epoch {epoch}")
                logs: dict[str, Any] = {
                    "loss": result.loss_sum / result.samples,
                    "accuracy": result.accuracy,
                    **result.per_output,
                }
                if val_loader is not None:
                    set_loader_epoch(val_loader, epoch)
                    measured = run_evaluation(trainer, val_loader, resolved, "validation")
                    logs.update({f"val_{key}": value for key, value in measured.items()})
                logs["lr"] = result.lr
                logs["time"] = time.perf_counter() - progress.epoch_started
                trainer.epoch += 1
                if scheduler is not None and batch_scheduler is None:
                    scheduler.step(logs["val_loss"] if val_loader is not None else logs["loss"])
                history.record(epoch, logs)
                progress.epoch_end(epoch, logs, result.steps / max(result.seconds, 1e-9))
                for callback in callbacks:
                    callback.on_epoch_end(epoch, logs)
                last_logs = logs
                if guard.interrupted:
                    progress.message(_interrupt_message(trainer, epoch, None))
                    break
                if trainer.stop_training:
                    break
            history.interrupted = guard.interrupted
            for callback in callbacks:
                callback.on_train_end(dict(last_logs))
        finally:
            progress.close()
    return history
