"""Each rank writes what the image DataLoader and the token loaders give it in epochs 0 and 1.

Usage: mpirun -n N python loader_shards.py IMAGE_FOLDER OUT_DIR
"""

from __future__ import annotations

import sys

import numpy as np

import gometal as gm
from gometal.text import TokenLoader, TokenStreamLoader, TokenWindows

image_folder, out_dir = sys.argv[1], sys.argv[2]
job = gm.distributed.init()
dataset = gm.vision.ImageFolderDataset(image_folder, image_size=(8, 8))
images = gm.vision.DataLoader(dataset, 2, shuffle=True, seed=7, num_workers=1, augment=True)
windows = TokenLoader(TokenWindows(np.arange(200), block_size=4), 2, 3, seed=5)
streams = TokenStreamLoader(np.arange(500), batch_size=2, seq_len=5, seed=3)
found = {"shard_count": np.array([images.shard_count, windows.shard_count, streams.shard_count])}
for epoch in (0, 1):
    images.set_epoch(epoch)
    found[f"images{epoch}"] = images.shard_order(epoch)
    labels = [y for _, y in images]
    found[f"labels{epoch}"] = np.concatenate(labels)
    found[f"sizes{epoch}"] = np.array([len(y) for y in labels])
    images.set_epoch(epoch)
    found[f"exact_labels{epoch}"] = np.concatenate([y for _, y in images.iterate(False)])
    found[f"exact{epoch}"] = images.shard_order(epoch, pad_shards=False)
    windows.set_epoch(epoch)
    found[f"windows{epoch}"] = np.stack([x for x, _ in windows])
    streams.set_epoch(epoch)
    found[f"streams{epoch}"] = np.stack([np.stack(batch) for batch in streams])
images.close()
np.savez(f"{out_dir}/rank{job.rank}.npz", **found)
