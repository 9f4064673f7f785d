"""Which layers a quantized ``Dense`` or ``Conv2D`` absorbs: a ``BatchNorm`` right after a
convolution folds into its weights and bias (inference statistics), and a ``ReLU`` right
after either (or after the folded batch norm) moves into the int8 kernel's epilogue, so the
chain runs as one kernel. A layer is absorbed only when the chain is straight: each output
read by the next layer alone, never a model output, each layer called once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..nn.layers.activations import ReLU
from ..nn.layers.base import Layer
from ..nn.layers.conv import Conv2D
from ..nn.layers.normalization import BatchNorm
from ..nn.model import Model
from ..nn.tensor import LayerCall


@dataclass
class Chain:
    """A quantized layer and the calls it absorbs.

    Attributes:
        batch_norm: the folded ``BatchNorm`` (convolutions only), or ``None``.
        relu: whether the epilogue applies a relu (an absorbed ``ReLU`` or the layer's
            own ``activation="relu"``).
        absorbed: the calls the quantized layer's call replaces, in order.
    """

    batch_norm: BatchNorm | None = None
    relu: bool = False
    absorbed: list[LayerCall] = field(default_factory=list)


def plan_chains(model: Model, targets: Sequence[Layer]) -> dict[int, Chain]:
    """The chain of each target layer (by ``id``), for a model's graph.

    Args:
        model: the float model.
        targets: the ``Dense`` and ``Conv2D`` layers being quantized.

    Returns:
        ``id(layer)`` -> its ``Chain`` (empty when it absorbs nothing).

    Example:
        >>> chains = plan_chains(model, [model.get_layer("conv2d_0")])  # doctest: +SKIP
    """
    calls = model.graph.calls
    readers: dict[int, list[LayerCall]] = {}
    uses: dict[int, int] = {}
    for call in calls:
        uses[id(call.layer)] = uses.get(id(call.layer), 0) + 1
        for tensor in call.inputs:
            readers.setdefault(id(tensor), []).append(call)
    outputs = {id(t) for t in model.outputs}

    def only_reader(call: LayerCall) -> LayerCall | None:
        following = readers.get(id(call.output), [])
        if id(call.output) in outputs or len(following) != 1:
            return None
        return following[0] if uses[id(following[0].layer)] == 1 else None

    chains: dict[int, Chain] = {}
    for call in calls:
        layer = call.layer
        if not any(layer is t for t in targets) or id(layer) in chains:
            continue
        activation = layer.get_config().get("activation")
        chain = Chain(relu=activation == "relu")
        chains[id(layer)] = chain
        if uses[id(layer)] != 1 or activation == "relu":
            continue
        following = only_reader(call)
        if isinstance(layer, Conv2D) and following and type(following.layer) is BatchNorm:
            chain.batch_norm = following.layer
            chain.absorbed.append(following)
            following = only_reader(following)
        if following is not None and type(following.layer) is ReLU:
            chain.relu = True
            chain.absorbed.append(following)
    return chains


def folded_weights(layer: Layer, chain: Chain) -> dict[str, np.ndarray]:
    """The layer's float weight and bias with the chain's batch norm folded in.

    Returns:
        ``{"weight", "bias"}`` (a bias even when the layer had none, if a batch norm folds).
    """
    values = layer.get_weights()
    weight = values["weight"].astype(np.float64)
    bias = values.get("bias")
    if chain.batch_norm is None:
        return values
    norm = chain.batch_norm.get_weights()
    channels = len(norm["running_mean"])
    gamma = norm.get("weight", np.ones(channels))
    beta = norm.get("bias", np.zeros(channels))
    scale = gamma / np.sqrt(norm["running_var"].astype(np.float64) + chain.batch_norm.eps)
    shift = beta - norm["running_mean"] * scale
    folded_bias = (0.0 if bias is None else bias.astype(np.float64)) * scale + shift
    weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return {"weight": weight.astype(np.float32), "bias": folded_bias.astype(np.float32)}
