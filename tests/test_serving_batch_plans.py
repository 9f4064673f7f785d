"""Merged batches run as the batch sizes of least summed call time (``batch_plans``): the
plans against a brute-force search over every multiset of sizes, and a served model whose
batches run split that way against offline ``model.predict`` on each request alone."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import theilslopes

import gometal as gm
from gometal.serving.batch_plans import linear_costs, plan_batch_pieces, row_ranges
from gometal.serving.metrics import ServingMetrics
from gometal.serving.protocol import ProtocolError
from gometal.serving.served_model import ServedVersion
from serving_helpers import cnn_model


def _least_cost(costs: dict[int, float], rows: int) -> float:
    """The least summed cost of sizes covering ``rows``, by trying every count of each."""
    sizes = sorted(costs)
    ranges = [range(rows // size + 2) for size in sizes]
    return min(
        sum(n * costs[s] for n, s in zip(counts, sizes))
        for counts in itertools.product(*ranges)
        if sum(n * s for n, s in zip(counts, sizes)) >= rows
    )


@pytest.mark.parametrize("seed", range(6))
def test_each_plan_covers_its_rows_at_the_least_summed_cost(seed: int) -> None:
    rng = np.random.default_rng(seed)
    costs = {s: float(c) for s, c in zip((1, 2, 4, 8, 12), rng.uniform(0.1, 3.0, size=5))}
    plans = plan_batch_pieces(costs, 20)
    assert plans[0] == ()
    for rows in range(1, 21):
        pieces = plans[rows]
        assert sum(pieces) >= rows and list(pieces) == sorted(pieces, reverse=True)
        assert sum(costs[s] for s in pieces) == pytest.approx(_least_cost(costs, rows), rel=1e-12)


def test_rows_that_cost_more_than_calls_split_and_calls_that_cost_more_pad() -> None:
    sizes = (1, 2, 4, 8, 16, 32, 64)
    convolutions = plan_batch_pieces({s: 0.15 + 0.5 * s for s in sizes}, 64)  # ms: a CNN's
    assert convolutions[34] == (32, 2) and convolutions[64] == (64,)
    assert convolutions[63] == (64,)  # one padded row costs less than five more calls
    products = plan_batch_pieces({s: 0.03 + 0.0001 * s for s in sizes}, 64)  # an MLP's
    assert products[34] == (64,) and products[3] == (4,)


def test_plans_refuse_sizes_and_costs_out_of_range() -> None:
    with pytest.raises(ValueError, match="at least one batch size"):
        plan_batch_pieces({}, 4)
    with pytest.raises(ValueError, match="ints >= 1 with costs > 0, got 0: 1.0"):
        plan_batch_pieces({0: 1.0}, 4)
    with pytest.raises(ValueError, match="got 2: 0.0"):
        plan_batch_pieces({2: 0.0}, 4)


@pytest.mark.parametrize("seed", range(4))
def test_call_costs_are_fitted_as_scipys_theil_sen_line(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 4, 8, 16, 32, 64]
    measured = {s: 1e-4 + 5e-4 * s * rng.uniform(0.9, 1.1) for s in sizes}
    measured[sizes[seed]] *= 40  # a busy moment of the machine
    slope, intercept = theilslopes([measured[s] for s in sizes], sizes, method="joint")[:2]
    fitted = linear_costs(measured)
    for size in sizes:
        assert fitted[size] == pytest.approx(intercept + slope * size, rel=1e-9)
    for size in sizes[3:]:  # where rows dominate, the line is the one the times came from
        assert fitted[size] == pytest.approx(1e-4 + 5e-4 * size, rel=0.15)


def test_a_fit_keeps_costs_positive() -> None:
    assert linear_costs({4: 1e-3}) == {4: pytest.approx(1e-3)}
    falling = linear_costs({1: 5.0, 2: 4.0, 4: 3.0})  # noise could say bigger is faster
    assert all(cost > 0 for cost in falling.values())
    with pytest.raises(ValueError, match="at least one measured"):
        linear_costs({})


def test_row_ranges_give_each_piece_its_rows_and_pad_the_last() -> None:
    assert row_ranges((32, 2), 34) == [(0, 32, 32), (32, 34, 2)]
    assert row_ranges((32, 4), 34) == [(0, 32, 32), (32, 34, 4)]
    assert row_ranges((64,), 3) == [(0, 3, 64)]


class RecordingModel:
    """A model whose predict calls are recorded (batch size each), otherwise the model."""

    def __init__(self, model: gm.Model) -> None:
        self.model = model
        self.calls: list[int] = []

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        self.calls.append(batch_size)
        assert len(x) == batch_size
        return self.model.predict(x, batch_size=batch_size)

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


@pytest.fixture
def served_cnn():
    model = cnn_model()
    recording = RecordingModel(model)
    settings = {"max_batch_size": 16, "max_queue_delay_ms": 0.0, "instances": 1,
                "max_queue": 64}  # fmt: skip
    served = ServedVersion("cnn", 1, recording, settings, ServingMetrics(16), warmup=True)
    yield served, model, recording
    served.close()


def test_the_warm_up_times_every_size_it_compiles(served_cnn) -> None:
    served, _, _ = served_cnn
    assert served.warmed_up == [1, 2, 4, 8, 16]
    assert sorted(served.batch_costs) == served.warmed_up
    assert all(cost > 0 for cost in served.batch_costs.values())
    assert len(served.batch_pieces) == 17 and served.batch_pieces[0] == ()
    with pytest.raises(ValueError, match=r"1\.\.16 \(max_batch_size\), got 32"):
        served.use_batch_costs({32: 1.0})


@pytest.mark.parametrize("rows", [1, 3, 5, 11, 16])
def test_split_batches_answer_as_offline_predict(served_cnn, rows: int) -> None:
    served, model, recording = served_cnn
    # Calls cost more than rows up to 4 rows, rows more above: 11 rows run as 8 + 4 (padded).
    served.use_batch_costs({1: 1.0, 2: 1.1, 4: 1.2, 8: 2.3, 16: 4.5})
    expected_pieces = {1: [1], 3: [4], 5: [4, 1], 11: [8, 4], 16: [16]}[rows]
    x = np.random.default_rng(rows).standard_normal((rows, 3, 16, 16), dtype=np.float32)
    recording.calls.clear()
    (outputs,) = served.batcher.submit([x]).result(60)
    assert recording.calls == expected_pieces
    np.testing.assert_allclose(outputs, model.predict(x), rtol=1e-5, atol=1e-6)


def test_a_request_holding_nan_is_refused_and_its_batch_neighbours_answered(served_cnn) -> None:
    served, model, recording = served_cnn
    served.batcher.max_queue_delay_s = 0.5  # the three requests merge into one batch
    served.use_batch_costs({8: 1.0})  # every batch here runs as one call of 8 rows
    rng = np.random.default_rng(7)
    good = [rng.standard_normal((n, 3, 16, 16), dtype=np.float32) for n in (2, 3)]
    bad = rng.standard_normal((2, 3, 16, 16), dtype=np.float32)
    bad[1, 2, 5, 5] = np.nan
    recording.calls.clear()
    futures = [served.batcher.submit([x]) for x in (good[0], bad, good[1])]
    with pytest.raises(ProtocolError, match="input 'input' holds NaN or infinity") as refused:
        futures[1].result(60)
    assert refused.value.status == 400
    for x, future in zip(good, (futures[0], futures[2])):
        (outputs,) = future.result(60)
        np.testing.assert_allclose(outputs, model.predict(x), rtol=1e-5, atol=1e-6)
    # The screen took the refused request out of the merged batch of 7 rows: 5 ran.
    assert recording.calls == [8]
