"""Plot payloads in go-metal's JSON format: building them and validating them.

A payload is a plain ``dict`` (so it goes to ``json.dumps`` unchanged) with the keys
``plot_type``, ``title``, ``timestamp``, ``model_name``, ``series``, ``config`` and
``metrics``. ``schema.json`` beside this file is the contract; :func:`validate_payload`
checks a payload against it (with ``jsonschema`` when installed, else with the same rules
written out here) and also rejects non-finite numbers, which JSON cannot carry.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "PLOT_TYPES",
    "SERIES_TYPES",
    "load_schema",
    "make_payload",
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
        >>> load_schema()["properties"]["plot_type"]["enum"][0]
        'training_curve'
    """
    return json.loads(json.dumps(_schema()))


PLOT_TYPES: tuple[str, ...] = tuple(_schema()["properties"]["plot_type"]["enum"])
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
        plot_type: one of :data:`PLOT_TYPES`.
        title: the plot title.
        series_list: the series (see :func:`series`).
        model_name: the model the plot describes.
        config: axis titles and other drawing settings (``x_label``, ``y_label``, ...).
        metrics: summary numbers (``auc``, ``r2``, ...).
        timestamp: RFC 3339 time; defaults to now (UTC).

    Returns:
        The payload dict.

    Raises:
        ValueError: the payload breaks the schema (see :func:`validate_payload`).

    Example:
        >>> p = make_payload("training_curve", "Loss", [series("loss", "line", [point(0, 1.0)])])
        >>> p["plot_type"]
        'training_curve'
    """
    payload = {
        "plot_type": plot_type,
        "title": str(title),
        "timestamp": timestamp or _now(),
        "model_name": str(model_name),
        "series": [dict(s) for s in series_list],
        "config": _json_value(dict(config or {})),
        "metrics": _json_value(dict(metrics or {})),
    }
    validate_payload(payload)
    return payload


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


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _plain_check(obj: Any) -> str | None:
    """The schema's rules written out, for installs without ``jsonschema``."""
    if not isinstance(obj, Mapping):
        return f"payload must be a JSON object (dict), got {type(obj).__name__}"
    for key in _schema()["required"]:
        if key not in obj:
            return f"payload is missing the required key {key!r}"
    if obj["plot_type"] not in PLOT_TYPES:
        return f"payload.plot_type must be one of {PLOT_TYPES}, got {obj['plot_type']!r}"
    for key in ("title", "timestamp", "model_name"):
        if not isinstance(obj[key], str):
            return f"payload.{key} must be a string, got {obj[key]!r}"
    if not obj["timestamp"]:
        return "payload.timestamp must be a non-empty RFC 3339 time, got ''"
    for key in ("config", "metrics"):
        if not isinstance(obj[key], Mapping):
            return f"payload.{key} must be an object, got {type(obj[key]).__name__}"
    if not isinstance(obj["series"], list):
        return f"payload.series must be an array, got {type(obj['series']).__name__}"
    for i, item in enumerate(obj["series"]):
        where = f"payload.series[{i}]"
        if not isinstance(item, Mapping):
            return f"{where} must be an object, got {type(item).__name__}"
        for key in ("name", "type", "data", "style"):
            if key not in item:
                return f"{where} is missing the required key {key!r}"
        if not isinstance(item["name"], str):
            return f"{where}.name must be a string, got {item['name']!r}"
        if item["type"] not in SERIES_TYPES:
            return f"{where}.type must be one of {SERIES_TYPES}, got {item['type']!r}"
        if not isinstance(item["style"], Mapping):
            return f"{where}.style must be an object, got {type(item['style']).__name__}"
        if not isinstance(item["data"], list):
            return f"{where}.data must be an array, got {type(item['data']).__name__}"
        for j, p in enumerate(item["data"]):
            pwhere = f"{where}.data[{j}]"
            if not isinstance(p, Mapping):
                return f"{pwhere} must be an object, got {type(p).__name__}"
            for key in ("x", "y"):
                if key not in p:
                    return f"{pwhere} is missing the required key {key!r}"
                if not _is_scalar(p[key]):
                    return f"{pwhere}.{key} must be a number or a string, got {p[key]!r}"
            z = p.get("z")
            if z is not None and not (isinstance(z, (int, float)) and not isinstance(z, bool)):
                return f"{pwhere}.z must be a number or null, got {z!r}"
            if "label" in p and not isinstance(p["label"], str):
                return f"{pwhere}.label must be a string, got {p['label']!r}"
            for key in ("error", "lower", "upper"):
                if key in p and not (
                    isinstance(p[key], (int, float)) and not isinstance(p[key], bool)
                ):
                    return f"{pwhere}.{key} must be a number, got {p[key]!r}"
            if "error" in p and p["error"] < 0:
                return f"{pwhere}.error must be >= 0, got {p['error']!r}"
    return None


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError:
        return None
    return jsonschema.Draft202012Validator(_schema())


def validate_payload(obj: Any) -> None:
    """Checks ``obj`` against the payload schema; raises on the first problem.

    Args:
        obj: a payload dict (for example, ``json.loads`` of what a client sent).

    Raises:
        ValueError: names the first problem and where it is, e.g.
            ``payload.series[0].type must be one of (...), got 'pie'``.

    Example:
        >>> validate_payload({"plot_type": "pie"})
        Traceback (most recent call last):
        ...
        ValueError: invalid plot payload: payload is missing the required key 'title'
    """
    problem = _plain_check(obj)
    if problem is None:
        validator = _validator()
        if validator is not None:
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            if errors:
                error = errors[0]
                problem = f"{_path_text(error.absolute_path)}: {error.message}"
    if problem is None:
        bad = _first_non_finite(obj, ())
        if bad is not None:
            problem = f"{_path_text(bad)} must be a finite number (JSON has no NaN/inf)"
    if problem is not None:
        raise ValueError(f"invalid plot payload: {problem}")
