"""Saving and loading models and whole trainers, so a resumed run continues exactly.

A model file (``model.save``) holds the model definition and its weights; a checkpoint
(``trainer.save``) holds, in addition, every other engine variable (optimizer slots,
the step count, optimizer state), the loss, optimizer and scheduler, the batch size,
the random generator's seed and position, the learning rate, the epoch and the history.
Training N steps, saving, loading in a new process and training N more steps gives the
same bits as training 2N steps at once. Both are one safetensors file (see
``container``), replaced atomically on every save.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...nn.model import Model
from ...train.session import SessionState, TrainingSession
from ...train.trainer import STEP_VARIABLE, Trainer
from .container import (
    FORMAT_VERSION,
    CheckpointError,
    check_finite_tensors,
    check_format,
    check_tensor_shapes,
    read_container,
    to_json,
    write_container,
)
from .document import validate_document
from .model_config import model_from_config, model_to_config
from .training_state import (
    history_from_dict,
    history_to_dict,
    loss_from_config,
    loss_to_config,
    optimizer_from_config,
    optimizer_to_config,
    restore_scheduler,
    scheduler_to_state,
)

MODEL_FORMAT = "gometal.model"
CHECKPOINT_FORMAT = "gometal.checkpoint"


# Tensor names of the host-driven optimizer's memory (L-BFGS), beside the engine variables.
HOST_PREFIX = "host_optimizer."
# Optimizer slots of frozen weights, which the trainer holds on the host.
FROZEN_PREFIX = "frozen_slots."


def _metadata(user: Mapping[str, Any] | None) -> dict[str, Any]:
    from ...base.version import __version__

    if user is not None and not isinstance(user, Mapping):
        raise TypeError(f"metadata must be a dict or None, got {type(user).__name__}")
    user = dict(user or {})
    bad_keys = [key for key in user if not isinstance(key, str)]
    if bad_keys:
        raise TypeError(f"metadata keys must be strings, got {bad_keys}")
    to_json(user, "metadata")
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"gometal_version": __version__, "created": created, "user": user}


def _weights_list(document: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> list[str]:
    names = document.get("weights")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError("the file's 'weights' entry must be a list of tensor names")
    absent = [name for name in names if name not in tensors]
    if absent:
        raise CheckpointError(f"the file lists weights it does not hold: {absent}")
    return names


def _check_flag(allow_non_finite: Any) -> None:
    if not isinstance(allow_non_finite, bool):
        raise TypeError(f"allow_non_finite must be True or False, got {allow_non_finite!r}")


def _model_weights(
    path: str | os.PathLike[str], allow_non_finite: bool
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    _check_flag(allow_non_finite)
    document, tensors = read_container(path)
    check_format(document, (MODEL_FORMAT, CHECKPOINT_FORMAT), path)
    validate_document(document, repr(os.fspath(path)))
    weights = {name: tensors[name] for name in _weights_list(document, tensors)}
    if not allow_non_finite:
        check_finite_tensors(weights, repr(os.fspath(path)))
    return document, weights


# -- models ------------------------------------------------------------------------------


def int8_stored(model: Model, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``weights`` with each quantized layer's integer weights (those its ``int8_weights``
    names) as int8, a quarter of their float32 size; a tensor holding any value that is
    not an int8 integer stays float32, so storing is always exact.

    Args:
        model: the model the weights are of.
        weights: name -> float32 array, as ``model.get_weights()`` gives.

    Returns:
        A new dict of the same names.

    Example:
        >>> int8_stored(int8_model, int8_model.get_weights())["dense_0.weight"].dtype  # doctest: +SKIP
        dtype('int8')
    """
    stored = dict(weights)
    for layer in model.layers:
        for local in getattr(layer, "int8_weights", ()):
            name = f"{layer.name}.{local}"
            value = stored.get(name)
            if value is not None and np.array_equal(value, np.clip(np.rint(value), -128, 127)):
                stored[name] = np.asarray(value).astype(np.int8)
    return stored


