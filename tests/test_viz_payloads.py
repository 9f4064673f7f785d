"""gometal.viz payloads: the shipped schema, validation, every builder's statistics against
scikit-learn / SciPy / NumPy, and rendering (figures and the offline dashboard)."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import numpy as np
import plotly.graph_objects as go
import pytest
import scipy.stats
from plotly.offline import get_plotlyjs
from sklearn import metrics as skm
from sklearn.datasets import make_blobs, make_classification, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.inspection import partial_dependence as sk_partial_dependence
from sklearn.inspection import permutation_importance as sk_permutation_importance
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import learning_curve as sk_learning_curve
from sklearn.model_selection import validation_curve as sk_validation_curve
from sklearn.tree import DecisionTreeClassifier

from gometal.viz import payload as payload_module
from gometal.viz import plots
from gometal.viz.payload import (
    PLOT_TYPES,
    load_schema,
    make_payload,
    point,
    series,
    validate_payload,
)
from gometal.viz.render import dashboard_html, to_figure

GO_METAL_PLOT_TYPES = {
    "training_curves", "learning_rate_schedule", "roc_curve", "precision_recall",
    "confusion_matrix", "parameter_distribution", "gradient_histogram",
    "activation_pattern", "regression_scatter", "residual_plot", "qq_plot",
    "feature_importance", "learning_curve", "validation_curve", "prediction_interval",
    "feature_correlation", "partial_dependence",
}  # fmt: skip


def check(payload: dict) -> dict:
    """Validates with jsonschema directly and through a strict JSON round trip."""
    jsonschema.validate(payload, load_schema(), cls=jsonschema.Draft202012Validator)
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    return payload


def xy(payload: dict, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    data = payload["series"][index]["data"]
    return np.array([p["x"] for p in data]), np.array([p["y"] for p in data])


# -- schema and validation ------------------------------------------------------------------
def test_schema_is_valid_draft_2020_12_and_lists_every_plot_type():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(PLOT_TYPES) == GO_METAL_PLOT_TYPES
    # go-metal's Go client leaves out an empty "metrics" map (omitempty).
    assert set(schema["required"]) == {
        "plot_type", "title", "timestamp", "model_name", "series", "config"
    }  # fmt: skip


def _good() -> dict:
    return make_payload("roc_curve", "t", [series("a", "line", [point(0, 0), point(1, 1)])])


BAD_CASES = [
    (lambda p: p.pop("title"), "missing the required key 'title'"),
    (lambda p: p.update(plot_type="pie"), "plot_type"),
    (lambda p: p["series"][0].update(type="pie"), "series[0].type"),
    (lambda p: p["series"][0]["data"][1].pop("y"), "series[0].data[1]"),
    (lambda p: p["series"][0]["data"][0].update(x=[1, 2]), "series[0].data[0].x"),
    (lambda p: p.update(metrics=[1]), "metrics"),
    (lambda p: p["series"][0].pop("data"), "'data'"),
    (lambda p: p["series"][0].update(style=[1]), "series[0].style"),
    (lambda p: p.update(timestamp=5), "timestamp"),
    (lambda p: p["config"].update(show_legend="yes"), "config.show_legend"),
    (lambda p: p["config"].update(width=1.5), "config.width"),
    (lambda p: p["series"][0]["data"][0].update(color=3), "series[0].data[0].color"),
]


@pytest.mark.parametrize(("breaker", "named"), BAD_CASES)
@pytest.mark.parametrize("with_jsonschema", [True, False])
def test_validate_payload_names_the_problem(breaker, named, with_jsonschema, monkeypatch):
    if not with_jsonschema:
        monkeypatch.setattr(payload_module, "_validator", lambda: None)
    bad = _good()
    breaker(bad)
    with pytest.raises(ValueError, match=re.escape(named)):
        validate_payload(bad)
    # The plain rules and the shipped schema agree that it is invalid.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_schema(), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("with_jsonschema", [True, False])
def test_validate_payload_lists_every_problem(with_jsonschema, monkeypatch):
    if not with_jsonschema:
        monkeypatch.setattr(payload_module, "_validator", lambda: None)
    bad = _good()
    del bad["title"], bad["timestamp"]
    bad["series"][0]["type"] = "pie"
    bad["series"][0]["data"][1].pop("y")
    with pytest.raises(ValueError) as caught:
        validate_payload(bad)
    message = str(caught.value)
    assert "payload is missing the required keys 'title' and 'timestamp'" in message
    assert "payload.series[0].type must be one of" in message
    assert "payload.series[0].data[1] is missing the required key 'y'" in message


def test_validate_payload_rejects_non_finite_numbers_and_non_objects():
    bad = _good()
    bad["metrics"]["auc"] = math.nan
    with pytest.raises(ValueError, match=r"payload\.metrics\.auc must be a finite number"):
        validate_payload(bad)
    with pytest.raises(ValueError, match="must be a JSON object"):
        validate_payload([1, 2])
    validate_payload(check(_good()))


def test_series_rejects_unknown_type():
    with pytest.raises(ValueError, match="series type must be one of"):
        series("a", "pie", [])


# -- classification ---------------------------------------------------------------------------
def test_binary_roc_and_pr_match_sklearn_with_ties(rng):
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes many ties
    fpr, tpr, auc = plots.binary_roc_curve(y, score)
    ref_fpr, ref_tpr, _ = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert auc == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)

    recall, precision, ap = plots.binary_pr_curve(y, score)
    ref_p, ref_r, _ = skm.precision_recall_curve(y, score)
    ours = {(round(r, 12), round(p, 12)) for r, p in zip(recall, precision)}
    assert ours == {(round(r, 12), round(p, 12)) for r, p in zip(ref_r, ref_p)}
    assert ap == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)

    payload = check(plots.roc_curve(y, score))
    assert payload["metrics"]["auc_positive"] == pytest.approx(skm.roc_auc_score(y, score))
    np.testing.assert_allclose(xy(payload)[0], ref_fpr)
    assert len(to_figure(payload).data) == 2  # the curve and the chance diagonal


def test_multiclass_roc_and_pr_are_one_vs_rest(rng):
    y = rng.integers(0, 3, 200)
    logits = rng.standard_normal((200, 3)) + np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    roc = check(plots.roc_curve(y, proba, ["a", "b", "c"]))
    pr = check(plots.precision_recall(y, proba, ["a", "b", "c"]))
    for k, name in enumerate("abc"):
        positive = (y == k).astype(int)
        assert roc["metrics"][f"auc_{name}"] == pytest.approx(
            skm.roc_auc_score(positive, proba[:, k])
        )
        assert pr["metrics"][f"average_precision_{name}"] == pytest.approx(
            skm.average_precision_score(positive, proba[:, k])
        )
    assert roc["metrics"]["auc_macro"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    assert pr["metrics"]["average_precision_macro"] == pytest.approx(
        skm.average_precision_score(np.eye(3)[y], proba, average="macro")
    )
    assert len(to_figure(roc).data) == 4
    assert len(to_figure(pr).data) == 3


def test_roc_rejects_single_class_and_mismatched_lengths():
    with pytest.raises(ValueError, match="both classes"):
        plots.binary_roc_curve([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="lengths differ: y_true has 3, y_score has 2"):
        plots.binary_roc_curve([0, 1, 1], [0.2, 0.3])


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_matches_sklearn(rng, normalize):
    y = rng.integers(0, 4, 150)
    pred = np.where(rng.random(150) < 0.7, y, rng.integers(0, 4, 150))
    payload = check(plots.confusion_matrix(y, pred, ["w", "x", "y", "z"], normalize=normalize))
    reference = skm.confusion_matrix(y, pred, normalize="true" if normalize else None)
    cells = {(p["y"], p["x"]): p["z"] for p in payload["series"][0]["data"]}
    names = ["w", "x", "y", "z"]
    ours = np.array([[cells[(names[i], names[j])] for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(ours, reference)
    assert payload["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    figure = to_figure(payload)
    assert len(figure.data) == 1 and isinstance(figure.data[0], go.Heatmap)
    np.testing.assert_allclose(np.array(figure.data[0].z, dtype=float), reference)


# -- distributions ----------------------------------------------------------------------------
def test_histograms_match_numpy(rng):
    weights = {"w": rng.standard_normal((20, 30)), "b": rng.standard_normal(30)}
    for builder in (plots.parameter_distribution, plots.gradient_histogram):
        payload = check(builder(weights, bins=12))
        for s, (name, values) in zip(payload["series"], weights.items()):
            counts, edges = np.histogram(values, bins=12)
            assert s["name"] == name and s["type"] == "histogram"
            np.testing.assert_array_equal([p["y"] for p in s["data"]], counts)
            np.testing.assert_allclose([p["x"] for p in s["data"]], (edges[1:] + edges[:-1]) / 2)
            assert payload["metrics"][f"{name}.std"] == pytest.approx(values.std())
        assert len(to_figure(payload).data) == 2
    with pytest.raises(ValueError, match="bins must be an int >= 1, got 0"):
        plots.parameter_distribution(weights, bins=0)


def test_activation_pattern_matches_numpy(rng):
    relu = np.maximum(rng.standard_normal((64, 16)), 0)
    dense = rng.standard_normal((64, 16))
    payload = check(plots.activation_pattern({"dense_0": dense, "relu_0": relu}))
    for name, values in (("dense_0", dense), ("relu_0", relu)):
        assert payload["metrics"][f"{name}.mean"] == pytest.approx(values.mean())
        assert payload["metrics"][f"{name}.std"] == pytest.approx(values.std())
        assert payload["metrics"][f"{name}.zero_fraction"] == pytest.approx(np.mean(values == 0))
    figure = to_figure(payload)
    assert len(figure.data) == 2
    np.testing.assert_allclose(figure.data[0].error_y.array, [dense.std(), relu.std()])


def test_training_curves_and_learning_rate_schedule_carry_the_values():
    history = {"loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.7, 0.5], "accuracy": [0.5, 0.7, 0.8]}
    payload = check(plots.training_curves(history, [0, 1, 2]))
    for s in payload["series"]:
        np.testing.assert_allclose([p["y"] for p in s["data"]], history[s["name"]])
    assert payload["series"][2]["style"]["yaxis"] == "y2"
    assert len(to_figure(payload).data) == 3
    lr = check(plots.learning_rate_schedule([0, 1, 2, 3], [0.1, 0.1, 0.01, 0.001]))
    assert lr["metrics"] == {"initial_lr": 0.1, "final_lr": 0.001, "min_lr": 0.001, "max_lr": 0.1}
    assert len(to_figure(lr).data) == 1
    constant = to_figure(plots.learning_rate_schedule([0, 1], [1e-3, 1e-3]))
    assert tuple(constant.layout.yaxis.range) == pytest.approx((0, 2e-3))  # not flattened at 0


# -- regression -------------------------------------------------------------------------------
def test_regression_scatter_and_residuals_match_sklearn(rng):
    truth = rng.standard_normal(120) * 3
    pred = truth + rng.standard_normal(120) * 0.5
    scatter = check(plots.regression_scatter(truth, pred))
    assert scatter["metrics"]["r2"] == pytest.approx(skm.r2_score(truth, pred))
    assert scatter["metrics"]["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(truth, pred)))
    assert scatter["metrics"]["mae"] == pytest.approx(skm.mean_absolute_error(truth, pred))
    residual = check(plots.residual_plot(truth, pred))
    np.testing.assert_allclose(xy(residual)[1], truth - pred)
    assert len(to_figure(scatter).data) == 2 and len(to_figure(residual).data) == 2


def test_qq_plot_matches_scipy_probplot(rng):
    sample = rng.standard_normal(57) * 2 + 1
    (osm, osr), (slope, intercept, r) = scipy.stats.probplot(sample, dist="norm")
    theoretical, ordered, our_slope, our_intercept, our_r = plots.qq_points(sample)
    np.testing.assert_allclose(theoretical, osm, rtol=1e-10)
    np.testing.assert_allclose(ordered, osr)
    assert (our_slope, our_intercept, our_r) == pytest.approx((slope, intercept, r), rel=1e-9)
    payload = check(plots.qq_plot(sample))
    np.testing.assert_allclose(xy(payload)[0], osm, rtol=1e-10)
    assert len(to_figure(payload).data) == 2


def test_prediction_interval_normal_band_and_coverage(rng):
    truth = rng.standard_normal(400)
    pred = truth + rng.standard_normal(400) * 0.3
    payload = check(plots.prediction_interval(pred, y_true=truth, level=0.9))
    half = scipy.stats.norm.ppf(0.95) * np.std(truth - pred, ddof=1)
    assert payload["metrics"]["mean_width"] == pytest.approx(2 * half)
    expected = np.mean(np.abs(truth - pred) <= half)
    assert payload["metrics"]["coverage"] == pytest.approx(expected)
    assert len(to_figure(payload).data) == 3
    explicit = check(plots.prediction_interval([1.0, 2.0], [0.0, 1.0], [2.0, 2.5]))
    assert explicit["metrics"] == {"mean_width": 1.75} and len(explicit["series"]) == 2
    with pytest.raises(ValueError, match="lower must be <= upper"):
        plots.prediction_interval([1.0], [2.0], [0.0])


# -- model selection --------------------------------------------------------------------------
def _curve(estimator, x, y):
    sizes, train, val = sk_learning_curve(
        estimator, x, y, train_sizes=np.linspace(0.2, 1.0, 4), cv=4, random_state=0, shuffle=True
    )
    return plots.learning_curve(sizes, train, val, score_name="accuracy")


def test_learning_curve_diagnosis_on_known_fits():
    x, y = make_classification(400, 20, n_informative=3, flip_y=0.2, random_state=0)
    overfit = check(_curve(DecisionTreeClassifier(random_state=0), x, y))
    assert overfit["metrics"]["diagnosis"] == "overfitting"
    underfit = check(_curve(DummyClassifier(strategy="most_frequent"), x, y))
    assert underfit["metrics"]["diagnosis"] == "underfitting"
    xb, yb = make_blobs(400, centers=2, cluster_std=0.5, random_state=0)
    good = check(_curve(LogisticRegression(), xb, yb))
    assert good["metrics"]["diagnosis"] == "good_fit"
    assert len(to_figure(good).data) == 4  # two mean lines and two ± std bands
    assert plots.diagnose_learning_curve(0.2, 0.5, higher_is_better=False)["diagnosis"] == (
        "overfitting"
    )


def test_validation_curve_picks_the_best_mean_validation_score():
    x, y = make_classification(300, 10, random_state=1)
    values = [1e-4, 1e-2, 1.0, 100.0]
    train, val = sk_validation_curve(
        LogisticRegression(), x, y, param_name="C", param_range=values, cv=3
    )
    payload = check(plots.validation_curve(values, train, val, "C"))
    best = int(np.argmax(val.mean(axis=1)))
    assert payload["metrics"]["best_param"] == values[best]
    assert payload["metrics"]["best_score"] == pytest.approx(val.mean(axis=1)[best])
    assert payload["config"]["x_log"] is True
    band = payload["series"][1]["data"]
    np.testing.assert_allclose([p["upper"] - p["y"] for p in band], train.std(axis=1))
    assert len(to_figure(payload).data) == 4


# -- features ---------------------------------------------------------------------------------
def test_feature_correlation_matches_corrcoef_and_flags_strong_pairs(rng):
    base = rng.standard_normal((200, 3))
    x = np.c_[base, base[:, 0] * 0.9 + 0.1 * rng.standard_normal(200), -base[:, 1]]
    payload = check(plots.feature_correlation(x, list("abcde")))
    reference = np.corrcoef(x, rowvar=False)
    cells = {(p["y"], p["x"]): p for p in payload["series"][0]["data"]}
    for i, a in enumerate("abcde"):
        for j, b in enumerate("abcde"):
            assert cells[(a, b)]["z"] == pytest.approx(reference[i, j], abs=1e-12)
            strong = i != j and abs(reference[i, j]) > 0.7
            assert (cells[(a, b)].get("label") == "strong") == strong
    flagged = {(f["a"], f["b"]) for f in payload["config"]["flagged_pairs"]}
    assert flagged == {("a", "d"), ("b", "e")}
    assert payload["metrics"]["strong_pairs"] == 2
    assert len(payload["series"][1]["data"]) == 4  # both triangles of each pair are marked
    assert len(to_figure(payload).data) == 2


def test_permutation_importance_agrees_with_sklearn():
    x, y = make_regression(600, 4, n_informative=4, coef=False, noise=0.5, random_state=3)
    x[:, 3] *= 0.1  # a feature of little weight
    model = LinearRegression().fit(x, y)
    mean, std = plots.permutation_importance(model.predict, x, y, metric="r2", n_repeats=40)
    reference = sk_permutation_importance(model, x, y, scoring="r2", n_repeats=40, random_state=0)
    np.testing.assert_allclose(mean, reference.importances_mean, rtol=0.15, atol=0.01)
    np.testing.assert_allclose(std, reference.importances_std, rtol=0.5, atol=0.01)
    payload = check(plots.feature_importance(mean, std, ["a", "b", "c", "d"]))
    shown = [p["x"] for p in payload["series"][0]["data"]]
    assert shown == [["a", "b", "c", "d"][k] for k in np.argsort(-reference.importances_mean)]
    figure = to_figure(payload)
    assert len(figure.data) == 1
    np.testing.assert_allclose(figure.data[0].error_y.array, std[np.argsort(-mean)])


def test_partial_dependence_matches_sklearn_brute():
    x, y = make_regression(300, 3, random_state=4)
    model = LinearRegression().fit(x, y)
    reference = sk_partial_dependence(model, x, [1], method="brute", grid_resolution=15)
    grid = reference["grid_values"][0]
    _, average = plots.partial_dependence_values(model.predict, x, 1, grid=grid)
    np.testing.assert_allclose(average, reference["average"][0], rtol=1e-5)

    xc, yc = make_classification(
        300, 4, n_informative=3, n_redundant=0, n_classes=3, random_state=5
    )
    xc[:, 2] = np.round(xc[:, 2])  # few distinct values: both grids are the unique values
    clf = LogisticRegression().fit(xc, yc)
    reference = sk_partial_dependence(clf, xc, [2], method="brute", grid_resolution=50)
    payload = check(
        plots.partial_dependence(clf.predict_proba, xc, 2, grid_resolution=50, target=1)
    )
    np.testing.assert_allclose(xy(payload)[0], reference["grid_values"][0])
    np.testing.assert_allclose(xy(payload)[1], reference["average"][1], rtol=1e-5)
    assert len(to_figure(payload).data) == 1
    with pytest.raises(ValueError, match="pass target="):
        plots.partial_dependence_values(clf.predict_proba, xc, 0)


# -- rendering --------------------------------------------------------------------------------
def test_dashboard_is_one_offline_page(rng):
    payloads = [
        plots.training_curves({"loss": [1.0, 0.5]}),
        plots.roc_curve([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.7]),
        plots.feature_correlation(rng.standard_normal((30, 4))),
    ]
    page = dashboard_html(payloads, "run <1>")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<section class="plot"') == 3
    assert "<title>run &lt;1&gt;</title>" in page
    bundle = get_plotlyjs()
    assert len(page) > len(bundle)
    assert bundle[:2000] in page  # plotly.js is embedded
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)  # nothing fetched from anywhere
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", page)
    for index in range(3):
        assert f'id="plot-{index}"' in page


def test_to_figure_validates_first():
    bad = _good()
    bad["plot_type"] = "pie"
    with pytest.raises(ValueError, match="plot_type"):
        to_figure(bad)
