"""Each rank evaluates its shard of an uneven set; results must pool to the whole set's.

Writes ``rank<r>.json``: ``evaluate`` on arrays, on a padded training ``ArrayLoader``, with
sample weights, and after ``fit`` (and its last validation), each with F1 and AUC; and
``rank<r>.npz``: the weights after ``fit``.

Usage: mpirun -n N python sharded_evaluation.py OUT_DIR
"""

from __future__ import annotations

import json
import sys

import numpy as np
from replica_models import classification_data, classifier

import gometal as gm

out_dir = sys.argv[1]
gm.set_num_threads(1)
job = gm.distributed.init()
METRICS = ["f1_macro", "auc_roc", "precision_macro"]
x, y, weights = classification_data()
# Every rank starts from rank 0's weights (seed 1), whatever it built.
trainer = gm.Trainer(
    classifier(seed=1 + job.rank), "cross_entropy", gm.optim.Adam(0.03), batch_size=8
)
# A trainer that is not distributed keeps its own weights: it evaluates the whole set alone.
alone = gm.Trainer(classifier(seed=1 + job.rank), "cross_entropy", distributed=False)
results = {
    "alone": alone.evaluate(x, y, batch_size=8, metrics=METRICS),
    "arrays": trainer.evaluate(x, y, batch_size=8, metrics=METRICS),
    "weighted": trainer.evaluate(x, y, batch_size=8, metrics=METRICS, sample_weight=weights),
    "padded_loader": trainer.evaluate(
        gm.training.ArrayLoader(x, y, batch_size=8, seed=5), metrics=METRICS
    ),
}


class LastEpochBatches(gm.callbacks.Callback):
    """This rank's (loss, samples) of each batch of the last epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = []

    def on_batch_end(self, batch, logs=None):
        self.batches.append((logs["loss"], logs["size"]))


batches = LastEpochBatches()
history = trainer.fit(
    (x, y),
    epochs=4,
    batch_size=8,
    seed=4,
    verbose=0,
    validation=(x, y),
    metrics=METRICS,
    callbacks=[batches],
)
results["last_epoch_batches"] = batches.batches
results["after_fit"] = trainer.evaluate(x, y, batch_size=8, metrics=METRICS)
results["validation"] = {key: values[-1] for key, values in history.history.items()}
np.savez(f"{out_dir}/rank{job.rank}.npz", **trainer.model.get_weights())
with open(f"{out_dir}/rank{job.rank}.json", "w", encoding="utf-8") as file:
    json.dump({"shard_count": gm.training.ArrayLoader(x, y).shard_count, **results}, file)
