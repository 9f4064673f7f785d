"""Serving models over the Open Inference Protocol (KServe v2), as NVIDIA Triton does.

``gometal serve REPO`` (or :func:`serve`) loads a model repository in Triton's layout and
answers ``tritonclient`` and any other v2 client over HTTP and gRPC
(``inference.GRPCInferenceService``, :mod:`gometal.serving.grpc_service`, unary and
``ModelStreamInfer`` streams), merging concurrent requests into batches
(:class:`DynamicBatcher`; a free instance runs a request alone in the queue at once,
``start_when_idle``; while another instance computes, a free one gathers as many rows as
that instance's batch, ``gather_while_busy``) with a bounded queue, Prometheus metrics at ``/metrics``, and a
graceful drain on SIGTERM. It compiles each model's plans for its batch sizes before it
reports ready, and computes on every core but one (``--threads``): the event loop keeps
one for the request path (:mod:`gometal.serving.infer_route`). With one engine thread (on
2 cores), each core runs an instance of its own (``--instances``).

Example:
    >>> from gometal.serving import serve
    >>> serve("models", port=8000, max_batch_size=32)  # doctest: +SKIP
"""

from .app import ServerSettings, create_app
from .batcher import BatcherClosed, BatchStats, DynamicBatcher, QueueFull
from .protocol import ProtocolError
from .repository import ModelRepository, RepositoryError
from .server import serve

__all__ = [
    "BatchStats",
    "BatcherClosed",
    "DynamicBatcher",
    "ModelRepository",
    "ProtocolError",
    "QueueFull",
    "RepositoryError",
    "ServerSettings",
    "create_app",
    "serve",
]
