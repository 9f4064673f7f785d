"""The state of one ONNX import and the helpers every operator handler uses: where an
error happened, constants and runtime tensors by name, and layer calls whose weights
are recorded for the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...nn.tensor import BATCH, SymbolicTensor
from . import _layers as X
from ._budget import SampleBudget, emitted_sample_bytes
from ._safety import OnnxImportError
from ._shape_values import ShapeValue


def show_shape(shape: Sequence[int]) -> str:
    """An engine shape for messages, ``batch`` for the dynamic batch.

    Example:
        >>> show_shape((-1, 4))
        "('batch', 4)"
    """
    return str(tuple("batch" if d == BATCH else d for d in shape))


def _sanitize(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    return cleaned or "node"


class GraphReader:
    """What one import knows while it walks the graph.

    Attributes:
        consts: constant values by tensor name (initializers, folded results).
        values: runtime tensors by name.
        shape_values: integer tensors computed from shapes that hold the batch size.
        weights: the model's weights by ``layer.weight`` name.
        export_batch: the fixed batch size the file declares when the import makes it
            dynamic, else ``None``.
        node: the node being imported, or ``None``.
        budget: the bytes per sample the layers made so far need (see ``_budget``).
    """

    def __init__(self, proto: Any, folder: Path):
        self.proto, self.graph, self.folder = proto, proto.graph, folder
        self.opset = 1
        for entry in proto.opset_import:
            if entry.domain in ("", "ai.onnx"):
                self.opset = int(entry.version)
        self.consts: dict[str, np.ndarray] = {}
        self.values: dict[str, SymbolicTensor] = {}
        self.shape_values: dict[str, ShapeValue] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.const_layers: dict[str, SymbolicTensor] = {}
        self.taken: set[str] = set()
        # The next suffix to try per name: probing from 1 each time made imports of
        # many unnamed nodes quadratic.
        self._next_suffix: dict[str, int] = {}
        self.budget = SampleBudget()
        self.export_batch: int | None = None
        self.node: Any = None
        self.source: SymbolicTensor | None = None

    def where(self) -> str:
        """The node being imported, as errors name it."""
        node = self.node
        return f"{node.op_type} node {node.name or '(unnamed)'!r}" if node is not None else "graph"

    def fail(self, message: str) -> None:
        """Raises ``OnnxImportError`` naming the current node."""
        raise OnnxImportError(f"{self.where()}: {message}")

    def name(self, hint: str) -> str:
        """A unique layer name made from ``hint``."""
        base = _sanitize(hint)
        name, index = base, self._next_suffix.get(base, 1)
        # Suffixes below the stored one were taken when it was stored, and names stay taken.
        while name in self.taken or name == "optimizer":
            name, index = f"{base}_{index}", index + 1
        self._next_suffix[base] = index
        self.taken.add(name)
        return name

    def layer_name(self) -> str:
        """A unique layer name for the current node."""
        return self.name(self.node.name or self.node.op_type)

    def const(self, name: str, what: str) -> np.ndarray:
        """The constant value of input ``name``, or an error naming ``what`` it is."""
        if name not in self.consts:
            self.fail(f"{what} ({name!r}) must be a constant (an initializer or Constant)")
        return self.consts[name]

    def float_const(self, name: str, what: str) -> np.ndarray:
        """The constant ``name`` as float32, or an error if it is not a float tensor."""
        value = self.const(name, what)
        if value.dtype.kind != "f":
            self.fail(f"{what} ({name!r}) must be a float tensor, got {value.dtype}")
        return np.ascontiguousarray(value, np.float32)

    def runtime(self, name: str) -> SymbolicTensor:
        """The symbolic tensor for ``name``; constants become ``OnnxConstant`` layers."""
        if name in self.values:
            return self.values[name]
        if name in self.shape_values:
            self.fail(
                f"{name!r} is computed from the batch size ({self.shape_values[name]}); "
                "gometal uses such shape tensors only as Reshape targets"
            )
        if name not in self.const_layers:
            value = self.float_const(name, "a constant operand")
            if value.ndim == 0:
                value = value.reshape(1)
            layer_name = self.name(f"const_{name}")
            tensor = X.OnnxConstant(value.shape, name=layer_name)(self.source)
            self.weights[f"{layer_name}.value"] = value
            self.const_layers[name] = tensor
        return self.const_layers[name]

    def call(self, layer: Any, inputs: Any, weights: dict[str, np.ndarray] | None = None) -> Any:
        """Calls ``layer`` on ``inputs``, counts what it needs per sample against the budget
        and records ``weights`` after checking their shapes."""
        output = layer(inputs)
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        self.budget.spend(
            self.where(),
            emitted_sample_bytes(layer, tensors),
            f"its layer {layer.name!r} ({type(layer).__name__})",
        )
        first = tensors[0]
        expected = {spec.name: spec.shape for spec in layer.weight_specs}
        for local, value in (weights or {}).items():
            if tuple(value.shape) != expected[local]:
                self.fail(
                    f"its {local} has shape {tuple(value.shape)}, but the input shape "
                    f"{show_shape(first.engine_shape)} needs {expected[local]}"
                )
            self.weights[f"{layer.name}.{local}"] = np.ascontiguousarray(value, np.float32)
        return output

    def reshape_to(self, x: SymbolicTensor, target: list[int]) -> SymbolicTensor:
        """An ``OnnxReshape`` of ``x`` to the resolved engine shape ``target``."""
        return self.call(X.OnnxReshape(target, name=self.layer_name()), x)
