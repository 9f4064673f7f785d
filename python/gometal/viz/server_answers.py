"""The plotting sidecar's answers: its error type and codes, the checks of posted plots
and batches, and what the read routes compute.

Everything here but :class:`ApiError` runs in the server's worker threads (parsing,
validating and drawing hold the GIL for long stretches; the event loop must not).
"""

from __future__ import annotations

import json
from typing import Any

from .payload import canonical_plot_type
from .server_json import BodyError, parse_json_body
from .server_pages import index_page, plot_page
from .server_store import PlotStore, check_id, new_id

__all__ = [
    "CLOSE",
    "ERROR_CODES",
    "ApiError",
    "Pages",
    "batch_result",
    "checked_batch",
    "checked_plot",
    "error_body",
    "handle_batch",
    "handle_plot",
    "optional_id",
    "parse_body",
    "plot_response",
    "store_plots",
]

# The ``error_code`` of each kind of failure (HTTP errors of the framework itself, such as
# 405, use the status's name, e.g. ``METHOD_NOT_ALLOWED``).
ERROR_CODES = {
    "INVALID_REQUEST": "a malformed request (e.g. a Content-Length that is not a number)",
    "INVALID_JSON": "the body is empty, not UTF-8, not JSON, nested too deeply, or has text "
    "UTF-8 cannot hold (a lone surrogate)",
    "PAYLOAD_TOO_LARGE": "the body is over the size limit",
    "INVALID_ID": "a plot or batch id with characters other than A-Z a-z 0-9 _ -",
    "INVALID_BATCH": 'a batch body that is not {"plots": [payload, ...], ...}',
    "VALIDATION_ERROR": "a payload breaks the schema",
    "RENDER_ERROR": "a valid payload that cannot be drawn",
    "BATCH_REJECTED": "a valid plot of a batch not stored because another plot was invalid",
    "PLOT_ID_TAKEN": "a plot id already in use",
    "NOT_FOUND": "no such plot, batch or page",
    "HOST_NOT_ALLOWED": "a Host header naming a host the sidecar is not reached by",
    "ORIGIN_NOT_ALLOWED": "a write sent by a web page other than the sidecar's own",
    "UNSUPPORTED_MEDIA_TYPE": "a write whose Content-Type is not application/json",
    "REQUEST_TIMEOUT": "the request's headers or body did not arrive in time",
    "SERVER_BUSY": "too many uploads at once; retry after Retry-After seconds",
    "INTERNAL_ERROR": "a fault of the service",
}


class ApiError(Exception):
    """An error answered as ``{"success": false, "message", "error_code"}`` with ``status``.

    Args:
        status: the HTTP status code (4xx, or 503).
        message: what was wrong, naming the argument and the value received.
        code: the ``error_code``, one of :data:`ERROR_CODES`.
        extra: further fields of the answer (a rejected batch's ``results`` and
            ``summary``).
        headers: response headers (``Retry-After``; ``Connection: close`` when the body
            was not read, so a slow client cannot keep the connection).

    Example:
        >>> ApiError(400, "bad id", "INVALID_ID").code
        'INVALID_ID'
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


# Sent with an error about a request that cannot be read to its end (a broken
# Content-Length, a body that stalls or never ends): the connection ends with the answer.
# Other answers given before the body was read (413, 415, 503) are followed by reading and
# dropping the rest of the body for a bounded time (server_http), so the client, still
# sending, gets to read them: closing at once would reset the connection.
CLOSE = {"Connection": "close"}


def error_body(message: str, code: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error answer.

    Args:
        message: what was wrong.
        code: the ``error_code``, one of :data:`ERROR_CODES`.
        extra: further fields (a rejected batch's ``results`` and ``summary``).

    Returns:
        ``{"success": False, "message", "error_code", ...}``, in go-metal's field order.

    Example:
        >>> error_body("no such plot", "NOT_FOUND")["success"]
        False
    """
    return {"success": False, "message": message, "error_code": code, **(extra or {})}


def parse_body(body: bytes | bytearray) -> Any:
    """Parses a write's body (see :func:`~gometal.viz.server_json.parse_json_body`).

    Args:
        body: the raw body.

    Returns:
        The JSON document.

    Raises:
        ApiError: 400 ``INVALID_JSON`` naming what is wrong and where.

    Example:
        >>> parse_body(b"[1]")
        [1]
    """
    try:
        return parse_json_body(body)
    except BodyError as err:
        raise ApiError(400, str(err), "INVALID_JSON") from None


