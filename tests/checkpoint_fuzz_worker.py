"""The child-process side of test_checkpoint_fuzz.py: loads fuzzed files, one per request.

``python checkpoint_fuzz_worker.py FOLDER ADDRESS_BUDGET`` imports gometal, warms up on
FOLDER's pristine files, caps its address space (``RLIMIT_AS``, where ``/proc`` tells
the current size) at that size plus ADDRESS_BUDGET bytes, prints ``{"ready": true}``
and then answers requests ``INDEX<TAB>LOADER<TAB>PATH`` read from stdin, one JSON line
each: ``{"index", "outcome", "detail", "peak_bytes"}``.

``outcome`` is ``"loaded"`` (and the loaded trainer or model was read back),
``"refused"`` (``CheckpointError``, the documented error) or ``"foreign"`` (any other
exception: its type, message and innermost frames are the ``detail``). ``peak_bytes``
is how far the resident memory rose above where it stood before the case (Linux resets
the peak per case; elsewhere the process's peak since the warm-up stands for it).

A crash (a signal) ends the process and a hang stalls it: the parent notices either,
records the case and starts a new worker.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

import gometal as gm
from gometal.serialization import CheckpointError

# Files the parent writes into FOLDER: a pristine checkpoint and model file, loaded
# once before any case; load_weights copies each case into the model file's model.
WARMUP_CHECKPOINT = "warmup_checkpoint.safetensors"
WEIGHTS_TARGET = "weights_target.safetensors"
LOADERS = ("trainer", "model", "weights", "metadata")


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    # Writing "5" to clear_refs resets VmHWM, the peak resident size (Linux 4.0 and up).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _process_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class PeakMeter:
    """How far one case raises the resident memory above where it started."""

    def __init__(self) -> None:
        self.per_case = _reset_peak()
        self.baseline = _process_peak()

    def begin(self) -> int:
        if not self.per_case:
            return self.baseline
        _reset_peak()
        return _status_bytes("VmRSS") or 0

    def peak(self) -> int:
        return (_status_bytes("VmHWM") or 0) if self.per_case else _process_peak()


def _cap_address_space(budget: int) -> None:
    size = _status_bytes("VmSize")
    if size is None:
        return  # no /proc (macOS): the per-case peak checks still apply
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + budget if hard == resource.RLIM_INFINITY else min(size + budget, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


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


def main(folder: Path, budget: int) -> None:
    # Answers go to the original stdout; whatever a library prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gm.set_num_threads(1)
    load_case("trainer", str(folder / WARMUP_CHECKPOINT), folder)
    load_case("weights", str(folder / WEIGHTS_TARGET), folder)
    meter = PeakMeter()
    _cap_address_space(budget)
    answers.write(json.dumps({"ready": True, "per_case_peak": meter.per_case}) + "\n")
    answers.flush()
    for request in sys.stdin:
        index, loader, path = request.rstrip("\n").split("\t", 2)
        start = meter.begin()
        try:
            outcome, detail = "loaded", load_case(loader, path, folder)
        except CheckpointError as err:
            outcome, detail = "refused", str(err)
        except Exception as err:  # noqa: BLE001  (any other type is what the fuzz looks for)
            frames = "".join(traceback.format_exception(err)[-4:])
            outcome, detail = "foreign", f"{type(err).__name__}: {err}\n{frames}"
        peak = max(0, meter.peak() - start)
        line = {
            "index": int(index),
            "outcome": outcome,
            "detail": detail[:3000],
            "peak_bytes": peak,
        }
        answers.write(json.dumps(line) + "\n")
        answers.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
