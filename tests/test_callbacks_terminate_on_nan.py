"""``gm.callbacks.TerminateOnNaN``: a learning rate that diverges stops ``fit`` right after
the first non-finite batch loss, as Keras's does."""

from __future__ import annotations

import math

import numpy as np

import gometal as gm


class BatchLosses(gm.callbacks.Callback):
    """Records every batch's (epoch, batch, loss)."""

    def __init__(self):
        self.seen = []
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs):
        self.seen.append((self.epoch, batch, logs["loss"]))


def _data():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((64, 8)).astype(np.float32)
    y = (x @ gen.standard_normal((8, 2)) * 10).astype(np.float32)
    return x, y


def _fit(lr, callbacks, epochs=6):
    model = gm.ModelBuilder((8,)).dense(16).relu().dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=lr), batch_size=8)
    recorder = BatchLosses()
    history = trainer.fit(_data(), epochs=epochs, callbacks=[*callbacks, recorder], verbose=0)
    return trainer, history, recorder.seen


def test_a_diverging_run_stops_at_the_batch_of_the_first_non_finite_loss():
    terminate = gm.callbacks.TerminateOnNaN()
    trainer, history, seen = _fit(0.5, [terminate])
    first_bad = next((epoch, batch) for epoch, batch, loss in seen if not math.isfinite(loss))
    assert (terminate.stopped_epoch, terminate.stopped_batch) == first_bad
    assert trainer.stop_training
    assert len(history.loss) == first_bad[0] + 1 < 6
    assert seen[-1][:2] == first_bad  # no batch ran after it


def test_without_it_the_same_run_goes_on_and_a_stable_one_is_never_stopped():
    _, history, seen = _fit(0.5, [], epochs=3)
    assert len(history.loss) == 3 and not all(math.isfinite(loss) for *_, loss in seen)

    terminate = gm.callbacks.TerminateOnNaN()
    trainer, history, seen = _fit(1e-3, [terminate], epochs=3)
    assert all(math.isfinite(loss) for *_, loss in seen)
    assert len(history.loss) == 3 and not trainer.stop_training
    assert terminate.stopped_epoch is None and terminate.stopped_batch is None


def test_it_reports_the_batch_when_verbose(capsys):
    model = gm.ModelBuilder((8,)).dense(2).build(seed=0)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=5.0), batch_size=8)
    trainer.fit(_data(), epochs=4, callbacks=[gm.callbacks.TerminateOnNaN()], verbose=1)
    assert "the loss is" in capsys.readouterr().out
