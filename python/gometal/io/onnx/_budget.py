"""The memory one sample needs in an imported model, bounded node by node at import.

``SampleBudget`` adds up what each ONNX node costs per sample and refuses the node that
would take the total past ``_safety.MAX_SAMPLE_BYTES``. What a node costs is measured by emitting
its layers into a scratch engine graph, where only shapes are inferred and nothing is
computed: every primitive's output counts, and a convolution's scratch. Sizes that the
emission itself would allocate (a pooling count map) are checked from the node's
attributes before the layer is called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ... import _core
from ...nn.layers.base import EmitContext, Layer
from ...nn.tensor import SymbolicTensor
from . import _safety
from ._safety import OnnxImportError

_FLOAT_BYTES = 4  # the engine stores every element type in 4 bytes


def sample_bytes(shape: Sequence[int]) -> int:
    """Bytes of one sample of a float32 tensor of engine ``shape`` (the batch and every
    run-time length count once: the cap bounds memory per sample and per position).

    Example:
        >>> sample_bytes((-1, 3, 4))
        48
    """
    return _FLOAT_BYTES * math.prod(1 if d < 0 else int(d) for d in shape)


def _conv_scratch_bytes(graph: _core.Graph, node: int) -> int:
    # The engine lowers a convolution to a matrix product over an im2col buffer of
    # (C/groups * kh * kw) rows and (oh * ow) columns.
    weight = graph.shape(graph.inputs_of(node)[1])
    out_plane = math.prod(graph.shape(node)[2:])
    return _FLOAT_BYTES * math.prod(weight[1:]) * out_plane


def emitted_sample_bytes(layer: Layer, inputs: Sequence[SymbolicTensor]) -> int:
    """Bytes per sample of every intermediate ``layer`` emits for a forward pass.

    The layer must have been called on ``inputs`` already (so it is built and its
    weights are declared).

    Args:
        layer: the layer.
        inputs: the symbolic tensors it was called on.

    Returns:
        The sum over the primitives it emits of their output size for one sample, plus
        the scratch of each convolution.

    Example:
        >>> emitted_sample_bytes(L.ReLU(name="r"), [x])  # doctest: +SKIP
        16
    """
    graph = _core.Graph()
    ids = [graph.input(f"input_{i}", t.engine_shape, t.dtype) for i, t in enumerate(inputs)]
    scope = layer.name or layer.kind
    variables = {
        f"{scope}.{spec.name}": graph.variable(f"{scope}.{spec.name}", spec.shape)
        for spec in layer.weight_specs
    }
    ctx = EmitContext(graph, training=False, variables=variables)
    ctx.scope = scope
    first = len(graph)
    layer.emit(ctx, ids)
    total = 0
    for node in range(first, len(graph)):
        total += sample_bytes(graph.shape(node))
        if graph.op_name(node) == "conv2d":
            total += _conv_scratch_bytes(graph, node)
    return total


class SampleBudget:
    """The bytes per sample an import has spent, against a cap.

    Args:
        cap: the most bytes one sample may need; ``None`` reads ``MAX_SAMPLE_BYTES`` now.

    Example:
        >>> budget = SampleBudget()
        >>> budget.spend("Relu node 'r'", 1024, "its layers")
        >>> budget.used
        1024
    """

    def __init__(self, cap: int | None = None):
        self.cap = _safety.MAX_SAMPLE_BYTES if cap is None else int(cap)
        self.used = 0

    def check(self, where: str, size: int, what: str) -> None:
        """Refuses ``what`` (``size`` bytes per sample) if it does not fit in what is left.

        Args:
            where: the node, as errors name it.
            size: the bytes one sample would need.
            what: what needs them, e.g. ``"the padded input (3, 40, 40)"``.

        Raises:
            OnnxImportError: naming the node, the size and the cap.
        """
        if self.used + size <= self.cap:
            return
        before = (
            f" on top of the {self.used} bytes the input and the nodes before it need"
            if self.used
            else ""
        )
        raise OnnxImportError(
            f"{where}: {what} would take {size} bytes per sample{before}, more than the "
            f"{self.cap} bytes per sample allowed (gometal.onnx.MAX_SAMPLE_BYTES)"
        )

    def spend(self, where: str, size: int, what: str) -> None:
        """Checks ``size`` as ``check`` does, then counts it as spent."""
        self.check(where, size, what)
        self.used += size
