"""GELU written as a chain of primitives, read back as one ``Gelu`` node.

Before opset 20 ONNX has no ``Gelu`` operator, so exporters write GELU out: the exact form
``0.5 x (1 + Erf(x / sqrt 2))`` (torch's exporters, and gometal's own for ``GELU``) and
the tanh form ``0.5 x (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, with the factors in
whatever order and association each exporter picks. Importing those chains op by op runs
the ``erf`` decomposition, which differs from the engine's fused ``gelu`` in the last bit;
reading them as one ``Gelu`` node gives the fused op and an identical round trip.

A chain is fused only when its constants are GELU's (to float32 rounding) and none of its
intermediate results is used elsewhere or is a graph output; anything else stays as the
separate operators it is.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from ._safety import OnnxImportError, tensor_to_array

__all__ = ["fuse_gelu_chains"]

_RELATIVE = 1e-6  # float32 rounding of the constants, far below any other value's distance
_DEFAULT_DOMAINS = ("", "ai.onnx")
# The input counts of the operators a chain holds; a node of another count is left to the
# node checks, which name it.
_ARITY = {"Mul": 2, "Add": 2, "Div": 2, "Pow": 2, "Erf": 1, "Tanh": 1}


def fuse_gelu_chains(graph: Any, folder: Path) -> int:
    """Replaces each GELU chain of ``graph`` by one ``Gelu`` node, in place.

    Args:
        graph: the ``onnx.GraphProto`` about to be imported.
        folder: the model's folder (for constants held as external data).

    Returns:
        How many chains were replaced.

    Example:
        >>> fuse_gelu_chains(proto.graph, Path("."))  # doctest: +SKIP
        1
    """
    import onnx

    chains = _Chains(graph, folder)
    replaced: dict[int, Any] = {}
    removed: set[int] = set()
    for node in graph.node:
        if id(node) in removed or not _is_plain(node, "Mul"):
            continue
        match = chains.match(node)
        if match is None:
            continue
        x, approximate, inner = match
        removed |= {id(n) for n in inner}
        name = node.name or node.output[0]
        replaced[id(node)] = onnx.helper.make_node(
            "Gelu", [x], [node.output[0]], name=name, approximate=approximate
        )
    if not replaced:
        return 0
    # The root is the chain's last node, so the Gelu node takes its place in the order.
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in removed]
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replaced)


def _is_plain(node: Any, op_type: str) -> bool:
    """Whether ``node`` is a default-domain ``op_type`` with its usual inputs and output."""
    return (
        node.op_type == op_type
        and node.domain in _DEFAULT_DOMAINS
        and len(node.input) == _ARITY[op_type]
        and all(node.input)
        and len(node.output) == 1
        and bool(node.output[0])
    )


def _is_scalar_shape(dims: Any) -> bool:
    # One element of rank 0 or 1: broadcasting it never changes the other operand's shape.
    return len(dims) <= 1 and math.prod(dims) == 1


class _Chains:
    """The graph's producers, use counts and scalar constants, and the chain matcher."""

    def __init__(self, graph: Any, folder: Path):
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.uses = Counter(name for node in graph.node for name in node.input if name)
        self.uses.update(output.name for output in graph.output)
        self.scalars: dict[str, float] = {}
        self.constants = {t.name for t in graph.initializer}
        for tensor in graph.initializer:
            if _is_scalar_shape(tensor.dims):
                self._keep_scalar(tensor.name, tensor, folder)
        for node in graph.node:
            if node.op_type == "Constant" and len(node.output) == 1 and node.output[0]:
                self.constants.add(node.output[0])
                self._constant_node(node, folder)

    def _keep_scalar(self, name: str, tensor: Any, folder: Path) -> None:
        try:
            value = tensor_to_array(tensor, folder, f"constant {name!r}")
        except OnnxImportError:
            return  # the import reports it where the tensor is read
        if value.dtype.kind in "fiu" and value.size == 1:
            self.scalars[name] = float(value.reshape(()))

    def _constant_node(self, node: Any, folder: Path) -> None:
        for attribute in node.attribute:
            if attribute.name == "value_float":
                self.scalars[node.output[0]] = float(attribute.f)
            elif attribute.name == "value" and _is_scalar_shape(attribute.t.dims):
                self._keep_scalar(node.output[0], attribute.t, folder)

    # -- pieces of a chain -----------------------------------------------------------------
    def is_scalar(self, name: str, target: float) -> bool:
        value = self.scalars.get(name)
        return value is not None and abs(value - target) <= _RELATIVE * abs(target)

    def inner(self, name: str, op_type: str) -> Any | None:
        """The node of ``op_type`` producing ``name`` when nothing else reads ``name``."""
        node = self.producer.get(name)
        if node is None or not _is_plain(node, op_type):
            return None
        return node if self.uses[name] == 1 else None

    def factors(self, names: list[str], nodes: list[Any]) -> list[str]:
        """The leaves of the product of ``names`` through Mul nodes used only there."""
        leaves: list[str] = []
        for name in names:
            node = self.inner(name, "Mul")
            if node is None:
                leaves.append(name)
            else:
                nodes.append(node)
                leaves += self.factors(list(node.input), nodes)
        return leaves

    def _split(self, leaves: list[str], target: float) -> list[str] | None:
        """``leaves`` less one scalar ``target``, or ``None`` without exactly one."""
        found = [leaf for leaf in leaves if self.is_scalar(leaf, target)]
        if len(found) != 1:
            return None
        rest = list(leaves)
        rest.remove(found[0])
        return rest

    # -- the chain -------------------------------------------------------------------------
    def match(self, root: Any) -> tuple[str, str, list[Any]] | None:
        """``(x, approximate, the chain's other nodes)`` when ``root`` ends a GELU chain."""
        nodes: list[Any] = []
        rest = self._split(self.factors(list(root.input), nodes), 0.5)
        if rest is None or len(rest) != 2:
            return None
        for x, gate in (rest, rest[::-1]):
            if x in self.constants or x in self.scalars:
                continue
            add = self.inner(gate, "Add")
            if add is None:
                continue
            inside = self._split(list(add.input), 1.0)
            if inside is None:
                continue
            found = self._erf(inside[0], x) or self._tanh(inside[0], x)
            if found is not None:
                approximate, more = found
                return x, approximate, [*nodes, add, *more]
        return None

    def _erf(self, name: str, x: str) -> tuple[str, list[Any]] | None:
        erf = self.inner(name, "Erf")
        if erf is None:
            return None
        divide = self.inner(erf.input[0], "Div")
        if divide is not None:
            if divide.input[0] == x and self.is_scalar(divide.input[1], math.sqrt(2.0)):
                return "none", [erf, divide]
            return None
        nodes: list[Any] = []
        leaves = self.factors([erf.input[0]], nodes)
        if self._split(leaves, math.sqrt(0.5)) == [x]:
            return "none", [erf, *nodes]
        return None

    def _tanh(self, name: str, x: str) -> tuple[str, list[Any]] | None:
        tanh = self.inner(name, "Tanh")
        if tanh is None:
            return None
        nodes: list[Any] = []
        rest = self._split(self.factors([tanh.input[0]], nodes), math.sqrt(2.0 / math.pi))
        inner_sum = self.inner(rest[0], "Add") if rest is not None and len(rest) == 1 else None
        if inner_sum is None or x not in inner_sum.input:
            return None
        others = list(inner_sum.input)
        others.remove(x)
        cubic = self._split(self.factors(others, nodes), 0.044715)
        if cubic is None:
            return None
        if cubic == [x, x, x]:
            return "tanh", [tanh, inner_sum, *nodes]
        power = self.inner(cubic[0], "Pow") if len(cubic) == 1 else None
        if power is not None and power.input[0] == x and self.is_scalar(power.input[1], 3.0):
            return "tanh", [tanh, inner_sum, power, *nodes]
        return None
