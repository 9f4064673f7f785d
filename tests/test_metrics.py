"""Host-side metrics against scikit-learn on random inputs, ties and edge cases.

The streaming objects, ``gm.metrics.get`` and bad input are covered in
``test_metrics_streaming.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as sk
from sklearn.exceptions import UndefinedMetricWarning as SklearnUndefined
from sklearn.preprocessing import label_binarize

import gometal as gm

SEEDS = [0, 1, 2, 3, 4]
AVERAGES = ["macro", "micro", "weighted", None]
ZERO_DIVISIONS = ["warn", 0.0, 1.0, np.nan]
RATIOS = [
    (gm.metrics.precision, sk.precision_score),
    (gm.metrics.recall, sk.recall_score),
    (gm.metrics.f1_score, sk.f1_score),
]


def class_scores(rng, n, c, ties=True):
    """Rows of class probabilities; rounding to one decimal creates many tied scores."""
    raw = rng.random((n, c))
    if ties:
        raw = np.round(raw, 1) + 1e-3 * (raw < 0.05)  # no all-zero row
    return raw / raw.sum(axis=1, keepdims=True)


def quiet(fn, *args, **kwargs):
    """Calls ``fn`` with warnings silenced (both libraries warn on zero division)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def assert_same(actual, expected, rtol=1e-12):
    np.testing.assert_allclose(
        np.asarray(actual, float),
        np.asarray(expected, float),
        rtol=rtol,
        atol=1e-12,
        equal_nan=True,
    )


# -- precision, recall, F1 -------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("zero_division", ZERO_DIVISIONS)
def test_ratios_multiclass_match_sklearn(seed, average, zero_division):
    rng = np.random.default_rng(seed)
    num_classes = 3 + seed % 3
    y = rng.integers(0, num_classes, 40)
    scores = class_scores(rng, 40, num_classes)
    scores[:, num_classes - 1] *= 0.1  # the last class is rarely predicted: zero division
    predicted = scores.argmax(axis=1)
    for ours, theirs in RATIOS:
        expected = quiet(theirs, y, predicted, average=average, zero_division=zero_division)
        assert_same(quiet(ours, y, scores, average=average, zero_division=zero_division), expected)
        # Integer predictions are labels, not scores.
        assert_same(
            quiet(ours, y, predicted, average=average, zero_division=zero_division), expected
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
@pytest.mark.parametrize("pos_label", [0, 1])
def test_ratios_binary_scores_match_sklearn(seed, threshold, pos_label):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 50)
    p = np.round(rng.random(50), 1)  # ties, including scores equal to the threshold
    predicted = (p > threshold).astype(int)
    for ours, theirs in RATIOS:
        for average in ["binary", "macro", "micro", "weighted"]:
            expected = quiet(theirs, y, predicted, average=average, pos_label=pos_label)
            got = quiet(ours, y, p, average=average, threshold=threshold, pos_label=pos_label)
            assert_same(got, expected)
            # A column vector of probabilities and 0/1 float targets (BCE's form).
            got = quiet(
                ours,
                y[:, None].astype(np.float32),
                p[:, None].astype(np.float32),
                average=average,
                threshold=threshold,
                pos_label=pos_label,
            )
            assert_same(got, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_ratios_with_labels_subset_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 30)
    predicted = rng.integers(0, 4, 30)
    for labels in ([0, 2], [3, 1], [1, 5]):  # 5 never occurs
        for ours, theirs in RATIOS:
            for average in AVERAGES:
                expected = quiet(theirs, y, predicted, average=average, labels=labels)
                assert_same(quiet(ours, y, predicted, average=average, labels=labels), expected)


def test_ratios_accept_one_hot_targets():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 25)
    scores = class_scores(rng, 25, 4, ties=False)
    one_hot = np.eye(4, dtype=np.float32)[y]
    for ours, theirs in RATIOS:
        assert_same(
            quiet(ours, one_hot, scores, average="macro"),
            quiet(theirs, y, scores.argmax(axis=1), average="macro"),
        )


