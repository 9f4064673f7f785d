"""One layer registry: a layer class registered once (with an ONNX rule) saves, loads and
exports; without a rule it saves and loads, and export names it. Saving, loading and
export read the same registry as the built-in layers do.

References: a NumPy formula of the user's layer, and onnxruntime for the exported file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest

import gometal as gm
from gometal import layers as L
from gometal.graph.composites import op
from onnx_runtime import run_ort


def _affine_to_onnx(graph, call, inputs, output, name):
    """y = x * scale + shift, both per feature, as two ONNX nodes."""
    scaled = graph.unique(f"{name}/scaled")
    graph.node("Mul", [inputs[0], graph.weight(call.layer, "scale")], scaled, scaled)
    graph.node("Add", [scaled, graph.weight(call.layer, "shift")], output, name)


@L.register_layer(onnx=_affine_to_onnx)
class UserAffine(L.Layer):
    """A user's layer: a learned per-feature scale and shift."""

    kind = "user_affine"

    def build(self, input_shapes: Sequence[tuple[int, ...]]) -> list[L.WeightSpec]:
        features = input_shapes[0][-1]
        return [
            L.WeightSpec("scale", (features,), gm.nn.initializers.Ones()),
            L.WeightSpec("shift", (features,), gm.nn.initializers.Zeros()),
        ]

    def emit(self, ctx: L.EmitContext, inputs: Sequence[int]) -> int:
        scaled = op(ctx.graph, "mul", inputs[0], ctx.variable("scale"))
        return op(ctx.graph, "add", scaled, ctx.variable("shift"))


class UserSquare(L.Layer):
    """A user's layer registered without an ONNX rule: x * x."""

    kind = "user_square"

    def emit(self, ctx: L.EmitContext, inputs: Sequence[int]) -> int:
        return op(ctx.graph, "mul", inputs[0], inputs[0])


def _affine_model() -> tuple[gm.Model, dict[str, np.ndarray]]:
    x = gm.Input((5,), name="features")
    model = gm.Model(x, UserAffine(name="affine")(L.Dense(5, name="dense")(x)), seed=3)
    rng = np.random.default_rng(7)
    weights = {name: rng.standard_normal(shape) for name, shape in model.weight_shapes.items()}
    model.set_weights(weights)
    return model, weights


def _reference(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    hidden = x @ weights["dense.weight"].T + weights["dense.bias"]
    return hidden * weights["affine.scale"] + weights["affine.shift"]


def test_a_registered_user_layer_saves_loads_and_exports(tmp_path):
    model, weights = _affine_model()
    x = np.random.default_rng(8).standard_normal((6, 5)).astype(np.float32)
    expected = _reference(weights, x.astype(np.float64))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)

    model.save(tmp_path / "affine.safetensors")
    loaded = gm.load_model(tmp_path / "affine.safetensors")
    assert [type(layer) for layer in loaded.layers] == [L.Dense, UserAffine]
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-5, atol=1e-5)

    model.export_onnx(tmp_path / "affine.onnx")
    proto = onnx.load(tmp_path / "affine.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert [node.op_type for node in proto.graph.node] == ["Gemm", "Mul", "Add"]
    np.testing.assert_allclose(run_ort(tmp_path / "affine.onnx", x), expected, atol=1e-5)


def test_a_layer_registered_without_a_rule_saves_and_loads_but_does_not_export(tmp_path):
    L.register_layer(UserSquare)
    x = gm.Input((3,))
    model = gm.Model(x, UserSquare(name="square")(L.Dense(3)(x)))
    data = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    model.save(tmp_path / "square.safetensors")
    np.testing.assert_array_equal(
        gm.load_model(tmp_path / "square.safetensors").predict(data), model.predict(data)
    )
    with pytest.raises(
        NotImplementedError,
        match=r"layer 'square' of type UserSquare has no ONNX export rule; exportable layer "
        r"types: .*Dense.*UserAffine",
    ):
        model.export_onnx(tmp_path / "square.onnx")
    assert not (tmp_path / "square.onnx").exists()


def test_the_registry_is_the_one_list_of_layers():
    entries = L.layer_entries()
    built_in = {
        getattr(L, name)
        for name in L.__all__
        if isinstance(getattr(L, name), type)
        and issubclass(getattr(L, name), L.Layer)
        and getattr(L, name) is not L.Layer
    }
    # Every built-in layer saves, loads and exports through its registry entry.
    assert {entries[cls.__name__].layer_class for cls in built_in} == built_in
    assert all(entries[cls.__name__].onnx is not None for cls in built_in)
    assert gm.serialization.register_layer is L.register_layer
    assert gm.serialization.registered_layers() == L.registered_layers()
    assert L.entry_of(UserAffine).onnx is _affine_to_onnx


def test_a_subclass_needs_its_own_registration():
    class ShiftedDense(L.Dense):
        pass

    assert L.entry_of(ShiftedDense) is None
    model = gm.Model(x := gm.Input((2,)), ShiftedDense(2, name="shifted")(x))
    with pytest.raises(TypeError, match=r"ShiftedDense, which is not registered"):
        gm.serialization.model_to_config(model)


def test_registering_checks_the_class_and_the_rule():
    with pytest.raises(TypeError, match="onnx must be a rule function"):
        L.register_layer(UserAffine, onnx="Mul")
    # Registering again without a rule keeps the rule the class has.
    L.register_layer(UserAffine)
    assert L.entry_of(UserAffine).onnx is _affine_to_onnx

    impostor = type("UserAffine", (L.Layer,), {})  # another class under a registered name
    with pytest.raises(ValueError, match="a different layer class is already registered"):
        L.register_layer(impostor)
