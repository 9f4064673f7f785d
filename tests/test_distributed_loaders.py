"""The image DataLoader and the token loaders shard by rank under mpirun (3 ranks).

The image loader's shards must be torch's ``DistributedSampler(drop_last=False)`` shards of
the loader's epoch order; its exact shards (evaluation) cover every image once. The token
loaders draw the job's batch as one process at ``3 * b`` does and hand rank ``r`` its
``r``-th block: the same windows and streams, disjoint across ranks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from gometal.text import TokenLoader, TokenStreamLoader, TokenWindows
from image_folders import write_colour_folder
from test_distributed import mpirun, ran

RANKS, BATCH = 3, 2


def test_image_and_token_loaders_shard_by_rank(tmp_path):
    folder = write_colour_folder(tmp_path / "images", per_class=4)
    (folder / "red" / "3.png").unlink()  # 11 images: uneven over 3 ranks
    out = tmp_path / "out"
    out.mkdir()
    ran(mpirun("loader_shards.py", RANKS, str(folder), str(out)))
    shards = [dict(np.load(out / f"rank{r}.npz")) for r in range(RANKS)]
    dataset = gm.vision.ImageFolderDataset(folder, image_size=(8, 8))
    alone = gm.vision.DataLoader(dataset, BATCH, shuffle=True, seed=7, num_workers=0)
    labels = np.asarray(dataset.labels)
    windows = TokenLoader(
        TokenWindows(np.arange(200), block_size=4), RANKS * BATCH, 3, seed=5, shard=False
    )
    streams = TokenStreamLoader(np.arange(500), RANKS * BATCH, seq_len=5, seed=3, shard=False)
    for rank, shard in enumerate(shards):
        assert shard["shard_count"].tolist() == [RANKS] * 3
    for epoch in (0, 1):
        order = alone.sample_order(epoch)
        subset = torch.utils.data.Subset(range(len(dataset)), order.tolist())
        exact = []
        for rank, shard in enumerate(shards):
            sampler = torch.utils.data.DistributedSampler(
                subset, num_replicas=RANKS, rank=rank, shuffle=False, drop_last=False
            )
            expected = [subset[i] for i in sampler]
            np.testing.assert_array_equal(shard[f"images{epoch}"], expected)
            np.testing.assert_array_equal(shard[f"labels{epoch}"], labels[expected])
            np.testing.assert_array_equal(shard[f"sizes{epoch}"], [2, 2])
            np.testing.assert_array_equal(
                shard[f"exact_labels{epoch}"], labels[shard[f"exact{epoch}"]]
            )
            exact.extend(shard[f"exact{epoch}"].tolist())
        assert sorted(exact) == list(range(len(dataset)))  # each image once
        whole_windows = np.stack([x for x, _ in windows])
        whole_streams = np.stack([np.stack(batch) for batch in streams])
        for rank, shard in enumerate(shards):
            block = slice(rank * BATCH, (rank + 1) * BATCH)
            np.testing.assert_array_equal(shard[f"windows{epoch}"], whole_windows[:, block])
            np.testing.assert_array_equal(shard[f"streams{epoch}"], whole_streams[:, :, block])
    assert (shards[0]["images0"] != shards[0]["images1"]).any()
    assert (shards[0]["windows0"] != shards[0]["windows1"]).any()
    # Different ranks read different windows and streams.
    assert (shards[0]["windows0"] != shards[1]["windows0"]).any()
    assert not set(shards[0]["streams0"].ravel()) & set(shards[1]["streams0"].ravel())


def test_outside_a_job_the_loaders_read_everything(tmp_path):
    folder = write_colour_folder(tmp_path / "images", per_class=2)
    dataset = gm.vision.ImageFolderDataset(folder, image_size=(8, 8))
    with gm.vision.DataLoader(dataset, 4, seed=1, num_workers=0) as loader:
        assert (loader.shard_rank, loader.shard_count) == (0, 1)
        np.testing.assert_array_equal(loader.shard_order(0), loader.sample_order(0))
        assert len(loader) == 2 and len(list(loader.iterate(pad_shards=False))) == 2
    windows = TokenLoader(TokenWindows(np.arange(50), block_size=4), 3, 2, seed=1)
    assert windows.shard_count == 1 and windows.epoch_starts(0).shape == (2, 3)
    with pytest.raises(TypeError, match="shard must be True, False or None, got 'yes'"):
        gm.vision.DataLoader(dataset, 4, shard="yes")
    with pytest.raises(TypeError, match="pad_shards must be True or False, got 1"):
        gm.vision.DataLoader(dataset, 4, pad_shards=1)
    with pytest.raises(TypeError, match="shard must be True, False or None, got 0"):
        TokenStreamLoader(np.arange(500), 2, 5, shard=0)
