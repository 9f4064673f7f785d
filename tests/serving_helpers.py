"""Helpers of the inference server's tests: a model repository on disk, and a real
``gometal serve`` process on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

import gometal as gm
from gometal.text import CharTokenizer, load_tokenizer

STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
REPOSITORY_MODELS = ("mlp", "cnn", "onnx_mlp", "broken", "slow")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mlp_model() -> gm.Model:
    """A 8-16-3 MLP."""
    return gm.ModelBuilder((8,)).dense(16).relu().dense(3).build(seed=0)


def cnn_model() -> gm.Model:
    """A small CNN on 3x16x16 images (convolution, batch norm, pooling, dense)."""
    return (
        gm.ModelBuilder((3, 16, 16))
        .conv2d(8, 3, padding=1)
        .batch_norm()
        .relu()
        .max_pool2d(2)
        .flatten()
        .dense(5)
        .build(seed=1)
    )


def slow_model() -> gm.Model:
    """An MLP wide enough that one call takes milliseconds, to fill queues."""
    builder = gm.ModelBuilder((1024,))
    for _ in range(4):
        builder = builder.dense(1024).relu()
    return builder.dense(2).build(seed=2)


def write_repository(root: Path, names: tuple[str, ...] = REPOSITORY_MODELS) -> Path:
    """A Triton-layout repository holding the models of ``names``: mlp (versions 1 and
    2), cnn, onnx_mlp (ONNX), broken (a file that is no model), slow (config.json:
    batches of 4).

    Returns:
        The repository folder.
    """
    versions = {
        "mlp": [(1, mlp_model), (2, lambda: gm.ModelBuilder((8,)).dense(3).build(seed=5))],
        "cnn": [(1, cnn_model)],
        "slow": [(1, slow_model)],
    }
    for name in names:
        for version, build in versions.get(name, []):
            folder = root / name / str(version)
            folder.mkdir(parents=True)
            build().save(folder / "model.safetensors")
    if "onnx_mlp" in names:
        (root / "onnx_mlp" / "1").mkdir(parents=True)
        mlp_model().export_onnx(root / "onnx_mlp" / "1" / "model.onnx")
    if "broken" in names:
        (root / "broken" / "1").mkdir(parents=True)
        (root / "broken" / "1" / "model.safetensors").write_bytes(b"not a model")
    if "slow" in names:
        (root / "slow" / "config.json").write_text(json.dumps({"max_batch_size": 4}))
    return root


def write_gpt_repository(root: Path, corpus: str, block_size: int) -> Path:
    """A repository holding ``mlp`` (a model that takes no text) and ``gpt``: a one-layer
    GPT of context ``block_size`` saved with the character tokenizer of ``corpus``.

    Returns:
        The repository folder.
    """
    write_repository(root, ("mlp",))
    folder = root / "gpt" / "1"
    folder.mkdir(parents=True)
    tokenizer = CharTokenizer.from_text(corpus)
    model = gm.models.GPT(tokenizer.vocab_size, block_size, n_layer=1, n_head=2, n_embd=16, seed=3)
    model.save(folder / "model.safetensors")
    tokenizer.save(folder / "tokenizer.json")
    return root


def offline_generation(repository: Path, prompt: str, max_tokens: int, **options) -> str:
    """The text ``gm.models.generate`` gives offline for the saved ``gpt``: the reference
    of every generate answer."""
    folder = repository / "gpt" / "1"
    model = gm.load_model(folder / "model.safetensors")
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    ids = gm.models.generate(model, tokenizer.encode(prompt), max_tokens, **options)
    return tokenizer.decode(np.asarray(ids))


def bad_generate_requests(block_size: int) -> list[tuple[str, str, dict, str]]:
    """Requests that ``/generate`` and ``/generate_stream`` both refuse, for a repository of
    ``write_gpt_repository`` with context ``block_size``.

    Returns:
        ``(case id, model, body, words the error names)`` per request.
    """
    return [
        ("no text", "gpt", {"parameters": {"max_tokens": 3}}, "'text_input' must be"),
        (
            "unknown parameter",
            "gpt",
            {"text_input": "d", "beams": 2},
            "unknown generate parameters",
        ),
        (
            "too many tokens",
            "gpt",
            {"text_input": "d", "max_tokens": 10**6},
            "'max_tokens' must be",
        ),
        ("prompt past the context", "gpt", {"text_input": "d" * (block_size + 1)}, "block_size"),
        ("a model that takes no text", "mlp", {"text_input": "d"}, "does not generate text"),
    ]


def offline(repository: Path, name: str, version: int, x: np.ndarray) -> np.ndarray:
    """What the saved model predicts offline, the reference of every answer."""
    folder = repository / name / str(version)
    path = folder / "model.safetensors"
    model = gm.load_model(path) if path.exists() else gm.onnx.load(folder / "model.onnx")
    return model.predict(x)


class ServerProcess:
    """``gometal serve`` in a child process, its output in files under ``log_dir``.

    Args:
        target: the repository or model file.
        log_dir: where stdout and stderr go.
        args: further command-line arguments.
        port: the port (default: a free one).
    """

    def __init__(self, target: Path, log_dir: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.url = f"127.0.0.1:{self.port}"
        self.base = f"http://{self.url}"
        self.stdout_path = log_dir / f"serve-{self.port}.out"
        self.stderr_path = log_dir / f"serve-{self.port}.err"
        command = [sys.executable, "-m", "gometal.apps.cli", "serve", str(target),
                   "--port", str(self.port), "--grpc-port", str(self.grpc_port), *args]  # fmt: skip
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err)

    def wait_live(self, headers: dict[str, str] | None = None) -> None:
        """Waits until ``/v2/health/live`` answers (raises with the logs if it exits)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n"
                                     f"{self.stderr()}")  # fmt: skip
            try:
                answer = httpx.get(f"{self.base}/v2/health/live", headers=headers, timeout=2)
                if answer.status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not start in {STARTUP_TIMEOUT_S} s:\n{self.stderr()}")

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends ``sig`` and returns the exit status."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the server did not stop after {sig}:\n{self.stderr()}")


