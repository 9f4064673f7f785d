"""Sharded evaluation under mpirun: each rank evaluates its exact shard of an uneven set,
and the pooled loss, accuracy and metrics are the whole set's on every rank.

The references are one process's evaluation of the whole set and, independently of
gometal's metrics, scikit-learn's F1, precision and ROC AUC and NumPy's cross entropy on
that process's predicted probabilities.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, roc_auc_score

import gometal as gm
from distributed_scripts.replica_models import CLASSES, classification_data, classifier
from gometal.train.evaluation_sums import EvaluationSums, gather_from_ranks, pooled_over_ranks
from gometal.train.sharding import shard_length, shard_positions
from test_distributed import mpirun, ran

METRICS = ["f1_macro", "auc_roc", "precision_macro"]
RANKS = 3


def independent_reference(weights: dict[str, np.ndarray], sample_weight=None) -> dict:
    """Loss, accuracy and metrics from NumPy and scikit-learn on one process's outputs."""
    model = classifier(seed=1)
    model.set_weights(weights)
    trainer = gm.Trainer(model, "cross_entropy", "adam")
    x, y, _ = classification_data()
    probabilities = trainer.predict_proba(x).astype(np.float64)
    losses = -np.log(probabilities[np.arange(len(y)), y])
    w = np.ones(len(y)) if sample_weight is None else sample_weight.astype(np.float64)
    predicted = probabilities.argmax(axis=1)
    return {
        "loss": float((losses * w).sum() / len(y)),
        "accuracy": float((predicted == y).mean()),
        "f1_macro": f1_score(y, predicted, average="macro"),
        "precision_macro": precision_score(y, predicted, average="macro"),
        "auc_roc": roc_auc_score(y, probabilities, multi_class="ovr", average="macro"),
    }


def assert_matches(got: dict, expected: dict, context: str) -> None:
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), f"{context}: {key}"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded_evaluation")
    ran(mpirun("sharded_evaluation.py", RANKS, str(out)))
    results = []
    for rank in range(RANKS):
        with open(out / f"rank{rank}.json", encoding="utf-8") as file:
            results.append(json.load(file))
    return results, [dict(np.load(out / f"rank{r}.npz")) for r in range(RANKS)]


def test_every_rank_gets_the_whole_sets_numbers_bit_for_bit(ranks):
    results, _ = ranks
    assert results[0]["shard_count"] == RANKS
    for rank in range(1, RANKS):
        mine = {k: results[rank][k] for k in ("validation", "last_epoch_batches", "alone")}
        assert results[rank] == {**results[0], **mine}
        for key, value in results[0]["validation"].items():
            if key != "time":  # each rank's own clock
                assert results[rank]["validation"][key] == value, (rank, key)


def test_the_training_loss_fit_logs_pools_every_ranks_batches(ranks):
    results, _ = ranks
    # Each rank's batches of the last epoch, loss x size summed over ranks, over all sizes.
    batches = [b for r in results for b in r["last_epoch_batches"]]
    assert sorted(size for _, size in batches) == [1] * 3 + [8] * 6  # 17 padded shards of 51
    pooled = sum(loss * size for loss, size in batches) / sum(size for _, size in batches)
    assert results[0]["validation"]["loss"] == pytest.approx(pooled, rel=1e-12)
    assert results[0]["validation"]["loss"] != pytest.approx(
        sum(loss * size for loss, size in results[0]["last_epoch_batches"]) / 17, rel=1e-9
    )


