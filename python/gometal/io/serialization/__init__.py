"""Saving and loading: models, exact-resume checkpoints, go-metal JSON, atomic writes.

- ``model.save(path)`` / ``gm.load_model(path)``: a model's definition and weights.
- ``trainer.save(path)`` / ``gm.Trainer.load(path)``: everything needed to continue
  training bit for bit (optimizer slots, step, random generator, learning rate,
  scheduler, epoch, history).
- ``trainer.export_json(path)``: go-metal's readable JSON layout.

Model files and checkpoints are single safetensors files (tensors, plus a JSON document
and a checksum in the metadata), each save replacing the previous file atomically.

Loading trusts nothing in the file: only regular files are opened (never a pipe or a
device), the document is bounded in size and depth and validated against the JSON Schema
``checkpoint_schema.json`` shipped here, and tensors holding NaN or infinities are
refused by name unless ``allow_non_finite=True`` is passed. A model whose forward pass
would need more than ``MAX_SAMPLE_BYTES`` per sample is refused before anything is
allocated for it. Every problem with a file is a ``CheckpointError``.

``register_layer`` and ``registered_layers`` are the layer registry's
(``gm.layers.register_layer``): a registered layer class saves and loads.

Example:
    >>> trainer.save("run/ckpt.safetensors")  # doctest: +SKIP
    >>> trainer = gm.Trainer.load("run/ckpt.safetensors")  # doctest: +SKIP
"""

from ...base.atomic import atomic_open, atomic_path, write_atomically
from ...nn.layers.registry import register_layer, registered_layers
from .checkpoint import (
    load_checkpoint,
    load_model,
    load_weights,
    read_metadata,
    save_checkpoint,
    save_model,
)
from .container import CheckpointError
from .go_metal_json import export_json
from .model_config import MAX_SAMPLE_BYTES, model_from_config, model_to_config

__all__ = [
    "MAX_SAMPLE_BYTES",
    "CheckpointError",
    "atomic_open",
    "atomic_path",
    "export_json",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "model_from_config",
    "model_to_config",
    "read_metadata",
    "register_layer",
    "registered_layers",
    "save_checkpoint",
    "save_model",
    "write_atomically",
]
