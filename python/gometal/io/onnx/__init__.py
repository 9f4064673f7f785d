"""ONNX interchange: ``export`` writes a model that standard runtimes such as onnxruntime
load and run; ``load`` turns an ONNX file into a trainable ``gm.Model``.

Example:
    >>> gm.onnx.export(model, "model.onnx", opset=17)  # doctest: +SKIP
"""

from ._safety import MAX_SAMPLE_BYTES
from .export import export
from .importer import OnnxImportError, load

__all__ = ["MAX_SAMPLE_BYTES", "OnnxImportError", "export", "load"]
