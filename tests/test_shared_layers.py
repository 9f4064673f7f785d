"""Layers own their weights: models built on the same layers share them, and trainers of
one model update one set of weights (as two torch optimizers over the same parameters)."""

import threading

import numpy as np
import pytest
import torch

import gometal as gm


def _data(n=64, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def _mlp(seed=0):
    return gm.ModelBuilder((6,)).dense(8).relu().dense(5).relu().dense(3).build(seed=seed)


def _numpy_forward(weights, x, layers):
    h = x
    for i, name in enumerate(layers):
        h = h @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def test_a_model_cut_from_a_trained_model_uses_the_trained_weights():
    model = _mlp()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=0.05))
    x, y = _data()
    initial = model.get_weights()
    for _ in range(5):
        trainer.train_batch(x, y)
    trained = model.get_weights()
    assert not np.allclose(trained["dense_0.weight"], initial["dense_0.weight"])

    features = gm.Model(model.input, model.layer_output("dense_1"))
    expected = _numpy_forward(trained, x, ["dense_0", "dense_1"])
    np.testing.assert_allclose(features.predict(x), expected, rtol=1e-5, atol=1e-5)
    got = features.get_weights()
    for name, value in got.items():
        np.testing.assert_array_equal(value, trained[name])


def test_a_new_head_fine_tunes_the_shared_layers_that_the_base_model_sees():
    base = _mlp()
    x, y = _data()
    head = gm.layers.Dense(2, name="new_head")
    tuned = gm.Model(base.input, head(base.layer_output("relu_1")))
    trainer = gm.Trainer(tuned, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.5))
    for _ in range(3):
        trainer.train_batch(x, y % 2)
    shared = tuned.get_weights()
    for name, value in base.get_weights().items():
        if name in shared:
            np.testing.assert_array_equal(value, shared[name])
    expected = _numpy_forward(base.get_weights(), x, ["dense_0", "dense_1", "dense_2"])
    np.testing.assert_allclose(base.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_set_weights_on_one_model_is_seen_by_every_model_on_the_layer():
    base = _mlp()
    cut = gm.Model(base.input, base.layer_output("dense_0"))
    cut.predict(np.zeros((1, 6), np.float32))  # its own inference engine holds the layer now
    new_bias = np.arange(8, dtype=np.float32)
    base.set_weights({"dense_0.bias": new_bias})
    np.testing.assert_array_equal(cut.get_weights()["dense_0.bias"], new_bias)
    np.testing.assert_allclose(cut.predict(np.zeros((2, 6), np.float32)), np.tile(new_bias, (2, 1)))
    np.testing.assert_array_equal(base.get_layer("dense_0").get_weights()["bias"], new_bias)


def test_two_trainers_of_one_model_update_one_set_of_weights_like_two_torch_optimizers():
    model = _mlp(seed=3)
    x, y = _data(seed=4)
    t1 = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1, momentum=0.9))
    t2 = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.05, momentum=0.5))

    net = torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    )
    weights = model.get_weights()
    with torch.no_grad():
        for i, index in enumerate((0, 2, 4)):
            net[index].weight.copy_(torch.from_numpy(weights[f"dense_{i}.weight"]))
            net[index].bias.copy_(torch.from_numpy(weights[f"dense_{i}.bias"]))
    opt1 = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt2 = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.5)

    for trainer, optimizer in [(t1, opt1), (t2, opt2), (t1, opt1), (t1, opt1), (t2, opt2)]:
        trainer.train_batch(x, y)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            net(torch.from_numpy(x)), torch.from_numpy(y).long()
        ).backward()
        optimizer.step()

    got = model.get_weights()
    for i, index in enumerate((0, 2, 4)):
        np.testing.assert_allclose(
            got[f"dense_{i}.weight"], net[index].weight.detach().numpy(), rtol=1e-5, atol=1e-6
        )
    # Every view of the weights agrees: the model, both trainers' predictions.
    np.testing.assert_allclose(t1.predict(x), t2.predict(x), rtol=0, atol=0)
    np.testing.assert_allclose(
        model.predict(x), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_weights_loaded_into_the_model_are_what_every_trainer_continues_from(tmp_path):
    model = _mlp()
    x, y = _data()
    t1 = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    t1.train_batch(x, y)
    model.save(tmp_path / "model.safetensors")
    saved = model.get_weights()
    t2 = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    t2.train_batch(x, y)  # t2 now holds the layers, one step further
    model.load_weights(tmp_path / "model.safetensors")
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, saved[name])

    # t1 continues from the loaded weights, exactly as a fresh trainer would.
    fresh_model = gm.load_model(tmp_path / "model.safetensors")
    fresh = gm.Trainer(fresh_model, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.1))
    assert t1.train_batch(x, y).loss == fresh.train_batch(x, y).loss
    for name, value in fresh_model.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[name], value)


