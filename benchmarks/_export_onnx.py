"""Writes a workload's model to an ONNX file, in its own process, for the onnxruntime peer:
``python _export_onnx.py EXPORTER WORKLOAD OUT [BATCH]``, EXPORTER ``torch`` (torch.onnx.export's
dynamo exporter of the torch peer's model) or ``gometal`` (gometal's own export of its model).

Exporting in a child keeps torch and gometal out of the onnxruntime peer's peak memory.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _workload import GPT_EMBD, GPT_HEADS, GPT_LAYERS, GPT_VOCAB, WORKLOADS, make_batch

EXPORTERS = ("torch", "gometal")


def export_torch(workload: str, path: str, batch: int | None = None) -> None:
    """The torch peer's model in eval mode, traced on the workload's batch (its first
    ``batch`` rows, repeated as needed, when given: the export's batch size is fixed)."""
    import torch

    spec = WORKLOADS[workload]
    if spec.model == "lstm":
        from _torch_lstm import export_onnx

        export_onnx(path, batch or spec.batch, spec.block)
        return
    torch.manual_seed(0)
    x, _ = make_batch(workload)
    if batch is not None:
        x = np.resize(x, (batch, *x.shape[1:]))
    if spec.model == "gpt":
        from _torch_gpt import TorchGPT

        model = TorchGPT(GPT_VOCAB, spec.block, GPT_LAYERS, GPT_HEADS, GPT_EMBD)
        inputs, names = (torch.from_numpy(x).long(),), ["tokens"]
    else:
        from _frameworks import torch_model

        model = torch_model(torch, spec)
        inputs, names = (torch.from_numpy(x),), ["images"]
    # The exporter reports its progress on stdout; the parent reads only the exit status.
    with contextlib.redirect_stdout(sys.stderr):
        torch.onnx.export(
            model.eval(),
            inputs,
            path,
            input_names=names,
            output_names=["logits"],
            dynamo=True,
            optimize=True,
        )


def export_gometal(workload: str, path: str, batch: int | None = None) -> None:
    """gometal's model of the workload, written by ``Model.export_onnx`` (opset 17; its batch
    dimension is symbolic, so ``batch`` changes nothing)."""
    import gometal as gm
    from _frameworks import gometal_model

    gometal_model(gm, WORKLOADS[workload]).export_onnx(path)


if __name__ == "__main__":
    exporter, workload, out = sys.argv[1:4]
    if exporter not in EXPORTERS or workload not in WORKLOADS:
        raise SystemExit(f"usage: _export_onnx.py {{{','.join(EXPORTERS)}}} WORKLOAD OUT [BATCH]")
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else None
    (export_torch if exporter == "torch" else export_gometal)(workload, out, rows)
