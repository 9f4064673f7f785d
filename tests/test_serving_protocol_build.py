"""The serving protocol compiled at build time (cmake/GometalServingProtocol.cmake) and the
server's fallback to compiling ``inference.proto`` at start where a tree has none.

The CMake step runs alone in a small project that includes the module, builds and installs.
The messages are compared with tritonclient's own compiled protocol (the same Open Inference
Protocol, compiled by Triton): field names and numbers, and bytes serialized by one parsed by
the other.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from tritonclient.grpc import service_pb2 as triton_pb2

from gometal.serving import grpc_protocol

REPO_ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
MESSAGES = (
    "ModelInferRequest",
    "ModelInferResponse",
    "ModelMetadataResponse",
    "ModelStreamInferResponse",
    "ServerLiveResponse",
)


def _fields(message_class) -> list[tuple[str, int]]:
    return sorted((f.name, f.number) for f in message_class.DESCRIPTOR.fields)


def _build_descriptor_set(tmp_path: Path) -> Path:
    assert CMAKE, "cmake is needed to build gometal and must be on PATH"
    (tmp_path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(probe NONE)\n"
        f'list(APPEND CMAKE_MODULE_PATH "{REPO_ROOT / "cmake"}")\n'
        "find_package(Python COMPONENTS Interpreter REQUIRED)\n"
        "include(GometalServingProtocol)\n"
    )
    build, prefix = tmp_path / "build", tmp_path / "install"
    configure = [CMAKE, "-S", str(tmp_path), "-B", str(build),
                 f"-DPython_EXECUTABLE={sys.executable}", f"-DCMAKE_INSTALL_PREFIX={prefix}"]  # fmt: skip
    for command in (configure, [CMAKE, "--build", str(build)], [CMAKE, "--install", str(build)]):
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return prefix / "serving" / "proto" / "inference.binpb"


def test_the_cmake_step_installs_the_protocol_tritonclients_messages_speak(tmp_path: Path):
    installed = _build_descriptor_set(tmp_path)
    assert installed.is_file()
    pb = grpc_protocol.messages_from_descriptor_set(installed.read_bytes())
    for name in MESSAGES:
        assert _fields(getattr(pb, name)) == _fields(getattr(triton_pb2, name)), name
    # A request as tritonclient serializes it parses into the same fields here, and back.
    sent = triton_pb2.ModelInferRequest(model_name="cnn", model_version="1", id="7")
    tensor = sent.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    sent.raw_input_contents.append(np.arange(3, dtype=np.float32).tobytes())
    tensor.parameters["binary_data_size"].int64_param = 12
    got = pb.ModelInferRequest.FromString(sent.SerializeToString())
    assert (got.model_name, got.model_version, got.id) == ("cnn", "1", "7")
    assert list(got.inputs[0].shape) == [1, 3] and got.inputs[0].datatype == "FP32"
    assert got.inputs[0].parameters["binary_data_size"].int64_param == 12
    assert triton_pb2.ModelInferRequest.FromString(got.SerializeToString()) == sent


def test_the_start_time_compile_gives_the_same_protocol_as_the_build(tmp_path: Path):
    built = grpc_protocol.messages_from_descriptor_set(_build_descriptor_set(tmp_path).read_bytes())
    compiled = grpc_protocol.messages_from_descriptor_set(grpc_protocol.compile_descriptor_set())
    for name in MESSAGES:
        assert _fields(getattr(built, name)) == _fields(getattr(compiled, name)), name


def test_the_server_reads_the_built_descriptor_set_when_the_package_has_one(
    tmp_path: Path, monkeypatch
):
    # A descriptor set holding only a message of another name: what load_protocol returns
    # can only come from this file, not from compiling inference.proto.
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(name="probe.proto", package="inference")
    proto.message_type.add(name="OnlyInTheBuiltFile")
    path = tmp_path / "inference.binpb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[proto]).SerializeToString())
    monkeypatch.setattr(grpc_protocol, "DESCRIPTOR_SET_FILE", path)
    grpc_protocol.load_protocol.cache_clear()
    try:
        assert hasattr(grpc_protocol.load_protocol(), "OnlyInTheBuiltFile")
    finally:
        grpc_protocol.load_protocol.cache_clear()


def test_without_a_built_descriptor_set_the_server_compiles_the_proto_at_start(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(grpc_protocol, "DESCRIPTOR_SET_FILE", tmp_path / "absent.binpb")
    grpc_protocol.load_protocol.cache_clear()
    try:
        pb = grpc_protocol.load_protocol()
    finally:
        grpc_protocol.load_protocol.cache_clear()
    assert _fields(pb.ModelInferRequest) == _fields(triton_pb2.ModelInferRequest)
    assert pb.ModelMetadataResponse.TensorMetadata(name="input").name == "input"
