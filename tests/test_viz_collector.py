"""gometal.viz.VisualizationCollector in fit on the digits MLP, fit(plots="html"), and
plotting failures that must never break training."""

from __future__ import annotations

import json
import re
import warnings

import jsonschema
import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gometal as gm
from gometal import viz
from gometal.viz import plots
from helpers import gm_weights_from_torch, t

TRAINING_PLOTS = [
    "training_curves",
    "training_curves",
    "learning_rate_schedule",
    "parameter_distribution",
    "gradient_histogram",
    "activation_pattern",
]
BATCH = 64


class StepRecorder(gm.callbacks.Callback):
    """An independent record of what fit reports per step."""

    def __init__(self):
        self.logs: list[dict] = []

    def on_batch_end(self, batch, logs):
        self.logs.append(dict(logs))


def _digits():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


def _trainer(seed: int = 0) -> gm.Trainer:
    model = gm.ModelBuilder((64,)).dense(32).relu().dense(10).build(seed=seed)
    return gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=3e-3), batch_size=BATCH)


@pytest.fixture(scope="module")
def digits_run():
    x_train, x_val, y_train, y_val = _digits()
    trainer = _trainer()
    collector = viz.VisualizationCollector(validation=(x_val, y_val), every_n_steps=3)
    recorder = StepRecorder()
    scheduler = gm.schedulers.StepLR(step_size=1, gamma=0.5)
    trainer.fit(
        (x_train, y_train),
        epochs=3,
        validation=(x_val, y_val),
        scheduler=scheduler,
        callbacks=[recorder, collector],
        verbose=0,
    )
    return trainer, collector, recorder, (x_val, y_val)


def test_collector_produces_every_training_payload(digits_run):
    _, collector, _, _ = digits_run
    payloads = collector.payloads()
    kinds = [p["plot_type"] for p in payloads]
    assert kinds[: len(TRAINING_PLOTS)] == TRAINING_PLOTS
    assert {"roc_curve", "precision_recall", "confusion_matrix"} <= set(kinds)
    assert {"feature_correlation", "feature_importance", "partial_dependence"} <= set(kinds)
    schema = viz.load_schema()
    for payload in payloads:
        jsonschema.validate(payload, schema, cls=jsonschema.Draft202012Validator)
        json.dumps(payload, allow_nan=False)
        assert len(viz.to_figure(payload).data) == len(payload["series"])
    assert collector.errors == []


def test_steps_and_epochs_match_what_fit_reported(digits_run):
    trainer, collector, recorder, _ = digits_run
    every = recorder.logs[::3]
    np.testing.assert_allclose(collector.steps["loss"], [log["loss"] for log in every])
    np.testing.assert_allclose(collector.steps["lr"], [log["lr"] for log in every])
    assert collector.steps["step"] == [float(k) for k in range(0, len(recorder.logs), 3)]
    history = trainer.history
    np.testing.assert_allclose(collector.epochs["val_accuracy"], history.val_accuracy)
    np.testing.assert_allclose(collector.epochs["loss"], history.loss)
    # StepLR(gamma=0.5) halves the rate every epoch.
    lr = next(p for p in collector.payloads() if p["plot_type"] == "learning_rate_schedule")
    assert sorted({p["y"] for p in lr["series"][0]["data"]}, reverse=True) == pytest.approx(
        [3e-3, 1.5e-3, 7.5e-4]
    )


def test_parameter_histograms_are_the_final_weights(digits_run):
    trainer, collector, _, _ = digits_run
    payload = plots.parameter_distribution(collector.weights, collector.bins)
    weights = trainer.model.get_weights()
    for s in payload["series"]:
        counts, _ = np.histogram(weights[s["name"]], bins=collector.bins)
        np.testing.assert_array_equal([p["y"] for p in s["data"]], counts)


