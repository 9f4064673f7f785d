"""The plotting sidecar: a small web service that stores plot payloads and shows them.

It speaks go-metal's wire format: the bodies are go-metal's ``PlotData`` as its Go client
serialises them, and the answers are its ``PlottingResponse`` and ``BatchPlottingResponse``
(empty fields left out, as Go's ``omitempty`` does; URLs are paths the client prefixes
with the service's base URL).

Endpoints (go-metal's, plus read-back routes; ``/openapi.json`` describes them all)::

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
    GET  /openapi.json          the OpenAPI 3.1 document of these endpoints

``POST /api/plot?plot_id=ID&batch_id=RUN`` and a batch body's ``"batch_id"`` let a client
choose ids (``^[A-Za-z0-9_-]{1,64}$``); otherwise the server draws uuid4 hex ids. Posting
again to an existing batch id appends to it, so one training run can keep one dashboard;
with ``"replace": true`` the new plots replace the batch's earlier ones (a run re-sending
its latest snapshot after every epoch).

Who may ask (see :mod:`gometal.viz.server_guard`): a ``Host`` the sidecar is reached by
(else 400), for writes no foreign ``Origin`` (403) and ``Content-Type: application/json``
(415). At most ``max_uploads`` writes run at once (503 with ``Retry-After`` beyond), and a
body must arrive within ``body_timeout_s`` (408). Parsing, checking and drawing run in a
pool of ``workers`` threads, so the event loop keeps answering other clients meanwhile.

Bad input never writes anything: a body over the size limit gets 413 before it is parsed,
malformed JSON (too deeply nested, or text UTF-8 cannot hold) 400, a payload that breaks
the schema or cannot be rendered 422 (naming every problem, e.g. all the required keys it
lacks), a bad id 400, a taken plot id 409. A batch is stored whole or not at all. Every
error body is ``{"success": false, "message": "...", "error_code": "..."}`` with one of
the codes in :data:`ERROR_CODES`; a rejected batch also lists each plot's result.
"""

from __future__ import annotations

import contextlib
import functools
import http
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from .server_answers import (
    CLOSE,
    ERROR_CODES,
    ApiError,
    Pages,
    error_body,
    handle_batch,
    handle_plot,
    optional_id,
)
from .server_guard import (
    BodyTooLarge,
    HostPolicy,
    UploadSlots,
    content_type_problem,
    origin_problem,
    read_body,
)
from .server_openapi import OPENAPI_ROUTE, openapi_document
from .server_pages import PLOTLY_JS_ROUTE, plotly_js
from .server_store import PlotStore

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_UPLOADS",
    "DEFAULT_WORKERS",
    "ERROR_CODES",
    "SERVICE_NAME",
    "ApiError",
    "create_app",
    "serve",
]

SERVICE_NAME = "gometal-sidecar"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Bodies received and handled at once: bounds their memory to this many times the body
# limit. Parsed payloads, several times larger, exist only inside the worker threads.
DEFAULT_MAX_UPLOADS = 16
# Time for a whole body: ample for 10 MB over a slow link, short enough that a stalled
# client soon gives its upload slot back.
DEFAULT_BODY_TIMEOUT_S = 30.0
# Parsing, checking and drawing hold Python's GIL: more threads than this would only
# make each request slower, and leave the event loop waiting for the GIL longer.
DEFAULT_WORKERS = 2
RETRY_AFTER_S = 1
# The routes that write; any other request only reads (or gets 404/405 from the router).
WRITE_ROUTES = frozenset({("POST", "/api/plot"), ("POST", "/api/batch-plot")})

_log = logging.getLogger(__name__)


