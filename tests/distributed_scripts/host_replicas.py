"""train_replicas' MLP training (Adam), each rank also saving the network namespace and
host name it ran in: the two-host test runs it across namespaces and on one host.

Usage: mpirun -n 2 python host_replicas.py PER_RANK_BATCH OUT_DIR
"""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
from replica_models import OPTIMIZERS, mlp, train

import gometal as gm

batch, out_dir = int(sys.argv[1]), sys.argv[2]
gm.set_num_threads(1)
job = gm.distributed.init()
model = mlp(seed=1 + job.rank)
trainer = gm.Trainer(model, "mse", OPTIMIZERS["adam"](), batch_size=batch)
differing = train(trainer, batch)
np.savez(
    f"{out_dir}/rank{job.rank}.npz",
    network_namespace=np.array(os.stat("/proc/self/ns/net").st_ino),
    host=np.array(socket.gethostname()),
    **model.get_weights(),
)
print(f"rank {job.rank} of {job.size}: weights differed from rank 0's after {differing} steps")