def _torch_twin(trainer: gm.Trainer) -> torch.nn.Sequential:
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    weights = trainer.model.get_weights()
    with torch.no_grad():
        for index, name in ((0, "dense_0"), (2, "dense_1")):
            net[index].weight.copy_(torch.from_numpy(weights[f"{name}.weight"]))
            net[index].bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))
    assert set(gm_weights_from_torch(net)) == set(weights)
    return net


def test_gradients_and_activations_match_torch(digits_run):
    trainer, collector, _, (x_val, y_val) = digits_run
    net = _torch_twin(trainer)
    x, y = x_val[: collector.sample_size], y_val[: collector.sample_size]
    loss = torch.nn.functional.cross_entropy(net(t(x)), t(y))
    loss.backward()
    expected = {
        "dense_0.weight": net[0].weight.grad,
        "dense_0.bias": net[0].bias.grad,
        "dense_1.weight": net[2].weight.grad,
        "dense_1.bias": net[2].bias.grad,
    }
    assert set(collector.gradients) == set(expected)
    for name, grad in expected.items():
        np.testing.assert_allclose(collector.gradients[name], grad.numpy(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        hidden = net[0](t(x))
        outputs = {"dense_0": hidden, "relu_0": net[1](hidden), "dense_1": net(t(x))}
    assert set(collector.activations) == set(outputs)
    for name, value in outputs.items():
        np.testing.assert_allclose(collector.activations[name], value.numpy(), rtol=1e-4, atol=1e-5)
    payload = plots.activation_pattern(collector.activations)
    relu = outputs["relu_0"].numpy()
    assert payload["metrics"]["relu_0.zero_fraction"] == pytest.approx(np.mean(relu == 0))


def test_evaluation_plots_match_sklearn(digits_run):
    trainer, collector, _, (x_val, y_val) = digits_run
    proba = trainer.predict_proba(x_val[: collector.sample_size])
    y = y_val[: collector.sample_size]
    by_kind = {p["plot_type"]: p for p in collector.payloads()}
    roc = by_kind["roc_curve"]["metrics"]
    assert roc["auc_macro"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-6
    )
    confusion = by_kind["confusion_matrix"]
    cells = np.array([p["z"] for p in confusion["series"][0]["data"]]).reshape(10, 10)
    np.testing.assert_array_equal(cells, skm.confusion_matrix(y, proba.argmax(axis=1)))


def test_fit_plots_html_writes_one_dashboard(tmp_path):
    x_train, x_val, y_train, y_val = _digits()
    trainer = _trainer()
    out = tmp_path / "plots"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean run warns about nothing
        history = trainer.fit(
            (x_train[:600], y_train[:600]),
            epochs=2,
            validation=(x_val, y_val),
            verbose=0,
            plots="html",
            plots_dir=out,
        )
    assert len(history.loss) == 2
    assert [f.name for f in out.iterdir()] == ["dashboard.html"]  # no temporary file left
    page = (out / "dashboard.html").read_text(encoding="utf-8")
    kinds = re.findall(r'data-plot-type="(\w+)"', page)
    assert kinds[: len(TRAINING_PLOTS)] == TRAINING_PLOTS
    assert "roc_curve" in kinds
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)


def test_fit_rejects_bad_plots_arguments():
    x_train, _, y_train, _ = _digits()
    trainer = _trainer()
    with pytest.raises(ValueError, match="plots must be None, 'html' or 'sidecar', got 'pdf'"):
        trainer.fit((x_train, y_train), 1, verbose=0, plots="pdf")
    with pytest.raises(TypeError, match="plots_dir must be a folder path"):
        trainer.fit((x_train, y_train), 1, verbose=0, plots="html", plots_dir=3)
    assert trainer.epoch == 0


class Broken(viz.VisualizationCollector):
    def _record_epoch(self, epoch, logs):
        raise RuntimeError("disk on fire")


def test_a_failing_collector_warns_once_and_training_completes():
    x_train, x_val, y_train, y_val = _digits()
    trainer = _trainer()
    collector = Broken(validation=(x_val, y_val))
    with pytest.warns(RuntimeWarning, match="disk on fire") as caught:
        trainer.fit((x_train[:400], y_train[:400]), epochs=3, callbacks=[collector], verbose=0)
    assert len([w for w in caught if "gometal.viz" in str(w.message)]) == 1
    assert trainer.epoch == 3 and len(trainer.history.loss) == 3
    assert len(collector.errors) == 3  # one per epoch, only the first warned
    kinds = [p["plot_type"] for p in collector.payloads()]
    assert "training_curves" in kinds and "parameter_distribution" not in kinds


def test_a_failing_builder_is_left_out_with_a_warning(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("bad histogram")

    monkeypatch.setattr(plots, "parameter_distribution", broken)
    x_train, x_val, y_train, y_val = _digits()
    trainer = _trainer()
    with pytest.warns(RuntimeWarning, match="bad histogram") as caught:
        trainer.fit(
            (x_train[:400], y_train[:400]),
            2,
            validation=(x_val, y_val),
            verbose=0,
            plots="html",
            plots_dir=tmp_path,
        )
    assert len([w for w in caught if "gometal.viz" in str(w.message)]) == 1
    page = (tmp_path / "dashboard.html").read_text(encoding="utf-8")
    assert "parameter_distribution" not in page and "gradient_histogram" in page


def test_an_unwritable_dashboard_warns_and_fit_returns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    x_train, _, y_train, _ = _digits()
    trainer = _trainer()
    with pytest.warns(RuntimeWarning, match="writing the dashboard"):
        history = trainer.fit(
            (x_train[:300], y_train[:300]), 1, verbose=0, plots="html", plots_dir=blocker
        )
    assert len(history.loss) == 1


def test_sidecar_mode_sends_payloads_each_epoch(monkeypatch):
    from gometal.viz import sidecar_client

    sent = []

    class FakeRunSink:
        """Stands in for the sidecar client's sink: records what the collector sends."""

        def __init__(self, url):
            self.url = url

        def __call__(self, payloads):
            sent.append((payloads, self.url))

    monkeypatch.setattr(sidecar_client, "RunSink", FakeRunSink, raising=False)
    monkeypatch.setenv("GOMETAL_SIDECAR_URL", "http://127.0.0.1:9")
    x_train, x_val, y_train, y_val = _digits()
    trainer = _trainer()
    trainer.fit(
        (x_train[:300], y_train[:300]), 2, validation=(x_val, y_val), verbose=0, plots="sidecar"
    )
    assert len(sent) == 3  # after each epoch and at the end
    assert {url for _, url in sent} == {"http://127.0.0.1:9"}
    assert "roc_curve" in [p["plot_type"] for p in sent[-1][0]]
    assert "roc_curve" not in [p["plot_type"] for p in sent[0][0]]


def test_regression_collector_builds_the_regression_plots():
    gen = np.random.default_rng(2)
    x = gen.standard_normal((300, 5)).astype(np.float32)
    y = (x @ gen.standard_normal((5, 1)) + 0.1 * gen.standard_normal((300, 1))).astype(np.float32)
    model = gm.ModelBuilder((5,)).dense(16).relu().dense(1).build(seed=0)
    trainer = gm.Trainer(model, "mse", gm.optim.Adam(lr=1e-2), batch_size=32)
    collector = viz.VisualizationCollector(validation=(x[200:], y[200:]))
    trainer.fit((x[:200], y[:200]), 5, callbacks=[collector], verbose=0)
    by_kind = {p["plot_type"]: p for p in collector.payloads()}
    pred = trainer.predict(x[200:]).ravel()
    truth = y[200:].ravel()
    assert by_kind["regression_scatter"]["metrics"]["r2"] == pytest.approx(
        skm.r2_score(truth, pred), rel=1e-5
    )
    assert {"residual_plot", "qq_plot", "prediction_interval", "feature_importance"} <= set(by_kind)
    assert collector.errors == []


def test_collector_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every_n_steps must be an int >= 1, got 0"):
        viz.VisualizationCollector(every_n_steps=0)
    with pytest.raises(ValueError, match="feature_plots must be True, False or 'auto'"):
        viz.VisualizationCollector(feature_plots="yes")


def test_sidecar_mode_falls_back_to_send(monkeypatch):
    from gometal.viz import sidecar_client

    sent = []
    monkeypatch.delattr(sidecar_client, "RunSink", raising=False)
    monkeypatch.setattr(sidecar_client, "send", lambda p, url: sent.append((p, url)), raising=False)
    monkeypatch.delenv("GOMETAL_SIDECAR_URL", raising=False)
    x_train, _, y_train, _ = _digits()
    trainer = _trainer()
    trainer.fit((x_train[:200], y_train[:200]), 1, verbose=0, plots="sidecar")
    assert len(sent) == 2 and sent[0][1] is None
    assert [p["plot_type"] for p in sent[-1][0]][:2] == ["training_curves", "training_curves"]


def test_cnn_with_batch_norm_and_dropout_is_probed_per_layer():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = gen.integers(0, 3, 64).astype(np.int32)
    model = (
        gm.ModelBuilder((1, 8, 8))
        .conv2d(4, 3, padding="same")
        .batch_norm()
        .relu()
        .max_pool2d(2)
        .flatten()
        .dropout(0.2)
        .dense(3)
        .build(seed=0)
    )
    trainer = gm.Trainer(model, "cross_entropy", "adam", batch_size=16)
    collector = viz.VisualizationCollector(validation=(x, y))
    trainer.fit((x, y), 2, callbacks=[collector], verbose=0)
    assert collector.errors == []
    assert list(collector.activations) == [
        "conv2d_0", "batch_norm_0", "relu_0", "max_pool2d_0", "flatten_0", "dropout_0", "dense_0"
    ]  # fmt: skip
    # At inference dropout is the identity and the last layer gives predict's logits.
    np.testing.assert_array_equal(
        collector.activations["dropout_0"], collector.activations["flatten_0"]
    )
    np.testing.assert_allclose(
        collector.activations["dense_0"], trainer.predict(x), rtol=1e-5, atol=1e-6
    )
    assert set(collector.gradients) == set(model.trainable_weight_names)
    kinds = [p["plot_type"] for p in collector.payloads()]
    assert (
        "confusion_matrix" in kinds and "feature_correlation" not in kinds
    )  # images: no feature plots


@pytest.mark.parametrize("loss", ["bce_with_logits", "categorical_cross_entropy"])
def test_other_classification_losses_get_roc_curves(loss):
    gen = np.random.default_rng(1)
    x = gen.standard_normal((120, 6)).astype(np.float32)
    labels = (x[:, 0] + 0.3 * gen.standard_normal(120) > 0).astype(np.int64)
    outputs = 1 if loss == "bce_with_logits" else 2
    y = labels[:, None].astype(np.float32) if outputs == 1 else np.eye(2, dtype=np.float32)[labels]
    model = gm.ModelBuilder((6,)).dense(8).relu().dense(outputs).build(seed=0)
    trainer = gm.Trainer(model, loss, gm.optim.Adam(lr=1e-2), batch_size=30)
    collector = viz.VisualizationCollector(validation=(x, y))
    trainer.fit((x, y), 3, callbacks=[collector], verbose=0)
    assert collector.errors == []
    roc = next(p for p in collector.payloads() if p["plot_type"] == "roc_curve")
    proba = trainer.predict_proba(x)
    score = proba[:, 0] if outputs == 1 else proba[:, 1]
    expected = skm.roc_auc_score(labels, score)
    if outputs == 1:
        assert roc["metrics"]["auc_positive"] == pytest.approx(expected, abs=1e-6)
    else:
        assert roc["metrics"]["auc_1"] == pytest.approx(expected, abs=1e-6)
