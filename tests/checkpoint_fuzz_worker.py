"""The child-process side of test_checkpoint_fuzz.py: loads fuzzed files, one per request.

``python checkpoint_fuzz_worker.py FOLDER ADDRESS_BUDGET`` imports gometal, warms up on
FOLDER's pristine files and serves requests ``{"loader", "path"}`` as ``fuzz_runner``
describes (the address-space cap, the answers, the peak memory of a case).

``outcome`` is ``"loaded"`` (and the loaded trainer or model was read back),
``"refused"`` (``CheckpointError``, the documented error) or ``"foreign"`` (any other
exception: its type, message and innermost frames are the ``detail``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import gometal as gm
from fuzz_runner import serve
from gometal.serialization import CheckpointError

# Files the parent writes into FOLDER: a pristine checkpoint and model file, loaded
# once before any case; load_weights copies each case into the model file's model.
WARMUP_CHECKPOINT = "warmup_checkpoint.safetensors"
WEIGHTS_TARGET = "weights_target.safetensors"
LOADERS = ("trainer", "model", "weights", "metadata")


def _use_trainer(trainer: Any) -> str:
    # What a resumed run reads first: the counters and the weights.
    weights = trainer.model.get_weights()
    rate = trainer.learning_rate
    return f"step {trainer.step}, epoch {trainer.epoch}, lr {rate:.3g}, {len(weights)} weights"


def load_case(loader: str, path: str, folder: Path) -> str:
    """Loads ``path`` the way ``loader`` names and reads the result back; a summary."""
    if loader == "trainer":
        return _use_trainer(gm.Trainer.load(path))
    if loader == "model":
        model = gm.load_model(path)
        return f"{len(model.get_weights())} weights, {model.count_params()} parameters"
    if loader == "weights":
        model = gm.load_model(folder / WEIGHTS_TARGET)
        model.load_weights(path)
        finite = all(np.isfinite(value).all() for value in model.get_weights().values())
        return f"weights copied, all finite: {finite}"
    if loader == "metadata":
        return f"metadata keys {sorted(gm.serialization.read_metadata(path))}"
    raise ValueError(f"unknown loader {loader!r}")


def _handle(request: dict[str, Any], folder: Path) -> tuple[str, str]:
    try:
        return "loaded", load_case(request["loader"], request["path"], folder)
    except CheckpointError as err:
        return "refused", str(err)


def _warm_up(folder: Path) -> None:
    load_case("trainer", str(folder / WARMUP_CHECKPOINT), folder)
    load_case("weights", str(folder / WEIGHTS_TARGET), folder)


def main(folder: Path, budget: int) -> None:
    serve(lambda request: _handle(request, folder), budget, lambda: _warm_up(folder))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
