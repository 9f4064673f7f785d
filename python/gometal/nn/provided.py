"""The functions behind ``Model.save``, ``Model.load_weights`` and ``Model.export_onnx``.

Model files and ONNX belong to the io layer, above nn: ``gometal.io`` provides these when
it is imported (``import gometal`` imports it), so nn never imports io.
"""

from __future__ import annotations

from ..base.provided import ProvidedFunction

# save_model(model, path, metadata) writes the model's definition and weights.
save_model: ProvidedFunction = ProvidedFunction("Model.save", "gometal.io")
# load_weights(model, path, allow_non_finite=...) copies a file's weights into the model.
load_weights: ProvidedFunction = ProvidedFunction("Model.load_weights", "gometal.io")
# export_onnx(model, path, opset) writes the model as an ONNX file.
export_onnx: ProvidedFunction = ProvidedFunction("Model.export_onnx", "gometal.io")
