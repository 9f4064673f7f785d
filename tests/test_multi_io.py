"""Models with several inputs and outputs, trained with a loss per output and loss weights,
checked against the same network in torch, sklearn's metrics, onnxruntime and their files."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error
from torch import nn

import gometal as gm
from helpers import t

CLASSES, BOXES = 3, 2
WEIGHTS = {"label": 1.0, "box": 0.5}


class TorchTwin(nn.Module):
    """An image branch and a tabular branch, joined, with a class head and a box head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.meta = nn.Linear(4, 5)
        self.label = nn.Linear(4 * 4 * 4 + 5, CLASSES)
        self.box = nn.Linear(4 * 4 * 4 + 5, BOXES)

    def forward(self, image, meta):
        a = torch.relu(self.conv(image)).flatten(1)
        joined = torch.cat([a, torch.relu(self.meta(meta))], dim=1)
        return self.label(joined), self.box(joined)


def build_model(keyed: bool = True, seed: int = 0) -> gm.Model:
    image, meta = gm.Input((3, 6, 6), name="image"), gm.Input((4,), name="meta")
    a = gm.layers.Flatten()(gm.layers.ReLU()(gm.layers.Conv2D(4, 3)(image)))
    b = gm.layers.ReLU()(gm.layers.Dense(5)(meta))
    joined = gm.layers.Concatenate()([a, b])
    label, box = gm.layers.Dense(CLASSES)(joined), gm.layers.Dense(BOXES)(joined)
    if keyed:
        return gm.Model({"image": image, "meta": meta}, {"label": label, "box": box}, seed=seed)
    return gm.Model([image, meta], [label, box], seed=seed)


def twin_pair(keyed: bool = True) -> tuple[TorchTwin, gm.Model]:
    torch.manual_seed(0)
    net = TorchTwin()
    model = build_model(keyed)
    model.set_weights(gm_weights(net))
    return net, model


def gm_weights(net: TorchTwin) -> dict[str, np.ndarray]:
    pairs = {"conv2d_0": net.conv, "dense_0": net.meta, "dense_1": net.label, "dense_2": net.box}
    weights = {}
    for name, module in pairs.items():
        weights[f"{name}.weight"] = module.weight.detach().numpy().copy()
        weights[f"{name}.bias"] = module.bias.detach().numpy().copy()
    return weights


def dataset(n: int = 48, seed: int = 1) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    x = {
        "image": rng.normal(size=(n, 3, 6, 6)).astype(np.float32),
        "meta": rng.normal(size=(n, 4)).astype(np.float32),
    }
    y = {
        "label": rng.integers(0, CLASSES, n).astype(np.int32),
        "box": rng.normal(size=(n, BOXES)).astype(np.float32),
    }
    return x, y


def rows(data: dict, r: slice) -> dict:
    return {name: array[r] for name, array in data.items()}


def torch_losses(net, x, y):
    logits, box = net(t(x["image"]), t(x["meta"]))
    label_loss = nn.functional.cross_entropy(logits, t(y["label"]))
    box_loss = nn.functional.mse_loss(box, t(y["box"]))
    total = WEIGHTS["label"] * label_loss + WEIGHTS["box"] * box_loss
    accuracy = (logits.argmax(1) == t(y["label"])).float().mean().item()
    return total, label_loss.item(), box_loss.item(), accuracy


