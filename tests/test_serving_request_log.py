"""The request log's two ways out: through logging (a record per line, what any handler a
user adds receives), and straight into the server's buffered handler while ``gometal serve``
runs with it as the request logger's only one (the JSON encoded by its writer thread).
Either way each request gives one JSON line holding exactly its fields, in order."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from gometal.serving.request_log import (
    REQUEST_LOGGER,
    BufferedLineHandler,
    log_request,
    write_requests_to,
)


def _fields(index: int) -> dict:
    return {"method": "POST", "path": "/v2/models/m/infer", "status": 200, "ms": 0.5,
            "id": f"r\"{index}\u00e9", "rows": index}  # fmt: skip


def test_lines_go_straight_to_the_servers_handler_while_it_is_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval_s=60)
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    write_requests_to(handler)
    try:
        for index in range(3):
            log_request(_fields(index))
    finally:
        write_requests_to(None)
        handler.close()
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [_fields(i) for i in range(3)]
    assert lines[0] == json.dumps(_fields(0))  # the line logging's path writes, to the byte
    assert not [r for r in caplog.records if r.name == REQUEST_LOGGER]


def test_lines_go_through_logging_when_no_handler_is_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_requests_to(None)
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    log_request(_fields(7))
    (record,) = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    assert json.loads(record.getMessage()) == _fields(7)


def test_fields_and_records_from_many_threads_are_each_written_once_in_order() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval_s=0.005)

    def write(writer: int) -> None:
        for index in range(300):
            fields = {"writer": writer, "index": index}
            if index % 2:
                handler.append_fields(fields)
            else:
                handler.handle(logging.makeLogRecord({"msg": json.dumps(fields)}))

    try:
        writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
    finally:
        handler.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1200
    for writer in range(4):
        assert [e["index"] for e in lines if e["writer"] == writer] == list(range(300))


def test_fields_appended_after_close_are_written_at_once() -> None:
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval_s=60)
    handler.close()
    handler.append_fields({"late": True})
    assert stream.getvalue() == '{"late": true}\n'
