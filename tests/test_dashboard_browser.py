"""The dashboard ``fit(plots="html")`` writes, as a person reads it in headless Chromium:
epochs numbered from 1 with whole-number ticks, accuracy and fractions on [0, 1], bars
drawn to scale, and feature plots only for feature vectors (the 20 most important of a
wide one). Each check reads the drawn figure (axis ranges, tick labels, bar heights in
pixels) against numbers computed here or printed by ``fit`` on the console, and saves a
screenshot of the plot it checks."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gometal as gm
from cdp_browser import RENDERED, WINDOW, Browser

EPOCHS = 3
PROBE_ROWS = 256  # the collector's default sample_size: the rows the plots are computed on
SHOWN_FEATURES = 20  # a wide feature vector shows its 20 most important features
FRACTION_TICKS = ["0", "0.2", "0.4", "0.6", "0.8", "1"]
FEATURE_PLOTS = {"feature_importance", "feature_correlation", "partial_dependence"}
MIN_COLOURS = 16  # a blank or single-colour image has far fewer

# What the page drew, per plot: its type and title, plotly's resolved axes (range, tick
# mode, tick spacing, length in pixels), the tick labels in the SVG, the traces' data, and
# the height in pixels of every bar of every bar trace.
FIGURES = """
[...document.querySelectorAll('section.plot')].map(section => {
  const plot = section.querySelector('.js-plotly-plot');
  const layout = plot._fullLayout;
  const axis = a => a ? {range: a.range, tickmode: a.tickmode, dtick: a.dtick,
                         length: a._length} : null;
  const labels = selector => [...plot.querySelectorAll(selector)].map(e => e.textContent);
  const list = v => v === undefined || v === null ? null : Array.from(v);
  return {
    id: plot.id,
    type: section.dataset.plotType,
    title: layout.title.text,
    xaxis: axis(layout.xaxis), yaxis: axis(layout.yaxis), yaxis2: axis(layout.yaxis2),
    xticks: labels('.xtick text'), yticks: labels('.ytick text'),
    y2ticks: labels('.y2tick text'),
    traces: plot.data.map(t => ({name: t.name, type: t.type, yaxis: t.yaxis || 'y',
                                 x: list(t.x), y: list(t.y), z: t.z ? t.z.map(list) : null})),
    bar_heights: [...plot.querySelectorAll('g.trace.bars')].map(
      g => [...g.querySelectorAll('g.point path')].map(p => p.getBoundingClientRect().height)),
  };
})
"""


@dataclass
class Run:
    """One training run with its dashboard drawn in Chromium."""

    trainer: gm.Trainer
    x_val: np.ndarray
    console: str
    dashboard: Path
    figures: list[dict[str, Any]]
    shots: dict[str, Path]

    def figure(self, title: str) -> dict[str, Any]:
        (found,) = [f for f in self.figures if f["title"] == title]
        return found

    def of_type(self, plot_type: str) -> dict[str, Any]:
        (found,) = [f for f in self.figures if f["type"] == plot_type]
        return found


def _digits(image_shape: tuple[int, ...]) -> list[np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, *image_shape)
    y = digits.target.astype(np.int32)
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


def _train_and_draw(model: gm.Model, shape: tuple[int, ...], folder: Path, browser: Browser) -> Run:
    x_train, x_val, y_train, y_val = _digits(shape)
    trainer = gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=3e-3), batch_size=64)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):  # verbose=2: one line per epoch, no bar
        trainer.fit(
            (x_train, y_train),
            epochs=EPOCHS,
            validation=(x_val, y_val),
            verbose=2,
            plots="html",
            plots_dir=folder,
        )
    dashboard = folder / "dashboard.html"
    browser.load(dashboard.as_uri())
    browser.evaluate(RENDERED)
    assert browser.js_errors() == []
    figures = browser.evaluate(FIGURES)
    shots = {}
    for figure in figures:
        path = folder / f"{figure['id']}-{figure['type']}.png"
        browser.screenshot(path, selector=f"#{figure['id']}")
        shots[figure["title"]] = path
    return Run(trainer, x_val, console.getvalue(), dashboard, figures, shots)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Run:
    """The digits as 64-pixel feature vectors through an MLP (rank-1 inputs)."""
    model = gm.ModelBuilder((64,)).dense(32).relu().dense(10).build(seed=0)
    return _train_and_draw(model, (64,), tmp_path_factory.mktemp("mlp"), browser)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Run:
    """The digits as 1 x 8 x 8 images through a CNN."""
    model = (
        gm.ModelBuilder((1, 8, 8))
        .conv2d(8, 3, padding=1)
        .relu()
        .max_pool2d(2)
        .flatten()
        .dense(10)
        .build(seed=0)
    )
    return _train_and_draw(model, (1, 8, 8), tmp_path_factory.mktemp("cnn"), browser)


def check_screenshot(run: Run, title: str) -> None:
    path = run.shots[title]
    image = Image.open(path).convert("RGB")
    assert image.width > WINDOW[0] // 2 and image.height > 200
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= MIN_COLOURS


def console_epochs(console: str) -> list[str]:
    """The epoch numbers of fit's per-epoch lines, e.g. ``epoch 2/3  loss ...``."""
    return re.findall(r"^epoch (\d+)/\d+ ", console, flags=re.MULTILINE)


def console_values(console: str, key: str) -> list[float]:
    return [float(v) for v in re.findall(rf"  {key} ([0-9.]+)", console)]


