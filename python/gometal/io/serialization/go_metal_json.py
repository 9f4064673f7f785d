"""A trainer as go-metal's readable JSON checkpoint layout.

Top-level keys, as go-metal writes them: ``model_spec`` (the layers with type, name,
parameters, input and output shapes, parameter shapes and counts), ``weights`` (name,
shape, flat data, layer, type), ``training_state`` (epoch, step, learning rate, best
loss and accuracy), ``optimizer_state`` (type, hyperparameters, slot tensors in
``state_data``) and ``metadata`` (version, framework, creation time). Shapes carry the
trainer's batch size as their first dimension, as go-metal compiles a model for one
batch size. The export is for reading and for go-metal tools; gometal itself resumes
from ``trainer.save`` files.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...base.atomic import atomic_open
from ...nn.tensor import BATCH
from .container import to_json
from .training_state import optimizer_to_config

if TYPE_CHECKING:
    from ...train.session import TrainingSession


def _batch_shape(shape: Sequence[int], batch_size: int) -> list[int]:
    return [batch_size if d == BATCH else int(d) for d in shape]


def _check_one_output(call: Any) -> None:
    # go-metal's layers each have one output shape and are read by layer name, so a
    # later layer reading a final state could not say which output it reads.
    if len(call.outputs) > 1:
        layer = call.layer
        shapes = ", ".join(str(tuple(t.engine_shape[1:])) for t in call.outputs)
        raise ValueError(
            f"cannot export to go-metal JSON: layer {layer.name!r} ({type(layer).__name__}) "
            f"gives {len(call.outputs)} outputs (sample shapes {shapes}), and go-metal's "
            "layout holds one output per layer; save the trainer with trainer.save, or "
            "build the model without return_state"
        )


def _model_spec(trainer: TrainingSession) -> dict[str, Any]:
    model, batch = trainer.model, trainer.batch_size
    first_call: dict[int, Any] = {}
    for call in model.graph.calls:
        _check_one_output(call)
        first_call.setdefault(id(call.layer), call)
    layers = []
    for layer in model.layers:
        call = first_call[id(layer)]
        parameters = {k: v for k, v in layer.get_config().items() if k != "name"}
        shapes = [list(spec.shape) for spec in layer.weight_specs]
        sources = [t.producer.layer.name if t.producer else "input" for t in call.inputs]
        layers.append(
            {
                "type": type(layer).__name__,
                "name": layer.name,
                "parameters": parameters,
                "inputs": sources,
                "input_shape": _batch_shape(call.inputs[0].engine_shape, batch),
                "output_shape": _batch_shape(call.output.engine_shape, batch),
                "parameter_shapes": shapes,
                "parameter_count": layer.count_params(),
            }
        )
    return {
        "layers": layers,
        "total_parameters": model.count_params(),
        "parameter_shapes": [list(model.weight_shapes[n]) for n in model.trainable_weight_names],
        "input_shape": [batch, *model.input_shape],
        "output_shape": [batch, *model.output_shape],
        "compiled": True,
    }


def _tensor_entry(name: str, value: np.ndarray) -> dict[str, Any]:
    flat = np.asarray(value, dtype=np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        raise ValueError(
            f"cannot export {name!r} to JSON: it holds NaN or infinite values, which JSON "
            "cannot represent"
        )
    # float32 -> Python float is exact, and JSON keeps the shortest repr that round-trips.
    return {"name": name, "shape": list(value.shape), "data": flat.tolist()}


def _best(history: Mapping[str, Any] | None, keys: Sequence[str], pick: Any) -> float | None:
    if not history:
        return None
    for key in keys:
        values = [
            v
            for v in history.get(key, [])
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if values:
            return float(pick(values))
    return None


def go_metal_document(trainer: TrainingSession, description: str | None = None) -> dict[str, Any]:
    """Builds go-metal's checkpoint layout for ``trainer`` as plain data.

    Args:
        trainer: the trainer.
        description: optional free text for ``metadata.description``.

    Returns:
        ``{"model_spec", "weights", "training_state", "optimizer_state", "metadata"}``.

    Raises:
        ValueError: a layer call gives several outputs (``return_state=True``), which
            go-metal's layout cannot hold; the error names the layer.

    Example:
        >>> go_metal_document(trainer)["metadata"]["framework"]  # doctest: +SKIP
        'gometal'
    """
    from ...base.version import __version__
    from ...train.trainer import STEP_VARIABLE

    model = trainer.model
    values = trainer.read_state().variables  # one moment's weights and optimizer state
    weights = []
    for name in model.weight_shapes:
        layer_name, _, kind = name.partition(".")
        entry = _tensor_entry(name, values[name])
        weights.append({**entry, "layer": layer_name, "type": kind})
    trainable = model.trainable_weight_names
    slots = []
    for name, value in values.items():
        if name in model.weight_shapes or name == STEP_VARIABLE:
            continue
        owner = next((p for p in trainable if name.startswith(p + ".")), None)
        state_type = name[len(owner) + 1 :] if owner else name.rsplit(".", 1)[-1]
        entry = _tensor_entry(name, value)
        slots.append({**entry, "state_type": state_type})
    optimizer = optimizer_to_config(trainer.optimizer)
    history = getattr(trainer, "history", None)
    records = getattr(history, "history", None)
    step = trainer.step
    metadata: dict[str, Any] = {
        "version": __version__,
        "framework": "gometal",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if description is not None:
        metadata["description"] = str(description)
    return {
        "model_spec": _model_spec(trainer),
        "weights": weights,
        "training_state": {
            "epoch": int(getattr(trainer, "epoch", 0)),
            "step": step,
            "learning_rate": trainer.learning_rate,
            "best_loss": _best(records, ("val_loss", "loss"), min),
            "best_accuracy": _best(records, ("val_accuracy", "accuracy"), max),
            "total_steps": step,
        },
        "optimizer_state": {
            "type": optimizer["class_name"],
            "parameters": optimizer["config"],
            "state_data": slots,
        },
        "metadata": metadata,
    }


def export_json(
    trainer: TrainingSession, path: str | os.PathLike[str], description: str | None = None
) -> None:
    """Atomically writes ``trainer`` in go-metal's readable JSON checkpoint layout.

    Args:
        trainer: the trainer.
        path: the file to create or replace (``.json`` by convention).
        description: optional free text stored as ``metadata.description``.

    Raises:
        ValueError: a weight or slot holds NaN or infinity (JSON has no such numbers), or
            a layer call gives several outputs (see ``go_metal_document``).

    Example:
        >>> export_json(trainer, "run/checkpoint.json")  # doctest: +SKIP
    """
    document = go_metal_document(trainer, description)
    to_json(document["optimizer_state"]["parameters"], "the optimizer configuration")
    with atomic_open(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8")
        json.dump(document, text, indent=2, allow_nan=False)
        text.flush()
        text.detach()