def save_model(
    model: Model, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> None:
    """Atomically writes ``model``'s definition and weights to ``path``.

    Args:
        model: the model (its current weights: a trainer's if one trains it).
        path: the file to create or replace (``.safetensors`` by convention).
        metadata: optional JSON-serializable dict stored with the model.

    Raises:
        TypeError: a layer class is not registered, or ``metadata`` is not JSON data.
        ValueError: the document would be longer or more deeply nested than a gometal
            file may hold (see ``document.MAX_DOCUMENT_CHARS``; large ``metadata``).

    Example:
        >>> save_model(model, "mlp.safetensors", metadata={"dataset": "digits"})  # doctest: +SKIP
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a gm.Model, got {type(model).__name__}")
    weights = int8_stored(model, model.get_weights())
    document = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_to_config(model),
        "weights": list(weights),
        "metadata": _metadata(metadata),
    }
    write_container(path, weights, document)


def load_model(path: str | os.PathLike[str], *, allow_non_finite: bool = False) -> Model:
    """Rebuilds a model, with its weights, from a model file or a trainer checkpoint.

    Args:
        path: a file written by ``model.save`` or ``trainer.save``.
        allow_non_finite: load weights holding NaN or infinities instead of refusing
            them (e.g. to inspect a run that diverged); such a model predicts NaN.

    Returns:
        The model; training state in a checkpoint is ignored.

    Raises:
        CheckpointError: the file is not an intact gometal file, its document does not
            fit the schema (the message names the entries), its parts disagree, or a
            weight holds NaN or an infinity (the message names the tensors).
        TypeError: ``allow_non_finite`` is not a bool.

    Example:
        >>> model = gm.load_model("mlp.safetensors")  # doctest: +SKIP
    """
    document, weights = _model_weights(path, allow_non_finite)
    shapes = {name: value.shape for name, value in weights.items()}
    model = model_from_config(document.get("model"), shapes)
    check_tensor_shapes(model.weight_shapes, shapes, "the model its definition describes")
    model.set_weights(weights)
    return model


def load_weights(
    model: Model, path: str | os.PathLike[str], *, allow_non_finite: bool = False
) -> None:
    """Copies the weights in a model file or checkpoint into an existing ``model``.

    Args:
        model: a model with the same weight names and shapes as the saved one.
        path: a file written by ``model.save`` or ``trainer.save``.
        allow_non_finite: copy weights holding NaN or infinities instead of refusing them.

    Raises:
        CheckpointError: the file is invalid, its weights do not match the model's (the
            message names every missing, unexpected or misshapen tensor), or a weight
            holds NaN or an infinity (named).
        TypeError: ``allow_non_finite`` is not a bool.

    Example:
        >>> load_weights(model, "mlp.safetensors")  # doctest: +SKIP
    """
    _, weights = _model_weights(path, allow_non_finite)
    shapes = {name: value.shape for name, value in weights.items()}
    check_tensor_shapes(model.weight_shapes, shapes, "this model")
    model.set_weights(weights)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored with a model or checkpoint (version, time, user metadata).

    Args:
        path: a file written by ``model.save`` or ``trainer.save``.

    Returns:
        ``{"gometal_version", "created", "user"}`` plus ``"format"``.

    Example:
        >>> read_metadata("mlp.safetensors")["user"]  # doctest: +SKIP
        {'dataset': 'digits'}
    """
    document, _ = read_container(path)
    name = check_format(document, (MODEL_FORMAT, CHECKPOINT_FORMAT), path)
    metadata = document.get("metadata")
    return {**(metadata if isinstance(metadata, dict) else {}), "format": name}


# -- trainers ----------------------------------------------------------------------------