def test_fit_prints_where_it_wrote_the_dashboard(mlp_run: Run) -> None:
    last_line = mlp_run.console.splitlines()[-1]
    assert last_line == f"fit: dashboard written to {mlp_run.dashboard.resolve()}"
    assert mlp_run.dashboard.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_epochs_are_numbered_from_one_with_whole_number_ticks(mlp_run: Run) -> None:
    epochs = console_epochs(mlp_run.console)
    assert epochs == [str(k) for k in range(1, EPOCHS + 1)]
    per_epoch = mlp_run.figure("Training curves per epoch")
    check_screenshot(mlp_run, per_epoch["title"])
    assert per_epoch["xticks"] == epochs
    assert per_epoch["xaxis"]["dtick"] == 1 and per_epoch["xaxis"]["range"] == [1, EPOCHS]
    for trace in per_epoch["traces"]:
        assert trace["x"] == [float(e) for e in epochs]
    # Snapshots taken at the end name the last epoch as the console did.
    for kind in ("parameter_distribution", "gradient_histogram", "activation_pattern"):
        assert mlp_run.of_type(kind)["title"].endswith(f"(epoch {epochs[-1]})")

    per_step = mlp_run.figure("Training curves per step")
    assert per_step["xticks"] and all(re.fullmatch(r"\d+", t) for t in per_step["xticks"])
    assert float(per_step["xaxis"]["dtick"]).is_integer()


def test_accuracy_is_drawn_on_zero_to_one(mlp_run: Run) -> None:
    for title in ("Training curves per epoch", "Training curves per step"):
        figure = mlp_run.figure(title)
        check_screenshot(mlp_run, title)
        assert figure["yaxis2"]["range"] == [0, 1]
        assert figure["y2ticks"] == FRACTION_TICKS
        accuracy = [t for t in figure["traces"] if "accuracy" in t["name"]]
        assert accuracy and all(t["yaxis"] == "y2" for t in accuracy)
    # The per-epoch curves are the accuracies fit printed.
    by_name = {t["name"]: t["y"] for t in mlp_run.figure("Training curves per epoch")["traces"]}
    for key in ("accuracy", "val_accuracy"):
        np.testing.assert_allclose(by_name[key], console_values(mlp_run.console, key), atol=1e-4)


def _relu_zero_fraction(trainer: gm.Trainer, x: np.ndarray) -> float:
    weights = trainer.model.get_weights()
    hidden = x.astype(np.float64) @ weights["dense_0.weight"].T + weights["dense_0.bias"]
    return float(np.mean(np.maximum(hidden, 0.0) == 0.0))


def test_fraction_of_zeros_bars_are_to_scale(mlp_run: Run) -> None:
    figure = mlp_run.of_type("activation_pattern")
    check_screenshot(mlp_run, figure["title"])
    assert figure["yaxis2"]["range"] == [0, 1] and figure["y2ticks"] == FRACTION_TICKS
    (zeros,) = [t for t in figure["traces"] if t["name"] == "fraction of zeros"]
    (heights,) = figure["bar_heights"]
    expected = {
        "dense_0": 0.0,
        "relu_0": _relu_zero_fraction(mlp_run.trainer, mlp_run.x_val[:PROBE_ROWS]),
    }
    assert 0.05 < expected["relu_0"] < 0.95  # a bar that filling the plot would misstate
    axis_pixels = figure["yaxis2"]["length"]
    drawn = dict(zip(zeros["x"], np.asarray(heights) / axis_pixels))
    for layer, fraction in expected.items():
        assert drawn[layer] == pytest.approx(fraction, abs=1.5 / axis_pixels)


def test_image_model_draws_its_bars_to_scale_and_gets_no_feature_plots(cnn_run: Run) -> None:
    kinds = {f["type"] for f in cnn_run.figures}
    assert {"roc_curve", "confusion_matrix", "activation_pattern"} <= kinds
    assert not kinds & FEATURE_PLOTS  # pixels of an image are not features
    figure = cnn_run.of_type("activation_pattern")
    check_screenshot(cnn_run, figure["title"])
    assert figure["yaxis2"]["range"] == [0, 1]
    (zeros,) = [t for t in figure["traces"] if t["name"] == "fraction of zeros"]
    (heights,) = figure["bar_heights"]
    assert max(zeros["y"]) < 0.95
    np.testing.assert_allclose(
        np.asarray(heights) / figure["yaxis2"]["length"], zeros["y"], atol=0.01
    )


def _pearson(columns: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(columns, rowvar=False)
    r = np.nan_to_num(r, nan=0.0)  # a constant column correlates with nothing
    np.fill_diagonal(r, 1.0)
    return r


def test_wide_feature_vectors_show_their_most_important_features(mlp_run: Run) -> None:
    importance = mlp_run.of_type("feature_importance")
    correlation = mlp_run.of_type("feature_correlation")
    dependence = mlp_run.of_type("partial_dependence")
    check_screenshot(mlp_run, correlation["title"])
    ranked = importance["traces"][0]["x"]
    assert len(ranked) == SHOWN_FEATURES
    heatmap = next(t for t in correlation["traces"] if t["type"] == "heatmap")
    shown = heatmap["x"]
    assert len(shown) == SHOWN_FEATURES < mlp_run.x_val.shape[1]
    assert set(shown) == set(ranked) and heatmap["y"] == shown
    columns = [int(name.removeprefix("x")) for name in shown]
    expected = _pearson(mlp_run.x_val[:PROBE_ROWS][:, columns].astype(np.float64))
    np.testing.assert_allclose(np.asarray(heatmap["z"], dtype=np.float64), expected, atol=1e-6)
    # Square cells: the rows are as tall as the columns are wide.
    assert correlation["yaxis"]["length"] == pytest.approx(correlation["xaxis"]["length"], rel=0.05)
    assert correlation["xticks"] == shown
    assert dependence["title"].startswith(f"Partial dependence on {ranked[0]} ")
