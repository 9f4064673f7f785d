"""The plotting sidecar: a small web service that stores plot payloads and shows them.

It speaks go-metal's wire format: the bodies are go-metal's ``PlotData`` as its Go client
serialises them, and the answers are its ``PlottingResponse`` and ``BatchPlottingResponse``
(empty fields left out, as Go's ``omitempty`` does; URLs are paths the client prefixes
with the service's base URL).

Endpoints (go-metal's, plus read-back routes)::

    POST /api/plot              one payload       -> {"success", "message", "plot_url",
                                                      "view_url", "plot_id", ...}
    POST /api/batch-plot        {"plots": [...]}  -> {"success", "message", "batch_id",
                                                      "results", "dashboard_url", "summary"}
    GET  /api/plots             every stored plot      -> {"plots": [...], "count"}
    GET  /api/plots/<id>        one stored record (JSON)
    GET  /health                {"status": "ok", ...}
    GET  /plot/<id>             HTML view page of one plot
    GET  /dashboard/<batch_id>  HTML page with every plot of a batch or run
    GET  /                      HTML index

``POST /api/plot?plot_id=ID&batch_id=RUN`` and a batch body's ``"batch_id"`` let a client
choose ids (``^[A-Za-z0-9_-]{1,64}$``); otherwise the server draws uuid4 hex ids. Posting
again to an existing batch id appends to it, so one training run can keep one dashboard;
with ``"replace": true`` the new plots replace the batch's earlier ones (a run re-sending
its latest snapshot after every epoch).

Bad input never writes anything: a body over the size limit gets 413 before it is parsed,
malformed JSON 400, a payload that breaks the schema or cannot be rendered 422 (naming
every problem, e.g. all the required keys it lacks), a bad id 400, a taken plot id 409.
Every error body is ``{"success": false, "message": "...", "error_code": "..."}`` with one
of the codes in :data:`ERROR_CODES`; a rejected batch also lists each plot's result.
"""

from __future__ import annotations

import http
import json
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .payload import canonical_plot_type
from .server_pages import PLOTLY_JS_ROUTE, index_page, plot_page, plotly_js
from .server_store import PlotStore, check_id, new_id

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ERROR_CODES",
    "SERVICE_NAME",
    "ApiError",
    "create_app",
    "serve",
]

SERVICE_NAME = "gometal-sidecar"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024

# The ``error_code`` of each kind of failure (HTTP errors of the framework itself, such as
# 405, use the status's name, e.g. ``METHOD_NOT_ALLOWED``).
ERROR_CODES = {
    "INVALID_REQUEST": "a malformed request (e.g. a Content-Length that is not a number)",
    "INVALID_JSON": "the body is empty, not UTF-8 or not JSON",
    "PAYLOAD_TOO_LARGE": "the body is over the size limit",
    "INVALID_ID": "a plot or batch id with characters other than A-Z a-z 0-9 _ -",
    "INVALID_BATCH": 'a batch body that is not {"plots": [payload, ...], ...}',
    "VALIDATION_ERROR": "a payload breaks the schema",
    "RENDER_ERROR": "a valid payload that cannot be drawn",
    "BATCH_REJECTED": "a valid plot of a batch not stored because another plot was invalid",
    "PLOT_ID_TAKEN": "a plot id already in use",
    "NOT_FOUND": "no such plot, batch or page",
    "INTERNAL_ERROR": "a fault of the service",
}


