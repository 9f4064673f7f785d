"""20 AdamW steps of a small GPT on token windows sharded by rank; writes the weights.

Usage: mpirun -n N python gpt_replicas.py PER_RANK_BATCH OUT_DIR
Also evaluates held-out windows (validation_loader), pooled over the ranks.
(Imported by the test for the one-process reference, which passes ``shard=False``.)
"""

from __future__ import annotations

import sys

import numpy as np

import gometal as gm
from gometal.text import TokenLoader, TokenWindows

VOCAB, BLOCK, LAYERS, HEADS, EMBD = 29, 16, 2, 2, 32
STEPS = 20


def tokens() -> np.ndarray:
    """A learnable stream: each token is the previous one plus a small step, mod VOCAB."""
    rng = np.random.default_rng(0)
    return (np.cumsum(rng.integers(1, 3, 3000)) % VOCAB).astype(np.int32)


def train_gpt(batch: int, shard: bool) -> tuple[gm.Trainer, int]:
    """``STEPS`` steps from rank 0's initial weights; returns the trainer and the steps
    after which this rank's weights differed from rank 0's."""
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD, seed=1 + gm.distributed.rank())
    shapes = model.weight_shapes
    optimizer = gm.optim.AdamW(
        lr=3e-3,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        param_groups=[{"params": lambda name: len(shapes[name]) < 2, "weight_decay": 0.0}],
    )
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=optimizer)
    loader = TokenLoader(TokenWindows(tokens(), BLOCK), batch, STEPS, seed=2, shard=shard)
    differing = 0
    for x, y in loader:
        trainer.train_batch(x, y)
        weights = np.concatenate([w.ravel() for w in model.get_weights().values()])
        differing += int(not np.array_equal(gm.distributed.broadcast(weights), weights))
    return trainer, differing


def validation_loader(batch: int, shard: bool) -> TokenLoader:
    """Evaluation windows over the tokens' last 500, drawn with a seed of their own."""
    return TokenLoader(TokenWindows(tokens()[-500:], BLOCK), batch, 3, seed=9, shard=shard)


if __name__ == "__main__":
    batch, out_dir = int(sys.argv[1]), sys.argv[2]
    gm.set_num_threads(1)
    job = gm.distributed.init()
    trainer, differing = train_gpt(batch, shard=True)
    print(f"rank {job.rank} of {job.size}: weights differed from rank 0's after {differing} steps")
    np.savez(f"{out_dir}/rank{job.rank}.npz", **trainer.model.get_weights())
    measured = trainer.evaluate(validation_loader(batch, shard=True))
    np.savez(f"{out_dir}/evaluation{job.rank}.npz", **measured)
