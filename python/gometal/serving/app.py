"""The inference server's HTTP application: the Open Inference Protocol (KServe v2) routes.

::

    GET  /v2                                        server metadata
    GET  /v2/health/live | /v2/health/ready         liveness, readiness (503 while draining)
    GET  /v2/models/{name}[/versions/{v}]           model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready     200 when ready, else 503 with the reason
    POST /v2/models/{name}[/versions/{v}]/infer     inference (JSON or binary tensor data)
    POST /v2/models/{name}[/versions/{v}]/generate  text generation (language models)
    POST /v2/models/{name}[/versions/{v}]/generate_stream  the same, as server-sent events
    POST /v2/repository/index                       every model version and its state
    GET  /metrics                                   Prometheus metrics

Errors answer ``{"error": message}``: 400 for a malformed or mismatched request, 401
without the API key, 404 for an unknown model or version, 413 for a body over the limit
(refused from its ``Content-Length`` before it is read), 503 with ``Retry-After`` when a
model's queue is full, or for a model that failed to load (the reason is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..base.version import __version__
from ..viz.server_guard import HostPolicy, UploadSlots
from .fast_infer import DirectInferRoute
from .guard import LOG_FIELDS_KEY, RequestGuard, error_body
from .infer_route import InferRoute, infer_target, read_limited_body
from .metrics import CONTENT_TYPE, ServingMetrics
from .protocol import ProtocolError
from .repository import ModelRepository
from .served_model import ServedModels, ServedVersion
from .streaming import TokenStream, event_stream_response

__all__ = ["DEFAULT_SETTINGS", "SERVER_NAME", "ServerSettings", "create_app"]

SERVER_NAME = "gometal"
EXTENSIONS = ["binary_tensor_data", "model_repository", "generate"]
GRPC_DRAIN_S = 60.0  # the most a shutdown waits for gRPC calls already taken


@dataclass(frozen=True)
class ServerSettings:
    """The server's settings (a model's ``config.json`` may override the batching ones).

    Attributes:
        max_batch_size: the most rows in a merged batch (and in one request).
        max_queue_delay_ms: how long a request waits for others to join its batch (0, as
            Triton's default: a free instance takes what is queued at once; requests that
            come during a pass still merge).
        instances: model copies computing concurrently, per model version.
        max_queue: requests waiting per model version; more get 503.
        start_when_idle: a free instance runs a request alone in the queue at once
            instead of waiting ``max_queue_delay_ms`` for others to join it (on by default:
            one client pays no batching delay; requests that come during a pass still merge).
        gather_while_busy: while another instance computes, a free instance waits until
            the queue holds as many rows as that batch (or it ends) before taking a batch
            (on by default: under load batches grow instead of running one row at a time).
        max_body_bytes: the largest request body; larger ones get 413 unread.
        body_timeout_s: seconds a request body may take to arrive.
        api_key: the bearer token every request must carry, or ``None``.
        warmup: compile each model's plans for the batch sizes it will run at start.
    """

    max_batch_size: int = 64
    max_queue_delay_ms: float = 0.0
    instances: int = 1
    max_queue: int = 256
    start_when_idle: bool = True
    gather_while_busy: bool = True
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 30.0
    api_key: str | None = None
    warmup: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "instances", "max_queue", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("max_queue_delay_ms", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("start_when_idle", "gather_while_busy"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(  # noqa: TRY004  (as the other settings: a ValueError)
                    f"{name} must be a bool, got {getattr(self, name)!r}"
                )
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty string or None")

    def batching(self) -> dict[str, Any]:
        """The settings a model's ``config.json`` may override."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "instances": self.instances,
            "max_queue": self.max_queue,
            "start_when_idle": self.start_when_idle,
            "gather_while_busy": self.gather_while_busy,
        }


DEFAULT_SETTINGS = ServerSettings()


