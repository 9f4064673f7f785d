"""The inference server's request path without a server: the inference route's path
matching and body reading (limits, late bodies, bodies in pieces, clients that leave),
the batcher's hand-off to an event loop (answers set in the loop, merged batches, cancelled
requests dropped), the per-batch screen of rows (a request holding NaN is refused, its
batch neighbours are answered), the request log written in bulk, and the engine threads a
server takes by default."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading

import numpy as np
import pytest

from gometal.serving import DynamicBatcher
from gometal.serving.guard import RequestGuard
from gometal.serving.infer_route import ClientGone, infer_target, read_limited_body
from gometal.serving.protocol import ProtocolError, datatype_of
from gometal.serving.request_log import BufferedLineHandler
from gometal.serving.server import default_serving_instances, default_serving_threads
from gometal.viz.server_guard import HostPolicy, UploadSlots


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v2/models/cnn/infer", ("cnn", None)),
        ("/v2/models/cnn/versions/3/infer", ("cnn", "3")),
        ("/v2/models/cnn/versions/x/infer", ("cnn", "x")),  # the route answers 404 for it
        ("/v2/models/cnn", None),
        ("/v2/models/cnn/generate", None),
        ("/v2/models//infer", None),
        ("/v2/models/cnn/versions//infer", None),
        ("/v2/models/../../cnn/infer", None),
        ("/v3/models/cnn/infer", None),
        ("v2/models/cnn/infer/", None),
    ],
)
def test_only_inference_paths_take_the_inference_route(path: str, target: tuple | None) -> None:
    assert infer_target(path) == target


def _scope(**headers: str) -> dict:
    return {"headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


def _receiver(messages: list[dict], then_wait: bool = False):
    """An ASGI ``receive`` giving ``messages`` in turn, then waiting forever if asked."""
    queue = list(messages)

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        assert then_wait, "the body was read past its last message"
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def _read(scope: dict, receive, limit: int = 100, timeout_s: float = 5.0) -> bytes:
    slots = UploadSlots(4)
    body = asyncio.run(read_limited_body(scope, receive, limit, timeout_s, slots))
    assert slots.in_use == 0
    return bytes(body)


def test_a_body_in_one_message_or_in_pieces_is_read_whole() -> None:
    whole = _receiver([{"type": "http.request", "body": b"abc"}])
    assert _read(_scope(**{"Content-Length": "3"}), whole) == b"abc"
    pieces = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"", "more_body": True},
              {"type": "http.request", "body": b"cd"}]  # fmt: skip
    assert _read(_scope(), _receiver(pieces)) == b"abcd"


@pytest.mark.parametrize(
    ("headers", "messages", "status", "words"),
    [
        ({"Content-Length": "101"}, [], 413, "Content-Length says 101"),
        ({"Content-Length": "ten"}, [], 400, "byte count"),
        ({"Content-Encoding": "gzip"}, [], 415, "gzip"),
        ({}, [{"type": "http.request", "body": b"x" * 101}], 413, "at most 100"),
        ({}, [{"type": "http.request", "body": b"x" * 60, "more_body": True},
              {"type": "http.request", "body": b"x" * 60}], 413, "at most 100"),
    ],
    ids=["declared too long", "declared not a number", "compressed", "one message too long",
         "pieces too long"],
)  # fmt: skip
def test_bodies_past_the_limit_or_unreadable_are_refused(
    headers: dict, messages: list, status: int, words: str
) -> None:
    with pytest.raises(ProtocolError) as refused:
        _read(_scope(**headers), _receiver(messages))
    assert refused.value.status == status and words in refused.value.message


@pytest.mark.parametrize(
    "messages",
    [[], [{"type": "http.request", "body": b"ab", "more_body": True}]],
    ids=["no body at all", "the rest of the body never comes"],
)
def test_a_late_body_is_a_408_and_its_slot_is_given_back(messages: list) -> None:
    with pytest.raises(ProtocolError) as refused:
        _read(_scope(), _receiver(messages, then_wait=True), timeout_s=0.05)
    assert refused.value.status == 408 and "0.05 s" in refused.value.message


def test_a_client_that_leaves_mid_body_is_told_apart() -> None:
    messages = [{"type": "http.request", "body": b"ab", "more_body": True},
                {"type": "http.disconnect"}]  # fmt: skip
    with pytest.raises(ClientGone):
        _read(_scope(), _receiver(messages))


def test_all_body_slots_taken_is_a_503_with_retry_after() -> None:
    slots = UploadSlots(1)
    assert slots.try_acquire()
    receive = _receiver([{"type": "http.request", "body": b"a"}])
    with pytest.raises(ProtocolError) as refused:
        asyncio.run(read_limited_body(_scope(), receive, 100, 1.0, slots))
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"


def _doubling_batcher(sizes: list[int], **options) -> DynamicBatcher:
    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        sizes.append(len(inputs[0]))
        return [inputs[0] * 2]

    return DynamicBatcher([run], **options)


def test_async_requests_are_merged_and_answered_in_their_loop() -> None:
    sizes: list[int] = []
    batcher = _doubling_batcher(sizes, max_batch_size=8, max_queue_delay_s=0.5, max_queue=64)
    rows = [np.full((n, 3), i, np.float32) for i, n in enumerate([1, 3, 2, 2])]
    answered_in: list[threading.Thread] = []

    async def ask(x: np.ndarray) -> np.ndarray:
        (y,) = await batcher.submit_async([x])
        answered_in.append(threading.current_thread())
        return y

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(ask(x) for x in rows))

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    for x, y in zip(rows, results):
        np.testing.assert_array_equal(y, x * 2)
    assert sizes == [8]  # a full batch goes at once, long before its 0.5 s delay
    assert answered_in == [threading.main_thread()] * 4


def test_requests_of_other_sample_shapes_wait_for_their_own_batch() -> None:
    sizes: list[int] = []
    batcher = _doubling_batcher(sizes, max_batch_size=4, max_queue_delay_s=0.05, max_queue=64)
    shapes = [(1, 2), (1, 5), (1, 2), (2, 5), (2, 2)]
    inputs = [np.full(shape, i, np.float32) for i, shape in enumerate(shapes)]
    try:
        futures = [batcher.submit([x]) for x in inputs]
        results = [f.result(10)[0] for f in futures]
    finally:
        batcher.close()
    for x, y in zip(inputs, results):
        np.testing.assert_array_equal(y, x * 2)
    assert sorted(sizes) == [3, 4]  # 1+1+2 rows of width 2, 1+2 of width 5


def test_a_cancelled_async_request_is_dropped_before_it_runs() -> None:
    sizes: list[int] = []
    batcher = _doubling_batcher(sizes, max_batch_size=8, max_queue_delay_s=0.2, max_queue=64)

    async def main() -> np.ndarray:
        left = batcher.submit_async([np.ones((3, 1), np.float32)])
        stays = batcher.submit_async([np.ones((2, 1), np.float32)])
        left.cancel()  # its client went away while it waited
        (y,) = await stays
        return y

    try:
        y = asyncio.run(main())
    finally:
        batcher.close()
    np.testing.assert_array_equal(y, np.full((2, 1), 2, np.float32))
    assert sizes == [2]


def test_the_screen_refuses_only_the_requests_holding_a_refused_row() -> None:
    sizes: list[int] = []

    def screen(inputs: list[np.ndarray]) -> dict[int, Exception]:
        bad = np.flatnonzero(~np.isfinite(inputs[0]).all(axis=1)).tolist()
        return {row: ValueError(f"row {row} is not finite") for row in bad}

    batcher = _doubling_batcher(
        sizes, max_batch_size=8, max_queue_delay_s=0.2, max_queue=64, screen=screen
    )
    good = np.arange(4, dtype=np.float32).reshape(2, 2)
    bad = np.array([[1.0, 2.0], [np.nan, 0.0]], np.float32)
    try:
        futures = [batcher.submit([x]) for x in (good, bad, good + 1)]
        with pytest.raises(ValueError, match="row 3 is not finite"):
            futures[1].result(10)
        first, last = futures[0].result(10)[0], futures[2].result(10)[0]
        lone = batcher.submit([bad])
        with pytest.raises(ValueError, match="row 1 is not finite"):
            lone.result(10)
    finally:
        batcher.close()
    np.testing.assert_array_equal(first, good * 2)
    np.testing.assert_array_equal(last, (good + 1) * 2)
    assert sizes == [4]  # the refused request left its batch; the lone refused one never ran


def test_a_server_leaves_one_core_to_its_event_loop() -> None:
    assert [default_serving_threads(n) for n in (1, 2, 4, 16)] == [1, 1, 3, 15]
    assert default_serving_threads() >= 1


def test_one_thread_engines_run_an_instance_per_core_and_wider_engines_one() -> None:
    # A wider engine's pool runs one parallel region at a time: more instances would queue.
    assert [default_serving_instances(1, n) for n in (1, 2, 4)] == [1, 2, 4]
    assert [default_serving_instances(t, 16) for t in (2, 15)] == [1, 1]
    assert default_serving_instances(1) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [("<f4", "FP32"), (">f4", "FP32"), ("<f2", "FP16"), ("<i8", "INT64"), ("|u1", "UINT8"),
     ("?", "BOOL")],
)  # fmt: skip
def test_answers_name_the_protocol_datatype_of_either_byte_order(dtype: str, datatype: str) -> None:
    assert datatype_of(np.dtype(dtype)) == datatype


def test_the_request_log_writes_every_line_once_in_order() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval_s=0.01)
    logger = logging.getLogger("gometal.serving.test-buffered-log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def log_lines(writer: int) -> None:
        for index in range(500):
            logger.info(json.dumps({"writer": writer, "index": index}))

    try:
        writers = [threading.Thread(target=log_lines, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2000
    for writer in range(4):
        assert [e["index"] for e in lines if e["writer"] == writer] == list(range(500))


def test_the_request_log_writes_a_line_within_its_interval() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval_s=0.01)
    try:
        handler.handle(logging.makeLogRecord({"msg": "first"}))
        for _ in range(500):  # at most 5 s: the writer wakes every 10 ms
            if stream.getvalue():
                break
            threading.Event().wait(0.01)
        assert stream.getvalue() == "first\n"
    finally:
        handler.close()
    with pytest.raises(ValueError, match="interval_s"):
        BufferedLineHandler(stream, interval_s=0)


def test_the_request_log_still_writes_after_logging_closed_it() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval_s=60)
    handler.close()  # as logging.shutdown() or a dictConfig() does
    handler.handle(logging.makeLogRecord({"msg": "late"}))
    assert stream.getvalue() == "late\n"


def _guarded_status(guard: RequestGuard, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v2", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"]


def test_the_guard_refuses_foreign_hosts_and_wrong_keys_every_time() -> None:
    async def app(scope: dict, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = RequestGuard(app, HostPolicy.for_bind("127.0.0.1"), api_key="k3y")
    key = (b"authorization", b"Bearer k3y")
    for _ in range(2):  # the second time from the accepted hosts it remembers
        assert _guarded_status(guard, [(b"host", b"127.0.0.1:8000"), key]) == 200
        assert _guarded_status(guard, [(b"host", b"localhost"), key]) == 200
        assert _guarded_status(guard, [(b"host", b"evil.example:8000"), key]) == 400
        assert _guarded_status(guard, [(b"host", b"127.0.0.1:8000")]) == 401
        assert _guarded_status(guard, [(b"host", b"127.0.0.1"), (b"authorization", b"x")]) == 401
    # The first Host header counts, as the policy reads it.
    assert _guarded_status(guard, [(b"host", b"evil.example"), (b"host", b"127.0.0.1"), key]) == 400
