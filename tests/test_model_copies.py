"""``model(x)`` as an eager call, and ``copy.deepcopy`` / ``pickle`` of models through their
definition and weights: the copies compute what torch computes and train independently."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import gometal as gm
from helpers import assert_weights_match, gm_weights_from_torch, mlp_pair, t
from test_multi_io import dataset, twin_pair

SIZES = [6, 12, 3]


def _x(n=10, seed=0):
    return np.random.default_rng(seed).standard_normal((n, SIZES[0])).astype(np.float32)


def test_calling_a_model_on_arrays_gives_numpy_outputs_as_torch():
    net, model = mlp_pair(SIZES, "tanh")
    out = model(_x())
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, net(t(_x())).detach().numpy(), rtol=1e-5, atol=1e-6)
    # Chunks of 3 rows (and a last one of 1) run other product kernels than 10 rows do:
    # they agree to float32 rounding, as torch's do, not bit for bit.
    np.testing.assert_allclose(model(_x(), batch_size=3), model.predict(_x()), rtol=1e-5, atol=1e-7)


def test_calling_a_model_with_several_inputs_and_outputs_gives_them_by_name():
    net, model = twin_pair()
    x, _ = dataset(8)
    out = model(x)
    logits, box = net(t(x["image"]), t(x["meta"]))
    assert set(out) == {"label", "box"}
    np.testing.assert_allclose(out["label"], logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["box"], box.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("given", ["tensor", "list", "dict"])
def test_calling_a_model_on_symbolic_tensors_is_refused(given):
    model = gm.ModelBuilder((SIZES[0],)).dense(3).build(seed=0)
    tensor = gm.Input((SIZES[0],))
    x = {"tensor": tensor, "list": [tensor], "dict": {"x": tensor}}[given]
    with pytest.raises(TypeError, match="cannot be called on symbolic tensors"):
        model(x)


def _pickled(model):
    return pickle.loads(pickle.dumps(model))


@pytest.mark.parametrize("make_copy", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
def test_a_copy_trains_as_torch_and_leaves_the_original_alone(make_copy):
    net, model = mlp_pair(SIZES, "tanh", seed=2)
    original = model.get_weights()
    clone = make_copy(model)
    assert clone is not model and not set(map(id, clone.layers)) & set(map(id, model.layers))
    assert repr(clone) == repr(model)
    for name, value in original.items():
        np.testing.assert_array_equal(clone.get_weights()[name], value)

    trainer = gm.Trainer(clone, loss="mse", optimizer=gm.optim.Adam(lr=0.01), batch_size=16)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    gen = np.random.default_rng(3)
    for _ in range(20):
        x = gen.standard_normal((16, SIZES[0])).astype(np.float32)
        y = np.sin(x[:, :3] * 2).astype(np.float32)
        trainer.train_batch(x, y)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(t(x)), t(y)).backward()
        optimizer.step()
    assert_weights_match(clone, net, rtol=1e-5, atol=1e-6)
    for name, value in original.items():  # the original never moved
        np.testing.assert_array_equal(model.get_weights()[name], value)


def test_a_copy_of_a_model_being_trained_holds_the_trained_weights():
    net, model = mlp_pair(SIZES, "relu")
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.1), batch_size=8)
    x = _x(8)
    trainer.train_batch(x, np.ones((8, 3), np.float32))
    clone = copy.deepcopy(model)
    trained = model.get_weights()
    assert any(
        not np.array_equal(trained[name], value)
        for name, value in gm_weights_from_torch(net).items()
    )
    for name, value in trained.items():
        np.testing.assert_array_equal(clone.get_weights()[name], value)
    trainer.train_batch(x, np.ones((8, 3), np.float32))  # training the original...
    for name, value in trained.items():  # ...leaves the copy as it was
        np.testing.assert_array_equal(clone.get_weights()[name], value)


def test_a_copy_keeps_several_inputs_outputs_and_frozen_layers():
    _, model = twin_pair()
    model.get_layer("dense_0").trainable = False
    clone = _pickled(model)
    x, _ = dataset(6)
    for name, value in model(x).items():
        np.testing.assert_array_equal(clone(x)[name], value)
    assert clone.input_names == model.input_names and clone.output_names == model.output_names
    assert not clone.get_layer("dense_0").trainable and clone.get_layer("dense_1").trainable


def test_a_pickled_model_loads_in_a_fresh_process(tmp_path):
    _, model = mlp_pair(SIZES, "tanh")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "x.npy", _x())
    script = (
        "import pickle, sys, numpy as np, gometal\n"
        "model = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "np.save(sys.argv[3], model(np.load(sys.argv[2])))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            tmp_path / "model.pkl",
            tmp_path / "x.npy",
            tmp_path / "y.npy",
        ],
        check=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model(_x()))


def test_copying_a_model_whose_lambda_function_is_not_registered_names_the_layer():
    x = gm.Input((4,))
    model = gm.Model(x, gm.layers.Lambda(lambda v: gm.ops.relu(v) * 2.0, name="doubled")(x))
    with pytest.raises((TypeError, ValueError), match="'doubled'.*not registered"):
        copy.deepcopy(model)