class _InferenceApp(FastAPI):
    """FastAPI, with inference requests handed straight to their own chain (the request
    guard around :class:`InferRoute`): FastAPI's and Starlette's outer layers (errors,
    body limit, telemetry) cost the hot path a tenth of its time and do nothing for it,
    as the route answers every error itself."""

    infer_chain: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chain = self.infer_chain
        if (
            chain is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and infer_target(scope["path"]) is not None
        ):
            await chain(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, err: ProtocolError) -> JSONResponse:
        return JSONResponse(error_body(err.message), err.status, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        path = request.url.path
        if err.status_code == 404 and path.startswith("/v2/models/"):
            # A name holding "/" (or an encoded one) matches no route: say which model.
            name = path[len("/v2/models/") :].rsplit("/", 1)[0]
            return JSONResponse(error_body(f"unknown model or endpoint {name!r}"), 404)
        return JSONResponse(error_body(str(err.detail)), err.status_code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}"), 500)


async def _not_inference(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError(f"{scope['path']} is not an inference path")  # dispatch checked it


def create_app(
    repository: ModelRepository | str | os.PathLike[str],
    settings: ServerSettings = DEFAULT_SETTINGS,
    host_policy: HostPolicy | None = None,
    grpc_address: str | None = None,
) -> FastAPI:
    """Builds the inference server's ASGI application over a model repository.

    Args:
        repository: a :class:`ModelRepository`, or the path of one (or of a model file).
        settings: batching, limits and the API key.
        host_policy: the ``Host`` names answered (default: the loopback names).
        grpc_address: ``host:port`` where the application's lifespan also serves the
            protocol over gRPC, or ``None`` for HTTP alone.

    Returns:
        The application; ``app.state.models`` holds the served versions,
        ``app.state.metrics`` the metrics, ``app.state.direct_infer`` the
        :class:`DirectInferRoute` for :func:`serving_protocol`, and ``app.state.begin_drain()`` starts a
        graceful shutdown (a server calls it on SIGTERM). Its lifespan's end drains every
        batcher.

    Raises:
        RepositoryError: the path holds no model.

    Example:
        >>> app = create_app("models", ServerSettings(max_batch_size=32))  # doctest: +SKIP
    """
    if not isinstance(repository, ModelRepository):
        repository = ModelRepository(repository)
    metrics = ServingMetrics(settings.max_batch_size)
    models = ServedModels(repository, settings.batching(), metrics, settings.warmup)
    slots = UploadSlots(settings.max_queue)
    policy = host_policy if host_policy is not None else HostPolicy.for_bind("127.0.0.1")

    grpc: dict[str, Any] = {"server": None, "loop": None, "stopping": None}

    def begin_drain() -> None:
        """Reports not ready and stops taking gRPC calls (uvicorn stops taking HTTP ones)."""
        models.draining = True
        if grpc["server"] is not None and grpc["stopping"] is None:
            stop = grpc["server"].stop(GRPC_DRAIN_S)  # answers the calls it took
            grpc["stopping"] = asyncio.run_coroutine_threadsafe(stop, grpc["loop"])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if grpc_address is not None:
            from .grpc_service import start_grpc_server

            grpc["loop"] = asyncio.get_running_loop()
            grpc["server"] = await start_grpc_server(
                grpc_address, models, metrics, settings.api_key, settings.max_body_bytes
            )
        try:
            yield
        finally:
            begin_drain()
            if grpc["stopping"] is not None:
                await asyncio.wrap_future(grpc["stopping"])
            await anyio.to_thread.run_sync(models.close)

    app = _InferenceApp(
        title="gometal inference server", docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=lifespan,
    )  # fmt: skip
    app.state.models = models
    app.state.begin_drain = begin_drain
    app.state.metrics = metrics
    # The inference route is a plain ASGI layer (the hot path) behind the request guard;
    # the guard wraps every other route too.
    infer_route = InferRoute(
        _not_inference, models=models, metrics=metrics, max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s, slots=slots,
    )  # fmt: skip
    app.infer_chain = RequestGuard(infer_route, policy=policy, api_key=settings.api_key)
    # The same checks and limits, for the HTTP connections that answer inference themselves.
    app.state.direct_infer = DirectInferRoute(
        models, metrics, app.infer_chain, settings.max_body_bytes, settings.body_timeout_s, slots
    )
    app.add_middleware(RequestGuard, policy=policy, api_key=settings.api_key)
    _install_error_handlers(app)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if models.draining:
            raise ProtocolError(503, "the server is shutting down")
        if not models.any_ready():
            raise ProtocolError(503, "no model is ready (see POST /v2/repository/index)")
        return Response(status_code=200)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        served = models.resolve(name, version)
        metadata = served.metadata()
        entry = repository.find(name)
        if version is None and entry is not None:
            metadata["versions"] = [str(v) for v in sorted(entry.versions)]
        return metadata

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        if models.draining:
            raise ProtocolError(503, "the server is shutting down")
        models.resolve(name, version)
        return Response(status_code=200)

    @app.post("/v2/repository/index")
    async def repository_index() -> list[dict[str, Any]]:
        return repository.index()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def parse_generate(
        request: Request, name: str, version: str | None
    ) -> tuple[ServedVersion, str, dict[str, Any]]:
        served = models.resolve(name, version)
        if served.generator is None:
            raise ProtocolError(
                400, f"model {name!r} does not generate text: it needs token-id input and a "
                "tokenizer.json beside its model file",
            )  # fmt: skip
        body = await read_limited_body(
            request.scope, request.receive, settings.max_body_bytes, settings.body_timeout_s, slots
        )
        text, parameters = served.generator.parse(bytes(body))
        setattr(request.state, LOG_FIELDS_KEY, {"model": name, "version": served.version})
        return served, text, parameters

    @app.post("/v2/models/{name}/generate")
    @app.post("/v2/models/{name}/versions/{version}/generate")
    async def generate(request: Request, name: str, version: str | None = None) -> JSONResponse:
        served, text, parameters = await parse_generate(request, name, version)
        served.generator.admit(name)
        try:
            output = await anyio.to_thread.run_sync(served.generator.generate, text, parameters)
        finally:
            served.generator.release()
        answer = {"model_name": name, "model_version": str(served.version), "text_output": output}
        return JSONResponse(answer)

    @app.post("/v2/models/{name}/generate_stream")
    @app.post("/v2/models/{name}/versions/{version}/generate_stream")
    async def generate_stream(request: Request, name: str, version: str | None = None) -> Response:
        served, text, parameters = await parse_generate(request, name, version)
        counter = metrics.streamed_token_counter(name, served.version)
        served.generator.admit(name)
        stream = TokenStream(served.generator, text, parameters, counter)
        stream.start(on_end=served.generator.release)
        return await event_stream_response(stream, name, served.version)

    return app
