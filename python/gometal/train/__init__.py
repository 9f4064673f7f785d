"""The train layer: the ``Trainer``, losses, optimizers, schedulers, metrics, mixed
precision, and the ``fit`` loop with its ``History``, callbacks and evaluation.

``Trainer.fit`` and ``Trainer.evaluate`` delegate to ``fit`` and ``evaluate`` here. Those,
the callbacks, the schedulers, checkpoints (``gometal.io``) and plots (``gometal.viz``) use
a trainer only through ``TrainingSession`` (``session.py``), which ``Trainer`` implements;
``gm.callbacks`` is ``gometal.train.callbacks`` (``gm.training`` is this package). This
layer imports only the nn, graph and base layers.

Example:
    >>> history = trainer.fit((x, y), epochs=5, validation=(xv, yv))  # doctest: +SKIP
    >>> history.val_accuracy[-1]  # doctest: +SKIP
"""

from . import callbacks, losses, metrics, optim, schedulers
from .array_loader import ArrayLoader, epoch_permutation
from .callback_base import Callback
from .callbacks import CSVLogger, EarlyStopping, JSONLogger, ModelCheckpoint
from .evaluation import evaluate, resolve_metrics
from .fit import fit
from .history import History
from .session import BatchEvaluation, SessionState, TrainingSession
from .trainer import StepResult, Trainer

__all__ = [
    "ArrayLoader",
    "BatchEvaluation",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "JSONLogger",
    "ModelCheckpoint",
    "SessionState",
    "StepResult",
    "Trainer",
    "TrainingSession",
    "callbacks",
    "epoch_permutation",
    "evaluate",
    "fit",
    "losses",
    "metrics",
    "optim",
    "resolve_metrics",
    "schedulers",
]
