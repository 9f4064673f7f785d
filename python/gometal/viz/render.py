"""Rendering payloads with plotly: one figure per payload, and an offline HTML dashboard.

Each series becomes exactly one plotly trace (a ``band`` is one filled polygon), so a
client that counts series knows how many traces it gets. ``plotly`` is imported lazily:
only rendering needs it.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .payload import normalize_payload

__all__ = ["dashboard_html", "to_figure"]

# Integer x axes (epochs, steps) get at most this many ticks.
MAX_INTEGER_TICKS = 10
# Matrix plots (confusion, correlation) grow with their rows, within these heights (px).
MIN_MATRIX_HEIGHT, MAX_MATRIX_HEIGHT = 450, 900
# Heatmaps wider than this many columns leave out the per-cell text, which would not fit.
MAX_LABELLED_COLUMNS = 12


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as error:  # pragma: no cover - plotly is installed with the viz extra
        raise ImportError("rendering plots needs plotly: pip install plotly") from error
    return go


def _column(data: list[Mapping[str, Any]], key: str) -> list[Any]:
    return [p.get(key) for p in data]


def _errors(data: list[Mapping[str, Any]]) -> dict | None:
    if not any("error" in p for p in data):
        return None
    return {"type": "data", "array": [p.get("error", 0.0) for p in data], "visible": True}


def _line_style(style: Mapping[str, Any]) -> dict:
    line: dict[str, Any] = {}
    for key in ("dash", "shape", "color", "width"):
        if key in style:
            line[key] = style[key]
    return line


def _heatmap(go: Any, s: Mapping[str, Any], style: Mapping[str, Any]) -> Any:
    data = s["data"]
    xs, ys = [], []
    for p in data:  # categories in order of first appearance
        if p["x"] not in xs:
            xs.append(p["x"])
        if p["y"] not in ys:
            ys.append(p["y"])
    z: list[list[Any]] = [[None] * len(xs) for _ in ys]
    text: list[list[str]] = [[""] * len(xs) for _ in ys]
    for p in data:
        i, j = ys.index(p["y"]), xs.index(p["x"])
        z[i][j] = p.get("z")
        text[i][j] = p.get("label", "")
    kwargs: dict[str, Any] = {"colorscale": style.get("colorscale", "Viridis")}
    for key in ("zmin", "zmax"):
        if key in style:
            kwargs[key] = style[key]
    if any(any(row) for row in text) and len(xs) <= MAX_LABELLED_COLUMNS:
        kwargs.update(text=text, texttemplate="%{text}")
    return go.Heatmap(x=xs, y=ys, z=z, name=s["name"], **kwargs)


def _trace(go: Any, s: Mapping[str, Any]) -> Any:
    """The one plotly trace for series ``s``."""
    kind, data, style, name = s["type"], s["data"], s.get("style", {}), s["name"]
    x, y = _column(data, "x"), _column(data, "y")
    text = _column(data, "label") if any("label" in p for p in data) else None
    common: dict[str, Any] = {"name": name}
    if style.get("yaxis") == "y2":
        common["yaxis"] = "y2"
    if "opacity" in style:
        common["opacity"] = style["opacity"]
    if kind == "heatmap":
        return _heatmap(go, s, style)
    if kind in ("line", "area"):
        mode = style.get("mode", "lines")
        fill = "tozeroy" if kind == "area" else None
        return go.Scatter(
            x=x, y=y, mode=mode, line=_line_style(style), fill=fill, text=text, **common
        )
    if kind in ("scatter", "errorbar"):
        marker = {k: style[k] for k in ("color", "symbol", "size") if k in style}
        return go.Scatter(
            x=x, y=y, mode="markers", marker=marker, error_y=_errors(data), text=text, **common
        )
    if kind in ("bar", "histogram"):
        width = style.get("bar_width") if kind == "histogram" else None
        return go.Bar(x=x, y=y, width=width, error_y=_errors(data), text=text, **common)
    if kind == "band":
        upper, lower = _column(data, "upper"), _column(data, "lower")
        return go.Scatter(
            x=x + x[::-1],
            y=upper + lower[::-1],
            fill="toself",
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            **common,
        )
    if kind == "fill":  # go-metal's band: its outline, upper edge then lower edge reversed
        return go.Scatter(
            x=x,
            y=y,
            fill="toself",
            fillcolor=style.get("color"),
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            **common,
        )
    if kind == "box":
        return go.Box(y=y, **common)
    raise ValueError(f"series type {kind!r} has no renderer")  # the schema rules this out


def _numbers(payload: Mapping[str, Any], key: str, yaxis: str | None = None) -> list[float]:
    """The finite numeric ``key`` values of the payload's points (of the series on
    ``yaxis`` only, when given)."""
    values = []
    for s in payload["series"]:
        if yaxis is not None and s.get("style", {}).get("yaxis", "y") != yaxis:
            continue
        for p in s["data"]:
            value = p.get(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value):
                values.append(float(value))
    return values


def _integer_axis(xs: list[float]) -> dict | None:
    """Whole-number ticks spanning exactly the data, for epochs and steps: plotly's own
    ticks would put labels at 0.5, 1.5, ... and pad a single point out to 0."""
    if not xs or any(x != int(x) for x in xs):
        return None
    low, high = min(xs), max(xs)
    decade = 1
    while True:  # the smallest of 1, 2, 5, 10, 20, 50, ... giving few enough ticks
        step = next(
            (m * decade for m in (1, 2, 5) if (high - low) / (m * decade) <= MAX_INTEGER_TICKS),
            None,
        )
        if step is not None:
            break
        decade *= 10
    span = [low - 0.5, high + 0.5] if low == high else [low, high]
    return {"tickmode": "linear", "tick0": 0, "dtick": step, "range": span}


def _fraction_axis(values: list[float]) -> dict:
    """The right axis of accuracy-like values: [0, 1] with ticks every 0.2, widened only
    when a value lies outside it (e.g. a negative R²), so bars and curves keep their scale."""
    low = min([0.0, *values])
    high = max([1.0, *values])
    axis: dict[str, Any] = {"range": [low, high], "showgrid": False}
    if (low, high) == (0.0, 1.0):
        axis.update(tickmode="linear", tick0=0, dtick=0.2)
    else:
        axis["tickmode"] = "auto"  # not plotly's default "sync", which copies odd ticks
    return axis


def _layout(payload: Mapping[str, Any]) -> dict:
    config, kind = payload["config"], payload["plot_type"]
    layout: dict[str, Any] = {
        "title": {"text": html.escape(payload["title"])},
        "xaxis": {"title": {"text": config.get("x_label", "")}},
        "yaxis": {"title": {"text": config.get("y_label", "")}},
        "template": "plotly_white",
        "legend": {"orientation": "h", "y": -0.2},
    }
    if any(s.get("style", {}).get("yaxis") == "y2" for s in payload["series"]):
        layout["yaxis2"] = {
            "title": {"text": config.get("y2_label", "")},
            "overlaying": "y",
            "side": "right",
        }
    if config.get("x_log"):
        layout["xaxis"]["type"] = "log"
    if config.get("y_log"):
        layout["yaxis"]["type"] = "log"
    if kind in ("parameter_distribution", "gradient_histogram"):
        layout["barmode"] = config.get("barmode", "overlay")
    if kind in ("roc_curve", "precision_recall"):
        layout["xaxis"]["range"] = [0, 1.02]
        layout["yaxis"]["range"] = [0, 1.02]
    if kind in ("confusion_matrix", "feature_correlation"):
        layout["yaxis"]["autorange"] = "reversed"  # row 0 at the top, as a matrix reads
        # Square cells: a wide, short plot squashes every row into a sliver.
        rows = len({p["y"] for s in payload["series"] for p in s["data"]})
        layout["height"] = min(MAX_MATRIX_HEIGHT, max(MIN_MATRIX_HEIGHT, 160 + 40 * rows))
        layout["yaxis"].update(scaleanchor="x", constrain="domain")
        layout["xaxis"]["constrain"] = "domain"
    if "yaxis2" in layout and kind in ("training_curves", "activation_pattern"):
        layout["yaxis2"].update(_fraction_axis(_numbers(payload, "y", "y2")))
    if kind in ("training_curves", "learning_rate_schedule"):
        integer = _integer_axis(_numbers(payload, "x"))
        if integer is not None:
            layout["xaxis"].update(integer)
    if kind == "learning_rate_schedule":
        layout["yaxis"]["exponentformat"] = "e"
        low, high = payload["metrics"].get("min_lr"), payload["metrics"].get("max_lr")
        if isinstance(high, (int, float)) and low == high and high > 0:
            # A constant rate: plotly would pad by ±1 and flatten the line onto zero.
            layout["yaxis"]["range"] = [0, 2 * high]
    return layout


def to_figure(payload: Mapping[str, Any]) -> Any:
    """Renders one payload as a plotly figure (one trace per series).

    Args:
        payload: a payload dict (validated first).

    Returns:
        A ``plotly.graph_objects.Figure``.

    Raises:
        ValueError: the payload breaks the schema.

    Example:
        >>> from gometal.viz import plots
        >>> fig = to_figure(plots.roc_curve([0, 1, 1], [0.1, 0.8, 0.6]))
        >>> len(fig.data)
        2
    """
    payload = normalize_payload(payload)  # a Go client's payload, or an old plot type
    go = _plotly()
    traces = [_trace(go, s) for s in payload["series"]]
    return go.Figure(data=traces, layout=_layout(payload))


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return ""
    rows = []
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(shown)}</td></tr>")
    return '<table class="metrics">' + "".join(rows) + "</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.plot { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em; margin-bottom: 1.5em; }
.metrics { border-collapse: collapse; font-size: 0.85em; margin: 0.3em 0 0 1em; }
.metrics th { text-align: left; padding-right: 1em; font-weight: normal; color: #555; }
details { margin-left: 1em; }
"""


