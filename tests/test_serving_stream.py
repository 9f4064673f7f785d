"""``gometal serve``'s ``generate_stream``: server-sent events, one per generated token as
it is produced; their text joined is ``/generate``'s and ``gm.models.generate``'s for the
same prompt and parameters; bad input is a 400 before any event; a client that leaves
mid-stream stops its generation while the server keeps serving."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

import gometal as gm
from gometal.serving import ProtocolError
from gometal.serving.app import create_app
from serving_helpers import (
    ServerProcess,
    bad_generate_requests,
    free_port,
    metric_samples,
    offline_generation,
    running_server,
    write_gpt_repository,
)

CORPUS = "def main():\n    return 1\n"
BLOCK = 16
MAX_TOKENS = 4096  # the server's most: a generation far longer than a disconnect takes


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt_repository(tmp_path_factory.mktemp("repository"), CORPUS, BLOCK)


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


def _events(lines) -> list[dict]:
    """The JSON documents of the ``data:`` lines of a server-sent event stream."""
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


@pytest.mark.parametrize(
    "options",
    [{"greedy": True}, {"temperature": 0.8, "top_k": 5, "seed": 7}, {"top_p": 0.9, "seed": 2}],
    ids=["greedy", "top-k", "top-p"],
)
def test_stream_events_join_to_generate_and_offline_text(
    server: ServerProcess, repository: Path, options: dict
) -> None:
    """One event per token (past the context too), each naming the model; the pieces
    joined equal /generate's text and the offline generation's."""
    max_tokens = BLOCK + 4
    body = {"text_input": "def ", "parameters": {"max_tokens": max_tokens, **options}}
    url = f"{server.base}/v2/models/gpt/versions/1/generate_stream"
    with httpx.stream("POST", url, json=body, timeout=60) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = _events(answer.iter_lines())
    assert len(events) == max_tokens
    assert all(e["model_name"] == "gpt" and e["model_version"] == "1" for e in events)
    streamed = "".join(e["text_output"] for e in events)
    whole = httpx.post(f"{server.base}/v2/models/gpt/generate", json=body, timeout=60)
    assert streamed == whole.json()["text_output"]
    assert streamed == offline_generation(repository, "def ", max_tokens, **options)
    assert events[0]["text_output"].startswith("def ")


def test_no_new_token_streams_the_prompt_alone(server: ServerProcess) -> None:
    body = {"text_input": "ret", "max_tokens": 0}
    with httpx.stream("POST", f"{server.base}/v2/models/gpt/generate_stream", json=body) as answer:
        assert answer.status_code == 200
        assert [e["text_output"] for e in _events(answer.iter_lines())] == ["ret"]


BAD_REQUESTS = [
    *bad_generate_requests(BLOCK),
    ("top_p 0", "gpt", {"text_input": "d", "top_p": 0}, "'top_p' must be"),
    ("unknown model", "nope", {"text_input": "d"}, "nope"),
]


@pytest.mark.parametrize(
    ("model", "body", "words"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_stream_requests_get_a_json_4xx_before_any_event(
    server: ServerProcess, model: str, body: dict, words: str
) -> None:
    url = f"{server.base}/v2/models/{model}/generate_stream"
    with httpx.stream("POST", url, json=body, timeout=60) as answer:
        answer.read()
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert words in answer.json()["error"]
    after = httpx.post(f"{server.base}/v2/models/gpt/generate", json={"text_input": "d"})
    assert after.status_code == 200


def _streamed_tokens(server: ServerProcess) -> float:
    samples = metric_samples(server.base, "gometal_streamed_tokens")
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels["model"] == "gpt")


def test_a_client_that_leaves_mid_stream_stops_the_generation(server: ServerProcess) -> None:
    """While a client holds a long stream unread, other models answer; once it closes the
    connection, the generation stops far short of the tokens asked, and the model
    generates again (its lock released)."""
    before = _streamed_tokens(server)
    body = {"text_input": "def ", "max_tokens": MAX_TOKENS, "greedy": True}
    url = f"{server.base}/v2/models/gpt/generate_stream"
    with httpx.Client(timeout=60) as client, client.stream("POST", url, json=body) as answer:
        assert answer.status_code == 200
        first = next(answer.iter_lines())
        assert first.startswith("data: ")
        x = np.ones((1, 8), np.float32)
        infer = {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                             "data": x.ravel().tolist()}]}  # fmt: skip
        other = httpx.post(f"{server.base}/v2/models/mlp/infer", json=infer, timeout=60)
        assert other.status_code == 200, other.text
    # /generate takes the model's lock only after the abandoned generation let it go.
    again = httpx.post(
        f"{server.base}/v2/models/gpt/generate", json={"text_input": "d", "max_tokens": 3}
    )
    assert again.status_code == 200
    assert 1 <= _streamed_tokens(server) - before < MAX_TOKENS


@pytest.fixture()
def in_process(repository: Path):
    """The server's application under uvicorn in a thread of this process, so that a test
    can reach its served models."""
    app = create_app(repository)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the in-process server did not start"
    yield app, f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(60)


def test_the_first_event_arrives_while_the_server_is_still_generating(in_process) -> None:
    """The generation waits after its first token until the client has read the first
    event: a server that sent the events only at the end would never get there."""
    app, base = in_process
    generator = app.state.models.resolve("gpt", None).generator
    first_read, finished = threading.Event(), threading.Event()
    real_stream = generator.stream

    def gated_stream(text, parameters, emit):
        def gated_emit(piece):
            emit(piece)
            if not first_read.is_set():
                assert first_read.wait(30), "the first event never reached the client"

        real_stream(text, parameters, gated_emit)
        finished.set()

    generator.stream = gated_stream
    body = {"text_input": "def ", "max_tokens": 6, "greedy": True}
    with httpx.stream("POST", f"{base}/v2/models/gpt/generate_stream", json=body) as answer:
        lines = answer.iter_lines()
        first = _events([next(lines)])
        assert not finished.is_set()
        first_read.set()
        rest = _events(lines)
    assert finished.is_set()
    pieces = [e["text_output"] for e in first + rest]
    assert len(pieces) == 6 and pieces[0].startswith("def ")


@pytest.mark.parametrize(
    ("error", "message"),
    [(ProtocolError(400, "a bad token"), "a bad token"), (RuntimeError("boom"), "RuntimeError")],
)
def test_an_error_after_the_first_token_is_an_error_event(in_process, error, message) -> None:
    app, base = in_process
    generator = app.state.models.resolve("gpt", None).generator

    def failing_stream(text, parameters, emit):
        emit("def")
        raise error

    generator.stream = failing_stream
    body = {"text_input": "def ", "max_tokens": 6}
    with httpx.stream("POST", f"{base}/v2/models/gpt/generate_stream", json=body) as answer:
        assert answer.status_code == 200
        events = _events(answer.iter_lines())
    assert events[0]["text_output"] == "def"
    assert message in events[1]["error"] and len(events) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_byte_tokens_that_cut_a_character_wait_for_the_rest_of_it(seed: int) -> None:
    """With one token per UTF-8 byte a piece never ends inside a character (only the last
    may end in U+FFFD), and the pieces joined are generate's text."""
    from gometal.serving.generation import TextGenerator
    from gometal.text import ByteTokenizer

    model = gm.models.GPT(256, BLOCK, n_layer=1, n_head=2, n_embd=16, seed=seed)
    generator = TextGenerator(model, ByteTokenizer())
    parameters = {"max_tokens": 40, "temperature": 3.0, "seed": seed}
    pieces: list[str] = []
    generator.stream("é€", parameters, pieces.append)
    assert len(pieces) == 40
    assert "".join(pieces) == generator.generate("é€", parameters)
    assert not any(piece.endswith("\ufffd") for piece in pieces[:-1])
    assert pieces[0].startswith("é€")
