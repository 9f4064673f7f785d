"""Trainer.fit and Trainer.evaluate(metrics=...): learning, History, resuming, schedulers, output.

References: PyTorch (the same MLP trained on the same batches, torch's schedulers),
scikit-learn (the digits, its metrics), and NumPy formulas for the shuffle order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

import gometal as gm
from gometal.datasets import write_digits_folder
from gometal.train.array_loader import ArrayLoader
from gometal.vision import DataLoader, ImageFolderDataset
from helpers import assert_weights_match, mlp_pair, t


def _order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The documented shuffle order of (x, y) arrays: NumPy's SeedSequence(seed, (epoch, 0))."""
    sequence = np.random.SeedSequence(seed, spawn_key=(epoch, 0))
    return np.random.default_rng(sequence).permutation(count)


def _digits():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def _dropout_trainer(seed: int = 0, lr: float = 1e-2) -> gm.Trainer:
    model = gm.ModelBuilder((20,)).dense(32).relu().dropout(0.3).dense(5).build(seed=seed)
    return gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=lr), batch_size=16)


def _without_time(history: gm.History) -> dict:
    data = history.to_dict()
    del data["history"]["time"]
    return data


def _assert_same_weights(a: gm.Trainer, b: gm.Trainer) -> None:
    wa, wb = a.model.get_weights(), b.model.get_weights()
    assert wa.keys() == wb.keys()
    for name in wa:
        assert np.array_equal(wa[name], wb[name]), name


# -- learning ------------------------------------------------------------------------------


def test_fit_on_digit_arrays_reaches_95_percent():
    x_train, x_test, y_train, y_test = _digits()
    model = gm.ModelBuilder((64,)).dense(128).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=1e-3), batch_size=32)
    history = trainer.fit((x_train, y_train), epochs=15, validation=(x_test, y_test), verbose=0)
    assert history is trainer.history
    assert trainer.epoch == 15 and history.epoch == list(range(15))
    assert trainer.step == 15 * int(np.ceil(len(x_train) / 32))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert all(len(values) == 15 for values in history.history.values())
    assert history.val_accuracy[-1] >= 0.95
    assert history.loss[-1] < history.loss[0] / 3
    assert history.lr == pytest.approx([1e-3] * 15)
    assert all(seconds > 0 for seconds in history.time)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("digits") / "digits", upscale=1)


def test_fit_on_an_image_folder_loader_learns(digit_folder):
    train_set, val_set = ImageFolderDataset(digit_folder, image_size=8, channels=1).split(0.25)
    model = (
        gm.ModelBuilder((1, 8, 8)).conv2d(8, 3, padding=1).relu().flatten().dense(10).build(seed=0)
    )
    trainer = gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=3e-3), batch_size=32)
    with (
        DataLoader(train_set, 32, seed=1, num_workers=2) as train,
        DataLoader(val_set, 64, shuffle=False, num_workers=0) as val,
    ):
        history = trainer.fit(train, epochs=6, validation=val, verbose=0)
        assert trainer.step == 6 * len(train)
        # evaluate accepts the loader too, and gives the History's last validation values.
        assert trainer.evaluate(val) == pytest.approx(
            {"loss": history.val_loss[-1], "accuracy": history.val_accuracy[-1]}, rel=1e-12
        )
    assert history.val_accuracy[-1] >= 0.93


def test_epoch_loss_is_the_mean_of_pre_update_batch_losses_as_in_torch(classification_data):
    x, y = classification_data
    net, model = mlp_pair([20, 16, 5])
    trainer = gm.Trainer(model, "cross_entropy", gm.optim.SGD(lr=0.1), batch_size=40)
    history = trainer.fit((x, y), epochs=3, seed=7, verbose=0)

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(3):
        order = _order(7, epoch, len(x))
        loss_sum = correct = 0.0
        for start in range(0, len(x), 40):  # 40, 40, 16: the short batch is kept
            rows = order[start : start + 40]
            optimizer.zero_grad()
            logits = net(t(x[rows]))
            loss = loss_fn(logits, t(y[rows]))
            correct += float((logits.argmax(1).numpy() == y[rows]).sum())
            loss_sum += loss.item() * len(rows)
            loss.backward()
            optimizer.step()
        assert history.loss[epoch] == pytest.approx(loss_sum / len(x), rel=1e-5)
        assert history.accuracy[epoch] == pytest.approx(correct / len(x), abs=1e-12)
    assert_weights_match(model, net)