def dashboard_html(payloads: Iterable[Mapping[str, Any]], title: str = "gometal training") -> str:
    """One self-contained HTML page: plotly.js inlined once, one div per plot, no network.

    Args:
        payloads: the payload dicts, in page order.
        title: the page heading.

    Returns:
        The HTML text (a few MB: the plotly.js bundle is embedded).

    Example:
        >>> from gometal.viz import plots
        >>> page = dashboard_html([plots.training_curves({"loss": [1.0, 0.5]})])
        >>> page.count('class="plot"')
        1
    """
    payloads = list(payloads)
    from plotly.offline import get_plotlyjs

    _plotly()
    blocks = []
    for index, payload in enumerate(payloads):
        payload = normalize_payload(payload)
        figure = to_figure(payload)
        div = figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"plot-{index}",
            config={"responsive": True, "displaylogo": False},
        )
        table = _metrics_table(payload["metrics"])
        details = f"<details><summary>metrics</summary>{table}</details>" if table else ""
        kind = html.escape(payload["plot_type"])
        blocks.append(f'<section class="plot" data-plot-type="{kind}">{div}{details}</section>')
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    # The bundle is inlined as-is; escaping "</" keeps a literal "</script>" inside it from
    # ending the tag early.
    bundle = get_plotlyjs().replace("</script", "<\\/script")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
        f'<script type="text/javascript">{bundle}</script>\n</head>\n<body>\n'
        f"<h1>{html.escape(title)}</h1>\n<p>{len(payloads)} plot(s), generated {stamp}</p>\n"
        + "\n".join(blocks)
        + "\n</body>\n</html>\n"
    )
