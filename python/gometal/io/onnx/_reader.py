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
from ._view_layers import OnnxRelayout
from ._views import Groups, arrangement


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
        views: the groups of runtime tensors held in another axis order (see ``_views``).
        deferred: results that exist only as part of a pattern a later node completes
            (a causal mask from a run-time length), by name, with what they hold.
        passthrough: ``runtime`` hands views over as they are (elementwise operators).
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
        self.views: dict[str, Groups] = {}
        self.product_origins: dict[Any, str] = {}
        self.view_origins: dict[str, str] = {}
        self.materialized: dict[str, SymbolicTensor] = {}  # views moved into ONNX order
        # Outputs of MatMul by a weight, and the initializers (and Identity copies of
        # them): an initializer added to such an output is that layer's trainable bias.
        self.weight_products: set[str] = set()
        self.parameters: set[str] = {t.name for t in self.graph.initializer}
        # The engine operands of each MatMul of two run-time tensors, for attention.
        # (q, k transposed, their leading groups, the scale applied to the product since).
        self.products: dict[str, tuple[SymbolicTensor, SymbolicTensor, Groups, float]] = {}
        self.deferred: dict[str, Any] = {}
        self.passthrough = False
        self.booleans: set[str] = set()  # runtime tensors holding ONNX booleans as 0 or 1
        # Recurrent outputs (and Concats of them) that a graph output may give batch-first.
        self.recurrent_states: set[str] = set()

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
        """The symbolic tensor for ``name``; constants become ``OnnxConstant`` layers and
        views are moved into ONNX order (see ``_views``)."""
        if name in self.deferred:
            self.fail(f"{name!r} {self.deferred[name].usage}")
        if name in self.views and not self.passthrough:
            return self.materialize(name)
        if name in self.values:
            if self.values[name].dtype != "float32":
                self.fail(
                    f"{name!r} holds integer token ids; gometal reads them only as the indices "
                    "of a Gather from a float table (an embedding)"
                )
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

    def is_bias(self, name: str, other: str) -> bool:
        """Whether constant ``name``, added to ``other``, is the bias of a linear layer: a
        vector initializer added to the output of a MatMul by a weight (torch writes
        ``nn.Linear`` on a sequence so), trainable as torch's ``bias`` is."""
        value = self.consts.get(name)
        return (
            name in self.parameters and other in self.weight_products and value is not None
            and value.dtype.kind == "f" and value.ndim == 1
        )  # fmt: skip

    def bias_tensor(self, value: np.ndarray, hint: str) -> SymbolicTensor:
        """A trainable ``OnnxConstant`` holding ``value`` (a bias, see ``is_bias``)."""
        layer_name = self.name(f"bias_{hint}")
        tensor = X.OnnxConstant(value.shape, trainable=True, name=layer_name)(self.source)
        self.weights[f"{layer_name}.value"] = np.ascontiguousarray(value, np.float32)
        return tensor

    def materialize(self, name: str) -> SymbolicTensor:
        """The view ``name`` as an engine tensor in ONNX order (its axes moved, its groups
        merged), or an error naming the node and the sizes."""
        if name in self.materialized:
            return self.materialized[name]
        x, groups = self.values[name], self.views[name]
        try:
            perm, shape, _ = arrangement(x.engine_shape, groups, range(len(groups)))
        except ValueError as err:
            # The node that made the view is the one that moved or merged the axes.
            raise OnnxImportError(
                f"{self.view_origins[name]}: {err}; {self.where()} needs {name!r} in that "
                f"order{self.size_origins()}"
            ) from None
        layer = OnnxRelayout(perm, shape, name=self.name(f"{name}_in_order"))
        self.materialized[name] = self.call(layer, x)
        return self.materialized[name]

    def size_origins(self) -> str:
        """Where products of run-time sizes were computed, for errors about them."""
        if not self.product_origins:
            return ""
        listed = ", ".join(f"at {where}: {size}" for size, where in self.product_origins.items())
        return f" (run-time sizes computed {listed})"

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
