"""One served model version: its protocol metadata, the checks of a request against its
inputs, and its dynamic batcher over one or more instances.

Merged batches run at powers of two (at most ``max_batch_size``): the engine compiles a
plan per batch size and keeps a few per function, so a handful of sizes stays compiled
instead of one plan per size a merge happens to produce. Those plans are compiled when the
server starts (:func:`warmup_batch_sizes`), so no request waits for one, and each size's
call is timed then: a batch runs as the sizes whose summed time (fitted as a time per call
plus a time per row) is least (:mod:`.batch_plans`: 34 rows of a CNN as 32 + 2, of an MLP
as 64). Without the warm-up a
batch is padded up to the next size. Padding repeats a real row and its outputs are
dropped; rows never affect each other in inference, so each request gets what
``model.predict`` gives it alone.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .batch_plans import linear_costs, plan_batch_pieces, row_ranges
from .batcher import AnswerReceiver, BatcherClosed, DynamicBatcher, QueueFull
from .generation import TextGenerator
from .images import ImageInput
from .metrics import ServingMetrics
from .protocol import BYTES_DTYPE, ENGINE_DATATYPES, RETRY_AFTER_S, InferRequest, ProtocolError
from .repository import ModelRepository

__all__ = [
    "ENGINE_PLANS_KEPT",
    "PLATFORM",
    "RETRY_AFTER_S",
    "WARMUP_TIMED_CALLS",
    "ServedModels",
    "ServedVersion",
    "padded_rows",
    "warmup_batch_sizes",
]

PLATFORM = "gometal"
# The plans the engine keeps per function (kMaxPlansPerFunction in gometal/engine.h):
# compiling more at start would only evict the first ones.
ENGINE_PLANS_KEPT = 8
# Timed calls per batch size at warm-up, in rounds over the sizes (so that each size meets
# the machine's moments alike); each size's fastest counts.
WARMUP_TIMED_CALLS = 3

_log = logging.getLogger(__name__)


def padded_rows(rows: int, max_batch_size: int) -> int:
    """The batch size a merged batch of ``rows`` runs at: the next power of two, capped.

    Example:
        >>> padded_rows(5, 64), padded_rows(40, 48)
        (8, 48)
    """
    size = 1
    while size < rows:
        size *= 2
    return min(size, max(max_batch_size, rows))


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes merged batches run at (every :func:`padded_rows` of 1 to
    ``max_batch_size``), the largest :data:`ENGINE_PLANS_KEPT` of them, ascending.

    Example:
        >>> warmup_batch_sizes(64), warmup_batch_sizes(48)
        ([1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 16, 32, 48])
    """
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size][-ENGINE_PLANS_KEPT:]


def _timed_call(run: Any, batch: list[np.ndarray]) -> float:
    started = time.perf_counter()
    run(batch)
    return max(time.perf_counter() - started, 1e-9)


def _as_output_list(result: Any, names: tuple[str, ...]) -> list[np.ndarray]:
    if isinstance(result, Mapping):
        return [np.asarray(result[name]) for name in names]
    if isinstance(result, (list, tuple)):
        return [np.asarray(value) for value in result]
    return [np.asarray(result)]