def test_validation_values_equal_evaluate_at_the_end_of_each_epoch(classification_data):
    x, y = classification_data
    trainer = _dropout_trainer()
    x_val, y_val = x[:30], y[:30]

    class EvaluateAtEpochEnd(gm.callbacks.Callback):
        def __init__(self):
            self.results = []

        def on_epoch_end(self, epoch, logs):
            self.results.append(self.trainer.evaluate(x_val, y_val, batch_size=16))

    probe = EvaluateAtEpochEnd()
    history = trainer.fit((x, y), epochs=3, validation=(x_val, y_val), callbacks=[probe], verbose=0)
    assert [r["loss"] for r in probe.results] == history.val_loss
    assert [r["accuracy"] for r in probe.results] == history.val_accuracy
    # Other batchings agree up to float rounding.
    assert trainer.evaluate(x_val, y_val)["loss"] == pytest.approx(history.val_loss[-1], rel=1e-5)


# -- resuming ------------------------------------------------------------------------------


def test_two_fits_equal_one_bit_for_bit_with_dropout_shuffle_and_scheduler(classification_data):
    x, y = classification_data
    val = (x[:24], y[:24])

    def run(splits):
        trainer = _dropout_trainer()
        scheduler = gm.schedulers.StepLR(step_size=1, gamma=0.7)
        for i, epochs in enumerate(splits):
            trainer.fit(
                (x, y),
                epochs,
                validation=val,
                scheduler=scheduler if i == 0 else None,
                seed=5,
                verbose=0,
            )
        return trainer

    whole, split, thirds = run([4]), run([2, 2]), run([1, 2, 1])
    for other in (split, thirds):
        _assert_same_weights(whole, other)
        assert _without_time(other.history) == _without_time(whole.history)
        assert other.epoch == 4 and other.scheduler is not None
    assert whole.history.lr == pytest.approx([1e-2 * 0.7**e for e in range(4)], rel=1e-6)
    # The order depends on the seed: another seed trains differently.
    other_seed = _dropout_trainer()
    other_seed.fit((x, y), 4, seed=6, verbose=0)
    assert not np.array_equal(
        other_seed.model.get_weights()["dense_0.weight"],
        whole.model.get_weights()["dense_0.weight"],
    )


def test_a_fresh_loader_resumes_at_the_trainers_epoch(digit_folder):
    data = ImageFolderDataset(digit_folder, image_size=8, channels=1).subset(200, seed=0)

    def trainer():
        model = gm.ModelBuilder((1, 8, 8)).flatten().dense(16).relu().dropout(0.2).dense(10)
        return gm.Trainer(model.build(seed=0), "cross_entropy", batch_size=32)

    def loader():
        return DataLoader(data, 32, seed=3, num_workers=0, augment=True)

    whole = trainer()
    whole.fit(loader(), 3, verbose=0)
    split = trainer()
    split.fit(loader(), 1, verbose=0)
    split.fit(loader(), 2, verbose=0)  # a new loader, as after a restart: set_epoch(1)
    _assert_same_weights(whole, split)
    assert _without_time(split.history) == _without_time(whole.history)


