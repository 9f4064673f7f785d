"""Callbacks: EarlyStopping, ModelCheckpoint, CSV/JSON loggers, hook order, and Ctrl-C.

Monitored values are crafted with a stand-in metric whose result follows a given sequence,
so the expected stopping epoch is known from the rule itself.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import gometal as gm
from gometal.train.callbacks import resolve_mode

STEPS = 6  # 96 samples in batches of 16


class Scripted:
    """A validation metric whose result is the next value of ``values`` each epoch."""

    def __init__(self, values, name="score"):
        self.name, self.values, self.calls = name, list(values), 0

    def reset(self):
        pass

    def update(self, y_true, y_pred):
        pass

    def result(self):
        self.calls += 1
        return self.values[self.calls - 1]


class WeightsPerEpoch(gm.callbacks.Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, epoch, logs):
        self.weights.append(self.trainer.model.get_weights())


class Events(gm.callbacks.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs):
        self.events.append(("batch_end", batch))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, logs=None):
        self.events.append(("train_end",))


def _trainer(seed: int = 0) -> gm.Trainer:
    model = gm.ModelBuilder((20,)).dense(16).relu().dropout(0.2).dense(5).build(seed=seed)
    return gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=1e-2), batch_size=16)


def _fit_scripted(trainer, data, values, callbacks, epochs=None, name="score", verbose=0):
    x, y = data
    metric = Scripted(values, name)
    return trainer.fit(
        (x, y),
        len(values) if epochs is None else epochs,
        validation=(x[:16], y[:16]),
        metrics=[metric],
        callbacks=callbacks,
        verbose=verbose,
    )


# -- hooks ---------------------------------------------------------------------------------


def test_hooks_run_in_order_with_epoch_numbers_across_fit_calls(classification_data):
    x, y = classification_data
    trainer, events = _trainer(), Events()
    trainer.fit((x, y), 1, callbacks=[events], verbose=0)
    trainer.fit((x, y), 1, callbacks=[events], verbose=0)
    one = [("epoch_begin",), *[("batch_end", b) for b in range(STEPS)], ("epoch_end",)]
    expected = []
    for epoch in (0, 1):
        body = [(e[0], epoch) if len(e) == 1 else e for e in one]
        expected += [("train_begin",), *body, ("train_end",)]
    assert events.events == expected
    assert events.params["initial_epoch"] == 1 and events.params["steps"] == STEPS
    assert events.params["log_keys"] == ["loss", "accuracy", "lr", "time"]


# -- EarlyStopping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,mode,patience,min_delta,stopped,best",
    [
        # min: best at epoch 1; epochs 2 and 3 do not improve -> stop after epoch 3.
        ([1.0, 0.5, 0.6, 0.55, 0.4, 0.3], "min", 2, 0.0, 3, 1),
        # patience 0 stops at the first epoch that does not improve.
        ([1.0, 0.9, 0.95, 0.1], "min", 0, 0.0, 2, 1),
        # min_delta: 0.48 is not better than 0.5 by more than 0.05.
        ([1.0, 0.5, 0.48, 0.47, 0.2], "min", 2, 0.05, 3, 1),
        # max (auto picks max for names starting with "acc").
        ([0.2, 0.6, 0.7, 0.65, 0.69, 0.9], "auto", 2, 0.0, 4, 2),
    ],
)
def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_weights(
    classification_data, values, mode, patience, min_delta, stopped, best
):
    name = "accuracy_like" if mode == "auto" else "score"
    stop = gm.callbacks.EarlyStopping(
        f"val_{name}", patience=patience, mode=mode, min_delta=min_delta, restore_best=True
    )
    record = WeightsPerEpoch()
    trainer = _trainer()
    history = _fit_scripted(trainer, classification_data, values, [record, stop], name=name)
    assert len(history) == stopped + 1 and trainer.epoch == stopped + 1
    assert stop.stopped_epoch == stopped and stop.best_epoch == best
    assert stop.best == values[best]
    assert history[f"val_{name}"] == values[: stopped + 1]
    restored = trainer.model.get_weights()
    for key, value in record.weights[best].items():
        assert np.array_equal(restored[key], value), key
    # The restored weights are the best epoch's, not the last one's.
    assert not np.array_equal(restored["dense_0.weight"], record.weights[-1]["dense_0.weight"])


def test_early_stopping_says_when_it_stopped_unless_silent(classification_data, capsys):
    values = [3.0, 2.0, 2.5, 2.6, 1.0]
    stop = gm.callbacks.EarlyStopping("val_score", patience=2, restore_best=True)
    _fit_scripted(_trainer(), classification_data, values, [stop], verbose=2)
    printed = capsys.readouterr().out
    assert (
        "early stopping after epoch 4: val_score did not improve for 2 epoch(s); "
        "restored the weights of epoch 2" in printed
    )
    quiet = gm.callbacks.EarlyStopping("val_score", patience=2)
    _fit_scripted(_trainer(), classification_data, values, [quiet], verbose=0)
    assert capsys.readouterr().out == ""


def test_early_stopping_without_restore_keeps_the_last_weights(classification_data):
    stop = gm.callbacks.EarlyStopping("val_score", patience=1)
    record = WeightsPerEpoch()
    trainer = _trainer()
    _fit_scripted(trainer, classification_data, [3.0, 2.0, 2.5, 1.0], [record, stop])
    assert stop.stopped_epoch == 2 and trainer.stop_training
    last = trainer.model.get_weights()
    assert all(np.array_equal(last[k], v) for k, v in record.weights[-1].items())
    # A new fit call starts afresh: stop_training is cleared and the state reset.
    x, y = classification_data
    trainer.fit((x, y), 1, verbose=0)
    assert trainer.epoch == 4 and not trainer.stop_training


def test_early_stopping_on_nan_counts_as_no_improvement(classification_data):
    stop = gm.callbacks.EarlyStopping("val_score", patience=1)
    _fit_scripted(_trainer(), classification_data, [1.0, float("nan"), 0.5], [stop])
    assert stop.stopped_epoch == 1 and stop.best == 1.0


def test_monitor_checks_happen_before_any_training(classification_data):
    x, y = classification_data
    trainer = _trainer()
    with pytest.raises(ValueError, match=r"'val_acc' is not reported.*val_accuracy"):
        trainer.fit((x, y), 2, validation=(x, y), callbacks=[gm.callbacks.EarlyStopping("val_acc")])
    with pytest.raises(ValueError, match=r"'val_loss' is not reported.*validation=.*loss, "):
        trainer.fit((x, y), 2, callbacks=[gm.callbacks.EarlyStopping()], verbose=0)
    assert trainer.step == 0 and trainer.epoch == 0
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'min' or 'max', got 'down'"):
        gm.callbacks.EarlyStopping(mode="down")
    with pytest.raises(ValueError, match=r"patience must be >= 0, got -1"):
        gm.callbacks.EarlyStopping(patience=-1)
    with pytest.raises(TypeError, match=r"monitor must be a log key"):
        gm.callbacks.EarlyStopping(monitor=3)
    confusion = gm.callbacks.EarlyStopping("val_confusion_matrix", mode="min")
    with pytest.raises(TypeError, match=r"must be a number"):
        trainer.fit(
            (x, y),
            1,
            validation=(x, y),
            metrics=["confusion_matrix"],
            callbacks=[confusion],
            verbose=0,
        )


def test_auto_mode():
    assert resolve_mode("val_loss", "auto") == "min"
    assert resolve_mode("loss", "auto") == "min"
    assert resolve_mode("val_mae", "auto") == "min"
    for name in ("val_accuracy", "accuracy", "val_f1_macro", "val_auc_roc", "val_r2", "recall"):
        assert resolve_mode(name, "auto") == "max", name
    assert resolve_mode("val_accuracy", "min") == "min"


# -- ModelCheckpoint -----------------------------------------------------------------------


def test_checkpoint_names_keep_last_and_best_with_trainer_save(tmp_path, classification_data):
    folder = tmp_path / "run"
    values = [0.9, 0.5, 0.7, 0.4, 0.45, 0.6]
    checkpoint = gm.callbacks.ModelCheckpoint(
        folder, every_n_epochs=2, save_best=True, monitor="val_score", keep_last=2
    )
    record = WeightsPerEpoch()
    trainer = _trainer()
    _fit_scripted(trainer, classification_data, values, [record, checkpoint])
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.gmckpt",
        "epoch-004.gmckpt",
        "epoch-006.gmckpt",
    ]
    # Best at epochs 0, 1 and 3 (values 0.9, 0.5, 0.4); periodic after 2, 4 and 6 epochs,
    # each written before that epoch's best.
    assert [p.name for p in checkpoint.saved] == [
        "best.gmckpt",
        "epoch-002.gmckpt",
        "best.gmckpt",
        "epoch-004.gmckpt",
        "best.gmckpt",
        "epoch-006.gmckpt",
    ]
    assert checkpoint.best == 0.4
    best = gm.Trainer.load(folder / "best.gmckpt")
    assert best.epoch == 4
    for name, value in record.weights[3].items():
        assert np.array_equal(best.model.get_weights()[name], value), name
    latest = gm.Trainer.load(folder / "epoch-006.gmckpt")
    assert latest.epoch == 6 and len(latest.history) == 6
    assert latest.history.val_score == values


def test_checkpoint_best_compares_with_earlier_epochs_of_the_history(tmp_path, classification_data):
    saved = []
    trainer = _trainer()
    trainer.save = lambda path: saved.append(os.path.basename(path))  # records the calls only
    checkpoint = gm.callbacks.ModelCheckpoint(
        tmp_path, every_n_epochs=None, save_best=True, monitor="val_score", mode="min"
    )
    _fit_scripted(trainer, classification_data, [0.5, 0.7], [checkpoint])
    _fit_scripted(trainer, classification_data, [0.6, 0.3], [checkpoint])
    # 0.6 (epoch 2) is worse than 0.5 from the first call; 0.3 (epoch 3) is a new best.
    assert saved == ["best.gmckpt", "best.gmckpt"] and checkpoint.best == 0.3
    assert gm.callbacks.ModelCheckpoint.periodic_name(12) == "epoch-012.gmckpt"


def test_keep_last_also_prunes_checkpoints_of_an_earlier_run(tmp_path, classification_data):
    x, y = classification_data
    for number in (1, 2, 3):
        (tmp_path / f"epoch-{number:03d}.gmckpt").write_text("old")
    (tmp_path / "notes.txt").write_text("kept")
    trainer = _trainer()
    trainer.epoch = 3  # as if resumed after three epochs
    trainer.save = lambda path: open(path, "w").close()
    checkpoint = gm.callbacks.ModelCheckpoint(tmp_path, keep_last=2)
    trainer.fit((x, y), 2, callbacks=[checkpoint], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-004.gmckpt",
        "epoch-005.gmckpt",
        "notes.txt",
    ]


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"would never save"):
        gm.callbacks.ModelCheckpoint(tmp_path, every_n_epochs=None)
    with pytest.raises(ValueError, match=r"every_n_epochs must be >= 1"):
        gm.callbacks.ModelCheckpoint(tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match=r"keep_last must be >= 1"):
        gm.callbacks.ModelCheckpoint(tmp_path, keep_last=0)
    with pytest.raises(TypeError, match=r"directory must be a path, got 5"):
        gm.callbacks.ModelCheckpoint(5)


# -- loggers -------------------------------------------------------------------------------


def test_csv_and_json_loggers_hold_the_history_numbers(tmp_path, classification_data):
    x, y = classification_data
    csv_path, json_path = tmp_path / "log.csv", tmp_path / "log.json"
    loggers = [gm.callbacks.CSVLogger(csv_path), gm.callbacks.JSONLogger(json_path)]
    trainer = _trainer()
    history = trainer.fit(
        (x, y),
        3,
        validation=(x[:32], y[:32]),
        metrics=["f1_macro", "confusion_matrix"],
        callbacks=loggers,
        verbose=0,
    )
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = json.loads(json_path.read_text())
    assert len(rows) == len(records) == 3
    assert list(rows[0]) == ["epoch", *history.history]
    for epoch in range(3):
        assert int(rows[epoch]["epoch"]) == records[epoch]["epoch"] == epoch
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "val_f1_macro", "lr", "time"):
            assert float(rows[epoch][key]) == history[key][epoch], key  # exact: repr round trip
            assert records[epoch][key] == history[key][epoch], key
        matrix = history.val_confusion_matrix[epoch]
        assert json.loads(rows[epoch]["val_confusion_matrix"]) == matrix
        assert records[epoch]["val_confusion_matrix"] == matrix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "log.json"]  # no temp files


def test_loggers_append_on_resume_without_duplicating_epochs(tmp_path, classification_data):
    x, y = classification_data
    path = tmp_path / "log.json"
    first = _trainer()
    first.fit((x, y), 3, callbacks=[gm.callbacks.JSONLogger(path)], verbose=0)
    # A run resumed from the epoch-2 checkpoint logs epoch 2 again: the old record goes.
    resumed = _trainer()
    resumed.epoch = 2
    resumed.fit((x, y), 2, callbacks=[gm.callbacks.JSONLogger(path, append=True)], verbose=0)
    records = json.loads(path.read_text())
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[0]["loss"] == first.history.loss[0]
    assert records[2]["loss"] == resumed.history.loss[0]

    csv_path = tmp_path / "log.csv"
    gm.callbacks.CSVLogger(csv_path).on_epoch_end(0, {"loss": 1.5})
    logger = gm.callbacks.CSVLogger(csv_path, append=True)
    logger.on_train_begin()
    logger.on_epoch_end(1, {"loss": 0.25, "val_loss": float("nan")})
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"epoch": "0", "loss": "1.5", "val_loss": ""},
        {"epoch": "1", "loss": "0.25", "val_loss": "nan"},
    ]


def test_a_failed_write_leaves_the_previous_log_whole(tmp_path, monkeypatch):
    path = tmp_path / "log.json"
    logger = gm.callbacks.JSONLogger(path)
    logger.on_epoch_end(0, {"loss": 1.0, "val_loss": float("inf")})
    before = path.read_text()
    assert json.loads(before) == [{"epoch": 0, "loss": 1.0, "val_loss": None}]

    def killed(*args):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        logger.on_epoch_end(1, {"loss": 0.5})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["log.json"]


def test_logger_append_rejects_a_file_that_is_not_a_log(tmp_path):
    path = tmp_path / "log.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"JSONLogger cannot append to .*log.json"):
        gm.callbacks.JSONLogger(path, append=True).on_train_begin()


# -- Ctrl-C --------------------------------------------------------------------------------


class InterruptAt(gm.callbacks.Callback):
    """Sends SIGINT to this process after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch, batch, times=1):
        self.epoch, self.batch, self.times = epoch, batch, times
        self.current = None
        self.ended = False

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, batch, logs):
        if (self.current, batch) == (self.epoch, self.batch):
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)

    def on_train_end(self, logs=None):
        self.ended = True


