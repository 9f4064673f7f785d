"""Every plot type rendered for real: the sidecar serves the page, headless Chromium loads
it, takes a screenshot, and the page must log no JavaScript error and hold one plotly
trace per payload series in its DOM."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from cdp_browser import RENDERED, WINDOW, Browser
from gometal.viz.payload import PLOT_TYPES
from gometal.viz.sidecar_client import SidecarClient
from sidecar_helpers import running_sidecar, sample_payload

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_COLOURS = 16  # a blank or single-colour page has far fewer


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_sidecar(tmp_path_factory.mktemp("sidecar") / "data") as url:
        yield url


def check_screenshot(browser: Browser, path: Path) -> None:
    data = browser.screenshot(path)
    assert data.startswith(PNG_SIGNATURE) and path.stat().st_size == len(data)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == WINDOW
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= MIN_COLOURS


@pytest.mark.parametrize("plot_type", PLOT_TYPES)
def test_plot_page_renders_in_chromium(
    sidecar: str, browser: Browser, tmp_path: Path, plot_type: str
) -> None:
    payload = sample_payload(plot_type)
    answer = SidecarClient(sidecar).send(payload)
    assert answer is not None and answer["plot_type"] == plot_type

    browser.load(sidecar + answer["view_url"])
    rendered = browser.evaluate(RENDERED)
    check_screenshot(browser, tmp_path / f"{plot_type}.png")

    assert browser.js_errors() == []
    expected = len(payload["series"])  # the renderer draws one trace per series
    assert rendered == {"plots": 1, "data_traces": [expected], "dom_traces": [expected]}
    title = browser.evaluate("document.querySelector('.gtitle').textContent")
    assert title == payload["title"]


def test_dashboard_renders_every_plot_of_a_batch(
    sidecar: str, browser: Browser, tmp_path: Path
) -> None:
    payloads = [sample_payload(t) for t in PLOT_TYPES]
    answer = SidecarClient(sidecar).send(payloads, batch_id="browser-run", title="All plots")
    assert answer is not None and answer["summary"]["successful"] == len(PLOT_TYPES)

    browser.load(sidecar + answer["dashboard_url"])
    rendered = browser.evaluate(RENDERED)
    check_screenshot(browser, tmp_path / "dashboard.png")

    assert browser.js_errors() == []
    series_counts = [len(p["series"]) for p in payloads]
    assert rendered == {
        "plots": len(PLOT_TYPES),
        "data_traces": series_counts,
        "dom_traces": series_counts,
    }
    assert browser.evaluate("document.querySelector('h1').textContent") == "All plots"


def test_index_page_lists_plots_without_errors(sidecar: str, browser: Browser) -> None:
    browser.load(sidecar + "/")
    assert browser.js_errors() == []
    links = browser.evaluate("document.querySelectorAll('a[href^=\"/plot/\"]').length")
    assert links >= 1


def test_the_error_check_sees_javascript_errors(sidecar: str, browser: Browser) -> None:
    # Guards the harness itself: a page that throws or logs an error must be caught.
    browser.load(sidecar + "/")
    browser.evaluate(
        "new Promise(r => { console.error('logged failure');"
        " setTimeout(() => { throw new Error('thrown failure'); });"
        " setTimeout(r, 50); })"
    )
    errors = " ".join(browser.js_errors())
    assert "logged failure" in errors and "thrown failure" in errors
