"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``, as
``tritonclient.grpc`` calls it.

The protocol's messages come from ``proto/inference.proto``, compiled with grpcio-tools
when the package is built, or when the first server starts in a tree built without it
(:mod:`gometal.serving.grpc_protocol`). The
service shares the HTTP server's event loop, models and batchers: a gRPC request joins
the same batches as HTTP ones. Errors map to gRPC status codes (400: INVALID_ARGUMENT,
401: UNAUTHENTICATED, 404: NOT_FOUND, 413: RESOURCE_EXHAUSTED, 503: UNAVAILABLE with a
``retry-after`` trailer). ``ModelStreamInfer`` (tritonclient.grpc's ``start_stream`` and
``async_stream_infer``) answers each request of a stream as its batch is done.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ..base.version import __version__
from .grpc_protocol import PROTO_FILE, load_protocol
from .metrics import ServingMetrics
from .protocol import (
    DATATYPES,
    InferRequest,
    ProtocolError,
    RequestTensor,
    datatype_of,
    split_bytes_elements,
)
from .request_log import log_request
from .served_model import ServedModels

__all__ = ["PROTO_FILE", "SERVICE_NAME", "load_protocol", "start_grpc_server"]

SERVICE_NAME = "inference.GRPCInferenceService"
SERVER_NAME = "gometal"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
# Typed ``contents`` field of each datatype (FP16 and BF16 travel only as raw bytes).
_CONTENTS_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}  # fmt: skip


_STREAM_END = object()  # the last item of a stream's answer queue


def _log_line(fields: dict[str, Any]) -> None:
    log_request(fields)


def _status_code(http_status: int) -> Any:
    import grpc

    codes = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
             404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
             503: grpc.StatusCode.UNAVAILABLE}  # fmt: skip
    return codes.get(http_status, grpc.StatusCode.INTERNAL)


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def _input_tensor(tensor: Any, raw: bytes | None) -> RequestTensor:
    label = f"input {tensor.name!r}"
    if tensor.datatype == "BYTES":
        shape = list(tensor.shape)
        if raw is not None:
            elements = split_bytes_elements(raw, math.prod(shape), label)
        else:
            elements = np.empty(len(tensor.contents.bytes_contents), dtype=object)
            elements[:] = list(tensor.contents.bytes_contents)
            if len(elements) != math.prod(shape):
                raise _bad(f"{label}: shape {shape} needs {math.prod(shape)} elements, "
                           f"got {len(elements)}")  # fmt: skip
        return RequestTensor(tensor.name, "BYTES", elements.reshape(shape))
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise _bad(f"{label}: datatype must be one of {sorted(DATATYPES)}, got {tensor.datatype!r}")
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise _bad(f"{label}: shape must hold sizes >= 0, got {shape}")
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise _bad(f"{label}: shape {shape} needs {count * dtype.itemsize} bytes of "
                       f"{tensor.datatype}, got {len(raw)} bytes")  # fmt: skip
        return RequestTensor(tensor.name, tensor.datatype, np.frombuffer(raw, dtype).reshape(shape))
    field = _CONTENTS_FIELDS.get(tensor.datatype)
    values = getattr(tensor.contents, field) if field else ()
    if len(values) != count:
        raise _bad(f"{label}: shape {shape} needs {count} elements, got {len(values)}")
    array = np.asarray(values)
    if dtype.kind in "iu" and array.size:
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise _bad(f"{label}: values must lie in [{limits.min}, {limits.max}]")
    return RequestTensor(tensor.name, tensor.datatype, array.astype(dtype).reshape(shape))


def request_from_message(message: Any) -> InferRequest:
    """The :class:`InferRequest` a ``ModelInferRequest`` holds (raw or typed contents).

    Raises:
        ProtocolError: 400 naming the input and what disagrees.
    """
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise _bad(f"raw_input_contents holds {len(raw)} tensors for {len(message.inputs)} inputs")
    if not message.inputs:
        raise _bad("the request has no inputs")
    names = [tensor.name for tensor in message.inputs]
    if len(set(names)) != len(names):
        raise _bad(f"inputs must have distinct names, got {names}")
    inputs = [
        _input_tensor(tensor, raw[index] if raw else None)
        for index, tensor in enumerate(message.inputs)
    ]
    outputs = {output.name: True for output in message.outputs} or None
    return InferRequest(message.id or None, inputs, outputs, binary_output=True)


