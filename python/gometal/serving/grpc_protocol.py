"""The Open Inference Protocol's gRPC messages, from ``proto/inference.proto``.

The build compiles the proto file with grpcio-tools into a descriptor set installed beside
it (``proto/inference.binpb``, see cmake/GometalServingProtocol.cmake), so a server start runs
no protoc; a tree built without it (an editable or dev tree) compiles the file with
grpcio-tools when the first server starts. Either way the message classes are made from the
descriptors by the installed protobuf, in a pool of their own: no generated Python code, so
no protobuf gencode/runtime version to match, and no clash with another ``inference`` package
in the same process (tritonclient's own protocol).
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

__all__ = ["DESCRIPTOR_SET_FILE", "PROTO_FILE", "compile_descriptor_set", "load_protocol",
           "messages_from_descriptor_set"]  # fmt: skip

_log = logging.getLogger(__name__)

PROTO_FILE = Path(__file__).resolve().parent / "proto" / "inference.proto"
DESCRIPTOR_SET_FILE = PROTO_FILE.with_suffix(".binpb")


def compile_descriptor_set() -> bytes:
    """Compiles ``inference.proto`` with grpcio-tools, as the build does.

    Returns:
        The serialized ``FileDescriptorSet``.

    Raises:
        RuntimeError: protoc failed (its status is given).

    Example:
        >>> len(compile_descriptor_set()) > 0
        True
    """
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="gometal-grpc-"))
    try:
        target = out / "inference.binpb"
        arguments = ["protoc", f"-I{PROTO_FILE.parent}", f"--descriptor_set_out={target}",
                     PROTO_FILE.name]  # fmt: skip
        status = protoc.main(arguments)
        if status != 0:
            raise RuntimeError(f"grpcio-tools could not compile {PROTO_FILE} (status {status})")
        return target.read_bytes()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def messages_from_descriptor_set(data: bytes) -> SimpleNamespace:
    """The message classes of a serialized ``FileDescriptorSet``, by their short names.

    Args:
        data: the descriptor set (protoc's ``--descriptor_set_out``).

    Returns:
        A namespace with one attribute per top-level message (nested ones hang off them).

    Example:
        >>> pb = messages_from_descriptor_set(compile_descriptor_set())
        >>> pb.ServerLiveResponse(live=True).live
        True
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    classes = message_factory.GetMessages(list(files), pool=pool)
    return SimpleNamespace(**{name.rsplit(".", 1)[-1]: cls for name, cls in classes.items()
                              if name.count(".") == 1})  # fmt: skip


@functools.lru_cache(maxsize=1)
def load_protocol() -> SimpleNamespace:
    """The protocol's messages: from the build's descriptor set, or compiled now where the
    package has none (once per process).

    Returns:
        The namespace of :func:`messages_from_descriptor_set`.

    Example:
        >>> load_protocol().ModelInferRequest(model_name="cnn").model_name
        'cnn'
    """
    if DESCRIPTOR_SET_FILE.is_file():
        return messages_from_descriptor_set(DESCRIPTOR_SET_FILE.read_bytes())
    _log.debug("no %s from the build: compiling %s", DESCRIPTOR_SET_FILE.name, PROTO_FILE.name)
    return messages_from_descriptor_set(compile_descriptor_set())