def test_ctrl_c_stops_after_the_current_batch_and_keeps_the_trainer_usable(
    classification_data, capsys
):
    x, y = classification_data
    handler = signal.getsignal(signal.SIGINT)
    trainer, interrupt = _trainer(), InterruptAt(epoch=1, batch=2)
    history = trainer.fit((x, y), 5, validation=(x, y), callbacks=[interrupt], verbose=0)
    assert history.interrupted and interrupt.ended
    assert trainer.epoch == 1 and len(history) == 1  # the partial epoch is not recorded
    assert trainer.step == STEPS + 3  # batches 0, 1 and 2 of the second epoch ran
    assert signal.getsignal(signal.SIGINT) is handler
    err = capsys.readouterr().err
    assert "interrupted by Ctrl-C in epoch 2 after 3 step(s)" in err and len(err.splitlines()) == 1

    step = trainer.train_batch(x[:16], y[:16])
    assert np.isfinite(step.loss) and trainer.step == STEPS + 4
    history = trainer.fit((x, y), 1, verbose=0)
    assert not history.interrupted and trainer.epoch == 2 and history.epoch == [0, 1]


def test_ctrl_c_during_validation_completes_the_epoch(classification_data, capsys):
    x, y = classification_data

    class InterruptInValidation:
        name = "probe"

        def reset(self):
            pass

        def update(self, y_true, y_pred):
            pass

        def result(self):
            os.kill(os.getpid(), signal.SIGINT)
            return 0.0

    trainer = _trainer()
    history = trainer.fit(
        (x, y), 3, validation=(x, y), metrics=[InterruptInValidation()], verbose=0
    )
    assert history.interrupted and trainer.epoch == 1 and len(history) == 1
    assert "interrupted by Ctrl-C after epoch 1;" in capsys.readouterr().err