class InferenceServicer:
    """The service's methods over the served models (an async gRPC generic handler).

    Args:
        models: the served model versions.
        metrics: where requests are counted (status: the HTTP equivalent).
        api_key: the bearer token every call must carry in ``authorization``, or ``None``.
    """

    def __init__(self, models: ServedModels, metrics: ServingMetrics, api_key: str | None):
        self.models = models
        self.metrics = metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.pb = load_protocol()

    def _check_key(self, context: Any) -> None:
        if self.expected is not None:
            given = dict(context.invocation_metadata()).get("authorization", "")
            if not hmac.compare_digest(given.encode("latin-1"), self.expected):
                what = "a wrong API key" if given else "no API key"
                raise ProtocolError(401, f"this server needs 'authorization: Bearer <api "
                                         f"key>' metadata, got {what}")  # fmt: skip

    async def _guarded(self, method: str, call: Any, request: Any, context: Any) -> Any:
        started, status = time.perf_counter(), 500
        try:
            self._check_key(context)
            answer = await call(request)
            status = 200
            return answer
        except ProtocolError as err:
            status = err.status
            if err.status == 503:
                context.set_trailing_metadata((("retry-after", "1"),))
            await context.abort(_status_code(err.status), err.message)
        finally:
            fields = {"method": "gRPC", "path": method, "status": status,
                      "ms": round((time.perf_counter() - started) * 1000, 3)}  # fmt: skip
            if method == "ModelInfer":
                fields.update(model=request.model_name, version=request.model_version,
                              id=request.id or None)  # fmt: skip
            _log_line(fields)

    async def server_live(self, request: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Any:
        return self.pb.ServerReadyResponse(
            ready=not self.models.draining and self.models.any_ready()
        )

    async def model_ready(self, request: Any) -> Any:
        try:
            self.models.resolve(request.name, request.version or None)
        except ProtocolError:
            return self.pb.ModelReadyResponse(ready=False)
        return self.pb.ModelReadyResponse(ready=not self.models.draining)

    async def server_metadata(self, request: Any) -> Any:
        return self.pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    async def model_metadata(self, request: Any) -> Any:
        served = self.models.resolve(request.name, request.version or None)
        metadata = served.metadata()
        entry = self.models.repository.find(request.name)
        if not request.version and entry is not None:
            metadata["versions"] = [str(v) for v in sorted(entry.versions)]
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"],
            inputs=[tensor(**t) for t in metadata["inputs"]],
            outputs=[tensor(**t) for t in metadata["outputs"]],
        )  # fmt: skip

    async def model_infer(self, message: Any) -> Any:
        status, served = 500, None
        try:
            served = self.models.resolve(message.model_name, message.model_version or None)
            request = request_from_message(message)
            outputs = await served.infer(request)
            answer = self.pb.ModelInferResponse(
                model_name=served.name, model_version=str(served.version), id=message.id
            )
            for name, array in outputs:
                array = np.ascontiguousarray(array)
                datatype = datatype_of(array.dtype)
                answer.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
                answer.raw_output_contents.append(
                    array.astype(array.dtype.newbyteorder("<")).tobytes()
                )
            status = 200
            return answer
        except ProtocolError as err:
            status = err.status
            raise
        finally:
            if served is None:
                self.metrics.count_request("", "", status)
            else:
                self.metrics.count_request(served.name, served.version, status)

    async def model_stream_infer(self, requests: AsyncIterator[Any], context: Any) -> Any:
        """``ModelStreamInfer``: answers each request of the stream as soon as it is done
        (requests join the batches as unary ones do, so answers may come out of order;
        each carries its request's id). A refused request answers ``error_message`` and
        the stream goes on; a stream without the API key is refused whole."""
        try:
            self._check_key(context)
        except ProtocolError as err:
            _log_line({"method": "gRPC", "path": "ModelStreamInfer", "status": err.status})
            await context.abort(_status_code(err.status), err.message)
        answers: asyncio.Queue[Any] = asyncio.Queue()
        pending: set[asyncio.Task] = set()

        async def answer(message: Any) -> None:
            started, status = time.perf_counter(), 500
            try:
                response = self.pb.ModelStreamInferResponse(
                    infer_response=await self.model_infer(message)
                )
                status = 200
            except Exception as err:  # noqa: BLE001  (the client hears it; the stream goes on)
                status = err.status if isinstance(err, ProtocolError) else 500
                text = err.message if isinstance(err, ProtocolError) else (
                    f"internal error: {type(err).__name__}: {err}")  # fmt: skip
                response = self.pb.ModelStreamInferResponse(error_message=text)
                response.infer_response.model_name = message.model_name
                response.infer_response.id = message.id
            _log_line({"method": "gRPC", "path": "ModelStreamInfer", "status": status,
                       "ms": round((time.perf_counter() - started) * 1000, 3),
                       "model": message.model_name, "version": message.model_version,
                       "id": message.id or None})  # fmt: skip
            answers.put_nowait(response)

        async def read() -> None:
            try:
                async for message in requests:
                    task = asyncio.ensure_future(answer(message))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                while pending:  # the client sent its last request: answer what it sent
                    await asyncio.wait(set(pending))
            finally:
                answers.put_nowait(_STREAM_END)

        reader = asyncio.ensure_future(read())
        try:
            while (response := await answers.get()) is not _STREAM_END:
                yield response
            await reader  # the reader's own failure (the client went away) propagates
        finally:
            for task in (reader, *pending):
                task.cancel()

    def handler(self) -> Any:
        """The generic handler that routes the service's methods to this servicer."""
        import grpc

        def unary(method: Any, request_type: Any, response_type: Any) -> Any:
            name = method.__name__.title().replace("_", "")

            async def call(request: Any, context: Any) -> Any:
                return await self._guarded(name, method, request, context)

            return grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )  # fmt: skip

        pb = self.pb
        methods = {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": unary(self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.model_stream_infer, request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelStreamInferResponse.SerializeToString,
            ),
        }  # fmt: skip
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)


async def start_grpc_server(
    address: str, models: ServedModels, metrics: ServingMetrics, api_key: str | None,
    max_message_bytes: int,
) -> Any:  # fmt: skip
    """Starts the gRPC service on ``address`` in the running event loop.

    Args:
        address: ``host:port`` to listen on.
        models: the served model versions.
        metrics: where requests are counted.
        api_key: the bearer token calls must carry, or ``None``.
        max_message_bytes: the largest request message accepted.

    Returns:
        The started ``grpc.aio.Server`` (stop it with ``await server.stop(grace)``).

    Raises:
        RuntimeError: the address cannot be bound.

    Example:
        >>> server = await start_grpc_server("127.0.0.1:8001", models, metrics, None, 2**24)  # doctest: +SKIP
    """
    import grpc

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)]  # fmt: skip
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((InferenceServicer(models, metrics, api_key).handler(),))
    server.add_insecure_port(address)
    await server.start()
    return server
