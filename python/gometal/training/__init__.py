"""``gometal.training``: the ``fit`` loop, ``History``, callbacks and evaluation with metrics.

``Trainer.fit`` and ``Trainer.evaluate`` delegate here. ``gm.callbacks`` is
``gometal.training.callbacks``.

Example:
    >>> history = trainer.fit((x, y), epochs=5, validation=(xv, yv))  # doctest: +SKIP
    >>> history.val_accuracy[-1]  # doctest: +SKIP
"""

from . import callbacks
from .array_loader import ArrayLoader, epoch_permutation
from .base import Callback
from .callbacks import CSVLogger, EarlyStopping, JSONLogger, ModelCheckpoint
from .evaluation import evaluate, resolve_metrics
from .fit import fit
from .history import History

__all__ = [
    "ArrayLoader",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "JSONLogger",
    "ModelCheckpoint",
    "callbacks",
    "epoch_permutation",
    "evaluate",
    "fit",
    "resolve_metrics",
]
