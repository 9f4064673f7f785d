"""HTML pages of the plotting sidecar: the index, one view page per plot.

Pages load plotly.js from the sidecar's own ``/static/plotly.min.js`` route, so they work
offline. Every text taken from a payload is HTML-escaped.
"""

from __future__ import annotations

import functools
import html
from typing import Any

PLOTLY_JS_ROUTE = "/static/plotly.min.js"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; text-align: left; }
.meta { color: #666; font-size: 0.9rem; }
#plot { width: 100%; min-height: 480px; }
"""


@functools.lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """Returns the plotly.js bundle shipped with the ``plotly`` package.

    Returns:
        The minified library as UTF-8 bytes (read once, then cached).

    Example:
        >>> plotly_js()[:2]  # doctest: +SKIP
        b'/*'
    """
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _page(title: str, body: str, *, with_plotly: bool = False) -> str:
    script = f'<script src="{PLOTLY_JS_ROUTE}"></script>' if with_plotly else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{script}</head>"
        f"<body>{body}</body></html>\n"
    )


def plot_page(record: dict[str, Any], figure_html: str) -> str:
    """Builds the view page of one stored plot.

    Args:
        record: the stored plot record (``id``, ``batch_id``, ``payload``).
        figure_html: the figure as an HTML fragment that expects ``Plotly`` loaded.

    Returns:
        A complete HTML page.

    Example:
        >>> "<html" in plot_page({"id": "a", "payload": {}}, "<div></div>")
        True
    """
    payload = record.get("payload", {})
    title = str(payload.get("title") or record.get("id"))
    meta = " · ".join(
        html.escape(str(part))
        for part in (
            payload.get("plot_type"),
            payload.get("model_name"),
            payload.get("timestamp"),
        )
        if part
    )
    batch = record.get("batch_id")
    links = "<a href='/'>all plots</a>"
    if batch:
        links += f" · <a href='/dashboard/{html.escape(batch)}'>dashboard {html.escape(batch)}</a>"
    body = f"<h1>{html.escape(title)}</h1><p class='meta'>{meta}</p><p>{links}</p>{figure_html}"
    return _page(title, body, with_plotly=True)


def index_page(plots: list[dict[str, Any]], batches: list[dict[str, Any]]) -> str:
    """Builds the index page: every batch (with its dashboard link) and every plot.

    Args:
        plots: stored plot records.
        batches: stored batch records.

    Returns:
        A complete HTML page (no plotly.js needed).

    Example:
        >>> "No plots yet" in index_page([], [])
        True
    """
    rows = []
    for batch in batches:
        bid = html.escape(str(batch.get("id")))
        rows.append(
            f"<tr><td><a href='/dashboard/{bid}'>{bid}</a></td>"
            f"<td>{html.escape(str(batch.get('title') or ''))}</td>"
            f"<td>{len(batch.get('plot_ids', []))}</td></tr>"
        )
    batch_table = (
        "<h2>Batches and runs</h2><table><tr><th>id</th><th>title</th><th>plots</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else ""
    )
    rows = []
    for record in plots:
        payload = record.get("payload", {})
        pid = html.escape(str(record.get("id")))
        rows.append(
            f"<tr><td><a href='/plot/{pid}'>{html.escape(str(payload.get('title', pid)))}</a>"
            f"</td><td>{html.escape(str(payload.get('plot_type', '')))}</td>"
            f"<td>{html.escape(str(payload.get('model_name', '')))}</td>"
            f"<td>{html.escape(str(payload.get('timestamp', '')))}</td></tr>"
        )
    plot_table = (
        "<h2>Plots</h2><table><tr><th>title</th><th>type</th><th>model</th><th>time</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No plots yet.</p>"
    )
    return _page("gometal plots", "<h1>gometal plots</h1>" + batch_table + plot_table)
