"""``gm.viz.Dashboard``: plots are a fit callback, and ``fit(plots=...)`` is sugar for it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import gometal as gm


def _data(rows: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((rows, 4)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)


def _trainer() -> gm.Trainer:
    model = gm.ModelBuilder((4,)).dense(8).relu().dense(2).build(seed=1)
    return gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=1e-2), batch_size=16)


def _plot_types(page: str) -> list[str]:
    return re.findall(r'data-plot-type="(\w+)"', page)


def test_a_dashboard_callback_writes_the_page_and_says_where(tmp_path, capsys):
    x, y = _data()
    xv, yv = _data(60, seed=1)
    trainer = _trainer()
    board = gm.viz.Dashboard("html", tmp_path / "plots", validation=(xv, yv))
    trainer.fit((x, y), epochs=2, validation=(xv, yv), callbacks=[board], verbose=2)
    written = tmp_path / "plots" / "dashboard.html"
    assert board.written == written and written.is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"fit: dashboard written to {written}"
    kinds = _plot_types(written.read_text(encoding="utf-8"))
    assert kinds[0] == "training_curves" and "roc_curve" in kinds
    roc = next(p for p in board.collector.payloads() if p["plot_type"] == "roc_curve")
    expected = roc_auc_score(yv, trainer.predict_proba(xv)[:, 1])
    assert roc["metrics"]["auc_1"] == pytest.approx(expected, abs=1e-6)


def test_fit_plots_is_the_same_dashboard(tmp_path):
    x, y = _data()
    xv, yv = _data(60, seed=1)
    _trainer().fit(
        (x, y), 2, validation=(xv, yv), verbose=0, plots="html", plots_dir=tmp_path / "sugar"
    )
    board = gm.viz.Dashboard("html", tmp_path / "callback", validation=(xv, yv))
    _trainer().fit((x, y), 2, validation=(xv, yv), verbose=0, callbacks=[board])
    pages = [(tmp_path / d / "dashboard.html").read_text("utf-8") for d in ("sugar", "callback")]
    assert _plot_types(pages[0]) == _plot_types(pages[1])


def test_a_dashboard_checks_its_arguments_by_name():
    with pytest.raises(ValueError, match="mode must be 'html' or 'sidecar', got 'pdf'"):
        gm.viz.Dashboard("pdf")
    with pytest.raises(ValueError, match="mode must be 'html' or 'sidecar', got None"):
        gm.viz.Dashboard(None)
    with pytest.raises(TypeError, match="folder must be a folder path"):
        gm.viz.Dashboard("html", folder=3)
