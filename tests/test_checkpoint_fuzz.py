"""A bounded fuzz of the checkpoint loader: a few hundred damaged and forged files (see
``checkpoint_fuzz_cases``), loaded in worker processes under a memory limit.

Every case must end in a loaded, readable trainer or model, or in ``CheckpointError``:
no crash (a worker killed by a signal), no hang (a case past its timeout), no other
exception type, and no case whose resident memory rises past its bound. A worker that
dies is replaced and the case recorded. The seed is fixed, so a failure reproduces.

References: the files are forged with ``safetensors``' own writer and a checksum
computed without gometal (``checkpoint_forge``); the pristine files must load.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import gometal as gm
from checkpoint_fuzz_cases import KINDS, Base, Case, write_cases
from checkpoint_fuzz_worker import LOADERS, WARMUP_CHECKPOINT, WEIGHTS_TARGET
from checkpoint_models import cnn_trainer, image_batch
from fuzz_runner import run_in_workers

SEED = 1313
RANDOM_CASES = 600
WORKER = Path(__file__).with_name("checkpoint_fuzz_worker.py")
# A case may hold its file several times over (the bytes, the tensors, the engine's
# copies) and parse its document into Python objects, up to ~25 bytes per character
# for the densest legal JSON; the slack covers what any load allocates.
BYTES_PER_FILE_BYTE = 32
SLACK_BYTES = 128 * 1024**2
# The worker's address space may grow this much beyond the largest case bound: thread
# stacks and allocator arenas are reserved but not resident.
ADDRESS_HEADROOM_BYTES = 1024**3
# Generous for a load of a few megabytes; only a hang comes near it.
CASE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 120.0


def case_bound(file_bytes: int) -> int:
    """The most a case's resident memory may rise while loading a file of this size."""
    return BYTES_PER_FILE_BYTE * file_bytes + SLACK_BYTES


def _save_checkpoints(folder: Path) -> None:
    """Three checkpoints: a CNN with Adam, a step schedule and a history; an MLP with
    L-BFGS's memory; a mixed-precision MLP with loss scaling and a plateau schedule."""
    x, labels = image_batch()
    trainer = cnn_trainer()
    trainer.save(folder / "base_cnn.safetensors", metadata={"run": "fuzz"})
    trainer.save(folder / WARMUP_CHECKPOINT)

    features = x.reshape(4, -1)[:, :6].copy()
    mlp = gm.ModelBuilder((6,)).dense(5).tanh().dense(3).build(seed=1)
    lbfgs = gm.Trainer(
        mlp, loss="cross_entropy", optimizer=gm.optim.LBFGS(max_iter=3), batch_size=4
    )
    lbfgs.train_batch(features, labels)
    lbfgs.train_batch(features, labels)
    lbfgs.save(folder / "base_lbfgs.safetensors")

    small = gm.ModelBuilder((6,)).dense(4).batch_norm().relu().dense(2).build(seed=2)
    mixed = gm.Trainer(
        small,
        loss="cross_entropy",
        optimizer=gm.optim.SGD(0.1, momentum=0.9),
        batch_size=4,
        mixed_precision="bf16-emulated",
        loss_scaling=True,
    )
    mixed.scheduler = gm.schedulers.ReduceLROnPlateau(mixed, patience=1)
    mixed.train_batch(features, labels % 2)
    mixed.scheduler.step(0.5)
    mixed.save(folder / "base_mixed.safetensors")


def _save_graph_model(path: Path) -> None:
    """A model file of a branching graph over most layer kinds."""
    layers = gm.layers
    source = gm.Input((3, 8, 8))
    h = layers.LeakyReLU(0.2)(layers.Conv2D(4, 3, padding="same")(source))
    a = layers.AvgPool2D(2)(layers.ELU()(h))
    b = layers.MaxPool2D(2, padding=1, stride=(2, 2))(layers.Swish()(h))
    b = layers.Conv2D(4, 2)(b)  # (4, 5, 5) -> (4, 4, 4)
    gate = layers.Sigmoid()(layers.Conv2D(4, 1, use_bias=False)(a))
    merged = layers.Multiply()([layers.Add()([a, b]), gate])
    pooled = layers.GlobalAvgPool2D()(layers.Concatenate(axis=1)([merged, a]))
    head = layers.Softmax()(layers.Dense(3)(layers.Dropout(0.2)(layers.GELU()(pooled))))
    gm.Model(source, head, seed=3).save(path)