class ApiError(Exception):
    """An error answered as ``{"success": false, "message", "error_code"}`` with ``status``.

    Args:
        status: the HTTP status code (4xx).
        message: what was wrong, naming the argument and the value received.
        code: the ``error_code``, one of :data:`ERROR_CODES`.
        extra: further fields of the answer (a rejected batch's ``results`` and
            ``summary``).

    Example:
        >>> ApiError(400, "bad id", "INVALID_ID").code
        'INVALID_ID'
    """

    def __init__(
        self, status: int, message: str, code: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra or {}


def _error_body(message: str, code: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    # go-metal's PlottingResponse field order: success, message, ..., error_code.
    return {"success": False, "message": message, "error_code": code, **(extra or {})}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


async def _read_json(request: Request, limit: int) -> Any:
    """Reads the body, refusing it past ``limit`` bytes before any parsing."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(
                400, f"Content-Length must be a byte count, got {declared!r}", "INVALID_REQUEST"
            )
        if int(declared) > limit:
            raise ApiError(
                413,
                f"body must be at most {limit} bytes, got {int(declared)} bytes",
                "PAYLOAD_TOO_LARGE",
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413,
                f"body must be at most {limit} bytes, got more than {limit}",
                "PAYLOAD_TOO_LARGE",
            )
    if not body:
        raise ApiError(400, "body must be a JSON document, got an empty body", "INVALID_JSON")
    try:
        return json.loads(bytes(body).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise ApiError(400, f"body must be valid UTF-8 JSON: {err}", "INVALID_JSON") from None


def _optional_id(value: Any, what: str) -> str | None:
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


def _plot_response(record: dict[str, Any], batch_id: str | None) -> dict[str, Any]:
    """go-metal's ``PlottingResponse`` for one stored plot (its ``plot_type`` added)."""
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


def _batch_result(record: dict[str, Any]) -> dict[str, Any]:
    """go-metal's ``BatchPlotResult`` of one stored plot."""
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


def _store_plots(store: PlotStore, payloads: list[dict], **kwargs: Any) -> list[dict]:
    try:
        return store.add_plots(payloads, **kwargs)
    except FileExistsError as err:
        raise ApiError(409, str(err), "PLOT_ID_TAKEN") from None


def create_app(
    data_dir: str | os.PathLike[str], *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """Builds the sidecar's ASGI application over one data directory.

    Args:
        data_dir: where plots and batches are stored (created when missing).
        max_body_bytes: the largest request body accepted; larger ones get 413.

    Returns:
        The FastAPI application (run it with uvicorn, or test it with ``TestClient``).

    Raises:
        TypeError: ``max_body_bytes`` is not an int.
        ValueError: ``max_body_bytes`` is below 1.

    Example:
        >>> app = create_app("/tmp/gometal-plots")  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    if not isinstance(max_body_bytes, int) or isinstance(max_body_bytes, bool):
        raise TypeError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes}")
    store = PlotStore(data_dir)
    app = FastAPI(title="gometal plotting sidecar", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        body = _error_body(err.message, err.code, err.extra)
        return JSONResponse(body, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        try:
            code = http.HTTPStatus(err.status_code).name
        except ValueError:
            code = f"HTTP_{err.status_code}"
        return JSONResponse(_error_body(str(err.detail), code), err.status_code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        # A Go client parses every answer as JSON, so even a fault answers in its format.
        message = f"internal error: {type(err).__name__}"
        return JSONResponse(_error_body(message, "INTERNAL_ERROR"), 500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        count = sum(1 for _ in (store.root / "plots").glob("*.json"))
        return {"status": "ok", "service": SERVICE_NAME, "plots": count}

    @app.post("/api/plot")
    async def post_plot(request: Request) -> JSONResponse:
        plot_id = _optional_id(request.query_params.get("plot_id"), "plot_id")
        batch_id = _optional_id(request.query_params.get("batch_id"), "batch_id")
        payload = await _read_json(request, max_body_bytes)
        problem = await run_in_threadpool(_payload_problem, payload)
        if problem is not None:
            raise ApiError(422, problem[1], problem[0])
        [record] = await run_in_threadpool(
            _store_plots, store, [_stored_form(payload)], plot_ids=[plot_id], batch_id=batch_id
        )
        return JSONResponse(_plot_response(record, batch_id))

    @app.post("/api/batch-plot")
    async def post_batch(request: Request) -> JSONResponse:
        body = await _read_json(request, max_body_bytes)
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
        batch_id = _optional_id(body.get("batch_id"), "batch_id") or new_id()
        title = body.get("title")
        if title is not None and not isinstance(title, str):
            raise ApiError(
                422, f"title must be a string, got {type(title).__name__}", "INVALID_BATCH"
            )
        replace = body.get("replace", False)
        if not isinstance(replace, bool):
            raise ApiError(422, f"replace must be true or false, got {replace!r}", "INVALID_BATCH")
        # Everything is checked before anything is written: a batch is stored whole or not.
        problems = [await run_in_threadpool(_payload_problem, p) for p in plots]
        if any(problems):
            raise _rejected_batch(plots, problems)
        ids = [_optional_id(p.get("plot_id"), f"plots[{i}].plot_id") for i, p in enumerate(plots)]
        payloads = [_stored_form(p) for p in plots]
        records = await run_in_threadpool(
            _store_plots,
            store,
            payloads,
            plot_ids=ids,
            batch_id=batch_id,
            batch_title=title,
            replace=replace,
        )
        return JSONResponse(
            {
                "success": True,
                "message": f"{len(records)} plots stored",
                "batch_id": batch_id,
                "results": [_batch_result(r) for r in records],
                "dashboard_url": f"/dashboard/{batch_id}",
                "summary": {
                    "total_plots": len(records),
                    "successful": len(records),
                    "failed": 0,
                },
            }
        )

    @app.get("/api/plots")
    async def list_plots(batch_id: str | None = None) -> dict[str, Any]:
        batch_id = _optional_id(batch_id, "batch_id")
        records = await run_in_threadpool(store.list_plots, batch_id)
        return {"count": len(records), "plots": [_summary(_current(r)) for r in records]}

    def _plot_or_404(plot_id: str) -> dict[str, Any]:
        record = store.get_plot(_optional_id(plot_id, "plot_id"))
        if record is None:
            raise ApiError(404, f"no plot with plot_id {plot_id!r}", "NOT_FOUND")
        return _current(record)

    @app.get("/api/plots/{plot_id}")
    async def get_plot(plot_id: str) -> dict[str, Any]:
        return _plot_or_404(plot_id)

    @app.get("/plot/{plot_id}", response_class=HTMLResponse)
    async def view_plot(plot_id: str) -> HTMLResponse:
        from .render import to_figure

        record = _plot_or_404(plot_id)
        figure = to_figure(record["payload"])
        fragment = figure.to_html(
            full_html=False, include_plotlyjs=False, div_id="plot", config={"responsive": True}
        )
        return HTMLResponse(plot_page(record, fragment))

    @app.get("/dashboard/{batch_id}", response_class=HTMLResponse)
    async def dashboard(batch_id: str) -> HTMLResponse:
        from .render import dashboard_html

        batch = store.get_batch(_optional_id(batch_id, "batch_id"))
        if batch is None:
            raise ApiError(404, f"no batch or run with batch_id {batch_id!r}", "NOT_FOUND")
        records = [store.get_plot(pid) for pid in batch.get("plot_ids", [])]
        payloads = [r["payload"] for r in records if r is not None]
        title = batch.get("title") or f"gometal run {batch_id}"
        return HTMLResponse(dashboard_html(payloads, title))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        plots = await run_in_threadpool(store.list_plots)
        batches = await run_in_threadpool(store.list_batches)
        return HTMLResponse(index_page([_current(r) for r in plots], batches))

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask for it; an empty answer is no error

    @app.get(PLOTLY_JS_ROUTE)
    async def plotly_bundle() -> Response:
        return Response(
            plotly_js(),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return app


def serve(
    data_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Runs the sidecar in this process until interrupted.

    Args:
        data_dir: where plots are stored.
        host: the address to bind; the default keeps the service on this machine.
        port: the TCP port.
        max_body_bytes: the largest request body accepted.

    Example:
        >>> serve("gometal-plots", port=8080)  # doctest: +SKIP
    """
    import uvicorn

    app = create_app(data_dir, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