def _run_in_threads(*jobs):
    errors = []

    def guarded(job):
        try:
            job()
        except Exception as err:  # noqa: BLE001 - any failure is reported below
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors


def test_engines_sharing_layers_on_threads_lose_no_update_and_never_see_half_a_step():
    # Zero inputs and targets far above the outputs: each bias gets the gradient -1/2 (the
    # mean over two outputs), so every SGD step with lr 2 adds exactly 1 to each bias and
    # leaves the weights: the count of steps is exact.
    x_in = gm.Input((3,))
    head = gm.layers.Dense(2, name="head")
    model = gm.Model(x_in, head(x_in))
    model.set_weights({"head.bias": np.zeros(2, np.float32)})
    x, far = np.zeros((4, 3), np.float32), np.full((4, 2), 1e6, np.float32)
    t1 = gm.Trainer(model, loss="mae", optimizer=gm.optim.SGD(lr=2.0))
    t2 = gm.Trainer(model, loss="mae", optimizer=gm.optim.SGD(lr=2.0))
    steps = 150
    torn = []

    def train(trainer):
        return lambda: [trainer.train_batch(x, far) for _ in range(steps)]

    def read():
        for _ in range(steps):
            # Another model on the same layer takes the weights for its own engine...
            viewer = gm.Model(x_in, head(x_in))
            predicted = viewer.predict(x)
            # ...and every read shows one step's state: both biases always equal.
            bias = model.get_weights()["head.bias"]
            if bias[0] != bias[1] or predicted[0, 0] != predicted[0, 1]:
                torn.append((bias, predicted[0]))

    _run_in_threads(train(t1), train(t2), read)
    assert not torn
    np.testing.assert_array_equal(model.get_weights()["head.bias"], [2 * steps, 2 * steps])
    assert t1.step == steps and t2.step == steps


def test_layer_weights_before_any_model_raise_a_clear_error():
    layer = gm.layers.Dense(3)
    assert layer.get_weights() == {}  # not built: no weights declared yet
    layer(gm.Input((4,)))
    with pytest.raises(RuntimeError, match="build a model on it first"):
        layer.get_weights()


def test_each_build_of_a_builder_is_an_independent_model_with_its_seed():
    builder = gm.ModelBuilder((6,)).dense(8).relu().dense(3)
    first, second = builder.build(seed=0), builder.build(seed=1)
    reference = gm.ModelBuilder((6,)).dense(8).relu().dense(3).build(seed=1)
    for name, value in reference.get_weights().items():
        np.testing.assert_array_equal(second.get_weights()[name], value)
    assert not np.array_equal(
        first.get_weights()["dense_0.weight"], second.get_weights()["dense_0.weight"]
    )
    x, y = _data()
    before = second.get_weights()
    gm.Trainer(first, loss="cross_entropy", optimizer=gm.optim.SGD(lr=0.5)).train_batch(x, y)
    for name, value in second.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


def test_setting_weights_of_a_layer_before_any_model_is_a_clear_error():
    layer = gm.layers.Dense(3)
    layer(gm.Input((4,)))
    with pytest.raises(RuntimeError, match=r"Dense layer has no weights yet: call it .* first"):
        layer.set_weights({"bias": np.zeros(3)})
