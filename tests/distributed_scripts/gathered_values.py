"""Every rank gathers a value of its own size (gather_from_ranks) and a fixed-shape array
(all_gather_bytes), and saves what it got for the test to compare.

Usage: mpirun -n N python gathered_values.py OUT_DIR
"""

from __future__ import annotations

import pickle
import sys

import numpy as np

import gometal as gm
from gometal import _core
from gometal.train.evaluation_sums import gather_from_ranks

out_dir = sys.argv[1]
job = gm.distributed.init()
# Pickles of different lengths: rank r's array holds 1000 r + 1 values.
value = {"rank": job.rank, "values": np.arange(1000 * job.rank + 1) / 7, "name": "r" * job.rank}
fixed = np.array([[job.rank, -job.rank], [2**40 + job.rank, 5]], np.int64)
with open(f"{out_dir}/gathered{job.rank}.pkl", "wb") as file:
    pickle.dump({"values": gather_from_ranks(value), "fixed": _core.all_gather_bytes(fixed)}, file)