def running_server(repository: Path, log_dir: Path, *args: str) -> Iterator[ServerProcess]:
    """A live server on ``repository`` (``args``: further command-line arguments) for a
    fixture to yield; it must stop cleanly after.

    Example:
        >>> @pytest.fixture(scope="module")
        ... def server(repository, tmp_path_factory):
        ...     yield from running_server(repository, tmp_path_factory.mktemp("logs"))
    """
    process = ServerProcess(repository, log_dir, *args)
    process.wait_live()
    yield process
    assert process.stop() == 0, process.stderr()


def metric_samples(base: str, name: str, headers: dict[str, str] | None = None) -> list:
    """Every sample of the metric family ``name`` scraped from ``base``/metrics."""
    text = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return list(family.samples)
    return []


def batch_histogram(base: str, model: str) -> tuple[float, float]:
    """``(batches, rows)`` of the batch-size histogram of ``model``."""
    samples = metric_samples(base, "gometal_inference_batch_size")
    count = sum(
        s.value for s in samples if s.name.endswith("_count") and s.labels["model"] == model
    )
    rows = sum(s.value for s in samples if s.name.endswith("_sum") and s.labels["model"] == model)
    return count, rows


def read_http_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` HTTP/1.1 answers read from ``sock``, each ``(status, headers, body)`` with
    the header names lower-cased; fails if the server closes the connection first."""
    data, answers = b"", []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            fields = dict(line.lower().split(": ", 1) for line in head[1:])
            end = head_end + 4 + int(fields["content-length"])
            if len(data) >= end:
                answers.append((int(head[0].split()[1]), fields, data[head_end + 4 : end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(answers)} answers"
        data += chunk
    return answers


class MemoryTransport:
    """A connection's transport that keeps what the server writes, for tests that feed a
    server's HTTP protocol its data directly."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        """Nothing to pause: the test feeds the data."""

    def resume_reading(self) -> None:
        """Nothing to resume."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


# A batcher test's longest wait for one answer.
ANSWER_TIMEOUT_S = 30.0


class GatedRunner:
    """Doubles its input and records batch sizes; its first call waits for ``release``."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.sizes.append(len(inputs[0]))
        if len(self.sizes) == 1:
            self.first_started.set()
            self.release.wait(ANSWER_TIMEOUT_S)
        return [inputs[0] * 2]


def gated_rows(value: float, rows: int = 1) -> list[np.ndarray]:
    """One input of ``rows`` rows of two columns, every value ``value``."""
    return [np.full((rows, 2), value, np.float32)]