def optional_id(value: Any, what: str) -> str | None:
    """Checks an optional plot or batch id.

    Args:
        value: the id, or ``None``.
        what: its name, for the message (``"plot_id"``, ``"plots[2].plot_id"``).

    Returns:
        ``value`` unchanged.

    Raises:
        ApiError: 400 ``INVALID_ID`` naming the value.

    Example:
        >>> optional_id("run-1", "batch_id")
        'run-1'
    """
    if value is None:
        return None
    try:
        return check_id(value, what)
    except ValueError as err:
        raise ApiError(400, str(err), "INVALID_ID") from None


def _payload_problem(obj: Any) -> tuple[str, str] | None:
    """``(error_code, message)`` when ``obj`` cannot be stored: it breaks the schema, or it
    cannot be rendered (only plots that can be shown are stored); else ``None``."""
    from .payload import validate_payload
    from .render import to_figure

    try:
        validate_payload(obj)
    except ValueError as err:
        return "VALIDATION_ERROR", str(err)
    try:
        to_figure(obj)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        return "RENDER_ERROR", f"the plot cannot be drawn: {err}"
    return None


def _stored_form(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as stored: as received, under go-metal's plot-type name."""
    return {**payload, "plot_type": canonical_plot_type(payload["plot_type"])}


def _current(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record with its plot type under go-metal's name (older files may use
    gometal's former names)."""
    payload = record.get("payload")
    if isinstance(payload, dict) and "plot_type" in payload:
        return {**record, "payload": _stored_form(payload)}
    return record


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    payload = record.get("payload", {})
    plot_id = record.get("id")
    return {
        "id": plot_id,
        "plot_type": payload.get("plot_type"),
        "title": payload.get("title"),
        "timestamp": payload.get("timestamp"),
        "model_name": payload.get("model_name"),
        "batch_id": record.get("batch_id"),
        "created": record.get("created"),
        "view_url": f"/plot/{plot_id}",
        "plot_url": f"/api/plots/{plot_id}",
    }


def plot_response(record: dict[str, Any], batch_id: str | None) -> dict[str, Any]:
    """go-metal's ``PlottingResponse`` for one stored plot (its ``plot_type`` added).

    Args:
        record: the stored record.
        batch_id: the batch it was added to, if any.

    Returns:
        The answer's fields.

    Example:
        >>> plot_response({"id": "a", "payload": {"plot_type": "qq_plot"}}, None)["view_url"]
        '/plot/a'
    """
    plot_id = record["id"]
    answer: dict[str, Any] = {
        "success": True,
        "message": "plot stored",
        "plot_url": f"/api/plots/{plot_id}",
        "view_url": f"/plot/{plot_id}",
        "plot_id": plot_id,
    }
    if batch_id is not None:
        answer.update(batch_id=batch_id, dashboard_url=f"/dashboard/{batch_id}")
    answer["plot_type"] = record["payload"]["plot_type"]
    return answer


def batch_result(record: dict[str, Any]) -> dict[str, Any]:
    """go-metal's ``BatchPlotResult`` of one stored plot.

    Args:
        record: the stored record.

    Returns:
        The result's fields.

    Example:
        >>> batch_result({"id": "a", "payload": {"plot_type": "qq_plot"}})["plot_id"]
        'a'
    """
    plot_id = record["id"]
    return {
        "success": True,
        "plot_id": plot_id,
        "plot_url": f"/api/plots/{plot_id}",
        "view_url": f"/plot/{plot_id}",
        "plot_type": record["payload"]["plot_type"],
        "message": "plot stored",
    }


def _rejected_batch(plots: list[Any], problems: list[tuple[str, str] | None]) -> ApiError:
    """The answer to a batch with invalid plots: nothing is stored, and ``results`` says
    why for each plot."""
    results = []
    for plot, problem in zip(plots, problems):
        kind = plot.get("plot_type") if isinstance(plot, dict) else None
        code, message = problem or (
            "BATCH_REJECTED",
            "valid, but not stored: a batch is stored whole or not at all",
        )
        result: dict[str, Any] = {"success": False}
        if isinstance(kind, str) and kind:
            result["plot_type"] = canonical_plot_type(kind)
        result.update(message=message, error_code=code)
        results.append(result)
    named = "; ".join(f"plots[{i}]: {p[1]}" for i, p in enumerate(problems) if p is not None)
    bad = sum(p is not None for p in problems)
    return ApiError(
        422,
        f"{bad} of {len(plots)} plots are invalid, nothing was stored: {named}",
        "VALIDATION_ERROR",
        {
            "results": results,
            "summary": {"total_plots": len(plots), "successful": 0, "failed": len(plots)},
        },
    )


def store_plots(store: PlotStore, payloads: list[dict], **kwargs: Any) -> list[dict]:
    """``store.add_plots`` with its refusals as :class:`ApiError`.

    Args:
        store: the plot store.
        payloads: checked payloads.
        **kwargs: ``PlotStore.add_plots``'s keyword arguments.

    Returns:
        The stored records.

    Raises:
        ApiError: 409 ``PLOT_ID_TAKEN``; 400 ``INVALID_JSON`` for text UTF-8 cannot hold.

    Example:
        >>> store_plots(store, [payload], batch_id="run-1")  # doctest: +SKIP
    """
    try:
        return store.add_plots(payloads, **kwargs)
    except FileExistsError as err:
        raise ApiError(409, str(err), "PLOT_ID_TAKEN") from None
    except ValueError as err:  # text UTF-8 cannot hold; parse_json_body refuses it first
        raise ApiError(400, str(err), "INVALID_JSON") from None


def checked_batch(body: Any) -> dict[str, Any]:
    """Checks a whole batch body before anything of it is written.

    Args:
        body: the parsed ``/api/batch-plot`` body.

    Returns:
        The keyword arguments of ``PlotStore.add_plots`` (``payloads``, ``plot_ids``,
        ``batch_id``, ``batch_title``, ``replace``).

    Raises:
        ApiError: 422 ``INVALID_BATCH`` for the body's shape, 422 with each plot's result
            when any plot is invalid, 400 ``INVALID_ID`` for a bad id.

    Example:
        >>> checked_batch({"plots": [payload]})["replace"]  # doctest: +SKIP
        False
    """
    if not isinstance(body, dict) or not isinstance(body.get("plots"), list):
        got = type(body.get("plots")).__name__ if isinstance(body, dict) else type(body)
        raise ApiError(
            422, f'body must be {{"plots": [payload, ...]}}, got plots={got}', "INVALID_BATCH"
        )
    plots = body["plots"]
    if not plots:
        raise ApiError(
            422, "plots must hold at least one payload, got an empty list", "INVALID_BATCH"
        )
    batch_id = optional_id(body.get("batch_id"), "batch_id") or new_id()
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        raise ApiError(422, f"title must be a string, got {type(title).__name__}", "INVALID_BATCH")
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise ApiError(422, f"replace must be true or false, got {replace!r}", "INVALID_BATCH")
    problems = [_payload_problem(p) for p in plots]
    if any(problems):
        raise _rejected_batch(plots, problems)
    ids = [optional_id(p.get("plot_id"), f"plots[{i}].plot_id") for i, p in enumerate(plots)]
    return {
        "payloads": [_stored_form(p) for p in plots],
        "plot_ids": ids,
        "batch_id": batch_id,
        "batch_title": title,
        "replace": replace,
    }


def checked_plot(payload: Any) -> dict[str, Any]:
    """Checks one payload (schema, then drawing) and returns it as stored.

    Args:
        payload: the parsed ``/api/plot`` body.

    Returns:
        The payload under go-metal's plot-type name.

    Raises:
        ApiError: 422 ``VALIDATION_ERROR`` or ``RENDER_ERROR``.

    Example:
        >>> checked_plot(payload)["plot_type"]  # doctest: +SKIP
        'training_curves'
    """
    problem = _payload_problem(payload)
    if problem is not None:
        raise ApiError(422, problem[1], problem[0])
    return _stored_form(payload)


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")


class Pages:
    """What the read routes compute, in the worker threads: records, listings, pages.

    Each method raises :class:`ApiError` (400 ``INVALID_ID``, 404 ``NOT_FOUND``).

    Args:
        store: the plot store.

    Example:
        >>> Pages(store).view("loss-1")[:15]  # doctest: +SKIP
        '<!DOCTYPE html>'
    """

    def __init__(self, store: PlotStore) -> None:
        self.store = store

    def plot(self, plot_id: str) -> dict[str, Any]:
        """One stored record, its plot type under go-metal's name."""
        record = self.store.get_plot(optional_id(plot_id, "plot_id"))
        if record is None:
            raise ApiError(404, f"no plot with plot_id {plot_id!r}", "NOT_FOUND")
        return _current(record)

    def record_json(self, plot_id: str) -> bytes:
        """``GET /api/plots/<id>``'s body."""
        return _json_bytes(self.plot(plot_id))

    def listing_json(self, batch_id: str | None) -> bytes:
        """``GET /api/plots``'s body, optionally of one batch."""
        records = self.store.list_plots(batch_id)
        return _json_bytes(
            {"count": len(records), "plots": [_summary(_current(r)) for r in records]}
        )

    def view(self, plot_id: str) -> str:
        """The view page of one plot."""
        from .render import to_figure

        record = self.plot(plot_id)
        fragment = to_figure(record["payload"]).to_html(
            full_html=False, include_plotlyjs=False, div_id="plot", config={"responsive": True}
        )
        return plot_page(record, fragment)

    def dashboard(self, batch_id: str) -> str:
        """The page with every plot of a batch."""
        from .render import dashboard_html

        batch = self.store.get_batch(optional_id(batch_id, "batch_id"))
        if batch is None:
            raise ApiError(404, f"no batch or run with batch_id {batch_id!r}", "NOT_FOUND")
        records = [self.store.get_plot(pid) for pid in batch.get("plot_ids", [])]
        payloads = [_current(r)["payload"] for r in records if r is not None]
        return dashboard_html(payloads, batch.get("title") or f"gometal run {batch_id}")

    def index(self) -> str:
        """The index page."""
        plots = [_current(r) for r in self.store.list_plots()]
        return index_page(plots, self.store.list_batches())


def handle_plot(
    store: PlotStore, body: bytes | bytearray, plot_id: str | None, batch_id: str | None
) -> dict[str, Any]:
    """``POST /api/plot`` from the raw body to the answer, in one worker call: the parsed
    payload (several times the body's size in memory) lives only inside it.

    Args:
        store: the plot store.
        body: the request body.
        plot_id: the ``?plot_id=`` asked for, if any (already checked).
        batch_id: the ``?batch_id=``, if any (already checked).

    Returns:
        go-metal's ``PlottingResponse``.

    Raises:
        ApiError: 400 ``INVALID_JSON``, 422, 409, as :func:`parse_body`,
            :func:`checked_plot` and :func:`store_plots` do.

    Example:
        >>> handle_plot(store, b'{...}', None, "run-1")["dashboard_url"]  # doctest: +SKIP
        '/dashboard/run-1'
    """
    stored = checked_plot(parse_body(body))
    [record] = store_plots(store, [stored], plot_ids=[plot_id], batch_id=batch_id)
    return plot_response(record, batch_id)


def handle_batch(store: PlotStore, body: bytes | bytearray) -> dict[str, Any]:
    """``POST /api/batch-plot`` from the raw body to the answer, in one worker call.

    Everything is checked before anything is written: the batch is stored whole or not.

    Args:
        store: the plot store.
        body: the request body.

    Returns:
        go-metal's ``BatchPlottingResponse``.

    Raises:
        ApiError: as :func:`parse_body`, :func:`checked_batch` and :func:`store_plots`.

    Example:
        >>> handle_batch(store, b'{"plots": [...]}')["summary"]["failed"]  # doctest: +SKIP
        0
    """
    arguments = checked_batch(parse_body(body))
    records = store_plots(store, **arguments)
    count = len(records)
    return {
        "success": True,
        "message": f"{count} plots stored",
        "batch_id": arguments["batch_id"],
        "results": [batch_result(r) for r in records],
        "dashboard_url": f"/dashboard/{arguments['batch_id']}",
        "summary": {"total_plots": count, "successful": count, "failed": 0},
    }