def test_resume_from_a_checkpoint_in_a_fresh_process(tmp_path, classification_data):
    import json
    import subprocess
    import sys

    x, y = classification_data
    np.savez(tmp_path / "data.npz", x=x, y=y)
    reference = _dropout_trainer()
    reference.fit((x, y), 4, validation=(x[:24], y[:24]), seed=5, verbose=0)

    saving = _dropout_trainer()
    checkpoints = gm.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_epochs=2)
    saving.fit((x, y), 4, validation=(x[:24], y[:24]), seed=5, callbacks=[checkpoints], verbose=0)
    script = f"""
import json, numpy as np, gometal as gm
data = np.load({str(tmp_path / "data.npz")!r})
x, y = data["x"], data["y"]
trainer = gm.Trainer.load({str(tmp_path / "ckpt" / "epoch-002.gmckpt")!r})
assert trainer.epoch == 2, trainer.epoch
trainer.fit((x, y), 2, validation=(x[:24], y[:24]), seed=5, verbose=0)
np.savez({str(tmp_path / "out.npz")!r}, **trainer.model.get_weights())
print(json.dumps(trainer.history.to_dict()))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    resumed = np.load(tmp_path / "out.npz")
    for name, value in reference.model.get_weights().items():
        assert np.array_equal(resumed[name], value), name
    history = gm.History.from_dict(json.loads(done.stdout.splitlines()[-1]))
    del history.history["time"]
    assert history.to_dict() == _without_time(reference.history)


# -- schedulers ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_validation", [True, False])
def test_plateau_scheduler_watches_val_loss_or_loss_as_torch(classification_data, with_validation):
    x, y = classification_data
    noisy_labels = np.random.default_rng(0).integers(0, 5, 24).astype(np.int32)
    validation = (x[:24], noisy_labels) if with_validation else None
    trainer = _dropout_trainer(lr=0.05)
    scheduler = gm.schedulers.ReduceLROnPlateau(factor=0.5, patience=0)
    history = trainer.fit((x, y), 10, validation=validation, scheduler=scheduler, verbose=0)

    watched = history.val_loss if with_validation else history.loss
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.05)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    expected = []
    for value in watched:
        expected.append(optimizer.param_groups[0]["lr"])
        reference.step(value)
    assert history.lr == pytest.approx(expected, rel=1e-6)
    assert trainer.learning_rate == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)
    assert min(expected) < 0.05  # the plateau rule fired at least once


def test_batch_scheduler_steps_after_every_batch_as_torch_one_cycle(classification_data):
    x, y = classification_data
    trainer = _dropout_trainer()
    steps = int(np.ceil(len(x) / 16))
    scheduler = gm.schedulers.OneCycleLR(max_lr=0.02, total_steps=3 * steps)

    class RecordRates(gm.callbacks.Callback):
        rates: list

        def on_train_begin(self, logs=None):
            self.rates = []

        def on_batch_end(self, batch, logs):
            self.rates.append(logs["lr"])

    record = RecordRates()
    history = trainer.fit((x, y), 3, scheduler=scheduler, callbacks=[record], verbose=0)
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.02)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.02, total_steps=3 * steps, cycle_momentum=False
    )
    expected = []
    for _ in range(3 * steps):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert record.rates == pytest.approx(expected, rel=1e-6)
    assert history.lr == pytest.approx(expected[steps - 1 :: steps], rel=1e-6)


# -- metrics -------------------------------------------------------------------------------


def test_fit_records_validation_metrics_equal_to_sklearn():
    x_train, x_test, y_train, y_test = _digits()
    model = gm.ModelBuilder((64,)).dense(32).relu().dense(10).build(seed=0)
    trainer = gm.Trainer(model, "cross_entropy", batch_size=64)
    history = trainer.fit(
        (x_train, y_train),
        2,
        validation=(x_test, y_test),
        metrics=["f1_macro", "auc_roc", "confusion_matrix"],
        verbose=0,
    )
    probabilities = trainer.predict_proba(x_test)
    predicted = probabilities.argmax(axis=1)
    assert history.val_f1_macro[-1] == pytest.approx(
        f1_score(y_test, predicted, average="macro"), rel=1e-9
    )
    assert history["val_auc_roc"][-1] == pytest.approx(
        roc_auc_score(y_test, probabilities, multi_class="ovr"), rel=1e-6
    )
    expected_matrix = np.zeros((10, 10), int)
    np.add.at(expected_matrix, (y_test, predicted), 1)
    assert np.array_equal(np.asarray(history.val_confusion_matrix[-1]), expected_matrix)
    # evaluate gives the same numbers in one call, batch by batch.
    result = trainer.evaluate(x_test, y_test, batch_size=50, metrics=["f1_macro"])
    assert result["f1_macro"] == pytest.approx(history.val_f1_macro[-1], rel=1e-12)
    assert result["accuracy"] == pytest.approx(history.val_accuracy[-1], rel=1e-12)


def test_regression_metrics_get_raw_predictions(regression_data):
    x, y = regression_data
    model = gm.ModelBuilder((6,)).dense(16).relu().dense(3).build(seed=0)
    trainer = gm.Trainer(model, "mse", gm.optim.Adam(lr=1e-2), batch_size=16)
    history = trainer.fit((x, y), 3, validation=(x, y), metrics=["mae"], verbose=0)
    predictions = trainer.predict(x)
    assert history.val_mae[-1] == pytest.approx(mean_absolute_error(y, predictions), rel=1e-5)
    assert history.val_loss[-1] == pytest.approx(np.mean((predictions - y) ** 2), rel=1e-5)


def test_metric_objects_are_reset_and_fed_probabilities(classification_data):
    x, y = classification_data

    class Capture:
        name = "capture"

        def __init__(self):
            self.batches, self.resets = [], 0

        def reset(self):
            self.batches, self.resets = [], self.resets + 1

        def update(self, y_true, y_pred):
            self.batches.append((np.array(y_true), np.array(y_pred)))

        def result(self):
            return float(sum(len(b[0]) for b in self.batches))

    capture = Capture()
    trainer = _dropout_trainer()
    history = trainer.fit((x, y), 2, validation=(x[:40], y[:40]), metrics=[capture], verbose=0)
    assert capture.resets == 2 and history.val_capture == [40.0, 40.0]
    assert [len(b[0]) for b in capture.batches] == [16, 16, 8]
    labels = np.concatenate([b[0] for b in capture.batches])
    probabilities = np.concatenate([b[1] for b in capture.batches])
    assert np.array_equal(labels, y[:40])
    expected = torch.softmax(t(trainer.predict(x[:40])), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)


# -- array loader --------------------------------------------------------------------------


def test_array_loader_order_matches_the_image_loader_and_the_formula(digit_folder):
    data = ImageFolderDataset(digit_folder, image_size=8, channels=1).subset(50, seed=0)
    images = DataLoader(data, 8, seed=4, num_workers=0)
    arrays = ArrayLoader(np.arange(50), np.arange(50), 8, seed=4)
    for epoch in (0, 3):
        assert np.array_equal(arrays.sample_order(epoch), images.sample_order(epoch))
        assert np.array_equal(arrays.sample_order(epoch), _order(4, epoch, 50))
    arrays.set_epoch(3)
    batches = [xb for xb, _ in arrays]
    assert [len(b) for b in batches] == [8] * 6 + [2] and len(arrays) == 7
    assert np.array_equal(np.concatenate(batches), _order(4, 3, 50))
    assert arrays.epoch == 4
    fixed = ArrayLoader(np.arange(10), np.arange(10), 4, shuffle=False, drop_last=True)
    assert [b.tolist() for b, _ in fixed] == [[0, 1, 2, 3], [4, 5, 6, 7]]


# -- output --------------------------------------------------------------------------------


def test_verbose_2_prints_one_line_per_epoch(classification_data, capsys):
    x, y = classification_data
    _dropout_trainer().fit((x, y), 2, validation=(x[:20], y[:20]), metrics=["f1_macro"], verbose=2)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and err == ""
    for number, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {number}/2")
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_f1_macro", "lr"):
            assert f"{key} " in line
        assert "steps/s" in line


def test_verbose_1_shows_a_bar_with_lr_and_steps_per_second(classification_data, capsys):
    import time

    x, y = classification_data

    class Slow(gm.callbacks.Callback):
        def on_batch_end(self, batch, logs):
            time.sleep(0.15)  # longer than tqdm's refresh interval, so the bar redraws

    _dropout_trainer().fit((x[:48], y[:48]), 1, callbacks=[Slow()], verbose=1)
    out, err = capsys.readouterr()
    assert "epoch 1/1" in err and "lr=" in err and "steps/s=" in err and "loss=" in err
    assert out.startswith("epoch 1/1") and "steps/s" in out


def test_verbose_0_is_silent(classification_data, capsys):
    x, y = classification_data
    _dropout_trainer().fit((x, y), 2, validation=(x, y), verbose=0)
    assert capsys.readouterr() == ("", "")


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"epochs": -1}, ValueError, r"epochs must be >= 0.*-1"),
        ({"epochs": 2.5}, TypeError, r"epochs must be a non-negative int, got 2\.5"),
        ({"epochs": True}, TypeError, r"epochs"),
        ({"verbose": 3}, ValueError, r"verbose must be 0.*got 3"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive int, got 0"),
        ({"seed": -2}, ValueError, r"seed"),
        ({"shuffle": "yes"}, TypeError, r"shuffle must be True or False, got 'yes'"),
        ({"callbacks": [print]}, TypeError, r"gm.callbacks.Callback"),
        ({"metrics": ["f1_macro"]}, ValueError, r"validation"),
        ({"scheduler": "step"}, TypeError, r"scheduler must be"),
    ],
)
def test_bad_arguments_name_the_argument(classification_data, kwargs, error, pattern):
    x, y = classification_data
    trainer = _dropout_trainer()
    before = trainer.model.get_weights()
    arguments = {"epochs": 1, "verbose": 0, **kwargs}
    with pytest.raises(error, match=pattern):
        trainer.fit((x, y), **arguments)
    assert trainer.epoch == 0 and trainer.step == 0
    _assert_unchanged(trainer, before)


def _assert_unchanged(trainer, before):
    for name, value in trainer.model.get_weights().items():
        assert np.array_equal(value, before[name]), name


def test_bad_data_is_rejected_before_training(classification_data):
    x, y = classification_data
    trainer = _dropout_trainer()
    with pytest.raises(TypeError, match=r"train must be a loader .* got an ndarray of shape"):
        trainer.fit(x, 1)
    with pytest.raises(ValueError, match=r"tuple \(x, y\) of two arrays, got a tuple of 3"):
        trainer.fit((x, y, y), 1)
    with pytest.raises(ValueError, match=r"x and y have different lengths"):
        trainer.fit((x, y[:10]), 1)
    with pytest.raises(ValueError, match=r"validation x must have shape \(N, 20\)"):
        trainer.fit((x, y), 1, validation=(x[:, :3], y))
    with pytest.raises(TypeError, match=r"validation must be a loader"):
        trainer.fit((x, y), 1, validation=5)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains 1 non-finite value"):
        trainer.fit((bad, y), 1)
    loader = ArrayLoader(x, y, 16)
    with pytest.raises(ValueError, match=r"batch_size applies to \(x, y\) arrays"):
        trainer.fit(loader, 1, batch_size=8)
    with pytest.raises(ValueError, match=r"seed=3 applies to \(x, y\) arrays"):
        trainer.fit(loader, 1, seed=3)
    with pytest.raises(ValueError, match=r"unique"):
        trainer.evaluate(x, y, metrics=["f1_macro", "f1_macro"])
    # Keras habit: "accuracy" is always reported, so naming it adds nothing and is no error.
    assert set(trainer.evaluate(x, y, metrics=["accuracy", "loss"])) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match=r"evaluate needs y"):
        trainer.evaluate(x)
    with pytest.raises(ValueError, match=r"batch_size applies to arrays"):
        trainer.evaluate(loader, batch_size=4)
    assert trainer.step == 0


def test_a_loader_yielding_something_else_than_pairs_is_named(classification_data):
    x, _ = classification_data
    trainer = _dropout_trainer()
    with pytest.raises(TypeError, match=r"must yield \(x, y\) pairs, got ndarray"):
        trainer.fit([x[:4, 0]], 1, verbose=0)


def test_zero_epochs_returns_the_history_unchanged(classification_data):
    x, y = classification_data
    trainer = _dropout_trainer()
    trainer.fit((x, y), 1, verbose=0)
    before = trainer.history.to_dict()
    assert trainer.fit((x, y), 0, verbose=0).to_dict() == before
    assert trainer.epoch == 1


# -- History -------------------------------------------------------------------------------


def test_history_round_trips_through_strict_json_and_aligns_keys():
    import json

    history = gm.History()
    history.record(0, {"loss": np.float32(0.5), "lr": 0.1})
    history.record(1, {"loss": float("nan"), "val_loss": float("inf"), "lr": 0.05})
    history.record(2, {"loss": 0.25, "val_cm": np.array([[1, 0], [2, 3]]), "lr": 0.05})
    assert history.loss[0] == 0.5 and np.isnan(history.loss[1])
    assert history.val_loss == [None, float("inf"), None]
    assert history["val_cm"] == [None, None, [[1, 0], [2, 3]]]
    assert history.last == {"loss": 0.25, "lr": 0.05, "val_loss": None, "val_cm": [[1, 0], [2, 3]]}
    assert history.best("loss", "min") == (2, 0.25) and history.best("lr", "max") == (0, 0.1)
    text = json.dumps(history.to_dict(), allow_nan=False)
    restored = gm.History.from_dict(json.loads(text))
    assert restored == history and restored.epoch == [0, 1, 2]
    assert np.isnan(restored.loss[1]) and restored.val_loss[1] == float("inf")
    with pytest.raises(AttributeError, match=r"no 'val_accuracy' values; recorded keys"):
        _ = history.val_accuracy
    with pytest.raises(ValueError, match=r"'loss' has 2 values for 3 epochs"):
        gm.History.from_dict({"epoch": [0, 1, 2], "history": {"loss": [1.0, 2.0]}})
    with pytest.raises(ValueError, match=r"expects the mapping History.to_dict\(\) returns"):
        gm.History.from_dict([1, 2])
