"""The I/O layer: model files and exact-resume checkpoints (``serialization``) and ONNX
export and import (``onnx``).

Importing it provides the functions behind ``Model.save``, ``Model.load_weights``,
``Model.export_onnx``, ``Trainer.save``, ``Trainer.load`` and ``Trainer.export_json``
(declared in ``gometal.nn.provided`` and ``gometal.train.provided``, below this layer).
``onnx`` is imported on first use: it pulls in the ``onnx`` package.
"""

from __future__ import annotations

import os

from ..nn import provided as nn_provided
from ..nn.model import Model
from ..train import provided as train_provided
from . import serialization


def export_onnx(model: Model, path: str | os.PathLike[str], opset: int) -> None:
    """``Model.export_onnx``: ``gometal.onnx.export``, loading the ONNX package first.

    Args:
        model: the model.
        path: the ``.onnx`` file to create or replace.
        opset: the ONNX operator set version.

    Example:
        >>> export_onnx(model, "model.onnx", 17)  # doctest: +SKIP
    """
    from .onnx import export

    export(model, path, opset)


def _provide_functions() -> None:
    nn_provided.save_model.provide(serialization.save_model)
    nn_provided.load_weights.provide(serialization.load_weights)
    nn_provided.export_onnx.provide(export_onnx)
    nn_provided.model_to_config.provide(serialization.model_to_config)
    nn_provided.model_from_config.provide(serialization.model_from_config)
    train_provided.save_checkpoint.provide(serialization.save_checkpoint)
    train_provided.load_checkpoint.provide(serialization.load_checkpoint)
    train_provided.export_json.provide(serialization.export_json)


_provide_functions()

__all__ = ["export_onnx", "serialization"]
