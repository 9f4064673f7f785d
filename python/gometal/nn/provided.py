"""The functions behind ``Model.save``, ``Model.load_weights``, ``Model.export_onnx`` and
``Model.generate``.

Model files and ONNX belong to the io layer, above nn: ``gometal.io`` provides these when
it is imported (``import gometal`` imports it), so nn never imports io. Generation
belongs to ``gometal.models``, which ``import gometal`` wires in and loads on first use.
"""

from __future__ import annotations

from ..base.provided import ProvidedFunction

# save_model(model, path, metadata) writes the model's definition and weights.
save_model: ProvidedFunction = ProvidedFunction("Model.save", "gometal.io")
# load_weights(model, path, allow_non_finite=...) copies a file's weights into the model.
load_weights: ProvidedFunction = ProvidedFunction("Model.load_weights", "gometal.io")
# export_onnx(model, path, opset) writes the model as an ONNX file.
export_onnx: ProvidedFunction = ProvidedFunction("Model.export_onnx", "gometal.io")
# model_to_config(model) describes the model's definition (not its weights) as JSON data;
# copy.deepcopy and pickle of a Model go through it.
model_to_config: ProvidedFunction = ProvidedFunction("copying or pickling a Model", "gometal.io")
# model_from_config(config) rebuilds a Model (fresh weights) from model_to_config's data.
model_from_config: ProvidedFunction = ProvidedFunction("unpickling a Model", "gometal.io")
# generate_tokens(model, prompt, max_new_tokens, temperature, top_k, top_p, greedy, seed,
# kv_cache, on_token) continues a prompt from a language model (gm.models.generate),
# calling on_token(step, token_ids) after each new token.
generate_tokens: ProvidedFunction = ProvidedFunction("Model.generate", "gometal.models")
