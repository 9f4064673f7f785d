"""Plot payloads in go-metal's JSON format: building them and validating them.

A payload is a plain ``dict`` (so it goes to ``json.dumps`` unchanged) with the keys
``plot_type``, ``title``, ``timestamp``, ``model_name``, ``series``, ``config`` and
``metrics``: go-metal's ``PlotData`` struct as its Go client serialises it, where
``metrics`` and a series' ``style`` may be left out and nil slices arrive as ``null``.
``schema.json`` beside this file is the contract; :func:`validate_payload` checks a payload
against it (with ``jsonschema`` when installed, else with the same rules written out here),
reports every problem it finds rather than the first, and also rejects non-finite numbers,
which JSON cannot carry. :func:`normalize_payload` turns any valid payload (a Go client's,
or one saved under an old plot-type name) into the complete form the renderer reads.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "LEGACY_PLOT_TYPES",
    "PLOT_TYPES",
    "SERIES_TYPES",
    "canonical_plot_type",
    "load_schema",
    "make_payload",
    "normalize_payload",
    "point",
    "series",
    "validate_payload",
]

SCHEMA_FILE = "schema.json"


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def load_schema() -> dict[str, Any]:
    """Returns a copy of the payload JSON Schema (draft 2020-12) shipped with the package.

    Returns:
        The parsed ``schema.json``.

    Example:
        >>> load_schema()["properties"]["plot_type"]["anyOf"][0]["enum"][0]
        'training_curves'
    """
    return json.loads(json.dumps(_schema()))


# go-metal's plot-type names, in the order of its PlotType constants.
PLOT_TYPES: tuple[str, ...] = tuple(_schema()["properties"]["plot_type"]["anyOf"][0]["enum"])
# Names gometal used before adopting go-metal's; plots saved under them still load.
LEGACY_PLOT_TYPES: Mapping[str, str] = {
    "training_curve": "training_curves",
    "activation_statistics": "activation_pattern",
    "correlation_heatmap": "feature_correlation",
}
SERIES_TYPES: tuple[str, ...] = tuple(_schema()["$defs"]["series"]["properties"]["type"]["enum"])


def _json_value(value: Any) -> Any:
    """Turns NumPy scalars/arrays into JSON-ready Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def point(x: Any, y: Any, z: float | None = None, label: str | None = None, **extra: Any) -> dict:
    """Builds one data point ``{x, y, z?, label?, ...}``.

    Args:
        x: a number or a category name.
        y: a number or a category name.
        z: an optional value (heatmap cells).
        label: optional hover text.
        **extra: further numeric fields such as ``error``, ``lower``, ``upper``.

    Returns:
        The point as a dict of plain Python values.

    Example:
        >>> point(1, 0.5, label="epoch 1")
        {'x': 1, 'y': 0.5, 'label': 'epoch 1'}
    """
    out: dict[str, Any] = {"x": _json_value(x), "y": _json_value(y)}
    if z is not None:
        out["z"] = float(z)
    if label is not None:
        out["label"] = str(label)
    for key, value in extra.items():
        if value is not None:
            out[key] = _json_value(value)
    return out


