"""The fit loop, evaluation, callbacks, schedulers, checkpoints and plots use a trainer
only through ``TrainingSession``: they run on a stand-in that exposes nothing else, and
give what the same calls give on the trainer itself (or a formula, or scikit-learn)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

import gometal as gm
from gometal.train import TrainingSession, evaluate, fit

SESSION_MEMBERS = frozenset(
    set(TrainingSession.__annotations__)
    | {name for name in vars(TrainingSession) if not name.startswith("_")}
)


class SessionOnly:
    """Exposes a trainer's ``TrainingSession`` members and refuses everything else."""

    def __init__(self, trainer: gm.Trainer):
        object.__setattr__(self, "wrapped", trainer)

    def __getattr__(self, name: str):
        if name not in SESSION_MEMBERS:
            raise AttributeError(f"{name!r} is not part of TrainingSession")
        return getattr(self.wrapped, name)

    def __setattr__(self, name: str, value) -> None:
        if name not in SESSION_MEMBERS:
            raise AttributeError(f"{name!r} is not part of TrainingSession")
        setattr(self.wrapped, name, value)


def _data(rows: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((rows, 6)).astype(np.float32)
    return x, np.argmax(x[:, :3] + 0.3 * x[:, 3:], axis=1).astype(np.int32)


def _trainer(optimizer="adam") -> gm.Trainer:
    model = gm.ModelBuilder((6,)).dense(16).relu().dropout(0.1).dense(3).build(seed=2)
    return gm.Trainer(model, "cross_entropy", optimizer, batch_size=16)


def test_the_trainer_is_a_training_session():
    assert isinstance(_trainer(), TrainingSession)
    assert {"prepare_batch", "evaluate_batch", "read_state", "restore_state"} <= SESSION_MEMBERS
    assert not any(name.startswith("_") for name in SESSION_MEMBERS)


def test_fit_with_validation_metrics_callbacks_and_a_scheduler_needs_only_the_session():
    x, y = _data()
    xv, yv = _data(48, seed=1)
    direct, wrapped = _trainer(), _trainer()
    session = SessionOnly(wrapped)
    histories = []
    for trainer in (direct, session):
        stop = gm.callbacks.EarlyStopping("val_loss", patience=5, restore_best=True)
        scheduler = gm.schedulers.StepLR(trainer, step_size=1, gamma=0.5)
        history = fit(
            trainer,
            (x, y),
            epochs=3,
            validation=(xv, yv),
            scheduler=scheduler,
            callbacks=[stop],
            metrics=["f1_macro"],
            verbose=0,
        )
        histories.append({k: v for k, v in history.history.items() if k != "time"})
    assert histories[0] == histories[1]
    assert set(histories[1]) >= {"loss", "val_loss", "val_f1_macro", "lr"}
    assert session.learning_rate == pytest.approx(1e-3 * 0.5**3, rel=1e-6)
    assert session.epoch == 3
    predicted = wrapped.predict(xv).argmax(axis=1)
    measured = evaluate(session, xv, yv, metrics=["f1_macro"])
    assert measured["f1_macro"] == pytest.approx(f1_score(yv, predicted, average="macro"))
    assert measured["accuracy"] == pytest.approx(np.mean(predicted == yv))


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_a_checkpoint_is_written_and_read_through_the_session(tmp_path, optimizer):
    x, y = _data()
    trainer = _trainer(optimizer)
    session = SessionOnly(trainer)
    fit(session, (x, y), epochs=2, verbose=0)
    gm.serialization.save_checkpoint(session, tmp_path / "ckpt.safetensors")
    resumed = gm.Trainer.load(tmp_path / "ckpt.safetensors")
    state, restored = trainer.read_state(), resumed.read_state()
    assert state.variables.keys() == restored.variables.keys()
    for name, value in state.variables.items():
        np.testing.assert_array_equal(restored.variables[name], value, err_msg=name)
    assert (restored.seed, restored.rng_step) == (state.seed, state.rng_step)
    assert resumed.step == trainer.step == 2 * 6
    assert (state.host_optimizer is None) == (optimizer == "adam")
    # Both continue with the same next step.
    np.testing.assert_array_equal(
        resumed.train_batch(x[:16], y[:16]).loss, trainer.train_batch(x[:16], y[:16]).loss
    )


def test_go_metal_json_is_written_through_the_session(tmp_path):
    x, y = _data()
    trainer = _trainer()
    fit(trainer, (x, y), epochs=1, verbose=0)
    gm.serialization.export_json(SessionOnly(trainer), tmp_path / "ckpt.json")
    document = json.loads((tmp_path / "ckpt.json").read_text())
    weights = {entry["name"]: entry for entry in document["weights"]}
    expected = trainer.model.get_weights()["dense_0.weight"]
    np.testing.assert_array_equal(
        np.array(weights["dense_0.weight"]["data"], np.float32).reshape(expected.shape), expected
    )
    assert document["training_state"]["step"] == trainer.step


def test_restore_state_refuses_a_host_optimizer_memory_the_optimizer_lacks():
    lbfgs, adam = _trainer("lbfgs"), _trainer("adam")
    x, y = _data()
    lbfgs.train_batch(x[:16], y[:16])
    with pytest.raises(ValueError, match="host optimizer memory does not match Adam"):
        adam.restore_state(lbfgs.read_state())


def test_evaluate_batch_gives_the_probabilities_with_the_loss():
    x, y = _data(32)
    trainer = _trainer()
    batch = trainer.evaluate_batch(x, y, with_outputs=True)
    logits = trainer.predict(x).astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(batch.outputs, probabilities, rtol=1e-5, atol=1e-6)
    log_likelihood = np.log(probabilities[np.arange(len(y)), y])
    assert batch.loss == pytest.approx(-log_likelihood.mean(), rel=1e-5)
    assert batch.totals.value == pytest.approx(np.mean(logits.argmax(axis=1) == y))
    assert batch.labels.dtype == np.int32 and trainer.evaluate_batch(x, y).outputs is None


def test_the_plots_collect_through_the_session():
    x, y = _data()
    xv, yv = _data(48, seed=1)
    trainer = _trainer()
    collector = gm.viz.VisualizationCollector(validation=(xv, yv))
    fit(SessionOnly(trainer), (x, y), epochs=2, callbacks=[collector], verbose=0)
    assert collector.errors == []
    kinds = {payload["plot_type"] for payload in collector.payloads()}
    assert {"gradient_histogram", "activation_pattern", "roc_curve"} <= kinds
