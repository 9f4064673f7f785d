"""Streaming metrics (batch by batch equals one-shot), ``gm.metrics.get`` and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

import gometal as gm

M = gm.metrics
BATCH_SIZES = [1, 7, 0, 13, 2, 30]  # uneven, with an empty batch; the rest goes last


def batches(*arrays):
    """Splits arrays along the first axis into the uneven ``BATCH_SIZES`` chunks."""
    edges = np.cumsum(BATCH_SIZES)
    assert edges[-1] < len(arrays[0])
    pieces = [np.split(a, edges) for a in arrays]
    return list(zip(*pieces, strict=True))


def stream(metric, y_true, y_pred):
    metric.reset()
    for y_batch, pred_batch in batches(y_true, y_pred):
        metric.update(y_batch, pred_batch)
    return metric.result()


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def probabilities(rng, n, c):
    """float32 softmax-like rows, rounded so that scores tie, as a trainer's output."""
    raw = np.round(rng.random((n, c)), 1) + 0.05
    return (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=[0, 1, 2])
def multiclass(request):
    rng = np.random.default_rng(request.param)
    y = rng.integers(0, 4, 90).astype(np.int32)
    y[:4] = np.arange(4)
    return y, probabilities(rng, 90, 4)


@pytest.fixture(params=[0, 1, 2])
def binary(request):
    rng = np.random.default_rng(10 + request.param)
    y = rng.integers(0, 2, (90, 1)).astype(np.float32)  # BCE's 0/1 float targets
    return y, np.round(rng.random((90, 1)), 1).astype(np.float32)


CLASSIFICATION = [
    (lambda: M.Accuracy(), lambda y, p: M.accuracy(y, p)),
    (lambda: M.ConfusionMatrix(), lambda y, p: M.confusion_matrix(y, p)),
    (lambda: M.TopKAccuracy(2), lambda y, p: M.top_k_accuracy(y, p, k=2)),
    (lambda: M.AUCROC(), lambda y, p: M.roc_auc(y, p)),
    (
        lambda: M.AUCPR(average="weighted"),
        lambda y, p: M.average_precision(y, p, average="weighted"),
    ),
] + [
    (lambda c=cls, a=average: c(average=a), lambda y, p, f=fn, a=average: f(y, p, average=a))
    for cls, fn in [
        (M.Precision, M.precision),
        (M.Recall, M.recall),
        (M.F1Score, M.f1_score),
        (M.Specificity, M.specificity),
        (M.NPV, M.npv),
    ]
    for average in ["macro", "micro", "weighted", None]
]


@pytest.mark.parametrize(("make", "one_shot"), CLASSIFICATION)
def test_streaming_classification_equals_one_shot(make, one_shot, multiclass):
    y, p = multiclass
    np.testing.assert_allclose(quiet(stream, make(), y, p), quiet(one_shot, y, p), rtol=1e-12)


@pytest.mark.parametrize(("make", "one_shot"), CLASSIFICATION)
def test_streaming_binary_equals_one_shot(make, one_shot, binary):
    y, p = binary
    np.testing.assert_allclose(quiet(stream, make(), y, p), quiet(one_shot, y, p), rtol=1e-12)