def save_checkpoint(
    trainer: TrainingSession,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    state: SessionState | None = None,
) -> None:
    """Atomically writes everything needed to resume ``trainer`` exactly.

    Args:
        trainer: the trainer.
        path: the file to create or replace (``.safetensors`` by convention).
        metadata: optional JSON-serializable dict stored with the checkpoint.
        state: the state to store (``trainer.checkpoint_state()``, which a distributed
            job reads on every rank); default: ``trainer.read_state()``.

    Raises:
        TypeError: the loss, optimizer, scheduler or a layer cannot be saved, or
            ``metadata`` is not JSON data.
        ValueError: the document would be longer or more deeply nested than a gometal
            file may hold (see ``document.MAX_DOCUMENT_CHARS``; large ``metadata``).

    Example:
        >>> save_checkpoint(trainer, "run/ckpt.safetensors")  # doctest: +SKIP
    """
    # One moment's state: no step of this trainer, or of one sharing its layers, in between.
    if state is None:
        state = trainer.read_state()
    tensors = dict(state.variables)
    training = {
        "loss": loss_to_config(trainer.loss),
        "losses": [
            {"output": output.name, "loss": loss_to_config(output.loss), "weight": output.weight}
            for output in trainer.output_losses
        ],
        "optimizer": optimizer_to_config(trainer.optimizer),
        "batch_size": trainer.batch_size,
        "seed": state.seed,
        "rng_step": state.rng_step,
        "learning_rate": trainer.learning_rate,
        "epoch": int(getattr(trainer, "epoch", 0)),
        "step": trainer.step,
        "scheduler": scheduler_to_state(getattr(trainer, "scheduler", None)),
        "history": history_to_dict(getattr(trainer, "history", None)),
        "mixed_precision": getattr(trainer, "mixed_precision", None),
        "loss_scaling": getattr(trainer, "loss_scaling", False),
        "growth_interval": getattr(trainer, "growth_interval", 2000),
        "accumulate_steps": getattr(trainer, "accumulate_steps", 1),
        "step_offsets": state.step_offsets,
        "frozen_since": state.frozen_since,
    }
    tensors.update({FROZEN_PREFIX + name: value for name, value in state.frozen_slots.items()})
    # L-BFGS keeps its curvature memory on the host; it is saved beside the variables.
    if state.host_optimizer is not None:
        scalars, vectors = state.host_optimizer
        training["host_optimizer"] = scalars
        tensors.update({HOST_PREFIX + name: vector for name, vector in vectors.items()})
    to_json(training, "the trainer state (scheduler state, history)")
    document = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_to_config(trainer.model),
        "weights": list(trainer.model.weight_shapes),
        "training": training,
        "metadata": _metadata(metadata),
    }
    write_container(path, tensors, document)


def _training_field(training: Mapping[str, Any], key: str, low: int = 0) -> int:
    value = training.get(key)
    # The engine keeps seeds and counters as unsigned 64-bit integers.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**64:
        raise CheckpointError(f"training.{key} must be an int in [{low}, 2**64), found {value!r}")
    return value


def _losses_from_config(training: Mapping[str, Any]) -> tuple[Any, Any]:
    """The trainer's ``loss`` and ``loss_weights`` arguments: one loss, or one per output
    with its weight (checkpoints written before several outputs hold only ``loss``)."""
    entries = training.get("losses")
    if entries is None:
        return loss_from_config(training.get("loss")), None
    losses = {entry["output"]: loss_from_config(entry["loss"]) for entry in entries}
    weights = {entry["output"]: float(entry["weight"]) for entry in entries}
    if len(losses) != len(entries):
        raise CheckpointError("training.losses names an output more than once")
    return losses, weights


def _check_step(tensors: Mapping[str, np.ndarray], shown: str) -> None:
    stored = np.asarray(tensors.get(STEP_VARIABLE, np.float32(0)))
    if stored.size != 1:
        return  # the shape check names it
    step = float(stored.reshape(-1)[0])
    # The engine counts in float32; trainer.step reads the count back as an int.
    if not (math.isfinite(step) and step >= 0 and step.is_integer()):
        raise CheckpointError(
            f"{shown}: the step counter {STEP_VARIABLE!r} must be a whole number >= 0, found {step}"
        )