def _bases(folder: Path) -> list[Base]:
    _save_checkpoints(folder)
    _save_graph_model(folder / "base_graph.safetensors")
    (folder / WEIGHTS_TARGET).write_bytes((folder / "base_graph.safetensors").read_bytes())
    # Trainer.load comes up most: it reads the most of a file.
    checkpoint = (("trainer", "trainer", "model", "metadata"), ("trainer", "model", "metadata"))
    model_file = (("model", "weights", "weights", "trainer"), ("model", "weights", "metadata"))
    return [
        Base("cnn", folder / "base_cnn.safetensors", *checkpoint),
        Base("lbfgs", folder / "base_lbfgs.safetensors", *checkpoint),
        Base("mixed", folder / "base_mixed.safetensors", *checkpoint),
        Base("graph", folder / "base_graph.safetensors", *model_file),
    ]


def _run(cases: list[Case], folder: Path, budget: int, log: Path) -> list[dict[str, Any]]:
    command = [sys.executable, str(WORKER), str(folder), str(budget)]
    requests = [{"loader": case.loader, "path": str(case.path)} for case in cases]
    bounds = [
        case_bound(case.path.stat().st_size) if case.path.is_file() else SLACK_BYTES
        for case in cases
    ]
    results = run_in_workers(
        command, requests, bounds, log, CASE_TIMEOUT_S, ready_timeout=READY_TIMEOUT_S
    )
    return [{"case": case, **result} for case, result in zip(cases, results)]


def _describe(result: dict[str, Any]) -> str:
    case = result["case"]
    answered = result["status"] == "answered"
    what = result["detail"] if answered else f"{result['exit']}: {result['stderr']}"
    return f"#{case.index} {case.kind}/{case.loader} ({case.note}): {result['status']} {what}"


def test_the_loader_survives_hundreds_of_damaged_and_forged_files(tmp_path):
    bases = _bases(tmp_path)
    cases = write_cases(tmp_path, bases, RANDOM_CASES, SEED)
    largest = max(case.path.stat().st_size for case in cases if case.path.is_file())
    pristine_bytes = {base.path.read_bytes() for base in bases}
    assert not [c for c in cases if c.kind in KINDS and c.path.read_bytes() in pristine_bytes]
    results = _run(cases, tmp_path, case_bound(largest) + ADDRESS_HEADROOM_BYTES, tmp_path / "log")

    assert len(results) == len(cases)
    findings = {
        "workers crashed": [_describe(r) for r in results if r["status"] == "died"],
        "cases hung": [_describe(r) for r in results if r["status"] == "timeout"],
        "exceptions other than CheckpointError": [
            _describe(r) for r in results if r.get("outcome") == "foreign"
        ],
        "cases over their memory bound": [
            f"{_describe(r)} peak {r['peak_bytes']} > bound {r['bound']}"
            for r in results
            if r.get("peak_bytes", 0) > r["bound"]
        ],
    }
    report = "\n".join(f"{what}:\n" + "\n".join(found) for what, found in findings.items() if found)
    assert not report, report

    # Controls: the harness loads what is intact and sees every kind of damage refused.
    pristine = [r for r in results if r["case"].kind == "pristine"]
    assert pristine and all(r["outcome"] == "loaded" for r in pristine), pristine
    refused = Counter(r["case"].kind for r in results if r["outcome"] == "refused")
    assert set(refused) >= {*KINDS, "not_safetensors", "not_regular", "bounds"}, refused
    assert {r["case"].loader for r in results} == set(LOADERS)
    # The densest legal document loads; one character more or far too deep does not.
    bounds = {r["case"].note: r["outcome"] for r in results if r["case"].kind == "bounds"}
    assert bounds["densest_legal"] == "loaded" and bounds["too_long"] == "refused"
    assert bounds["too_deep"] == "refused"