OPTIMIZERS = {
    "sgd": (
        lambda: gm.optim.SGD(lr=0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "adam": (lambda: gm.optim.Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_weighted_losses_train_as_torch(optimizer):
    net, model = twin_pair()
    make_gm, make_torch = OPTIMIZERS[optimizer]
    trainer = gm.Trainer(
        model,
        loss={"label": "cross_entropy", "box": "mse"},
        loss_weights=WEIGHTS,
        optimizer=make_gm(),
        batch_size=12,
    )
    reference = make_torch(net.parameters())
    x, y = dataset()
    for step in range(24):
        r = slice((step % 4) * 12, (step % 4 + 1) * 12)
        result = trainer.train_batch(rows(x, r), rows(y, r))
        reference.zero_grad()
        total, label_loss, box_loss, accuracy = torch_losses(net, rows(x, r), rows(y, r))
        total.backward()
        reference.step()
        assert result.loss == pytest.approx(total.item(), rel=1e-5)
        assert result.losses == pytest.approx({"label": label_loss, "box": box_loss}, rel=1e-5)
        assert result.accuracies["label"] == pytest.approx(accuracy)
        assert result.accuracy == result.accuracies["label"]
    for name, value in gm_weights(net).items():
        np.testing.assert_allclose(
            model.get_weights()[name], value, rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("keyed", [True, False])
def test_predict_gives_every_output_as_torch(keyed):
    net, model = twin_pair(keyed)
    x, _ = dataset(10)
    logits, box = (v.detach().numpy() for v in net(t(x["image"]), t(x["meta"])))
    got = model.predict(x if keyed else [x["image"], x["meta"]])
    if keyed:
        assert list(got) == ["label", "box"]
        got = [got["label"], got["box"]]
    np.testing.assert_allclose(got[0], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], box, rtol=1e-5, atol=1e-6)
    trainer = gm.Trainer(model, loss=["cross_entropy", "mse"])
    proba = trainer.predict_proba(x if keyed else [x["image"], x["meta"]])
    proba = [proba["label"], proba["box"]] if keyed else proba
    np.testing.assert_allclose(proba[0], torch.softmax(t(logits), 1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba[1], box, rtol=1e-5, atol=1e-6)


def test_evaluate_reports_each_output_as_sklearn():
    _, model = twin_pair()
    trainer = gm.Trainer(model, loss={"label": "cross_entropy", "box": "mse"}, loss_weights=WEIGHTS)
    x, y = dataset(40)
    results = trainer.evaluate(x, y, batch_size=16, metrics={"label": ["f1_macro"], "box": ["mae"]})
    proba = trainer.predict_proba(x)
    label_loss = log_loss(y["label"], proba["label"], labels=range(CLASSES))
    box_loss = float(np.mean((proba["box"] - y["box"]) ** 2))
    predicted = proba["label"].argmax(1)
    assert results["label_loss"] == pytest.approx(label_loss, rel=1e-5)
    assert results["box_loss"] == pytest.approx(box_loss, rel=1e-5)
    assert results["loss"] == pytest.approx(label_loss + 0.5 * box_loss, rel=1e-5)
    assert results["label_accuracy"] == pytest.approx(accuracy_score(y["label"], predicted))
    assert results["accuracy"] == results["label_accuracy"]
    assert results["label_f1_macro"] == pytest.approx(
        f1_score(y["label"], predicted, average="macro"), rel=1e-6
    )
    assert results["box_mae"] == pytest.approx(
        mean_absolute_error(y["box"], proba["box"]), rel=1e-5
    )
    assert "box_f1_macro" not in results and "label_mae" not in results


class SampleCount:
    """A metric counting the samples it saw (a list of metrics gives each output its own)."""

    name = "samples"

    def reset(self):
        self.seen = 0

    def update(self, y_true, y_pred):
        assert len(y_true) == len(y_pred)
        self.seen += len(y_true)

    def result(self):
        return self.seen


def test_a_list_of_metrics_applies_to_every_output():
    _, model = twin_pair()
    trainer = gm.Trainer(model, loss={"label": "cross_entropy", "box": "mse"})
    x, y = dataset(40)
    results = trainer.evaluate(x, y, batch_size=16, metrics=[SampleCount()])
    assert results["label_samples"] == 40 and results["box_samples"] == 40


def test_fit_on_dicts_shuffles_inputs_and_targets_together():
    x, y = dataset(36)
    _, fitted = twin_pair()
    _, stepped = twin_pair()
    make = lambda model: gm.Trainer(
        model,
        loss={"label": "cross_entropy", "box": "mse"},
        loss_weights=WEIGHTS,
        optimizer=gm.optim.SGD(lr=0.05),
        batch_size=12,
    )
    fit_trainer, step_trainer = make(fitted), make(stepped)
    stop = gm.callbacks.EarlyStopping(monitor="val_label_loss", patience=5)
    history = fit_trainer.fit(
        (x, y), epochs=2, validation=(x, y), verbose=0, seed=3, callbacks=[stop]
    )
    for key in (
        "loss",
        "label_loss",
        "box_loss",
        "label_accuracy",
        "val_box_loss",
        "val_label_accuracy",
    ):
        assert len(history[key]) == 2, key
    for epoch in range(2):
        order = gm.training.epoch_permutation(3, epoch, 36)
        for start in range(0, 36, 12):
            r = order[start : start + 12]
            step_trainer.train_batch(rows(x, r), rows(y, r))
    for name, value in stepped.get_weights().items():
        np.testing.assert_allclose(fitted.get_weights()[name], value, rtol=1e-6, err_msg=name)
    measured = step_trainer.evaluate(x, y)
    assert history["val_label_loss"][-1] == pytest.approx(measured["label_loss"], rel=1e-5)
    assert history["val_loss"][-1] == pytest.approx(measured["loss"], rel=1e-5)


def test_lists_work_where_dicts_do():
    x, y = dataset(24)
    _, by_name = twin_pair(keyed=False)
    _, by_order = twin_pair(keyed=False)
    a = gm.Trainer(
        by_name, loss={"dense_1": "cross_entropy", "dense_2": "mse"}, loss_weights=[1.0, 0.5]
    )
    b = gm.Trainer(by_order, loss=["cross_entropy", "mse"], loss_weights={"dense_2": 0.5})
    ra = a.train_batch([x["image"], x["meta"]], [y["label"], y["box"]])
    rb = b.train_batch((x["image"], x["meta"]), {"dense_1": y["label"], "dense_2": y["box"]})
    assert ra.loss == pytest.approx(rb.loss, rel=1e-6)
    assert set(ra.losses) == {"dense_1", "dense_2"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"loss": ["cross_entropy"]}, ValueError, r"loss must hold one entry per output.*2 output"),
        (
            {"loss": {"label": "cross_entropy"}},
            ValueError,
            r"loss gives no loss for output\(s\) \['box'\]",
        ),
        (
            {"loss": {"label": "cross_entropy", "boxes": "mse"}},
            ValueError,
            r"loss names output\(s\) \['boxes'\]",
        ),
        (
            {"loss": "mse", "loss_weights": {"labels": 2.0}},
            ValueError,
            r"loss_weights names output\(s\) \['labels'\]",
        ),
        (
            {"loss": "mse", "loss_weights": {"box": -1.0}},
            ValueError,
            r"loss_weights\['box'\] must be a finite number >= 0",
        ),
        (
            {"loss": "mse", "loss_weights": [1.0]},
            ValueError,
            r"loss_weights must hold one entry per output",
        ),
        (
            {"loss": "mse", "loss_weights": 2.0},
            TypeError,
            r"loss_weights must be a list .* or a dict",
        ),
    ],
)
def test_bad_losses_are_named(kwargs, error, match):
    _, model = twin_pair()
    with pytest.raises(error, match=match):
        gm.Trainer(model, **kwargs)


def test_a_loss_that_does_not_fit_its_output_names_it():
    image = gm.Input((4,), name="image")
    joined = gm.layers.Dense(6)(image)
    model = gm.Model(
        image, {"label": gm.layers.Dense(3)(joined), "score": gm.layers.Dense(1)(joined)}
    )
    with pytest.raises(
        ValueError, match=r"output 'score': loss 'cross_entropy' needs at least 2 classes"
    ):
        gm.Trainer(model, loss="cross_entropy")


def test_bad_batches_are_named():
    _, model = twin_pair()
    trainer = gm.Trainer(model, loss={"label": "cross_entropy", "box": "mse"})
    x, y = dataset(8)
    with pytest.raises(ValueError, match=r"x has no entry for the input\(s\) \['meta'\]"):
        trainer.train_batch({"image": x["image"]}, y)
    with pytest.raises(ValueError, match=r"the key\(s\) \['boxes'\], which name no output"):
        trainer.train_batch(x, {"label": y["label"], "box": y["box"], "boxes": y["box"]})
    with pytest.raises(ValueError, match=r"x\['meta'\] has 7 samples but x\['image'\] has 8"):
        trainer.train_batch({"image": x["image"], "meta": x["meta"][:7]}, y)
    with pytest.raises(ValueError, match=r"y\['box'\]"):
        trainer.train_batch(x, {"label": y["label"], "box": y["box"][:, :1]})
    with pytest.raises(ValueError, match=r"metrics names output\(s\) \['boxes'\]"):
        trainer.evaluate(x, y, metrics={"boxes": ["mae"]})
    with pytest.raises(ValueError, match="different lengths"):
        gm.training.ArrayLoader(x, {"label": y["label"][:5], "box": y["box"][:5]})


def test_model_and_checkpoint_files_keep_every_input_and_output(tmp_path):
    x, y = dataset(24)
    _, model = twin_pair()
    trainer = gm.Trainer(
        model,
        loss={"label": "cross_entropy", "box": "huber"},
        loss_weights={"box": 0.25},
        optimizer=gm.optim.Adam(lr=0.01),
        batch_size=8,
    )
    trainer.train_batch(rows(x, slice(0, 8)), rows(y, slice(0, 8)))
    model.save(tmp_path / "model.safetensors")
    loaded = gm.load_model(tmp_path / "model.safetensors")
    assert loaded.input_names == ("image", "meta") and loaded.output_names == ("label", "box")
    expected = model.predict(x)
    got = loaded.predict(x)
    for name in ("label", "box"):
        np.testing.assert_array_equal(got[name], expected[name])

    trainer.save(tmp_path / "ckpt.safetensors")
    resumed = gm.Trainer.load(tmp_path / "ckpt.safetensors")
    assert resumed.loss_weights == {"label": 1.0, "box": 0.25}
    assert {name: loss.name for name, loss in resumed.losses.items()} == {
        "label": "cross_entropy",
        "box": "huber",
    }
    batch = rows(x, slice(8, 16)), rows(y, slice(8, 16))
    ours, theirs = trainer.train_batch(*batch), resumed.train_batch(*batch)
    assert ours.loss == theirs.loss and ours.losses == theirs.losses
    for name, value in trainer.model.get_weights().items():
        np.testing.assert_array_equal(resumed.model.get_weights()[name], value)


def test_lists_of_inputs_round_trip_through_a_model_file(tmp_path):
    _, model = twin_pair(keyed=False)
    model.save(tmp_path / "model.safetensors")
    loaded = gm.load_model(tmp_path / "model.safetensors")
    x, _ = dataset(6)
    got = loaded.predict([x["image"], x["meta"]])
    assert isinstance(got, list) and len(got) == 2
    for a, b in zip(got, model.predict([x["image"], x["meta"]])):
        np.testing.assert_array_equal(a, b)


def test_onnx_export_has_every_input_and_output(tmp_path):
    net, model = twin_pair()
    model.export_onnx(tmp_path / "two.onnx")
    session = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "meta"]
    assert [o.name for o in session.get_outputs()] == ["label", "box"]
    x, _ = dataset(5)
    label, box = session.run(None, x)
    logits, boxes = (v.detach().numpy() for v in net(t(x["image"]), t(x["meta"])))
    np.testing.assert_allclose(label, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(box, boxes, rtol=1e-5, atol=1e-5)


def test_lbfgs_reports_each_output_before_its_update():
    x, y = dataset(16)
    _, model = twin_pair()
    trainer = gm.Trainer(
        model,
        loss={"label": "cross_entropy", "box": "mse"},
        loss_weights=WEIGHTS,
        optimizer=gm.optim.LBFGS(max_iter=3),
    )
    before = trainer.evaluate(x, y)
    result = trainer.train_batch(x, y)
    assert result.loss == pytest.approx(before["loss"], rel=1e-5)
    assert result.losses == pytest.approx(
        {"label": before["label_loss"], "box": before["box_loss"]}, rel=1e-5
    )
    assert trainer.evaluate(x, y)["loss"] < before["loss"]


def test_an_exported_model_of_several_inputs_and_outputs_imports_and_agrees_with_torch(tmp_path):
    net, model = twin_pair()
    model.export_onnx(tmp_path / "two.onnx")
    imported = gm.onnx.load(tmp_path / "two.onnx")
    assert list(imported.input_names) == ["image", "meta"]
    x, _ = dataset(8)
    outputs = imported.predict([x["image"], x["meta"]])
    logits, box = net(t(x["image"]), t(x["meta"]))
    # The file's outputs, in its order: the label logits, then the box.
    assert len(outputs) == 2
    np.testing.assert_allclose(outputs[0], logits.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[1], box.detach().numpy(), rtol=1e-5, atol=1e-6)
