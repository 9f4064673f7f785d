"""The I/O layer: model files and exact-resume checkpoints (``serialization``) and ONNX
export and import (``onnx``).

``onnx`` is imported on first use (it pulls in the ``onnx`` package).
"""

from . import serialization

__all__ = ["serialization"]