def test_a_second_ctrl_c_aborts_at_once(classification_data):
    x, y = classification_data
    handler = signal.getsignal(signal.SIGINT)
    trainer, interrupt = _trainer(), InterruptAt(epoch=0, batch=1, times=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit((x, y), 3, callbacks=[interrupt], verbose=0)
    assert not interrupt.ended
    assert signal.getsignal(signal.SIGINT) is handler
    assert trainer.step == 2
    assert np.isfinite(trainer.train_batch(x[:16], y[:16]).loss)


def test_fit_in_a_worker_thread_leaves_signal_handling_alone(classification_data):
    x, y = classification_data
    handler = signal.getsignal(signal.SIGINT)
    seen = []

    class Probe(gm.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(signal.getsignal(signal.SIGINT))

    # An error in the thread (signal.signal raises outside the main thread) leaves seen empty.
    thread = threading.Thread(
        target=lambda: _trainer().fit((x, y), 1, callbacks=[Probe()], verbose=0)
    )
    thread.start()
    thread.join(60)
    assert seen == [handler]


def test_sigint_from_outside_the_process(tmp_path):
    script = textwrap.dedent(
        """
        import json, sys, time
        import numpy as np
        import gometal as gm

        class Slow(gm.callbacks.Callback):
            def on_batch_end(self, batch, logs):
                if self.trainer.step == 3:
                    print("ready", flush=True)
                time.sleep(0.02)

        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 8)).astype(np.float32)
        y = rng.integers(0, 3, 64).astype(np.int32)
        model = gm.ModelBuilder((8,)).dense(3).build(seed=0)
        trainer = gm.Trainer(model, "cross_entropy", batch_size=8)
        history = trainer.fit((x, y), 1000, callbacks=[Slow()], verbose=0)
        trainer.train_batch(x[:8], y[:8])
        print(json.dumps({"interrupted": history.interrupted, "epochs": trainer.epoch}))
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] is True and result["epochs"] < 1000
    assert "interrupted by Ctrl-C" in err