def load_checkpoint(path: str | os.PathLike[str], *, allow_non_finite: bool = False) -> Trainer:
    """Rebuilds a trainer from ``save_checkpoint`` output, ready to continue training.

    The model, loss and optimizer are rebuilt and compiled; every engine variable, the
    random generator's position, the learning rate, the epoch, the history and the
    scheduler are restored.

    Args:
        path: a file written by ``trainer.save``.
        allow_non_finite: load weights and optimizer state holding NaN or infinities
            instead of refusing them (e.g. to inspect a run that diverged); training
            from them gives ``loss=nan``. The step counter must be a count either way.

    Returns:
        The trainer.

    Raises:
        CheckpointError: the file is not an intact gometal checkpoint (a model file
            included), its document does not fit the schema (the message names the
            entries), its tensors do not fit the trainer it describes, or a tensor
            holds NaN or an infinity (named).
        TypeError: ``allow_non_finite`` is not a bool.

    Example:
        >>> trainer = gm.Trainer.load("run/ckpt.safetensors")  # doctest: +SKIP
    """
    _check_flag(allow_non_finite)
    shown = repr(os.fspath(path))
    document, tensors = read_container(path)
    if document.get("format") == MODEL_FORMAT:
        raise CheckpointError(
            f"{shown} holds a model without training state (model.save); load "
            "it with gm.load_model, or save a checkpoint with trainer.save"
        )
    check_format(document, (CHECKPOINT_FORMAT,), path)
    validate_document(document, shown)
    _check_step(tensors, shown)
    if not allow_non_finite:
        check_finite_tensors(tensors, shown)
    training = document.get("training")
    if not isinstance(training, dict):
        raise CheckpointError("the checkpoint has no 'training' object")
    shapes = {name: value.shape for name, value in tensors.items()}
    weights = _weights_list(document, tensors)
    model = model_from_config(document.get("model"), {n: shapes[n] for n in weights})
    try:
        loss, loss_weights = _losses_from_config(training)
        trainer = Trainer(
            model,
            loss=loss,
            loss_weights=loss_weights,
            optimizer=optimizer_from_config(training.get("optimizer")),
            batch_size=_training_field(training, "batch_size", 1),
            seed=_training_field(training, "seed"),
            # Mixed precision (absent from older checkpoints: float32, no loss scaling).
            mixed_precision=training.get("mixed_precision"),
            loss_scaling=training.get("loss_scaling", False),
            growth_interval=training.get("growth_interval", 2000),
            accumulate_steps=training.get("accumulate_steps", 1),
        )
    except (TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"cannot rebuild the trainer the checkpoint describes: {err}"
        ) from None
    host_vectors = {
        name[len(HOST_PREFIX) :]: tensors.pop(name)
        for name in list(tensors)
        if name.startswith(HOST_PREFIX)
    }
    frozen_slots = {
        name[len(FROZEN_PREFIX) :]: tensors.pop(name)
        for name in list(tensors)
        if name.startswith(FROZEN_PREFIX)
    }
    frozen = set(trainer.model.weight_shapes) - set(trainer.model.trainable_weight_names)
    for name, value in frozen_slots.items():
        weight = next((w for w in frozen if name.startswith(w + ".")), None)
        if weight is None or value.shape != trainer.model.weight_shapes[weight]:
            raise CheckpointError(
                f"the checkpoint holds {FROZEN_PREFIX}{name} of shape {value.shape}, which "
                "is no optimizer slot of a frozen weight of its model"
            )
    # Weights that sat out steps frozen have optimizer state of their own (NAdam's
    # product, for one): the trainer compiles for them before the variables are checked.
    step_offsets = dict(training.get("step_offsets", {}))
    frozen_since = dict(training.get("frozen_since", {}))
    step = int(training.get("step", 0))
    for field, counts in (("step_offsets", step_offsets), ("frozen_since", frozen_since)):
        for name, count in counts.items():
            if name not in trainer.model.weight_shapes or count > step:
                raise CheckpointError(
                    f"training.{field} gives {name!r} {count}: it must name a weight of the "
                    f"model and count at most the checkpoint's {step} steps"
                )
    trainer.set_frozen_steps(step_offsets, frozen_since)
    shapes = {name: value.shape for name, value in tensors.items()}
    check_tensor_shapes(
        trainer.checkpoint_variable_shapes(), shapes, "the trainer the checkpoint describes"
    )
    host_driven = trainer.optimizer.host_driven
    if host_driven != ("host_optimizer" in training) or (not host_driven and host_vectors):
        raise CheckpointError("the checkpoint's host optimizer state does not match its optimizer")
    host_state = (training["host_optimizer"], host_vectors) if host_driven else None
    seed, rng_step = _training_field(training, "seed"), _training_field(training, "rng_step")
    try:
        # Shapes are checked above: what remains to fail is a forged host optimizer memory.
        trainer.restore_checkpoint_state(
            SessionState(
                tensors,
                seed,
                rng_step,
                host_state,
                frozen_slots=frozen_slots,
                step_offsets=step_offsets,
                frozen_since=frozen_since,
            )
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        if host_state is None:
            raise
        raise CheckpointError(f"training.host_optimizer: {err}") from None
    learning_rate = training.get("learning_rate")
    try:
        trainer.set_learning_rate(learning_rate)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"training.learning_rate: {err}") from None
    trainer.epoch = _training_field(training, "epoch")
    history = history_from_dict(training.get("history"))
    if history is not None:
        trainer.history = history
    restore_scheduler(trainer, training.get("scheduler"), trainer.learning_rate)
    return trainer
