"""Bad arguments and inputs of the layers in test_layers_keras.py: each is a clear Python
exception naming the layer or argument with the expected and the received value."""

from __future__ import annotations

import re

import pytest

import gometal as gm
from gometal import layers as L


def _call(layer, shape):
    return layer(gm.Input(shape))


CONSTRUCTION = [
    (
        lambda: L.Dense(4, activation="swishy"),
        ValueError,
        "Dense activation must be None, 'linear' or one of",
    ),
    (lambda: L.Dense(4, name="head", activation=3), ValueError, "Dense 'head' activation must be"),
    (
        lambda: L.Dense(4, "relu"),
        TypeError,
        r"give the activation by name: Dense\(4, activation='relu'\)",
    ),
    (
        lambda: L.Dense(4, kernel_initializer="glorot"),
        ValueError,
        "Dense kernel_initializer must be one of",
    ),
    (
        lambda: L.Conv2D(4, 3, bias_initializer="he"),
        ValueError,
        "Conv2D bias_initializer must be one of",
    ),
    (
        lambda: L.Dense(4, kernel_regularizer="l2"),
        TypeError,
        "Dense kernel_regularizer must be None or a regularizer",
    ),
    (
        lambda: gm.regularizers.l2(-1.0),
        ValueError,
        "regularizer l2 must be a finite number >= 0, got -1.0",
    ),
    (
        lambda: gm.regularizers.l1(float("nan")),
        ValueError,
        "regularizer l1 must be a finite number >= 0",
    ),
    (lambda: L.Flatten(1.5), TypeError, "Flatten start_dim must be an int, got 1.5"),
    (lambda: L.Reshape((3, -1, -1)), ValueError, "at most one -1"),
    (
        lambda: L.Reshape((0, 4)),
        ValueError,
        "Reshape target_shape must be a non-empty tuple of positive ints",
    ),
    (lambda: L.Reshape(5), TypeError, "Reshape target_shape must be a tuple of ints, got 5"),
    (lambda: L.Permute((1, 1)), ValueError, "Permute dims must be a permutation of 1 .. n"),
    (lambda: L.Permute((0, 1)), ValueError, r"got \(0, 1\)"),
    (
        lambda: L.Lambda(3),
        TypeError,
        "Lambda function must be callable or a registered name, got 3",
    ),
    (lambda: L.LayerNorm(0), ValueError, "LayerNorm normalized_shape must be a positive int"),
    (
        lambda: L.LayerNorm(4, eps=0.0),
        ValueError,
        "LayerNorm eps must be a finite number > 0, got 0.0",
    ),
    (lambda: L.GroupNorm(3, 8), ValueError, "GroupNorm: num_groups=3 must divide num_channels=8"),
    (lambda: L.GroupNorm(0, 8), ValueError, "GroupNorm num_groups must be a positive int, got 0"),
    (
        lambda: L.InstanceNorm2D(0),
        ValueError,
        "InstanceNorm2D num_features must be a positive int, got 0",
    ),
    (lambda: L.PReLU(0), ValueError, "PReLU num_parameters must be a positive int, got 0"),
    (lambda: L.PReLU(init=float("inf")), ValueError, "PReLU init must be a finite number, got inf"),
]


@pytest.mark.parametrize(("make", "error", "message"), CONSTRUCTION)
def test_bad_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


INPUTS = [
    (L.Flatten(0), (3, 4), "start_dim=0 would merge the batch axis 0"),
    (L.Flatten(3), (3, 4), "start_dim=3 is out of range for an input of rank 3"),
    (L.Flatten(2, 1), (3, 4, 5), r"end_dim=1 \(axis 1\) comes before start_dim=2 \(axis 2\)"),
    (
        L.Reshape((3, 5)),
        (4, 4),
        r"cannot reshape samples of shape \(4, 4\) \(16 values\) to \(3, 5\) \(15 values\)",
    ),
    (L.Reshape((3, -1)), (4, 4), "16 is not a multiple of 3"),
    (
        L.Permute((2, 1)),
        (2, 3, 4),
        r"dims \(2, 1\) permute 2 axes, but the input \(None, 2, 3, 4\) has 3",
    ),
    (L.LayerNorm(5), (3, 4), r"normalized_shape \(5,\) must equal the last axes of the input"),
    (
        L.GroupNorm(2, 4),
        (6, 3, 3),
        r"expects input \(batch, 4, \.\.\.\) with num_channels=4 on axis 1, got shape \(None, 6, 3, 3\)",
    ),
    (
        L.InstanceNorm2D(3),
        (3, 5),
        r"expects input \(batch, 3, height, width\).*got shape \(None, 3, 5\)",
    ),
    (L.InstanceNorm2D(3), (4, 5, 5), "num_features=3 channels, got shape"),
    (L.PReLU(4), (3, 4, 4), r"num_parameters=4 must equal the channels \(axis 1\) of the input"),
    (
        L.Lambda(lambda x: 2.0),
        (3,),
        "must return a tensor built from its input with gm.ops, got float",
    ),
    (L.Lambda(lambda x: x + "a"), (3,), "a tensor operation takes tensors and numbers, got str"),
    (L.Lambda(lambda x: gm.ops.sum(x, axis=5)), (3,), r"Lambda layer: \[sum\]"),
]


@pytest.mark.parametrize(("layer", "shape", "message"), INPUTS)
def test_inputs_a_layer_cannot_take_are_refused_with_the_layer_and_shapes(layer, shape, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        _call(layer, shape)
    if isinstance(info.value, ValueError):
        assert re.search(type(layer).__name__, str(info.value))


def test_ops_on_model_tensors_point_to_lambda():
    with pytest.raises(TypeError, match=r"wrap it: gm.layers.Lambda\(gm.ops.square\)"):
        gm.ops.square(gm.Input((3,)))
    with pytest.raises(ValueError, match="gm.ops.clip needs low <= high, got low=2.0, high=1.0"):
        _call(L.Lambda(lambda x: gm.ops.clip(x, 2.0, 1.0)), (3,))


def test_builder_normalizations_check_the_current_channels():
    builder = gm.ModelBuilder((6, 4, 4)).dense(3)
    with pytest.raises(ValueError, match="GroupNorm: num_groups=4 must divide num_channels=6"):
        builder.group_norm(4)
    with pytest.raises(ValueError, match=r"layer 'prelu_0' \(PReLU\): num_parameters=3 must equal"):
        builder.prelu(3)