class ServedVersion:
    """A loaded model version behind a dynamic batcher.

    Args:
        name: the model's name.
        version: its version number.
        model: the loaded ``gm.Model`` (instance 0; further instances are copies of it).
        settings: ``max_batch_size``, ``max_queue_delay_ms``, ``instances``, ``max_queue``
            and optionally ``start_when_idle`` and ``gather_while_busy``.
        metrics: where batches are counted.
        user_metadata: the model file's metadata: with a recorded image
            ``preprocessing``, the image input also takes JPEG or PNG files as ``BYTES``.
        warmup: compile each instance's plans for :func:`warmup_batch_sizes` now (models
            whose inputs have a dimension each request chooses are not warmed up).

    Example:
        >>> served = ServedVersion("mlp", 1, model, settings, metrics)  # doctest: +SKIP
        >>> served.metadata()["inputs"][0]["shape"]  # doctest: +SKIP
        [-1, 64]
    """

    def __init__(
        self,
        name: str,
        version: int,
        model: Any,
        settings: Mapping[str, Any],
        metrics: ServingMetrics,
        user_metadata: Mapping[str, Any] | None = None,
        warmup: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.max_batch_size = int(settings["max_batch_size"])
        inputs, outputs = model.input_signature, model.output_signature
        self.input_names = inputs.names
        self.input_shapes = inputs.sample_shapes
        self.input_datatypes = tuple(
            ENGINE_DATATYPES.get(inputs.dtype(i), inputs.dtype(i)) for i in range(len(inputs.names))
        )
        self.output_names = outputs.names
        self.output_shapes = outputs.sample_shapes
        # One input of fixed sample shape (the common case): checked by one comparison.
        self._fixed_input = None
        if len(self.input_names) == 1 and all(d >= 0 for d in self.input_shapes[0]):
            sample = tuple(self.input_shapes[0])
            self._fixed_input = (self.input_names[0], self.input_datatypes[0], sample)
        self.structured = model.structured
        self.images = ImageInput.for_model(model, user_metadata or {})
        self.generator: TextGenerator | None = None  # set for language models
        instances = [model] + [copy.deepcopy(model) for _ in range(int(settings["instances"]) - 1)]
        runners = [self._runner(instance) for instance in instances]
        self.warmed_up: list[int] = []  # the batch sizes compiled at start, and how long
        self.warmup_s = 0.0
        # Each batch size's call time (measured at warm-up), and the sizes each row count
        # runs as; empty without a warm-up: batches are padded to the next size.
        self.batch_costs: dict[int, float] = {}
        self.batch_pieces: list[tuple[int, ...]] = []
        if warmup:
            self._warm_up(runners, [inputs.dtype(i) for i in range(len(inputs.names))])
        self.batcher = DynamicBatcher(
            runners,
            max_batch_size=self.max_batch_size,
            max_queue_delay_s=float(settings["max_queue_delay_ms"]) / 1000.0,
            max_queue=int(settings["max_queue"]),
            on_batch=metrics.batch_observer(name, version),
            screen=self._non_finite_rows,
            start_when_idle=bool(settings.get("start_when_idle", False)),
            gather_while_busy=bool(settings.get("gather_while_busy", False)),
        )
        metrics.watch_queue(name, version, lambda: self.batcher.depth)

    def _runner(self, model: Any) -> Any:
        def predict(inputs: list[np.ndarray], size: int) -> list[np.ndarray]:
            rows = inputs[0].shape[0]
            if size > rows:
                inputs = [
                    np.concatenate([x, np.repeat(x[:1], size - rows, axis=0)]) for x in inputs
                ]
            x = inputs if self.structured else inputs[0]
            result = model.predict(x, batch_size=size)
            return [out[:rows] for out in _as_output_list(result, self.output_names)]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            rows = inputs[0].shape[0]
            plans = self.batch_pieces
            pieces = plans[rows] if rows < len(plans) else (padded_rows(rows, self.max_batch_size),)
            if len(pieces) == 1:
                return predict(inputs, pieces[0])
            parts = [predict([x[start:stop] for x in inputs], size)
                     for start, stop, size in row_ranges(pieces, rows)]  # fmt: skip
            return [np.concatenate(outputs) for outputs in zip(*parts)]

        return run

    def _warm_up(self, runners: list[Any], dtypes: list[str]) -> None:
        if any(d < 0 for shape in self.input_shapes for d in shape):
            return  # a dimension each request chooses: no size to compile ahead
        sizes = warmup_batch_sizes(self.max_batch_size)
        started = time.perf_counter()
        measured: dict[int, float] = {}
        try:
            batches = [[np.zeros((size, *shape), dtype) for shape, dtype in
                        zip(self.input_shapes, dtypes)] for size in sizes]  # fmt: skip
            for run in runners:
                for batch in batches:
                    run(batch)  # compiles the plan
            for _ in range(WARMUP_TIMED_CALLS):  # the instances share one model: time one
                for size, batch in zip(sizes, batches):
                    elapsed = _timed_call(runners[0], batch)
                    measured[size] = min(measured.get(size, elapsed), elapsed)
        except Exception as err:  # noqa: BLE001  (it still serves: the plans compile later)
            _log.warning("%s/%s: warm-up failed (%s: %s)", self.name, self.version,
                         type(err).__name__, err)  # fmt: skip
            return
        self.warmed_up = sizes
        self.warmup_s = time.perf_counter() - started
        self.use_batch_costs(linear_costs(measured))

    def use_batch_costs(self, costs: Mapping[int, float]) -> None:
        """Runs each batch as the sizes of least summed ``costs`` (see :mod:`.batch_plans`).

        Args:
            costs: seconds per call at each batch size; sizes other than these are never
                run (the warm-up gives every size it compiled).

        Raises:
            ValueError: a size out of 1..max_batch_size, or a cost that is not positive.

        Example:
            >>> served.use_batch_costs({1: 1e-3, 2: 1.5e-3, 4: 2.5e-3})  # doctest: +SKIP
        """
        for size in costs:
            if not 1 <= size <= self.max_batch_size:
                raise ValueError(f"batch sizes must lie in 1..{self.max_batch_size} "
                                 f"(max_batch_size), got {size}")  # fmt: skip
        plans = plan_batch_pieces(costs, self.max_batch_size)
        self.batch_costs = dict(costs)
        self.batch_pieces = plans

    def _non_finite_rows(self, inputs: list[np.ndarray]) -> dict[int, Exception]:
        """The rows of a merged batch holding NaN or infinity, each with its refusal
        (checked once per batch in the instance's thread, not per request in the loop)."""
        refused: dict[int, Exception] = {}
        for name, array in zip(self.input_names, inputs):
            if array.dtype.kind != "f" or not array.size:
                continue
            finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if not finite.all():
                error = ProtocolError(400, f"input {name!r} holds NaN or infinity")
                for row in np.flatnonzero(~finite).tolist():
                    refused.setdefault(row, error)
        return refused

    def metadata(self) -> dict[str, Any]:
        """The model's metadata in the protocol's form (``-1`` for the batch and for
        dimensions each request chooses)."""

        def tensors(names: Any, shapes: Any, datatypes: Any) -> list[dict[str, Any]]:
            return [
                {"name": n, "datatype": t, "shape": [-1, *(d if d >= 0 else -1 for d in s)]}
                for n, s, t in zip(names, shapes, datatypes)
            ]

        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": PLATFORM,
            "inputs": tensors(self.input_names, self.input_shapes, self.input_datatypes),
            "outputs": tensors(
                self.output_names, self.output_shapes, ["FP32"] * len(self.output_names)
            ),
        }

    def check_request(self, request: InferRequest) -> list[np.ndarray]:
        """The request's inputs in the model's order, after checking every one of them.

        Raises:
            ProtocolError: 400 naming a missing or unknown input, a wrong datatype or
                shape, rows out of range, inputs of different rows, or an unknown
                requested output (a non-finite value is refused by the batch's screen).
        """
        fixed, inputs = self._fixed_input, request.inputs
        if fixed is not None and len(inputs) == 1 and request.outputs is None:
            tensor = inputs[0]
            array = tensor.array
            if (tensor.name == fixed[0] and tensor.datatype == fixed[1]
                    and array.shape[1:] == fixed[2] and array.ndim == len(fixed[2]) + 1
                    and 1 <= array.shape[0] <= self.max_batch_size):  # fmt: skip
                return [array]  # what the checks below accept; anything else meets them
        given = {tensor.name: tensor for tensor in inputs}
        missing = [n for n in self.input_names if n not in given]
        unknown = sorted(set(given) - set(self.input_names))
        if missing or unknown:
            raise ProtocolError(
                400,
                f"model {self.name!r} takes inputs {list(self.input_names)}; missing "
                f"{missing}, unknown {unknown}",
            )
        arrays, rows = [], None
        for name, shape, datatype in zip(self.input_names, self.input_shapes, self.input_datatypes):
            tensor = given[name]
            if tensor.datatype == "BYTES" and self.images and name == self.images.input_name:
                self.images.check_shape(tensor.array.shape, self.max_batch_size)
                if rows is not None and tensor.array.shape[0] != rows:
                    raise ProtocolError(400, f"inputs must have the same rows: {rows} and "
                                             f"{tensor.array.shape[0]} ({name!r})")  # fmt: skip
                rows = tensor.array.shape[0]
                arrays.append(tensor.array)
                continue
            if tensor.datatype != datatype:
                raise ProtocolError(
                    400, f"input {name!r}: model expects datatype {datatype}, got {tensor.datatype}"
                )
            array = tensor.array
            expected = [-1, *(d if d >= 0 else -1 for d in shape)]
            fits = array.ndim == len(expected) and all(
                want < 0 or want == got for want, got in zip(expected[1:], array.shape[1:])
            )
            if not fits:
                raise ProtocolError(
                    400, f"input {name!r}: model expects shape {expected}, got {list(array.shape)}"
                )
            if not 1 <= array.shape[0] <= self.max_batch_size:
                raise ProtocolError(
                    400,
                    f"input {name!r}: the batch must hold 1 to {self.max_batch_size} rows "
                    f"(max_batch_size), got {array.shape[0]}",
                )
            if rows is not None and array.shape[0] != rows:
                raise ProtocolError(
                    400, f"inputs must have the same rows: {rows} and {array.shape[0]} ({name!r})"
                )
            rows = array.shape[0]
            arrays.append(array)
        unknown_outputs = sorted(set(request.outputs or ()) - set(self.output_names))
        if unknown_outputs:
            raise ProtocolError(
                400,
                f"model {self.name!r} has outputs {list(self.output_names)}; unknown requested "
                f"outputs {unknown_outputs}",
            )
        return arrays

    async def infer(self, request: InferRequest) -> list[tuple[str, np.ndarray]]:
        """Runs a checked request through the batcher; returns ``(name, array)`` per output
        the request asked for (all of them when it named none).

        Raises:
            ProtocolError: 400 for a bad request (see :meth:`check_request`) or one
                holding NaN or infinity; 503 with
                ``Retry-After`` when the queue is full or the server is draining.
        """
        arrays = self.check_request(request)
        for index, array in enumerate(arrays):
            if array.dtype == BYTES_DTYPE:  # decoding holds the GIL little; off the event loop
                arrays[index] = await asyncio.to_thread(self.images.decode, array)
        outputs = await self._queue(arrays)
        return self.requested_outputs(request, outputs)

    def submit_checked(self, request: InferRequest, receiver: AnswerReceiver) -> bool:
        """Checks a request and queues it on the batcher without awaiting it, for callers
        that answer from a callback rather than a coroutine.

        Args:
            request: the parsed request.
            receiver: receives the model's outputs (all of them: pass them to
                :meth:`requested_outputs`) or the error, in the event loop (see
                :meth:`DynamicBatcher.submit_to`).

        Returns:
            Whether it was queued: ``False`` when an input holds encoded images, which are
            decoded off the event loop (use :meth:`infer` for those).

        Raises:
            ProtocolError: as :meth:`infer`.

        Example:
            >>> served.submit_checked(request, asyncio.get_running_loop().create_future())  # doctest: +SKIP
            True
        """
        arrays = self.check_request(request)
        if any(array.dtype == BYTES_DTYPE for array in arrays):
            return False
        try:
            self.batcher.submit_to(arrays, receiver)
        except (QueueFull, BatcherClosed) as err:
            raise self._refusal(err) from None
        return True

    def requested_outputs(
        self, request: InferRequest, outputs: list[np.ndarray]
    ) -> list[tuple[str, np.ndarray]]:
        """``(name, array)`` per output the request asked for (all when it named none)."""
        wanted = request.outputs
        return [
            (name, value)
            for name, value in zip(self.output_names, outputs)
            if wanted is None or name in wanted
        ]

    def _queue(self, arrays: list[np.ndarray]) -> asyncio.Future:
        try:
            return self.batcher.submit_async(arrays)
        except (QueueFull, BatcherClosed) as err:
            raise self._refusal(err) from None

    def _refusal(self, err: QueueFull | BatcherClosed) -> ProtocolError:
        """The batcher's refusal as the protocol's 503 answer."""
        if isinstance(err, QueueFull):
            return ProtocolError(
                503,
                f"model {self.name!r} is overloaded ({err}); retry after {RETRY_AFTER_S} s",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return ProtocolError(503, str(err), {"Retry-After": str(RETRY_AFTER_S)})

    def close(self) -> None:
        """Finishes the queued requests and stops the instances."""
        self.batcher.close()


class ServedModels:
    """Every ready model version of a repository behind its batcher, and the lookups the
    protocol's routes make.

    Args:
        repository: the loaded repository.
        batching: the server's batching settings (a model's ``config.json`` overrides them).
        metrics: where batches are counted.
        warmup: compile each version's plans for its batch sizes now.

    Attributes:
        served: ``(name, version)`` -> :class:`ServedVersion`, for the versions that loaded.
        draining: set when shutdown begins: readiness answers 503 from then on.
    """

    def __init__(
        self,
        repository: ModelRepository,
        batching: Mapping[str, Any],
        metrics: ServingMetrics,
        warmup: bool = False,
    ) -> None:
        self.repository = repository
        self.served: dict[tuple[str, int], ServedVersion] = {}
        for name, entry in repository.models.items():
            if entry.error is not None:
                continue
            settings = repository.settings(name, batching)
            for version, item in entry.versions.items():
                if item.ready:
                    served = ServedVersion(
                        name, version, item.model, settings, metrics, item.user_metadata, warmup
                    )
                    served.generator = TextGenerator.for_version(
                        item.model, item.path, max_waiting=int(settings["max_queue"])
                    )
                    if served.generator is not None:
                        metrics.watch_generations(name, version, served.generator.admitted)
                    self.served[(name, version)] = served
        self.draining = False

    def resolve(self, name: str, version: str | None) -> ServedVersion:
        """The served version a request names (``None``: the model's highest version).

        Raises:
            ProtocolError: 404 for an unknown model or version, 503 with the reason for a
                version that did not load.
        """
        entry = self.repository.find(name)
        if entry is None:
            known = sorted(self.repository.models)
            raise ProtocolError(404, f"unknown model {name!r}; this server has {known}")
        if version is None:
            item = entry.latest
        else:
            item = entry.versions.get(int(version)) if version.isdigit() else None
            if item is None:
                raise ProtocolError(
                    404,
                    f"model {name!r} has no version {version!r}; versions: "
                    f"{sorted(map(str, entry.versions))}",
                )
        served = self.served.get((name, item.version)) if item is not None else None
        if served is None:
            reason = entry.error or (item.error if item is not None else "no version")
            shown = f"version {item.version}" if item is not None else "it"
            raise ProtocolError(503, f"model {name!r} {shown} is not ready: {reason}")
        return served

    def any_ready(self) -> bool:
        """Whether at least one model version serves."""
        return bool(self.served)

    def close(self) -> None:
        """Finishes every queued request and stops every instance."""
        for served in self.served.values():
            served.close()