def test_uneven_shards_pool_to_one_processs_evaluation(ranks):
    results, _ = ranks
    x, y, weights = classification_data()
    one = gm.Trainer(classifier(seed=1), "cross_entropy", "adam")
    whole = one.evaluate(x, y, batch_size=8, metrics=METRICS)
    # Shards of 17, 17 and 16 samples: batches of 8, 8, 1 / 8, 8, 1 / 8, 8 across ranks.
    assert [shard_length(len(y), r, RANKS, pad=False) for r in range(RANKS)] == [17, 17, 16]
    for key in ("arrays", "padded_loader"):
        assert_matches(results[0][key], whole, key)
    reference = independent_reference(classifier(seed=1).get_weights())
    assert_matches(results[0]["arrays"], reference, "arrays against sklearn")
    # A training loader's padding (one repeated sample here) is not counted.
    assert_matches(results[0]["padded_loader"], reference, "padded loader against sklearn")
    weighted = independent_reference(classifier(seed=1).get_weights(), weights)
    assert_matches(results[0]["weighted"], {"loss": weighted["loss"]}, "weighted")


def test_validation_inside_fit_pools_over_the_ranks(ranks):
    results, weights = ranks
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
    reference = independent_reference(weights[0])
    assert_matches(results[0]["after_fit"], reference, "after fit")
    validation = {k[4:]: v for k, v in results[0]["validation"].items() if k.startswith("val_")}
    assert set(validation) == {"loss", "accuracy", *METRICS}
    assert_matches(validation, reference, "fit's validation")
    # The model learned something, so the comparison is not between chance scores.
    assert reference["accuracy"] > 1.5 / CLASSES


def test_exact_shards_cover_every_sample_once_and_padded_ones_match_training():
    order = np.random.default_rng(0).permutation(11)
    exact = [shard_positions(order, r, 3, pad=False) for r in range(3)]
    assert sorted(np.concatenate(exact).tolist()) == list(range(11))
    padded = [shard_positions(order, r, 3, pad=True) for r in range(3)]
    assert [len(p) for p in padded] == [4, 4, 4]
    for rank in range(3):
        # The exact shard is the padded one less its repeats of the order's start.
        assert padded[rank][: len(exact[rank])].tolist() == exact[rank].tolist()


def test_outside_a_job_sums_pool_to_themselves():
    sums = EvaluationSums(loss_sum=3.0, seen=4)
    assert gather_from_ranks({"a": 1}) == [{"a": 1}]
    assert pooled_over_ranks(sums) == sums
    loader = gm.training.ArrayLoader(np.zeros((5, 1)), np.zeros(5), batch_size=2)
    assert loader.shard_count == 1 and len(list(loader.iterate(pad_shards=False))) == 3
    with pytest.raises(TypeError, match="pad_shards must be True or False, got 'no'"):
        gm.training.ArrayLoader(np.zeros((5, 1)), np.zeros(5), pad_shards="no")


def test_a_trainer_that_is_not_distributed_evaluates_the_whole_set_alone(ranks):
    results, _ = ranks
    x, y, _ = classification_data()
    for rank, result in enumerate(results):
        one = gm.Trainer(classifier(seed=1 + rank), "cross_entropy")
        expected = one.evaluate(x, y, batch_size=8, metrics=METRICS)
        assert result["alone"] == pytest.approx(expected, rel=1e-6)
    assert results[0]["alone"]["loss"] != results[1]["alone"]["loss"]


def test_ranks_gather_values_of_their_own_sizes_and_fixed_shape_arrays(tmp_path):
    ran(mpirun("gathered_values.py", RANKS, str(tmp_path)))
    expected_values = [
        {"rank": r, "values": np.arange(1000 * r + 1) / 7, "name": "r" * r} for r in range(RANKS)
    ]
    expected_fixed = np.array([[[r, -r], [2**40 + r, 5]] for r in range(RANKS)], np.int64)
    for rank in range(RANKS):
        with open(tmp_path / f"gathered{rank}.pkl", "rb") as file:
            gathered = pickle.load(file)
        assert gathered["fixed"].dtype == np.int64
        np.testing.assert_array_equal(gathered["fixed"], expected_fixed)
        assert len(gathered["values"]) == RANKS
        for got, expected in zip(gathered["values"], expected_values, strict=True):
            assert got.keys() == expected.keys()
            assert (got["rank"], got["name"]) == (expected["rank"], expected["name"])
            np.testing.assert_array_equal(got["values"], expected["values"])
