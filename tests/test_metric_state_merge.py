"""Streaming metrics hand over their accumulated state and merge others' states.

A set split three ways unevenly (as a distributed evaluation's ranks hold it) is fed part
by part to separate metrics; their states merged into one metric must give scikit-learn's
value on the whole set, in any grouping, and the same as one metric fed every batch.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn import metrics as sk

import gometal as gm

CLASSES = 4
# Uneven parts, each fed in uneven batches: (start, stop) of the parts, and a batch size.
PARTS = [(0, 7), (7, 38), (38, 61)]
BATCH = 5


def classification_set(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, 61)
    logits = rng.normal(size=(61, CLASSES))
    logits[np.arange(61), labels] += 1.0  # better than chance, worse than perfect
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def regression_set(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.normal(3.0, 2.0, size=(61, 2))
    return targets, targets + rng.normal(0.0, 0.7, size=(61, 2))


def fed(metric, y_true: np.ndarray, y_pred: np.ndarray):
    """``metric``, reset and fed ``y_true``/``y_pred`` in batches of ``BATCH``."""
    metric.reset()
    for start in range(0, len(y_true), BATCH):
        metric.update(y_true[start : start + BATCH], y_pred[start : start + BATCH])
    return metric


def part_states(make, y_true, y_pred) -> list[dict]:
    """The state of a metric fed each part alone, sent through pickle as ranks send it."""
    states = [fed(make(), y_true[a:b], y_pred[a:b]).state() for a, b in PARTS]
    return [pickle.loads(pickle.dumps(state)) for state in states]


def merged(make, states: list[dict]):
    metric = make()
    for state in states:
        metric.merge_state(state)
    return metric


labels, probabilities = classification_set()
predicted = probabilities.argmax(axis=1)
targets, predictions = regression_set()
binary_labels = (labels >= 2).astype(np.int64)
binary_scores = probabilities[:, 2:].sum(axis=1)

# (factory, y_true, y_pred, scikit-learn's value on the whole set)
CASES = {
    "accuracy": (gm.metrics.Accuracy, labels, probabilities, sk.accuracy_score(labels, predicted)),
    **{
        f"{name}_{average}": (
            lambda cls=cls, average=average: cls(average=average),
            labels,
            probabilities,
            function(labels, predicted, average=average),
        )
        for name, cls, function in [
            ("precision", gm.metrics.Precision, sk.precision_score),
            ("recall", gm.metrics.Recall, sk.recall_score),
            ("f1", gm.metrics.F1Score, sk.f1_score),
        ]
        for average in ("macro", "micro")
    },
    "confusion_matrix": (
        gm.metrics.ConfusionMatrix,
        labels,
        probabilities,
        sk.confusion_matrix(labels, predicted),
    ),
    "top_2_accuracy": (
        lambda: gm.metrics.TopKAccuracy(2),
        labels,
        probabilities,
        sk.top_k_accuracy_score(labels, probabilities, k=2),
    ),
    "auc_roc": (
        gm.metrics.AUCROC,
        labels,
        probabilities,
        sk.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"),
    ),
    "auc_roc_binary": (
        gm.metrics.AUCROC,
        binary_labels,
        binary_scores,
        sk.roc_auc_score(binary_labels, binary_scores),
    ),
    "auc_pr_binary": (
        gm.metrics.AUCPR,
        binary_labels,
        binary_scores,
        sk.average_precision_score(binary_labels, binary_scores),
    ),
    "mse": (gm.metrics.MSE, targets, predictions, sk.mean_squared_error(targets, predictions)),
    "mae": (gm.metrics.MAE, targets, predictions, sk.mean_absolute_error(targets, predictions)),
    "r2": (gm.metrics.R2, targets, predictions, sk.r2_score(targets, predictions)),
    "r2_raw": (
        lambda: gm.metrics.R2(multioutput="raw_values"),
        targets,
        predictions,
        sk.r2_score(targets, predictions, multioutput="raw_values"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_part_states_give_scikit_learns_value_on_the_whole_set(case):
    make, y_true, y_pred, expected = CASES[case]
    result = merged(make, part_states(make, y_true, y_pred)).result()
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_grouping_of_the_merges_gives_one_passs_result(case):
    make, y_true, y_pred, _ = CASES[case]
    one_pass = fed(make(), y_true, y_pred).result()
    first, second, third = part_states(make, y_true, y_pred)
    # (first + second) + third, first + (second + third), and onto a metric fed the first part.
    left = merged(make, [merged(make, [first, second]).state(), third])
    right = merged(make, [first, merged(make, [second, third]).state()])
    onto_fed = fed(make(), y_true[: PARTS[0][1]], y_pred[: PARTS[0][1]])
    onto_fed.merge_state(second)
    onto_fed.merge_state(third)
    for metric in (left, right, onto_fed):
        np.testing.assert_allclose(metric.result(), one_pass, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_empty_state_adds_nothing_and_a_state_is_a_copy(case):
    make, y_true, y_pred, expected = CASES[case]
    metric = fed(make(), y_true, y_pred)
    state = metric.state()
    metric.merge_state(make().state())
    np.testing.assert_allclose(metric.result(), expected, rtol=1e-12, atol=1e-12)
    metric.reset()
    metric.merge_state(state)  # the reset did not clear the handed-over state
    np.testing.assert_allclose(metric.result(), expected, rtol=1e-12, atol=1e-12)
    empty = make()
    empty.merge_state(make().state())
    with pytest.raises(ValueError, match="call update"):
        empty.result()


def test_confusion_states_grow_to_the_largest_class_as_update_does():
    # Integer predictions fix no class count: the parts see classes up to 1, 3 and 2.
    y_true = np.array([0, 1, 1, 3, 0, 2, 2, 1])
    y_pred = np.array([0, 1, 0, 3, 2, 2, 1, 1])
    states = []
    for part in (slice(0, 3), slice(3, 5), slice(5, 8)):
        metric = gm.metrics.ConfusionMatrix()
        metric.update(y_true[part], y_pred[part])
        states.append(metric.state())
    assert [s["counts"].shape for s in states] == [(2, 2), (4, 4), (3, 3)]
    result = merged(gm.metrics.ConfusionMatrix, states).result()
    np.testing.assert_array_equal(result, sk.confusion_matrix(y_true, y_pred))


def test_states_are_plain_arrays_and_ints():
    for make, y_true, y_pred, _ in CASES.values():
        state = fed(make(), y_true, y_pred).state()
        for key, value in state.items():
            assert isinstance(value, (np.ndarray, int, str, tuple, type(None))), key


def test_a_state_of_another_metric_or_other_settings_is_refused():
    accuracy = fed(gm.metrics.Accuracy(), labels, probabilities)
    top_2 = fed(gm.metrics.TopKAccuracy(2), labels, probabilities)
    with pytest.raises(ValueError, match="expected the state of Accuracy.*got the state of Top"):
        accuracy.merge_state(top_2.state())
    with pytest.raises(ValueError, match="expected the state of Precision.*got the state of F1"):
        gm.metrics.Precision(average="macro").merge_state(gm.metrics.F1Score().state())
    with pytest.raises(ValueError, match=r"settings \(3, 0.5\).*settings \(2, 0.5\)"):
        gm.metrics.TopKAccuracy(3).merge_state(top_2.state())
    with pytest.raises(ValueError, match=r"settings \(0.5, None\).*settings \(0.3, None\)"):
        gm.metrics.Accuracy().merge_state(gm.metrics.Accuracy(threshold=0.3).state())
    with pytest.raises(TypeError, match=r"accuracy.merge_state: expected a dict .*'counts'"):
        gm.metrics.Accuracy().merge_state([[1, 0], [0, 1]])
    with pytest.raises(TypeError, match="'hits'"):
        gm.metrics.TopKAccuracy(2).merge_state({"metric": "TopKAccuracy", "settings": (2, 0.5)})


def test_a_state_of_the_wrong_shape_or_values_is_refused():
    state = fed(gm.metrics.Accuracy(), labels, probabilities).state()
    with pytest.raises(ValueError, match=r"square integer matrix; got int64 of shape \(2, 4\)"):
        gm.metrics.Accuracy().merge_state({**state, "counts": state["counts"][:2]})
    with pytest.raises(ValueError, match="square integer matrix; got float64"):
        gm.metrics.Accuracy().merge_state({**state, "counts": state["counts"] * 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        gm.metrics.Accuracy().merge_state({**state, "counts": -state["counts"]})
    four_classes = fed(gm.metrics.Accuracy(), labels, probabilities)
    three = fed(gm.metrics.Accuracy(), labels[labels < 3], probabilities[labels < 3, :3])
    with pytest.raises(ValueError, match="this state covers 3 classes but earlier batches had 4"):
        four_classes.merge_state(three.state())
    top = gm.metrics.TopKAccuracy(2).state()
    with pytest.raises(ValueError, match="0 <= hits <= count; got hits=5, count=3"):
        gm.metrics.TopKAccuracy(2).merge_state({**top, "hits": 5, "count": 3})
    mse = fed(gm.metrics.MSE(), targets, predictions)
    one_output = fed(gm.metrics.MSE(), targets[:, :1], predictions[:, :1]).state()
    with pytest.raises(ValueError, match=r"\(1,\) outputs per sample but earlier batches had"):
        mse.merge_state(one_output)
    with pytest.raises(ValueError, match="equal-length sums"):
        mse.merge_state({**one_output, "abs_true": np.zeros(2)})
    auc = fed(gm.metrics.AUCROC(), labels, probabilities)
    binary = fed(gm.metrics.AUCROC(), binary_labels, binary_scores).state()
    with pytest.raises(ValueError, match="1 score column but earlier batches had 4"):
        auc.merge_state(binary)
    with pytest.raises(ValueError, match=r"labels \(61,\) and scores \(60, 4\)"):
        auc.merge_state({**auc.state(), "scores": probabilities[:60]})


def test_a_distributed_evaluation_merges_states_and_pools_a_users_metric(tmp_path):
    from distributed_scripts.replica_models import classification_data, classifier
    from test_distributed import mpirun, ran

    ranks = 3
    ran(mpirun("metric_states.py", ranks, str(tmp_path)))
    results = [
        json.loads((tmp_path / f"rank{rank}.json").read_text(encoding="utf-8"))
        for rank in range(ranks)
    ]
    # Shards of 17, 17 and 16 samples at batch 8: 3, 3 and 2 batches.
    own_batches = [3, 3, 2]
    for rank, result in enumerate(results):
        fed_here = result.pop("batches_fed")
        assert result == results[0], rank  # every rank the same numbers, bit for bit
        # The merging metric saw only its rank's batches; the user's every rank's, once.
        assert fed_here == {"counted_top_2": own_batches[rank], "user": sum(own_batches)}
    x, y, _ = classification_data()
    probabilities = gm.Trainer(classifier(seed=1), "cross_entropy").predict_proba(x)
    probabilities = probabilities.astype(np.float64)
    predicted = probabilities.argmax(axis=1)
    expected = {
        "f1_micro": sk.f1_score(y, predicted, average="micro"),
        "recall_macro": sk.recall_score(y, predicted, average="macro"),
        "auc_roc": sk.roc_auc_score(y, probabilities, multi_class="ovr"),
        "counted_top_2": sk.top_k_accuracy_score(y, probabilities, k=2),
        "mean_confidence": probabilities.max(axis=1).mean(),
    }
    for key, value in expected.items():
        assert results[0][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert results[0]["confusion_matrix"] == sk.confusion_matrix(y, predicted).tolist()