def test_streaming_against_sklearn_directly(multiclass, binary):
    y, p = multiclass
    predicted = p.argmax(axis=1)
    assert stream(M.get("f1_macro"), y, p) == pytest.approx(
        sk.f1_score(y, predicted, average="macro"), rel=1e-12
    )
    np.testing.assert_array_equal(
        stream(M.ConfusionMatrix(), y, p), sk.confusion_matrix(y, predicted)
    )
    assert stream(M.get("auc_roc_weighted"), y, p) == pytest.approx(
        sk.roc_auc_score(y, p, multi_class="ovr", average="weighted"), rel=1e-12
    )
    assert stream(M.get("top_3_accuracy"), y, p) == pytest.approx(
        sk.top_k_accuracy_score(y, p, k=3), rel=1e-12
    )
    yb, pb = binary
    assert stream(M.get("precision"), yb, pb) == pytest.approx(
        sk.precision_score(yb[:, 0], pb[:, 0] > 0.5), rel=1e-12
    )
    assert stream(M.get("auc_pr"), yb, pb) == pytest.approx(
        sk.average_precision_score(yb[:, 0], pb[:, 0]), rel=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("multioutput", ["uniform_average", "raw_values"])
def test_streaming_regression_equals_sklearn(seed, multioutput):
    rng = np.random.default_rng(seed)
    y = (rng.normal(5.0, 2.0, (90, 3))).astype(np.float32)
    pred = (y + rng.normal(0.0, 1.0, (90, 3))).astype(np.float32)
    y64, pred64 = y.astype(np.float64), pred.astype(np.float64)
    pairs = [
        (M.MAE, sk.mean_absolute_error),
        (M.MSE, sk.mean_squared_error),
        (M.RMSE, sk.root_mean_squared_error),
        (M.R2, sk.r2_score),
    ]
    for cls, reference in pairs:
        got = stream(cls(multioutput=multioutput), y, pred)
        np.testing.assert_allclose(got, reference(y64, pred64, multioutput=multioutput), rtol=1e-10)
    expected = np.abs(pred64 - y64).sum() / np.abs(y64).sum()
    assert stream(M.NMAE(), y, pred) == pytest.approx(expected, rel=1e-12)


def test_streaming_r2_is_stable_for_a_large_offset():
    # Targets far from zero: a naive sum-of-squares variance would lose every digit.
    rng = np.random.default_rng(4)
    y = 1e8 + rng.normal(size=90)
    pred = y + 0.1 * rng.normal(size=90)
    assert stream(M.R2(), y, pred) == pytest.approx(sk.r2_score(y, pred), rel=1e-9)


def test_streaming_confusion_matrix_grows_with_label_inputs():
    y = np.array([0, 1, 0, 3, 3, 1, 0])
    predicted = np.array([0, 1, 1, 3, 0, 1, 0])
    metric = M.ConfusionMatrix()
    metric.update(y[:3], predicted[:3])  # only classes 0 and 1 so far
    metric.update(y[3:], predicted[3:])
    np.testing.assert_array_equal(metric.result(), sk.confusion_matrix(y, predicted))
    np.testing.assert_array_equal(metric.result(), M.confusion_matrix(y, predicted))


def test_trainer_outputs_feed_the_metrics():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 6)).astype(np.float32)
    y = rng.integers(0, 3, 70).astype(np.int32)
    model = gm.ModelBuilder(input_shape=(6,)).dense(3).build(seed=0)
    trainer = gm.Trainer(
        model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=1e-2), batch_size=16
    )
    metrics = [M.get(name) for name in ("accuracy", "recall_weighted", "auc_roc")]
    for start in range(0, 70, 32):
        proba = trainer.predict_proba(x[start : start + 32])
        for metric in metrics:
            metric.update(y[start : start + 32], proba)
    proba = trainer.predict_proba(x)
    predicted = proba.argmax(axis=1)
    assert metrics[0].result() == pytest.approx(sk.accuracy_score(y, predicted))
    assert metrics[1].result() == pytest.approx(
        quiet(sk.recall_score, y, predicted, average="weighted")
    )
    assert metrics[2].result() == pytest.approx(
        sk.roc_auc_score(y, proba.astype(np.float64), multi_class="ovr"), rel=1e-6
    )


def test_reset_forgets_earlier_batches():
    metric = M.Accuracy()
    metric.update([0, 1], [[0.9, 0.1], [0.9, 0.1]])
    metric.reset()
    metric.update([1, 1], [[0.2, 0.8], [0.9, 0.1]])
    assert metric.result() == 0.5
    empty_labels, empty_scores = np.zeros(0, int), np.zeros((0, 2))
    for fresh in (M.Accuracy(), M.AUCROC(), M.MAE(), M.TopKAccuracy(1), M.ConfusionMatrix()):
        with pytest.raises(ValueError, match="update"):
            fresh.result()
        # An empty batch adds nothing.
        if isinstance(fresh, M.MAE):
            fresh.update(np.zeros(0), np.zeros(0))
        else:
            fresh.update(empty_labels, empty_scores)
        with pytest.raises(ValueError, match="empty input"):
            fresh.result()