def series(
    name: str, type: str, data: Iterable[Mapping[str, Any]], style: Mapping[str, Any] | None = None
) -> dict:
    """Builds one series ``{name, type, data, style}``.

    Args:
        name: the legend name.
        type: one of :data:`SERIES_TYPES` (``"line"``, ``"scatter"``, ``"bar"``, ...).
        data: the points (see :func:`point`).
        style: free-form drawing hints (``color``, ``dash``, ``opacity``, ...).

    Returns:
        The series as a dict.

    Raises:
        ValueError: an unknown ``type``.

    Example:
        >>> series("loss", "line", [point(0, 1.0)])["type"]
        'line'
    """
    if type not in SERIES_TYPES:
        raise ValueError(f"series type must be one of {SERIES_TYPES}, got {type!r}")
    return {
        "name": str(name),
        "type": type,
        "data": [dict(p) for p in data],
        "style": _json_value(dict(style or {})),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_payload(
    plot_type: str,
    title: str,
    series_list: Iterable[Mapping[str, Any]],
    *,
    model_name: str = "model",
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict:
    """Builds and validates one payload.

    Args:
        plot_type: one of :data:`PLOT_TYPES` (an old name from :data:`LEGACY_PLOT_TYPES`
            is stored under its new name).
        title: the plot title.
        series_list: the series (see :func:`series`).
        model_name: the model the plot describes.
        config: axis titles and other drawing settings (``x_label``, ``y_label``, ...;
            go-metal's ``x_axis_label``, ``y_axis_scale``, ... are understood too).
        metrics: summary numbers (``auc``, ``r2``, ...).
        timestamp: RFC 3339 time; defaults to now (UTC).

    Returns:
        The payload dict.

    Raises:
        ValueError: the payload breaks the schema (see :func:`validate_payload`).

    Example:
        >>> p = make_payload("training_curves", "Loss", [series("loss", "line", [point(0, 1.0)])])
        >>> p["plot_type"]
        'training_curves'
    """
    payload = {
        "plot_type": canonical_plot_type(plot_type),
        "title": str(title),
        "timestamp": timestamp or _now(),
        "model_name": str(model_name),
        "series": [dict(s) for s in series_list],
        "config": _json_value(dict(config or {})),
        "metrics": _json_value(dict(metrics or {})),
    }
    validate_payload(payload)
    return payload


def canonical_plot_type(plot_type: Any) -> Any:
    """go-metal's name for ``plot_type``: an old gometal name is mapped to its new one.

    Args:
        plot_type: a plot type name (anything else is returned unchanged, for the
            validator to report).

    Returns:
        The name from :data:`PLOT_TYPES`, or ``plot_type`` itself.

    Example:
        >>> canonical_plot_type("training_curve")
        'training_curves'
    """
    if isinstance(plot_type, str):
        return LEGACY_PLOT_TYPES.get(plot_type, plot_type)
    return plot_type


# At most this many problems are listed in one error message.
MAX_LISTED_PROBLEMS = 20

# go-metal's PlotConfig fields: what each must be (in words) and the test for it.
_STRING = ("a string", lambda value: isinstance(value, str))
_BOOLEAN = ("true or false", lambda value: isinstance(value, bool))
_INTEGER = ("an integer", lambda value: _is_number(value) and float(value).is_integer())
_OBJECT = ("an object", lambda value: isinstance(value, Mapping))
_CONFIG_FIELDS = {
    "x_axis_label": _STRING,
    "y_axis_label": _STRING,
    "z_axis_label": _STRING,
    "x_axis_scale": _STRING,
    "y_axis_scale": _STRING,
    "show_legend": _BOOLEAN,
    "show_grid": _BOOLEAN,
    "width": _INTEGER,
    "height": _INTEGER,
    "interactive": _BOOLEAN,
    "custom_options": _OBJECT,
}


def _path_text(path: Iterable[Any]) -> str:
    text = "payload"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _first_non_finite(value: Any, path: tuple) -> tuple | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _first_non_finite(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _first_non_finite(item, (*path, index))
            if found is not None:
                return found
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str) or _is_number(value)


def _missing(where: str, obj: Mapping[str, Any], required: Iterable[str]) -> Iterator[str]:
    """One problem naming every required key ``obj`` lacks."""
    absent = [repr(key) for key in required if key not in obj]
    if len(absent) == 1:
        yield f"{where} is missing the required key {absent[0]}"
    elif absent:
        yield f"{where} is missing the required keys {', '.join(absent[:-1])} and {absent[-1]}"


def _config_problems(config: Mapping[str, Any]) -> Iterator[str]:
    for key, (expected, fits) in _CONFIG_FIELDS.items():
        if key in config and not fits(config[key]):
            yield f"payload.config.{key} must be {expected}, got {config[key]!r:.80}"


def _point_problems(p: Any, where: str) -> Iterator[str]:
    if not isinstance(p, Mapping):
        yield f"{where} must be an object, got {type(p).__name__}"
        return
    yield from _missing(where, p, ("x", "y"))
    for key in ("x", "y"):
        if key in p and not _is_scalar(p[key]):
            yield f"{where}.{key} must be a number, a string or null, got {p[key]!r:.80}"
    if p.get("z") is not None and not _is_number(p["z"]):
        yield f"{where}.z must be a number or null, got {p['z']!r:.80}"
    for key in ("label", "color"):
        if key in p and not isinstance(p[key], str):
            yield f"{where}.{key} must be a string, got {p[key]!r:.80}"
    for key in ("error", "lower", "upper"):
        if key in p and not _is_number(p[key]):
            yield f"{where}.{key} must be a number, got {p[key]!r:.80}"
    if _is_number(p.get("error")) and p["error"] < 0:
        yield f"{where}.error must be >= 0, got {p['error']!r}"


def _series_problems(item: Any, where: str) -> Iterator[str]:
    if not isinstance(item, Mapping):
        yield f"{where} must be an object, got {type(item).__name__}"
        return
    yield from _missing(where, item, _schema()["$defs"]["series"]["required"])
    if "name" in item and not isinstance(item["name"], str):
        yield f"{where}.name must be a string, got {item['name']!r:.80}"
    if "type" in item and item["type"] not in SERIES_TYPES:
        yield f"{where}.type must be one of {SERIES_TYPES}, got {item['type']!r:.80}"
    if "style" in item and not isinstance(item["style"], Mapping):
        yield f"{where}.style must be an object, got {type(item['style']).__name__}"
    data = item.get("data")
    if data is not None and not isinstance(data, list):
        yield f"{where}.data must be an array or null, got {type(data).__name__}"
    elif data is not None:
        for j, p in enumerate(data):
            yield from _point_problems(p, f"{where}.data[{j}]")


def _plain_problems(obj: Any) -> Iterator[str]:
    """The schema's rules written out, for installs without ``jsonschema``; yields every
    problem found, in document order."""
    if not isinstance(obj, Mapping):
        yield f"payload must be a JSON object (dict), got {type(obj).__name__}"
        return
    yield from _missing("payload", obj, _schema()["required"])
    kind = obj.get("plot_type")
    if "plot_type" in obj and canonical_plot_type(kind) not in PLOT_TYPES:
        yield f"payload.plot_type must be one of {PLOT_TYPES}, got {kind!r:.80}"
    for key in ("title", "timestamp", "model_name"):
        if key in obj and not isinstance(obj[key], str):
            yield f"payload.{key} must be a string, got {obj[key]!r:.80}"
    if obj.get("timestamp") == "":
        yield "payload.timestamp must be a non-empty RFC 3339 time, got ''"
    for key in ("config", "metrics"):
        if key in obj and not isinstance(obj[key], Mapping):
            yield f"payload.{key} must be an object, got {type(obj[key]).__name__}"
    if isinstance(obj.get("config"), Mapping):
        yield from _config_problems(obj["config"])
    all_series = obj.get("series")
    if all_series is not None and not isinstance(all_series, list):
        yield f"payload.series must be an array or null, got {type(all_series).__name__}"
    elif all_series is not None:
        for i, item in enumerate(all_series):
            yield from _series_problems(item, f"payload.series[{i}]")


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError:
        return None
    return jsonschema.Draft202012Validator(_schema())


def _listed(problems: Iterator[str]) -> list[str]:
    """Up to :data:`MAX_LISTED_PROBLEMS` problems, with a note when there are more."""
    listed: list[str] = []
    for problem in problems:
        if len(listed) == MAX_LISTED_PROBLEMS:
            listed.append("(more problems not listed)")
            break
        listed.append(problem)
    return listed


def _schema_problems(obj: Any) -> Iterator[str]:
    validator = _validator()
    if validator is not None:
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        for error in errors:
            yield f"{_path_text(error.absolute_path)}: {error.message}"


def validate_payload(obj: Any) -> None:
    """Checks ``obj`` against the payload schema; raises naming every problem found.

    Args:
        obj: a payload dict (for example, ``json.loads`` of what a client sent).

    Raises:
        ValueError: lists the problems and where they are, separated by ``"; "``, e.g.
            ``payload.series[0].type must be one of (...), got 'pie'``; all the required
            keys an object lacks are named together.

    Example:
        >>> validate_payload({"plot_type": "qq_plot", "series": []})
        Traceback (most recent call last):
        ...
        ValueError: invalid plot payload: payload is missing the required keys 'title', \
'timestamp', 'model_name' and 'config'
    """
    problems = _listed(_plain_problems(obj))
    if not problems:
        problems = _listed(_schema_problems(obj))
    if not problems:
        bad = _first_non_finite(obj, ())
        if bad is not None:
            problems = [f"{_path_text(bad)} must be a finite number (JSON has no NaN/inf)"]
    if problems:
        raise ValueError(f"invalid plot payload: {'; '.join(problems)}")


# go-metal's PlotConfig names for what gometal's renderer reads as x_label, y_label, ...
_GO_METAL_LABELS = {"x_label": "x_axis_label", "y_label": "y_axis_label"}
_GO_METAL_DASHES = {"dashed": "dash", "dotted": "dot", "solid": "solid"}


def _complete_style(style: Mapping[str, Any] | None) -> dict[str, Any]:
    """A series style with go-metal's ``line_width``/``line_style``/``alpha`` also under
    the names the renderer reads (``width``/``dash``/``opacity``)."""
    out = dict(style or {})
    if _is_number(out.get("line_width")):
        out.setdefault("width", out["line_width"])
    if out.get("line_style") in _GO_METAL_DASHES:
        out.setdefault("dash", _GO_METAL_DASHES[out["line_style"]])
    if _is_number(out.get("alpha")):
        out.setdefault("opacity", out["alpha"])
    return out


def _complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for ours, theirs in _GO_METAL_LABELS.items():
        if ours not in out and isinstance(out.get(theirs), str) and out[theirs]:
            out[ours] = out[theirs]
    for axis in ("x", "y"):
        if out.get(f"{axis}_axis_scale") == "log":
            out.setdefault(f"{axis}_log", True)
    return out


def normalize_payload(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Validates a payload and returns it complete, in the form the renderer reads.

    The copy has go-metal's plot-type name (old names such as ``training_curve`` are
    mapped), ``metrics``, ``series``, each series' ``data`` and ``style`` present (a Go
    client leaves empty maps out and writes nil slices as ``null``), and go-metal's
    ``x_axis_label``/``y_axis_label``/``*_axis_scale: "log"`` and ``line_width``/
    ``line_style``/``alpha`` also under gometal's names (``x_label``, ``x_log``, ``width``,
    ``dash``, ``opacity``) unless those are set. ``obj`` itself is not changed.

    Args:
        obj: a payload dict.

    Returns:
        The completed copy.

    Raises:
        ValueError: the payload breaks the schema (see :func:`validate_payload`).

    Example:
        >>> p = normalize_payload({"plot_type": "training_curve", "title": "t",
        ...     "timestamp": "2026-01-02T03:04:05Z", "model_name": "m", "series": None,
        ...     "config": {"x_axis_label": "Step"}})
        >>> p["plot_type"], p["series"], p["metrics"], p["config"]["x_label"]
        ('training_curves', [], {}, 'Step')
    """
    validate_payload(obj)
    out = dict(obj)
    out["plot_type"] = canonical_plot_type(obj["plot_type"])
    out["metrics"] = dict(obj.get("metrics") or {})
    out["config"] = _complete_config(obj["config"])
    out["series"] = [
        {
            **s,
            "data": [dict(p) for p in s.get("data") or []],
            "style": _complete_style(s.get("style")),
        }
        for s in obj["series"] or []
    ]
    return out
