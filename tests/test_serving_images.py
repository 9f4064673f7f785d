"""``gometal serve`` takes JPEG and PNG files as a ``BYTES`` input for a model that records
its image preprocessing, and answers what offline ``model.predict`` gives for the batch
``ImagePreprocessing.load_batch`` builds from the same files; broken files are a 400."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

import gometal as gm
from gometal.vision import ImagePreprocessing
from serving_helpers import ServerProcess, cnn_model, running_server, write_repository

RTOL, ATOL = 1e-5, 1e-6
PREPROCESSING = ImagePreprocessing((16, 16), 3, "shorter", (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    written = []
    for name, size, mode in (("a.png", (24, 20), "RGB"), ("b.jpg", (32, 32), "RGB"),
                             ("c.png", (16, 16), "L")):  # fmt: skip
        channels = 3 if mode == "RGB" else 1
        pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(), mode).save(folder / name)
        written.append(folder / name)
    return written


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_repository(tmp_path_factory.mktemp("repository"), ("mlp",))
    (root / "classifier" / "1").mkdir(parents=True)
    metadata = {"classes": list("abcde"), "preprocessing": PREPROCESSING.to_dict()}
    cnn_model().save(root / "classifier" / "1" / "model.safetensors", metadata=metadata)
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from running_server(repository, tmp_path_factory.mktemp("logs"))


def _expected(repository: Path, files: list[Path]) -> np.ndarray:
    model = gm.load_model(repository / "classifier" / "1" / "model.safetensors")
    return model.predict(PREPROCESSING.load_batch(files))


def _bytes_tensor(module, files: list[Path]):
    data = np.array([path.read_bytes() for path in files], dtype=object)
    return module.InferInput("input", [len(files)], "BYTES").set_data_from_numpy(data)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_image_files_equal_offline_predict(
    server: ServerProcess, repository: Path, files: list[Path], protocol: str
) -> None:
    module, url = (triton, server.url) if protocol == "http" else (triton_grpc, server.grpc_url)
    client = module.InferenceServerClient(url)
    answer = client.infer("classifier", [_bytes_tensor(module, files)]).as_numpy("dense_0")
    np.testing.assert_allclose(answer, _expected(repository, files), rtol=RTOL, atol=ATOL)


def test_float_tensors_still_work_for_an_image_model(
    server: ServerProcess, repository: Path, files: list[Path]
) -> None:
    x = PREPROCESSING.load_batch(files)
    client = triton.InferenceServerClient(server.url)
    tensor = triton.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x)
    answer = client.infer("classifier", [tensor]).as_numpy("dense_0")
    np.testing.assert_allclose(answer, _expected(repository, files), rtol=RTOL, atol=ATOL)


def _binary_bytes_body(elements: list[bytes], shape: list[int] | None = None) -> dict:
    payload = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    tensor = {"name": "input", "datatype": "BYTES", "shape": shape or [len(elements)],
              "parameters": {"binary_data_size": len(payload)}}  # fmt: skip
    header = json.dumps({"inputs": [tensor]}).encode()
    return {"content": header + payload,
            "headers": {"Inference-Header-Content-Length": str(len(header))}}  # fmt: skip


def _bad_image_cases(files: list[Path]) -> list[tuple[str, str, dict, str]]:
    png = files[0].read_bytes()
    # One element whose 4-byte length says more than the tensor's bytes hold.
    payload = (1000).to_bytes(4, "little") + png[:10]
    tensor = {"name": "input", "datatype": "BYTES", "shape": [1],
              "parameters": {"binary_data_size": len(payload)}}  # fmt: skip
    header = json.dumps({"inputs": [tensor]}).encode()
    overrun = {"content": header + payload,
               "headers": {"Inference-Header-Content-Length": str(len(header))}}  # fmt: skip
    return [
        ("not an image", "classifier", _binary_bytes_body([b"GIF89a..."]), "not a JPEG or PNG"),
        ("truncated PNG", "classifier", _binary_bytes_body([png[: len(png) // 2]]),
         "cannot be decoded"),
        ("element length past the data", "classifier", overrun, "runs past the data"),
        ("images to a model without preprocessing", "mlp", _binary_bytes_body([png]),
         "datatype FP32, got BYTES"),
        ("a matrix of images", "classifier", _binary_bytes_body([png, png], [1, 2]),
         "shape [N] or [N, 1]"),
        ("images as JSON", "classifier",
         {"json": {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                               "data": ["abc"]}]}}, "binary data"),
    ]  # fmt: skip


def test_bad_image_input_gets_a_400_and_the_server_keeps_serving(
    server: ServerProcess, files: list[Path]
) -> None:
    for case, model, arguments, words in _bad_image_cases(files):
        answer = httpx.post(f"{server.base}/v2/models/{model}/infer", timeout=30, **arguments)
        assert answer.status_code == 400, (case, answer.text)
        assert words in answer.json()["error"], (case, answer.text)
    client = triton.InferenceServerClient(server.url)
    assert client.infer("classifier", [_bytes_tensor(triton, files)]).as_numpy("dense_0").shape == (
        3, 5,
    )  # fmt: skip


def test_grpc_refuses_a_broken_image_by_name(server: ServerProcess, files: list[Path]) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    data = np.array([b"\x89PNG\r\n\x1a\n broken"], dtype=object)
    tensor = triton_grpc.InferInput("input", [1], "BYTES").set_data_from_numpy(data)
    with pytest.raises(InferenceServerException, match="element 0 cannot be decoded"):
        client.infer("classifier", [tensor])
