"""Evaluation over arrays or a loader: loss and accuracy in the engine, plus streaming metrics."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..nn.inference import inference_batch_size
from .data import as_batches, is_array_pair, is_batch_source, unpack_batch
from .evaluation_sums import (
    EvaluationSums,
    exact_shard,
    gather_from_ranks,
    pooled_over_ranks,
    pools_over_ranks,
)

if TYPE_CHECKING:
    from .session import TrainingSession

# Keys every evaluation reports; a metric may not reuse them.
RESERVED_NAMES = ("loss", "accuracy")


def _is_metric(obj: Any) -> bool:
    return all(callable(getattr(obj, attr, None)) for attr in ("reset", "update", "result")) and (
        isinstance(getattr(obj, "name", None), str)
    )


def resolve_metrics(specs: Any) -> list[Any]:
    """Turns metric names or objects into streaming metric objects.

    Args:
        specs: ``None``, one spec, or a sequence of specs; a spec is a name that
            ``gm.metrics.get`` knows (``"f1_macro"``, ``"mae"``, ...) or an object with
            ``name``, ``reset()``, ``update(y_true, y_pred)`` and ``result()``.

    Returns:
        The metric objects, in order.

    Raises:
        ValueError: two metrics share a name, or a metric object is named ``loss`` or
            ``accuracy``. The names ``"loss"`` and ``"accuracy"`` themselves are accepted
            and skipped, as Keras users write them: every evaluation reports both.
        TypeError: a spec is neither a name nor a metric object.

    Example:
        >>> [m.name for m in resolve_metrics(["f1_macro", "auc_roc"])]  # doctest: +SKIP
        ['f1_macro', 'auc_roc']
    """
    if specs is None:
        return []
    if isinstance(specs, str) or _is_metric(specs):
        specs = [specs]
    if not isinstance(specs, Iterable):
        raise TypeError(f"metrics must be a list of metric names or objects, got {specs!r}")
    resolved = []
    for spec in specs:
        if isinstance(spec, str) and spec in RESERVED_NAMES:
            continue
        if _is_metric(spec):
            resolved.append(spec)
            continue
        from . import metrics as metrics_module

        get = getattr(metrics_module, "get", None)
        if get is None or not isinstance(spec, str):
            raise TypeError(
                "each metric must be a metric name or an object with name, reset(), "
                f"update(y_true, y_pred) and result(), got {spec!r}"
            )
        metric = get(spec)
        if not _is_metric(metric):
            raise TypeError(f"gm.metrics.get({spec!r}) returned {metric!r}, not a metric")
        resolved.append(metric)
    names = [m.name for m in resolved]
    for name in names:
        if name in RESERVED_NAMES:
            raise ValueError(
                f"metric name {name!r} clashes with the {name} every evaluation reports; "
                "drop it from metrics"
            )
        if names.count(name) > 1:
            raise ValueError(f"two metrics are named {name!r}; metric names must be unique")
    return resolved


def resolve_session_metrics(trainer: TrainingSession, specs: Any) -> Any:
    """The metrics of an evaluation of ``trainer``: a list, or one list per output.

    A model with several outputs (or a dict of them) takes ``specs`` as a list that
    applies to every output (each gets its own metric objects) or a dict from output
    names to lists; results are then keyed ``"<output>_<metric>"``.

    Args:
        trainer: the session (its model's outputs).
        specs: metric names or objects, or a dict of them by output name.

    Returns:
        A list of metric objects, or a dict from output names to lists of them.

    Raises:
        ValueError: a dict naming an output the model does not have.

    Example:
        >>> resolve_session_metrics(trainer, {"label": ["f1_macro"]})  # doctest: +SKIP
        {'label': [F1Macro()], 'box': []}
    """
    signature = trainer.model.output_signature
    if isinstance(specs, Mapping):
        unknown = [key for key in specs if key not in signature.names]
        if unknown:
            raise ValueError(
                f"metrics names output(s) {unknown!r} that the model does not have; its "
                f"outputs are {list(signature.names)}"
            )
        if not signature.structured:
            return resolve_metrics(specs.get(signature.names[0]))
        return {name: resolve_metrics(specs.get(name)) for name in signature.names}
    if not signature.structured:
        return resolve_metrics(specs)
    return {name: resolve_metrics(copy.deepcopy(specs)) for name in signature.names}


def _metric_value(metric: Any) -> Any:
    value = metric.result()
    return float(value) if np.ndim(value) == 0 else np.asarray(value)


def metric_keys(metrics: Any) -> list[str]:
    """The result keys of resolved metrics (``resolve_session_metrics``), in order."""
    if isinstance(metrics, Mapping):
        return [f"{name}_{m.name}" for name, listed in metrics.items() for m in listed]
    return [m.name for m in metrics]


def run_evaluation(
    trainer: TrainingSession, batches: Iterable[tuple[Any, Any]], metrics: Any, name: str
) -> dict[str, Any]:
    """Runs the inference forward pass over ``batches``, accumulating results batch by batch.

    Loss and accuracy come from the engine's ``eval`` function (one call per batch); when
    ``metrics`` is not empty, a second call per batch gets the probabilities
    (``predict_proba``: softmax or sigmoid outputs) or, for regression losses, the raw
    predictions, and feeds them to each metric's ``update``.

    With a distributed trainer, a loader sharded by rank (``shard_count`` above 1, as
    ``ArrayLoader``, ``gm.vision.DataLoader`` and the token loaders are) is read without
    its training padding (``iterate(pad_shards=False)``) and the ranks' sums are pooled
    (``evaluation_sums``); metrics with ``state()`` and ``merge_state()`` update batch by
    batch and merge the ranks' states, others are fed every rank's outputs: every rank
    returns what one process gets on the whole set, and every rank must evaluate (the
    pooling is collective). Another loader is taken as this
    rank's own data, its results not pooled.

    Args:
        trainer: the trainer.
        batches: ``(x, y)`` batches; arrays already converted or any array-like.
        metrics: streaming metric objects (reset here first), or a dict of lists of them
            by output name (``resolve_session_metrics``).
        name: the data's name for error messages.

    Returns:
        ``{"loss", "accuracy", <metric name>...}``: the loss is the sample-weighted mean
        over the batches; the accuracy pools every batch's sums (correct samples, or for
        regression ``1 - NMAE`` of the whole set), so it does not depend on the batch
        size; each metric gives its ``result()``. For several outputs, ``loss`` is the
        weighted total and ``accuracy`` the first output's, and each output adds
        ``"<output>_loss"``, ``"<output>_accuracy"`` and ``"<output>_<metric>"``.

    Raises:
        ValueError: the batches hold no sample.

    Example:
        >>> run_evaluation(trainer, loader, [], "validation")["loss"]  # doctest: +SKIP
    """
    by_output = metrics if isinstance(metrics, Mapping) else {}
    flat = [m for listed in by_output.values() for m in listed] if by_output else list(metrics)
    for metric in flat:
        metric.reset()
    # A sharded loader yields this rank's part: its sums pool over the ranks. Metrics with
    # a mergeable state update as batches arrive and merge the ranks' states; the others
    # are fed every rank's outputs afterwards.
    pooled = pools_over_ranks(trainer, batches)
    keeps_outputs = pooled and not all(_has_state(m) for m in flat)
    sums = EvaluationSums()
    for item in exact_shard(batches) if pooled else batches:
        x, y, weights = unpack_batch(item, name)
        if weights is None:
            batch = trainer.evaluate_batch(x, y, with_outputs=bool(flat))
        else:
            batch = trainer.evaluate_batch(x, y, with_outputs=bool(flat), sample_weight=weights)
        sums.add_batch(batch)
        if not flat:
            continue
        inputs = [(output, e.labels, e.outputs) for output, e in batch.per_output.items()]
        if not by_output:
            inputs = [(None, batch.labels, batch.outputs)]
        if keeps_outputs:
            sums.metric_inputs.extend(inputs)
        _update_metrics(by_output, flat, inputs, lambda m: not pooled or _has_state(m))
    if pooled:
        sums = pooled_over_ranks(sums)
        _update_metrics(by_output, flat, sums.metric_inputs, lambda m: not _has_state(m))
        _merge_ranks_states([m for m in flat if _has_state(m)])
    if sums.totals is None:
        raise ValueError(f"{name} holds no samples: its loader yielded no batch")
    results: dict[str, Any] = {"loss": sums.loss_sum / sums.seen, "accuracy": sums.totals.value}
    for output, loss_sum in sums.output_loss.items():
        results[f"{output}_loss"] = loss_sum / sums.seen
        results[f"{output}_accuracy"] = sums.output_totals[output].value
        for metric in by_output.get(output, ()):
            results[f"{output}_{metric.name}"] = _metric_value(metric)
    if not by_output:
        for metric in flat:
            results[metric.name] = _metric_value(metric)
    return results


def _has_state(metric: Any) -> bool:
    """Whether ``metric`` can hand over and merge its accumulated state."""
    return callable(getattr(metric, "state", None)) and callable(
        getattr(metric, "merge_state", None)
    )


def _update_metrics(
    by_output: Mapping[str, list[Any]],
    flat: list[Any],
    inputs: Iterable[tuple[Any, Any, Any]],
    chosen: Callable[[Any], bool],
) -> None:
    """Feeds ``(output or None, labels, outputs)`` batches to their ``chosen`` metrics."""
    for output, labels, outputs in inputs:
        for metric in by_output.get(output, ()) if output is not None else flat:
            if chosen(metric):
                metric.update(labels, outputs)


def _merge_ranks_states(metrics: list[Any]) -> None:
    """Replaces each metric's state by every rank's merged in rank order, so that every
    rank ends with the same state, built alike."""
    if not metrics:
        return
    ranks_states = gather_from_ranks([metric.state() for metric in metrics])
    for metric in metrics:
        metric.reset()
    for states in ranks_states:
        for metric, state in zip(metrics, states, strict=True):
            metric.merge_state(state)


def evaluate(
    trainer: TrainingSession,
    x: Any,
    y: Any = None,
    batch_size: int | None = None,
    metrics: Any = (),
    sample_weight: Any = None,
) -> dict[str, Any]:
    """``Trainer.evaluate``: arrays ``(x, y)`` or a loader ``x`` with ``y=None``.

    Args:
        trainer: the trainer.
        x: inputs ``(N, *input_shape)``, or a loader yielding ``(x, y)`` batches.
        y: labels or targets for array inputs; ``None`` with a loader.
        batch_size: rows per engine call for arrays; ``None`` uses up to 1024. A loader
            keeps its own batches.
        metrics: metric names or objects (see ``resolve_metrics``); for several outputs,
            a list for every output or a dict by output name.
        sample_weight: per-sample weights of the loss, for arrays (a loader yields
            ``(x, y, sample_weight)`` triples instead).

    Returns:
        ``{"loss", "accuracy", <metric name>...}``, plus ``"<output>_loss"``,
        ``"<output>_accuracy"`` and ``"<output>_<metric>"`` for several outputs.

    Raises:
        ValueError: ``y`` missing for arrays or given with a loader, or ``batch_size``
            given with a loader.

    Example:
        >>> evaluate(trainer, x_test, y_test, metrics=["f1_macro"])  # doctest: +SKIP
        {'loss': 0.08, 'accuracy': 0.97, 'f1_macro': 0.97}
    """
    resolved = resolve_session_metrics(trainer, metrics)
    if y is None and is_batch_source(x) and not isinstance(x, list):
        if sample_weight is not None:
            raise ValueError(
                "sample_weight applies to arrays; a loader gives weights by yielding "
                "(x, y, sample_weight) batches"
            )
        if batch_size is not None:
            raise ValueError(
                f"batch_size applies to arrays; a loader keeps its own batches (got "
                f"batch_size={batch_size!r} with {type(x).__name__})"
            )
        return run_evaluation(trainer, x, resolved, "the evaluation data")
    if y is None:
        hint = " (a tuple (x, y) must be passed as two arguments)" if is_array_pair(x) else ""
        raise ValueError(
            f"evaluate needs y (labels or targets) when x is an array{hint}; pass "
            "evaluate(x, y) or evaluate(loader)"
        )
    loader = as_batches(
        trainer,
        (x, y),
        "evaluate",
        batch_size=inference_batch_size(batch_size),
        sample_weight=sample_weight,
        shard=trainer.distributed,
    )
    return run_evaluation(trainer, loader, resolved, "the evaluation data")