class _RequestGuard:
    """Refuses requests from hosts and pages that may not ask, before any route runs."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    def _problem(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.policy.allows(host):
            return (
                400,
                (
                    f"Host {host!r} is not served here (DNS rebinding protection); accepted: "
                    f"{self.policy.describe()}; add a name with gometal sidecar --allowed-host"
                ),
                "HOST_NOT_ALLOWED",
            )
        if (scope["method"], scope["path"]) not in WRITE_ROUTES:
            return None
        problem = origin_problem(headers.get("origin"), host, scope.get("scheme", "http"))
        if problem is not None:
            return 403, problem, "ORIGIN_NOT_ALLOWED"
        problem = content_type_problem(headers.get("content-type"))
        if problem is not None:
            return 415, problem, "UNSUPPORTED_MEDIA_TYPE"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self._problem(scope) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message, code = problem
        await JSONResponse(error_body(message, code), status)(scope, receive, send)


def _declared_length(request: Request, limit: int) -> None:
    """Refuses a body whose Content-Length is malformed or over ``limit``, unread."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError(
            400,
            f"Content-Length must be a byte count, got {declared!r}",
            "INVALID_REQUEST",
            headers=CLOSE,
        )
    if int(declared) > limit:
        raise ApiError(
            413,
            f"body must be at most {limit} bytes, got {int(declared)} bytes",
            "PAYLOAD_TOO_LARGE",
        )