def test_top_k_trivial_k_warns_once_per_stream():
    metric = M.TopKAccuracy(3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            metric.update([0, 2], [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    assert [w.category for w in record] == [M.UndefinedMetricWarning]
    assert metric.result() == 1.0


# -- get -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cls", "attributes"),
    [
        ("accuracy", M.Accuracy, {}),
        ("precision", M.Precision, {"average": "binary"}),
        ("recall_macro", M.Recall, {"average": "macro"}),
        ("f1_weighted", M.F1Score, {"average": "weighted"}),
        ("specificity_micro", M.Specificity, {"average": "micro"}),
        ("npv", M.NPV, {"average": "binary"}),
        ("auc_roc", M.AUCROC, {"average": "macro"}),
        ("roc_auc_weighted", M.AUCROC, {"average": "weighted"}),
        ("auc_pr_micro", M.AUCPR, {"average": "micro"}),
        ("average_precision", M.AUCPR, {"average": "macro"}),
        ("top_5_accuracy", M.TopKAccuracy, {"k": 5}),
        ("confusion_matrix", M.ConfusionMatrix, {}),
        ("mae", M.MAE, {}),
        ("root_mean_squared_error", M.RMSE, {}),
        ("r2", M.R2, {}),
        ("nmae", M.NMAE, {}),
    ],
)
def test_get_resolves_names(name, cls, attributes):
    metric = M.get(name)
    assert type(metric) is cls and metric.name == name
    for key, value in attributes.items():
        assert getattr(metric, key) == value
    assert M.get(name) is not metric  # a fresh object each time


def test_every_listed_name_computes_its_one_shot_value():
    rng = np.random.default_rng(6)
    y_class = np.r_[0, 1, rng.integers(0, 2, 70)]
    p_class = np.round(rng.random(72), 2)
    y_reg = rng.normal(size=72)
    p_reg = y_reg + rng.normal(size=72)
    regression = {
        "mae",
        "mse",
        "rmse",
        "r2",
        "nmae",
        "mean_absolute_error",
        "mean_squared_error",
        "root_mean_squared_error",
        "r2_score",
    }
    for name in M.names():
        y, p = (y_reg, p_reg) if name in regression else (y_class, p_class)
        result = quiet(stream, M.get(name), y, p)
        assert np.all(np.isfinite(result)), name
    assert stream(M.get("npv_weighted"), y_class, p_class) == pytest.approx(
        M.npv(y_class, p_class, average="weighted")
    )


def test_get_passes_instances_and_rejects_the_rest():
    metric = M.Precision(average="macro", name="p")
    assert M.get(metric) is metric
    with pytest.raises(ValueError, match=r"unknown metric 'f2'.*f1_macro.*top_<k>_accuracy"):
        M.get("f2")
    with pytest.raises(ValueError, match="unknown metric"):
        M.get("top_0_accuracy")
    with pytest.raises(TypeError, match="instance"):
        M.get(M.Precision)
    with pytest.raises(TypeError, match="int"):
        M.get(3)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: M.precision([0, 1, 1], [0, 1]), ValueError, r"same number of samples.*\(3,\)"),
        (lambda: M.precision([0, 1], np.zeros((2, 2, 2))), ValueError, r"\(N, C\)"),
        (lambda: M.recall([0, 1], [0, 1], average="samples"), ValueError, "average must be one"),
        (lambda: M.f1_score([0, 1, 2], [0, 1, 2]), ValueError, "average='binary'"),
        (lambda: M.precision([0, 2], [0, 2]), ValueError, "pos_label=1 is not a valid label"),
        (lambda: M.precision([0, 1], [0, 1], zero_division=2), ValueError, "zero_division"),
        (lambda: M.top_k_accuracy([0], [[0.5, 0.5]], k=0), ValueError, "k must be an integer"),
        (lambda: M.top_k_accuracy([0], [[0.5, 0.5]], k=1.5), ValueError, "got 1.5"),
        (lambda: M.TopKAccuracy(-1), ValueError, "k must be an integer >= 1"),
        (lambda: M.accuracy([0, 3], [[0.2, 0.8]] * 2), ValueError, r"class 3, outside \[0, 2\)"),
        (lambda: M.accuracy([0, 2], [0.2, 0.7]), ValueError, "binary scores"),
        (lambda: M.accuracy([0.0, 0.5], [0, 1]), ValueError, "integer class labels"),
        (lambda: M.roc_auc([0, 1], [0.2, np.nan]), ValueError, "y_score contains NaN"),
        (lambda: M.accuracy(["a", "b"], [0, 1]), TypeError, "y_true has dtype"),
        (lambda: M.precision([0, 1], [[0.2, 0.8]] * 2, num_classes=3), ValueError, "columns"),
        (lambda: M.roc_auc([0, 1], [0.2, 0.7], average="binary"), ValueError, "average"),
        (lambda: M.roc_auc([0, 1], [0.2, 0.7], pos_label=2), ValueError, "pos_label"),
        (lambda: M.confusion_matrix([0, 1], [0, 1], labels=[-1]), ValueError, "non-negative"),
        (lambda: M.precision([0, 1], [0, 1], labels=[0.5]), TypeError, "labels must hold"),
        (lambda: M.precision([0, 1], [0.2, 0.7], threshold=np.nan), ValueError, "threshold"),
        (
            lambda: M.mean_squared_error(np.zeros((3, 2)), np.zeros((3, 3))),
            ValueError,
            r"same shape.*\(3, 2\).*\(3, 3\)",
        ),
        (
            lambda: M.r2_score([1.0, 2.0], [1.0, 2.0], multioutput="variance"),
            ValueError,
            "multioutput",
        ),
        (lambda: M.accuracy([0, 50_000], [0, 1]), ValueError, "50001 classes"),
        (lambda: M.Precision(average="avg"), ValueError, "average must be one"),
        (lambda: M.AUCROC(name=""), ValueError, "name"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_streams_reject_a_change_of_shape():
    auc = M.AUCROC()
    auc.update([0, 1], [[0.3, 0.7], [0.6, 0.4]])
    with pytest.raises(ValueError, match="3 score columns but earlier batches had 2"):
        auc.update([0, 2], [[0.3, 0.5, 0.2], [0.6, 0.2, 0.2]])
    regression = M.MSE()
    regression.update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="3 outputs per sample but earlier batches had 2"):
        regression.update(np.zeros((2, 3)), np.zeros((2, 3)))
    confusion = M.Precision(average="macro")
    confusion.update([0, 1], [[0.3, 0.7], [0.6, 0.4]])
    with pytest.raises(ValueError, match="covers 3 classes but earlier batches had 2"):
        confusion.update([0, 2], [[0.3, 0.5, 0.2], [0.6, 0.2, 0.2]])