# -- specificity and NPV ---------------------------------------------------------------------
def one_vs_rest_reference(y, predicted, num_classes, metric, average):
    """Specificity or NPV from scikit-learn's per-class (tn, fp, fn, tp) counts."""
    counts = sk.multilabel_confusion_matrix(y, predicted, labels=list(range(num_classes)))
    tn, fp, fn, tp = (counts[:, i, j].astype(float) for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    other = fp if metric == "specificity" else fn
    if average == "micro":
        return tn.sum() / (tn.sum() + other.sum())
    per_class = tn / (tn + other)
    if average is None:
        return per_class
    return np.average(per_class, weights=(tp + fn) if average == "weighted" else None)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("metric", ["specificity", "npv"])
def test_specificity_npv_multiclass_match_sklearn_counts(seed, average, metric):
    rng = np.random.default_rng(seed)
    num_classes = 3 + seed % 2
    y = np.r_[np.arange(num_classes), rng.integers(0, num_classes, 40)]
    scores = class_scores(rng, len(y), num_classes)
    expected = one_vs_rest_reference(y, scores.argmax(axis=1), num_classes, metric, average)
    assert_same(getattr(gm.metrics, metric)(y, scores, average=average), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_specificity_npv_binary_are_the_other_class_recall_precision(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    p = np.round(rng.random(40), 1)
    predicted = (p > 0.5).astype(int)
    assert_same(gm.metrics.specificity(y, p), sk.recall_score(y, predicted, pos_label=0))
    assert_same(gm.metrics.npv(y, p), sk.precision_score(y, predicted, pos_label=0))
    assert_same(gm.metrics.specificity(y, p, pos_label=0), sk.recall_score(y, predicted))


def test_specificity_zero_division_follows_the_argument():
    y, predicted = np.array([1, 1, 1]), np.array([1, 0, 1])  # no negatives at all
    with pytest.warns(gm.metrics.UndefinedMetricWarning, match="Specificity"):
        assert gm.metrics.specificity(y, predicted) == 0.0
    assert gm.metrics.specificity(y, predicted, zero_division=1.0) == 1.0
    assert np.isnan(gm.metrics.specificity(y, predicted, zero_division=np.nan))


# -- accuracy, confusion matrix, top-k -------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_confusion_matrix_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_classes = 2 + seed
    y = rng.integers(0, num_classes, 45)
    scores = class_scores(rng, 45, num_classes)
    predicted = scores.argmax(axis=1)
    assert_same(gm.metrics.accuracy(y, scores), sk.accuracy_score(y, predicted))
    classes = list(range(num_classes))
    np.testing.assert_array_equal(
        gm.metrics.confusion_matrix(y, scores), sk.confusion_matrix(y, predicted, labels=classes)
    )
    # Label arrays: the classes present, as scikit-learn's default.
    sparse_y, sparse_pred = 2 * y, 2 * predicted
    np.testing.assert_array_equal(
        gm.metrics.confusion_matrix(sparse_y, sparse_pred),
        sk.confusion_matrix(sparse_y, sparse_pred),
    )
    order = classes[::-1][: max(2, num_classes - 1)]
    np.testing.assert_array_equal(
        gm.metrics.confusion_matrix(y, predicted, labels=order),
        sk.confusion_matrix(y, predicted, labels=order),
    )


def test_confusion_matrix_of_binary_scores_is_two_by_two():
    y = np.array([0, 0, 0])
    cm = gm.metrics.confusion_matrix(y, np.array([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y, [0, 0, 0], labels=[0, 1]))
    with pytest.raises(ValueError, match="labels"):
        gm.metrics.confusion_matrix(y, np.array([0, 0, 0]), labels=[1, 2])


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_accuracy_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    num_classes = 4 + seed
    y = rng.integers(0, num_classes, 60)
    scores = class_scores(rng, 60, num_classes)
    scores[:5] = 1.0 / num_classes  # rows of all-equal scores
    labels = list(range(num_classes))
    for k in range(1, num_classes):
        expected = sk.top_k_accuracy_score(y, scores, k=k, labels=labels)
        assert_same(gm.metrics.top_k_accuracy(y, scores, k=k), expected)
    with pytest.warns(gm.metrics.UndefinedMetricWarning, match="k="):
        assert gm.metrics.top_k_accuracy(y, scores, k=num_classes) == 1.0


def test_top_k_accuracy_binary_scores_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    p = np.round(rng.random(40), 1)
    assert_same(gm.metrics.top_k_accuracy(y, p, k=1), sk.top_k_accuracy_score(y, p, k=1))


# -- ROC AUC and average precision -----------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_binary_auc_and_ap_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80), 1)  # about 11 distinct scores over 80 samples
    for scores in (p, p[:, None], np.c_[1 - p, p]):
        assert_same(gm.metrics.roc_auc(y, scores), sk.roc_auc_score(y, p))
        assert_same(gm.metrics.average_precision(y, scores), sk.average_precision_score(y, p))
    # pos_label=0 ranks by the score of class 0.
    assert_same(gm.metrics.roc_auc(y, p, pos_label=0), sk.roc_auc_score(1 - y, 1 - p))
    assert_same(
        gm.metrics.average_precision(y, np.c_[1 - p, p], pos_label=0),
        sk.average_precision_score(y, 1 - p, pos_label=0),
    )
    assert_same(
        gm.metrics.average_precision(y, p, pos_label=0),
        sk.average_precision_score(y, 1 - p, pos_label=0),
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", ["macro", "weighted", "micro", None])
def test_multiclass_auc_and_ap_match_sklearn(seed, average):
    rng = np.random.default_rng(seed)
    num_classes = 3 + seed % 3
    y = np.r_[np.arange(num_classes), rng.integers(0, num_classes, 60)]
    scores = class_scores(rng, len(y), num_classes)
    labels = list(range(num_classes))
    expected = sk.roc_auc_score(y, scores, multi_class="ovr", average=average, labels=labels)
    assert_same(gm.metrics.roc_auc(y, scores, average=average), expected)
    one_hot = label_binarize(y, classes=labels)
    expected = sk.average_precision_score(one_hot, scores, average=average)
    assert_same(gm.metrics.average_precision(y, scores, average=average), expected)


def test_auc_of_constant_scores():
    y = np.array([0, 1, 1, 0, 1])
    p = np.full(5, 0.3)
    assert gm.metrics.roc_auc(y, p) == sk.roc_auc_score(y, p) == 0.5
    assert_same(gm.metrics.average_precision(y, p), sk.average_precision_score(y, p))


def test_auc_single_class_is_nan_with_a_warning_as_sklearn():
    p = np.array([0.2, 0.6, 0.9])
    for y in (np.zeros(3, int), np.ones(3, int)):
        with pytest.warns(SklearnUndefined):
            expected = sk.roc_auc_score(y, p)
        with pytest.warns(gm.metrics.UndefinedMetricWarning, match="one class"):
            got = gm.metrics.roc_auc(y, p)
        assert np.isnan(got) and np.isnan(expected)
    # Average precision: no positives gives 0.0 (with a warning), only positives 1.0.
    with pytest.warns(UserWarning):
        expected = sk.average_precision_score(np.zeros(3, int), p)
    with pytest.warns(gm.metrics.UndefinedMetricWarning, match="no positive"):
        got = gm.metrics.average_precision(np.zeros(3, int), p)
    assert got == expected == 0.0
    assert gm.metrics.average_precision(np.ones(3, int), p) == 1.0
    # A class absent from y_true makes the macro ROC AUC NaN, not the weighted one.
    y = np.array([0, 1, 0, 1])
    scores = class_scores(np.random.default_rng(0), 4, 3, ties=False)
    for average in ("macro", "weighted"):
        expected = quiet(
            sk.roc_auc_score, y, scores, multi_class="ovr", average=average, labels=[0, 1, 2]
        )
        assert_same(quiet(gm.metrics.roc_auc, y, scores, average=average), expected)


# -- regression ------------------------------------------------------------------------------
REGRESSION = [
    (gm.metrics.mean_absolute_error, sk.mean_absolute_error),
    (gm.metrics.mean_squared_error, sk.mean_squared_error),
    (gm.metrics.root_mean_squared_error, sk.root_mean_squared_error),
    (gm.metrics.r2_score, sk.r2_score),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("outputs", [None, 1, 3])
@pytest.mark.parametrize("multioutput", ["uniform_average", "raw_values"])
def test_regression_matches_sklearn(seed, outputs, multioutput):
    rng = np.random.default_rng(seed)
    shape = (37,) if outputs is None else (37, outputs)
    y = rng.normal(2.0, 3.0, shape)
    pred = y + rng.normal(0.0, 1.0 + seed, shape)
    for ours, theirs in REGRESSION:
        assert_same(
            ours(y, pred, multioutput=multioutput), theirs(y, pred, multioutput=multioutput)
        )
    if outputs == 1:  # (N,) and (N, 1) are interchangeable
        for ours, theirs in REGRESSION:
            assert_same(ours(y[:, 0], pred), theirs(y[:, 0], pred[:, 0]))


def test_regression_float32_inputs():
    rng = np.random.default_rng(9)
    y = rng.normal(size=(50, 2)).astype(np.float32)
    pred = (y + rng.normal(size=(50, 2))).astype(np.float32)
    y64, pred64 = y.astype(np.float64), pred.astype(np.float64)
    for ours, theirs in REGRESSION:
        assert_same(ours(y, pred), theirs(y64, pred64))


@pytest.mark.parametrize("seed", SEEDS)
def test_nmae_is_go_metals_formula(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(20, 3))
    pred = y + 0.3 * rng.normal(size=(20, 3))
    assert_same(gm.metrics.nmae(y, pred), np.abs(pred - y).sum() / np.abs(y).sum())
    with pytest.warns(gm.metrics.UndefinedMetricWarning, match="NMAE"):
        assert np.isnan(gm.metrics.nmae(np.zeros(4), np.ones(4)))


def test_r2_edge_cases_match_sklearn():
    # A constant target: 1.0 when predicted exactly, 0.0 otherwise.
    for pred in ([1.0, 1.0, 1.0], [1.0, 2.0, 1.0]):
        assert gm.metrics.r2_score([1.0, 1.0, 1.0], pred) == sk.r2_score([1.0, 1.0, 1.0], pred)
    y = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 0.0]])
    pred = np.array([[1.0, 3.0], [5.0, 4.0], [1.0, 1.0]])
    assert_same(gm.metrics.r2_score(y, pred), sk.r2_score(y, pred))
    # One sample: undefined.
    with pytest.warns(gm.metrics.UndefinedMetricWarning, match="two samples"):
        got = gm.metrics.r2_score([1.0], [2.0])
    assert np.isnan(got) and np.isnan(quiet(sk.r2_score, [1.0], [2.0]))


# -- zero division and empty input -----------------------------------------------------------
def test_all_predictions_one_class_warn_like_sklearn():
    y = np.array([0, 1, 2, 1, 0])
    predicted = np.zeros(5, dtype=int)
    for ours, theirs in RATIOS:
        for average in ("macro", "weighted", "micro", None):
            with warnings.catch_warnings(record=True) as their_warnings:
                warnings.simplefilter("always")
                expected = theirs(y, predicted, average=average)
            with warnings.catch_warnings(record=True) as our_warnings:
                warnings.simplefilter("always")
                got = ours(y, predicted, average=average)
            assert_same(got, expected)
            # Only precision divides by zero here (classes 1 and 2 are never predicted).
            warned = [w for w in our_warnings if w.category is gm.metrics.UndefinedMetricWarning]
            assert len(warned) == sum(w.category is SklearnUndefined for w in their_warnings)
            assert len(warned) == (ours is gm.metrics.precision and average != "micro")
    # Binary, nothing predicted positive, no positive at all: every ratio is 0/0.
    y, predicted = np.zeros(4, dtype=int), np.zeros(4, dtype=int)
    for ours, theirs in RATIOS:
        for zero_division in ZERO_DIVISIONS:
            assert_same(
                quiet(ours, y, predicted, zero_division=zero_division),
                quiet(theirs, y, predicted, zero_division=zero_division),
            )


@pytest.mark.parametrize(
    ("ours", "theirs", "y", "pred"),
    [
        (gm.metrics.precision, sk.precision_score, [], []),
        (gm.metrics.f1_score, sk.f1_score, [], []),
        (gm.metrics.accuracy, sk.accuracy_score, [], []),
        (gm.metrics.confusion_matrix, sk.confusion_matrix, [], []),
        (gm.metrics.roc_auc, sk.roc_auc_score, [], np.zeros(0)),
        (gm.metrics.mean_absolute_error, sk.mean_absolute_error, np.zeros(0), np.zeros(0)),
        (gm.metrics.r2_score, sk.r2_score, np.zeros(0), np.zeros(0)),
    ],
)
def test_empty_input_raises_as_sklearn(ours, theirs, y, pred):
    with pytest.raises(ValueError):
        theirs(y, pred)
    with pytest.raises(ValueError, match="empty input"):
        ours(np.asarray(y, dtype=int) if ours is not gm.metrics.r2_score else y, pred)


@pytest.mark.parametrize(
    "call",
    [
        lambda: gm.metrics.average_precision(np.zeros(0, int), np.zeros(0)),
        lambda: gm.metrics.top_k_accuracy(np.zeros(0, int), np.zeros((0, 3)), k=1),
        lambda: gm.metrics.specificity(np.zeros(0, int), np.zeros(0, int)),
        lambda: gm.metrics.nmae(np.zeros(0), np.zeros(0)),
    ],
)
def test_empty_input_raises_for_the_other_metrics(call):
    with pytest.raises(ValueError, match="empty input"):
        call()
