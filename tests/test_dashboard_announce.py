"""``fit`` says where its plots went: the dashboard file ``plots="html"`` wrote, or the
sidecar page to open for ``plots="sidecar"``; nothing when ``verbose=0``, and no address
of a dashboard that was never delivered."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest

import gometal as gm
from sidecar_helpers import free_port, running_sidecar

SIDECAR_URL_ENV = "GOMETAL_SIDECAR_URL"


def _trainer() -> gm.Trainer:
    model = gm.ModelBuilder((4,)).dense(8).relu().dense(3).build(seed=0)
    return gm.Trainer(model, "cross_entropy", gm.optim.Adam(lr=1e-2), batch_size=16)


def _data() -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(3)
    x = gen.standard_normal((64, 4)).astype(np.float32)
    return x, np.argmax(x[:, :3], axis=1).astype(np.int32)


def test_sidecar_mode_prints_the_dashboard_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = _data()
    with running_sidecar(tmp_path / "data") as url:
        monkeypatch.setenv(SIDECAR_URL_ENV, url)
        _trainer().fit((x, y), epochs=2, validation=(x, y), verbose=2, plots="sidecar")
        last_line = capsys.readouterr().out.splitlines()[-1]
        match = re.fullmatch(r"fit: dashboard at (\S+)", last_line)
        assert match is not None, last_line
        printed = match.group(1)
        assert re.fullmatch(re.escape(url) + r"/dashboard/[\w.-]+", printed), printed
        page = httpx.get(printed, timeout=10.0, trust_env=False)
    assert page.status_code == 200
    assert 'data-plot-type="training_curves"' in page.text
    assert 'data-plot-type="confusion_matrix"' in page.text  # the end-of-training plots


def test_no_url_is_printed_when_the_sidecar_never_answered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = _data()
    monkeypatch.setenv(SIDECAR_URL_ENV, f"http://127.0.0.1:{free_port()}")  # nothing listens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the client's "could not send"
        _trainer().fit((x, y), epochs=1, verbose=2, plots="sidecar")
    out = capsys.readouterr().out
    assert re.findall(r"^epoch \d+/1 ", out, flags=re.MULTILINE) == ["epoch 1/1 "]
    assert "dashboard" not in out


def test_html_mode_prints_the_file_and_verbose_zero_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = _data()
    monkeypatch.chdir(tmp_path)  # a relative plots_dir: the printed path is absolute
    _trainer().fit((x, y), epochs=1, verbose=1, plots="html", plots_dir="plots")
    written = tmp_path / "plots" / "dashboard.html"
    assert capsys.readouterr().out.splitlines()[-1] == f"fit: dashboard written to {written}"
    assert written.is_file()

    _trainer().fit((x, y), epochs=1, verbose=0, plots="html", plots_dir="quiet")
    assert capsys.readouterr().out == ""
    assert (tmp_path / "quiet" / "dashboard.html").is_file()
