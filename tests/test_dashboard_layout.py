"""How the renderer lays out the axes a dashboard reader relies on, for the cases one
training run does not show: a single epoch, hundreds of epochs, values outside [0, 1] on
the accuracy axis, and payloads built without the collector (as a Go client sends them)."""

from __future__ import annotations

import numpy as np
import pytest

from gometal.viz import plots, to_figure
from gometal.viz.payload import make_payload, point, series

FRACTION_TICKS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
MAX_TICKS = 10


def tick_values(axis) -> list[float]:
    """The tick positions a linear-mode axis shows within its range (plotly's rule:
    ``tick0 + k * dtick``)."""
    assert axis.tickmode == "linear"
    low, high = axis.range
    first = np.ceil((low - axis.tick0) / axis.dtick - 1e-9)
    ticks = axis.tick0 + axis.dtick * np.arange(first, first + 10_000)
    return [round(float(t), 9) for t in ticks[(ticks >= low - 1e-9) & (ticks <= high + 1e-9)]]


def test_one_epoch_shows_one_tick_at_epoch_one() -> None:
    figure = to_figure(plots.training_curves({"loss": [0.7], "accuracy": [0.55]}))
    assert figure.data[0].x == (1,)
    assert tick_values(figure.layout.xaxis) == [1.0]  # not plotly's 0, 0.5, 1, 1.5, 2


@pytest.mark.parametrize("epochs", [2, 7, 12, 40, 100, 250, 1000])
def test_many_epochs_get_few_whole_number_ticks(epochs: int) -> None:
    losses = list(np.linspace(1.0, 0.1, epochs))
    figure = to_figure(plots.training_curves({"loss": losses}))
    axis = figure.layout.xaxis
    assert tuple(axis.range) == (1, epochs)
    ticks = tick_values(axis)
    assert 2 <= len(ticks) <= MAX_TICKS
    assert all(t.is_integer() and 1 <= t <= epochs for t in ticks)
    assert float(axis.dtick) in {m * 10**e for e in range(4) for m in (1, 2, 5)}


def test_steps_recorded_every_third_step_keep_whole_number_ticks() -> None:
    steps = [0, 3, 6]
    payload = plots.training_curves({"loss": [1.0, 0.8, 0.7]}, steps, "step")
    axis = to_figure(payload).layout.xaxis
    assert tick_values(axis) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_fractional_x_values_keep_plotly_ticks() -> None:
    payload = plots.training_curves({"loss": [1.0, 0.8]}, [0.5, 1.5], "epoch")
    assert to_figure(payload).layout.xaxis.tickmode is None


def test_accuracy_axis_spans_zero_to_one_even_for_a_narrow_range() -> None:
    payload = plots.training_curves({"loss": [0.4, 0.3], "accuracy": [0.91, 0.93]})
    axis = to_figure(payload).layout.yaxis2
    assert tuple(axis.range) == (0, 1)
    assert tick_values(axis) == FRACTION_TICKS


def test_accuracy_axis_widens_to_show_a_negative_score() -> None:
    # A regression model's 1 - NMAE starts below zero: the axis must show it, not clip it.
    payload = plots.training_curves({"loss": [9.0, 2.0], "accuracy": [-1.5, 0.4]})
    axis = to_figure(payload).layout.yaxis2
    assert tuple(axis.range) == (-1.5, 1.0)
    assert axis.tickmode == "auto"  # plotly's default for an overlaying axis is "sync"


def test_zero_fraction_bars_are_measured_on_zero_to_one() -> None:
    activations = {"dense_0": np.array([0.5, -1.0]), "relu_0": np.array([0.0, 0.0, 0.0, 2.0])}
    figure = to_figure(plots.activation_pattern(activations))
    (bars,) = [trace for trace in figure.data if trace.type == "bar"]
    assert bars.yaxis == "y2" and list(bars.y) == [0.0, 0.75]
    assert tuple(figure.layout.yaxis2.range) == (0, 1)


def test_an_epoch_lr_schedule_gets_whole_number_ticks_and_its_own_label() -> None:
    payload = plots.learning_rate_schedule([1, 2, 3], [0.1, 0.05, 0.025], x_label="epoch")
    figure = to_figure(payload)
    assert figure.layout.xaxis.title.text == "epoch"
    assert tick_values(figure.layout.xaxis) == [1.0, 2.0, 3.0]


def test_a_go_client_training_curves_payload_gets_the_same_axes() -> None:
    # go-metal's client sends epochs from 1 and puts accuracy on the second axis by style.
    data = [point(e, a) for e, a in zip(range(1, 6), (0.5, 0.7, 0.8, 0.85, 0.9))]
    payload = make_payload(
        "training_curves",
        "Training Progress",
        [
            series("Training Loss", "line", [point(e, 1 / e) for e in range(1, 6)]),
            series("Training Accuracy", "line", data, {"yaxis": "y2"}),
        ],
        model_name="go-metal cnn",
        config={"x_label": "Epoch", "y_label": "Loss"},
    )
    layout = to_figure(payload).layout
    assert tick_values(layout.xaxis) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert tick_values(layout.yaxis2) == FRACTION_TICKS


def test_a_wide_correlation_matrix_has_square_cells_and_no_cell_text() -> None:
    gen = np.random.default_rng(0)
    x = gen.standard_normal((50, 20))
    x[:, 1] = x[:, 0] + 0.01 * gen.standard_normal(50)  # one strongly correlated pair
    figure = to_figure(plots.feature_correlation(x))
    layout = figure.layout
    assert layout.yaxis.scaleanchor == "x"
    assert layout.height >= 20 * 30  # at least 30 px per row
    (heatmap,) = [trace for trace in figure.data if trace.type == "heatmap"]
    assert heatmap.texttemplate is None  # "strong" in 400 tiny cells cannot be read
    small = to_figure(plots.confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2]))
    assert [list(row) for row in small.data[0].text] == [
        ["1", "0", "0"],
        ["0", "1", "1"],
        ["0", "0", "1"],
    ]
