"""Parsing the plotting sidecar's request bodies: strict JSON that can be stored.

``json.loads`` alone lets through what the sidecar cannot keep: ``NaN`` and ``Infinity``
(not JSON), lone UTF-16 surrogates such as ``"\\ud800"`` (valid JSON escapes, but no UTF-8
encoding exists for them, so the record could not be written) and nesting deep enough to
exhaust Python's recursion in the parser or in validation. Each is refused here, before
any payload check, with a message saying where.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "BodyError", "parse_json_body"]

# Arrays and objects nested in one another. A batch of go-metal payloads uses 7
# (batch, plots, payload, series, one series, data, one point); config and metrics
# leave room for a client's own nested options.
MAX_JSON_DEPTH = 64


class BodyError(ValueError):
    """The body is not JSON the sidecar can store; the message says why and where."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _has_lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Node:
    """A container met while walking the document: where it is, for messages."""

    __slots__ = ("depth", "key", "parent")

    def __init__(self, parent: _Node | None, key: Any, depth: int) -> None:
        self.parent = parent
        self.key = key
        self.depth = depth

    def path(self, last: Any = None) -> str:
        keys = [] if last is None else [last]
        node: _Node | None = self
        while node is not None and node.parent is not None:
            keys.append(node.key)
            node = node.parent
        text = "body"
        for key in reversed(keys):
            text += f"[{key}]" if isinstance(key, int) else f".{key}"
        return text


def _structure_problem(doc: Any) -> str | None:
    """Why ``doc`` cannot be stored (too deep, a lone surrogate), or ``None``."""
    if isinstance(doc, str):
        return "body holds a lone UTF-16 surrogate" if _has_lone_surrogate(doc) else None
    stack: list[tuple[Any, _Node]] = [(doc, _Node(None, None, 1))]
    while stack:
        value, node = stack.pop()
        if node.depth > MAX_JSON_DEPTH:
            return f"{node.path()} is nested more than {MAX_JSON_DEPTH} arrays or objects deep"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and _has_lone_surrogate(key):
                return f"{node.path()} has a key with a lone UTF-16 surrogate: {key!r}"
            if isinstance(item, (dict, list)):
                stack.append((item, _Node(node, key, node.depth + 1)))
            elif isinstance(item, str) and _has_lone_surrogate(item):
                return f"{node.path(key)} holds a lone UTF-16 surrogate: {item[:40]!r}"
    return None


def parse_json_body(body: bytes | bytearray) -> Any:
    """Parses a request body as UTF-8 JSON that the sidecar can store.

    Args:
        body: the raw body.

    Returns:
        The parsed document.

    Raises:
        BodyError: the body is empty, not UTF-8, not JSON (``NaN`` included), nested more
            than :data:`MAX_JSON_DEPTH` deep, or holds a string with a lone surrogate.

    Example:
        >>> parse_json_body(b'{"plots": []}')
        {'plots': []}
        >>> parse_json_body(b'{"title": "\\\\ud800"}')
        Traceback (most recent call last):
        ...
        gometal.viz.server_json.BodyError: body.title holds a lone UTF-16 surrogate: '\\ud800'
    """
    if not body:
        raise BodyError("body must be a JSON document, got an empty body")
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise BodyError(
            f"body is nested more than {MAX_JSON_DEPTH} arrays or objects deep"
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise BodyError(f"body must be valid UTF-8 JSON: {err}") from None
    if isinstance(doc, (dict, list, str)):
        problem = _structure_problem(doc)
        if problem is not None:
            raise BodyError(problem)
    return doc
