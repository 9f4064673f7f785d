"""ONNX interchange: ``export`` writes a model that standard runtimes such as onnxruntime
load and run.

Example:
    >>> gm.onnx.export(model, "model.onnx", opset=17)  # doctest: +SKIP
"""

from .export import export

__all__ = ["export"]
