"""``gometal serve``'s generate extension: a GPT saved with its tokenizer answers
``POST /v2/models/{name}/generate`` with the text ``gm.models.generate`` gives offline for
the same prompt and parameters; bad parameters are a 400 naming them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serving_helpers import (
    ServerProcess,
    bad_generate_requests,
    offline_generation,
    running_server,
    write_gpt_repository,
)

CORPUS = "def main():\n    return 1\n"
BLOCK = 16


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt_repository(tmp_path_factory.mktemp("repository"), CORPUS, BLOCK)


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


@pytest.mark.parametrize(
    "options",
    [{"greedy": True}, {"temperature": 0.8, "top_k": 5, "seed": 7}, {"top_p": 0.9, "seed": 2}],
    ids=["greedy", "top-k", "top-p"],
)
def test_generate_equals_offline_generation(
    server: ServerProcess, repository: Path, options: dict
) -> None:
    body = {"text_input": "def ", "parameters": {"max_tokens": 10, **options}}
    answer = httpx.post(f"{server.base}/v2/models/gpt/generate", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["model_name"] == "gpt" and document["model_version"] == "1"
    assert document["text_output"] == offline_generation(repository, "def ", 10, **options)


def test_parameters_at_the_top_level_are_read_too(server: ServerProcess, repository: Path) -> None:
    body = {"text_input": "ret", "max_tokens": 5, "greedy": True}
    answer = httpx.post(f"{server.base}/v2/models/gpt/versions/1/generate", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["text_output"] == offline_generation(repository, "ret", 5, greedy=True)


BAD_REQUESTS = [
    *bad_generate_requests(BLOCK),
    ("temperature 0", "gpt", {"text_input": "d", "temperature": 0}, "'temperature' must be"),
]


@pytest.mark.parametrize(
    ("model", "body", "words"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_generate_requests_get_a_400_naming_the_problem(
    server: ServerProcess, model: str, body: dict, words: str
) -> None:
    answer = httpx.post(f"{server.base}/v2/models/{model}/generate", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]
    after = httpx.post(
        f"{server.base}/v2/models/gpt/generate",
        json={"text_input": "d", "max_tokens": 2},
        timeout=60,
    )
    assert after.status_code == 200
