"""``Model.graph``: the public, read-only view of a model's inputs, outputs and layer calls
that serialization, ONNX export and the plots read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gometal as gm
from gometal import layers as L


def _residual_model() -> tuple[gm.Model, dict[str, object]]:
    x = gm.Input((4,), name="features")
    shared = L.Dense(4, name="shared")
    first = shared(x)
    second = shared(L.ReLU(name="relu")(first))
    out = L.Dense(2, name="head")(L.Add(name="add")([first, second]))
    return gm.Model(x, out), {"x": x, "out": out, "shared": shared}


def test_the_graph_lists_inputs_outputs_and_every_call_in_dependency_order():
    model, parts = _residual_model()
    graph = model.graph
    assert graph.inputs == (parts["x"],) and graph.outputs == (parts["out"],)
    assert [call.layer.name for call in graph.calls] == ["shared", "relu", "shared", "add", "head"]
    seen = {id(parts["x"])}
    for call in graph.calls:
        assert all(id(t) in seen for t in call.inputs), call
        assert call.output.producer is call
        seen.add(id(call.output))
    assert [layer.name for layer in graph.layers] == [layer.name for layer in model.layers]
    assert len(graph.calls_of(parts["shared"])) == 2
    assert graph.calls_of(L.Dense(3)) == ()


def test_the_graph_is_read_only():
    model, _ = _residual_model()
    graph = model.graph
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.calls = ()
    assert isinstance(graph.calls, tuple) and isinstance(graph.inputs, tuple)
    call = graph.calls[0]
    for attribute, value in [("layer", L.ReLU()), ("inputs", ()), ("output", None)]:
        with pytest.raises(AttributeError):
            setattr(call, attribute, value)
    tensor = call.output
    for attribute, value in [("producer", None), ("engine_shape", (1,)), ("name", "x")]:
        with pytest.raises(AttributeError):
            setattr(tensor, attribute, value)


def test_the_graph_replays_to_the_same_predictions():
    """A model rebuilt from nothing but its graph's calls predicts as the model does."""
    model, _ = _residual_model()
    model.set_weights(
        {
            name: np.random.default_rng(3).standard_normal(shape)
            for name, shape in model.weight_shapes.items()
        }
    )
    x = gm.Input(model.input_shape)
    values = {id(model.graph.inputs[0]): x}
    for call in model.graph.calls:
        inputs = [values[id(t)] for t in call.inputs]
        values[id(call.output)] = call.layer(inputs if len(inputs) > 1 else inputs[0])
    replayed = gm.Model(x, values[id(model.graph.outputs[0])])
    data = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(replayed.predict(data), model.predict(data))
