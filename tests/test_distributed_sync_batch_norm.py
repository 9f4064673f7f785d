"""Batch norm in data-parallel training: per rank by default (as torch's DDP), and with
``BatchNorm(sync=True)`` the statistics of the job's whole batch, in the forward pass and the
backward, so that N ranks at batch b train as one process at batch N * b.
"""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from distributed_scripts.sync_batch_norm_models import (
    PER_RANK_BATCH,
    cnn,
    global_batches,
    optimizer,
    uneven_slices,
)
from gometal.train.data_parallel import use_sync_batch_norm
from test_distributed import mpirun, ran


def _ranks_weights(ranks: int, optimizer_name: str, mode: str, tmp_path) -> dict:
    """Runs the script; checks every rank held rank 0's trained weights after every step, and
    all its weights (running statistics too) with sync."""
    output = ran(mpirun("sync_batch_norm_replicas.py", ranks, optimizer_name, mode, str(tmp_path)))
    for rank in range(ranks):
        expected = f"{mode} rank {rank} of {ranks}: weights differed from rank 0's after 0 steps"
        assert expected in output, output
    weights = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(ranks)]
    for rank_weights in weights[1:]:
        for name, value in rank_weights.items():
            if mode == "local" and ".running_" in name:
                continue
            np.testing.assert_array_equal(value, weights[0][name], err_msg=name)
    return weights[0]


def _one_process(ranks: int, optimizer_name: str) -> dict:
    """One process at the global batch, a plain BatchNorm: the reference."""
    gm.set_num_threads(1)
    model = cnn(sync=False)
    trainer = gm.Trainer(
        model, "cross_entropy", optimizer(optimizer_name), batch_size=ranks * PER_RANK_BATCH
    )
    for x, y in global_batches(ranks * PER_RANK_BATCH):
        trainer.train_batch(x, y)
    return model.get_weights()


@pytest.mark.parametrize("optimizer_name, ranks", [("sgd_momentum", 2), ("adam", 3)])
def test_synchronized_batch_norm_on_n_ranks_matches_one_process_at_n_times_the_batch(
    optimizer_name, ranks, tmp_path
):
    synced = _ranks_weights(ranks, optimizer_name, "sync", tmp_path)
    reference = _one_process(ranks, optimizer_name)
    assert set(synced) == set(reference)
    for name, value in reference.items():
        # Running statistics included: they are the job's, with the job's count in n/(n-1).
        np.testing.assert_allclose(synced[name], value, rtol=1e-6, atol=1e-6, err_msg=name)


def test_the_trainer_option_synchronizes_every_batch_norm(tmp_path):
    synced = _ranks_weights(2, "sgd_momentum", "trainer", tmp_path)
    reference = _one_process(2, "sgd_momentum")
    for name, value in reference.items():
        np.testing.assert_allclose(synced[name], value, rtol=1e-6, atol=1e-6, err_msg=name)
    with pytest.raises(TypeError, match="sync_batch_norm must be True or False, got 1"):
        gm.Trainer(cnn(sync=False), "cross_entropy", sync_batch_norm=1)


def test_batch_norm_is_per_rank_by_default(tmp_path):
    local = _ranks_weights(2, "sgd_momentum", "local", tmp_path)
    reference = _one_process(2, "sgd_momentum")
    # Each rank normalizes its own 4 images: the running means are those of rank 0's
    # slices, not the job's, and the weights drift apart from one process's.
    name = next(n for n in reference if n.endswith("running_mean"))
    assert np.abs(local[name] - reference[name]).max() > 1e-3


def test_sync_batch_norm_in_one_process_is_batch_norm():
    # A job of one rank: its statistics are the batch's, bit for bit the same layer.
    x, y = next(global_batches(8))
    weights = []
    for sync in (False, True):
        gm.set_num_threads(1)
        model = cnn(sync=sync)
        trainer = gm.Trainer(model, "cross_entropy", optimizer("adam"), batch_size=8)
        for _ in range(3):
            trainer.train_batch(x, y)
        weights.append(model.get_weights())
    for name, value in weights[0].items():
        np.testing.assert_allclose(weights[1][name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_sync_must_be_a_bool_and_survives_the_config():
    with pytest.raises(TypeError, match="BatchNorm sync must be True or False, got 1"):
        gm.layers.BatchNorm(sync=1)
    layer = gm.layers.BatchNorm(sync=True)
    assert layer.get_config()["sync"] is True
    assert "sync" not in gm.layers.BatchNorm().get_config()  # older files stay as they were
    assert "sync=True" in repr(layer)


def test_use_sync_batch_norm_flags_every_batch_norm_layer():
    model = cnn(sync=False)
    assert use_sync_batch_norm(model) == 1
    assert [layer.sync for layer in model.layers if isinstance(layer, gm.layers.BatchNorm)] == [
        True
    ]
    assert use_sync_batch_norm(model) == 0  # already synchronized
    assert use_sync_batch_norm(model, enabled=False) == 1
    with pytest.raises(TypeError, match="sync_batch_norm must be True or False, got 'yes'"):
        use_sync_batch_norm(model, "yes")


def test_synchronized_statistics_weigh_uneven_batches_by_their_counts(tmp_path):
    # 5, 4 and 3 images: the job's statistics are those of the 12 images together (the
    # running statistics after one step depend on the forward statistics only).
    output = ran(mpirun("sync_batch_norm_uneven.py", 3, str(tmp_path)))
    assert "rank 2 of 3: 3 images" in output, output
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(3)]
    gm.set_num_threads(1)
    model = cnn(sync=False)
    trainer = gm.Trainer(model, "cross_entropy", optimizer("sgd_momentum"), batch_size=12)
    x, y = next(global_batches(uneven_slices(3)[-1].stop))
    trainer.train_batch(x, y)
    reference = {n: w for n, w in model.get_weights().items() if ".running_" in n}
    for rank_stats in ranks:
        assert set(rank_stats) == set(reference)
        for name, value in reference.items():
            np.testing.assert_allclose(rank_stats[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_the_builder_takes_sync_and_checks_it():
    # cnn() builds through ModelBuilder.batch_norm(sync=...), so the runs above cover its
    # training; here the layer it adds and the check of the argument.
    layer = next(lay for lay in cnn(sync=True).layers if lay.kind == "batch_norm")
    assert layer.sync is True and layer.momentum == pytest.approx(0.2)
    assert not next(lay for lay in cnn(sync=False).layers if lay.kind == "batch_norm").sync
    with pytest.raises(TypeError, match="BatchNorm sync must be True or False, got 'yes'"):
        gm.ModelBuilder((3, 8, 8)).conv2d(4, 3).batch_norm(sync="yes")