def _check_settings(max_body_bytes: int, body_timeout_s: float, workers: int) -> None:
    for name, value in (("max_body_bytes", max_body_bytes), ("workers", workers)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be a positive int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be a positive int, got {value}")
    if isinstance(body_timeout_s, bool) or not isinstance(body_timeout_s, (int, float)):
        raise TypeError(f"body_timeout_s must be seconds > 0, got {body_timeout_s!r}")
    if not 0 < body_timeout_s < float("inf"):
        raise ValueError(f"body_timeout_s must be seconds > 0, got {body_timeout_s!r}")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        body = error_body(err.message, err.code, err.extra)
        return JSONResponse(body, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        try:
            code = http.HTTPStatus(err.status_code).name
        except ValueError:
            code = f"HTTP_{err.status_code}"
        return JSONResponse(error_body(str(err.detail), code), err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameters(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in err.errors()
        )
        return JSONResponse(error_body(problems or "bad request", "INVALID_REQUEST"), 400)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        # A Go client parses every answer as JSON, so even a fault answers in its format.
        message = f"internal error: {type(err).__name__}"
        return JSONResponse(error_body(message, "INTERNAL_ERROR"), 500)


def create_app(
    data_dir: str | os.PathLike[str],
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    host_policy: HostPolicy | None = None,
    max_uploads: int = DEFAULT_MAX_UPLOADS,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    workers: int = DEFAULT_WORKERS,
) -> FastAPI:
    """Builds the sidecar's ASGI application over one data directory.

    At start it removes what a killed process left half written (see
    :meth:`PlotStore.recover`).

    Args:
        data_dir: where plots and batches are stored (created when missing).
        max_body_bytes: the largest request body accepted; larger ones get 413.
        host_policy: the ``Host`` names answered; default: this machine's loopback names
            (``HostPolicy.for_bind("127.0.0.1")``).
        max_uploads: writes received and handled at once; more get 503 + ``Retry-After``.
        body_timeout_s: seconds a request body may take to arrive; then 408.
        workers: threads that parse, check, draw and store.

    Returns:
        The FastAPI application (run it with :func:`serve`, which adds the header
        deadline, or test it with ``TestClient(app, base_url="http://127.0.0.1")``).

    Raises:
        TypeError: a limit of the wrong type.
        ValueError: a limit below 1 (or a timeout not above 0).

    Example:
        >>> app = create_app("/tmp/gometal-plots")  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    _check_settings(max_body_bytes, body_timeout_s, workers)
    slots = UploadSlots(max_uploads)
    policy = host_policy if host_policy is not None else HostPolicy.for_bind("127.0.0.1")
    store = PlotStore(data_dir)
    recovery = store.recover()
    if recovery.temp_files or recovery.orphan_plots:
        _log.warning(
            "removed %d temporary files and %d plots their batch does not list, left by an "
            "interrupted run", recovery.temp_files, len(recovery.orphan_plots),
        )  # fmt: skip
    pages = Pages(store)
    limiter = anyio.CapacityLimiter(workers)
    document = openapi_document(ERROR_CODES, max_body_bytes)

    async def work(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=limiter
        )

    @contextlib.asynccontextmanager
    async def upload(request: Request) -> AsyncIterator[bytes]:
        """Holds an upload slot while the body is read and handled."""
        _declared_length(request, max_body_bytes)
        if not slots.try_acquire():
            raise ApiError(
                503,
                f"{slots.limit} uploads are in progress, the most at once; retry later",
                "SERVER_BUSY",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            try:
                body = await read_body(request.stream(), max_body_bytes, body_timeout_s)
            except BodyTooLarge:
                raise ApiError(
                    413,
                    f"body must be at most {max_body_bytes} bytes, got more than that",
                    "PAYLOAD_TOO_LARGE",
                    headers=CLOSE,
                ) from None
            except TimeoutError:
                raise ApiError(
                    408,
                    f"the body must arrive within {body_timeout_s:g} s",
                    "REQUEST_TIMEOUT",
                    headers=CLOSE,
                ) from None
            except ClientDisconnect:  # nobody reads this answer; it keeps the log quiet
                raise ApiError(
                    400, "the client left before its body was complete", "INVALID_REQUEST"
                ) from None
            yield body
        finally:
            slots.release()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="gometal plotting sidecar",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.recovery = recovery
    app.add_middleware(_RequestGuard, policy=policy)
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        names = (entry.name for entry in os.scandir(store.root / "plots"))
        count = sum(1 for name in names if name.endswith(".json") and name[0] != ".")
        return {"status": "ok", "service": SERVICE_NAME, "plots": count}

    @app.post("/api/plot")
    async def post_plot(request: Request) -> JSONResponse:
        plot_id = optional_id(request.query_params.get("plot_id"), "plot_id")
        batch_id = optional_id(request.query_params.get("batch_id"), "batch_id")
        async with upload(request) as body:
            return JSONResponse(await work(handle_plot, store, body, plot_id, batch_id))

    @app.post("/api/batch-plot")
    async def post_batch(request: Request) -> JSONResponse:
        async with upload(request) as body:
            return JSONResponse(await work(handle_batch, store, body))

    @app.get("/api/plots")
    async def list_plots(batch_id: str | None = None) -> Response:
        content = await work(pages.listing_json, optional_id(batch_id, "batch_id"))
        return Response(content, media_type="application/json")

    @app.get("/api/plots/{plot_id}")
    async def get_plot(plot_id: str) -> Response:
        return Response(await work(pages.record_json, plot_id), media_type="application/json")

    @app.get("/plot/{plot_id}", response_class=HTMLResponse)
    async def view_plot(plot_id: str) -> HTMLResponse:
        return HTMLResponse(await work(pages.view, plot_id))

    @app.get("/dashboard/{batch_id}", response_class=HTMLResponse)
    async def dashboard(batch_id: str) -> HTMLResponse:
        return HTMLResponse(await work(pages.dashboard, batch_id))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(await work(pages.index))

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask for it; an empty answer is no error

    @app.get(PLOTLY_JS_ROUTE)
    async def plotly_bundle() -> Response:
        return Response(
            await work(plotly_js),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get(OPENAPI_ROUTE)
    async def openapi() -> JSONResponse:
        return JSONResponse(document)

    return app


def serve(
    data_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allowed_hosts: Sequence[str] = (),
    max_uploads: int = DEFAULT_MAX_UPLOADS,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    header_timeout_s: float | None = None,
    workers: int = DEFAULT_WORKERS,
) -> None:
    """Runs the sidecar in this process until interrupted.

    Args:
        data_dir: where plots are stored.
        host: the address to bind; the default keeps the service on this machine.
        port: the TCP port.
        max_body_bytes: the largest request body accepted.
        allowed_hosts: ``Host`` names accepted besides the loopback names, the bound
            address and, for a wildcard bind, this machine's names (``"*"``: any).
        max_uploads: writes received and handled at once.
        body_timeout_s: seconds a request body may take.
        header_timeout_s: seconds a request's headers may take; default
            ``server_http.DEFAULT_HEADER_TIMEOUT_S``.
        workers: threads that parse, check, draw and store.

    Example:
        >>> serve("gometal-plots", port=8080)  # doctest: +SKIP
    """
    import uvicorn

    from .server_http import DEFAULT_HEADER_TIMEOUT_S, protocol_with_header_timeout

    protocol = protocol_with_header_timeout(
        DEFAULT_HEADER_TIMEOUT_S if header_timeout_s is None else header_timeout_s
    )
    app = create_app(
        data_dir,
        max_body_bytes=max_body_bytes,
        host_policy=HostPolicy.for_bind(host, allowed_hosts),
        max_uploads=max_uploads,
        body_timeout_s=body_timeout_s,
        workers=workers,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, http=protocol)
