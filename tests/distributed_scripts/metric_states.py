"""Each rank evaluates its shard of an uneven set with metrics that merge their states and
a user's metric without one; writes ``rank<r>.json`` with the results and how many
batches each metric was fed on this rank.

Usage: mpirun -n N python metric_states.py OUT_DIR
"""

from __future__ import annotations

import json
import sys

import numpy as np
from replica_models import classification_data, classifier

import gometal as gm


class CountedTopTwo(gm.metrics.TopKAccuracy):
    """Top-2 accuracy that counts the batches fed to it (never reset)."""

    def __init__(self) -> None:
        self.batches_fed = 0
        super().__init__(2, name="counted_top_2")

    def update(self, y_true, y_pred) -> None:
        self.batches_fed += 1
        super().update(y_true, y_pred)


class MeanConfidence:
    """A user's metric with no state: the mean of the largest probability per sample."""

    name = "mean_confidence"

    def __init__(self) -> None:
        self.batches_fed = 0

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, y_true, y_pred) -> None:
        self.batches_fed += 1
        self.total += float(np.asarray(y_pred, np.float64).max(axis=1).sum())
        self.count += len(y_pred)

    def result(self) -> float:
        return self.total / self.count


out_dir = sys.argv[1]
gm.set_num_threads(1)
job = gm.distributed.init()
x, y, _ = classification_data()
trainer = gm.Trainer(classifier(seed=1), "cross_entropy", "adam")
counted, confidence = CountedTopTwo(), MeanConfidence()
metrics = ["f1_micro", "recall_macro", "confusion_matrix", "auc_roc", counted, confidence]
results = trainer.evaluate(x, y, batch_size=8, metrics=metrics)
results["confusion_matrix"] = results["confusion_matrix"].tolist()
results["batches_fed"] = {"counted_top_2": counted.batches_fed, "user": confidence.batches_fed}
with open(f"{out_dir}/rank{job.rank}.json", "w", encoding="utf-8") as file:
    json.dump(results, file)
