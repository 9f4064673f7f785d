"""Data-parallel training under mpirun against one process.

Each test launches ``mpirun -n N python tests/distributed_scripts/<script>`` with a timeout
and reads what the ranks wrote. N ranks at batch b must reach the weights one process
reaches at batch N * b (the mean of the ranks' gradients is the gradient of the global
batch), and every rank must hold bit-identical weights.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gometal as gm
from distributed_scripts.replica_models import OPTIMIZERS, mlp, regression_data, train
from gometal import _core
from gometal.distributed.cost_model import (
    Link,
    fit_link,
    ring_all_reduce_seconds,
    scaling_efficiency,
)
from gometal.train.data_parallel import averaged_over_ranks

SCRIPTS = Path(__file__).parent / "distributed_scripts"
PER_RANK_BATCH = 8


def mpirun(script: str, ranks: int, *args: str, timeout: float = 120.0):
    """Runs ``script`` on ``ranks`` MPI processes; returns the completed process."""
    launcher = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpirun"
    )
    assert launcher is not None, "mpirun not found: pip install 'gometal[distributed]'"
    env = {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [launcher, "-n", str(ranks), "--oversubscribe", sys.executable, str(SCRIPTS / script)]
    return subprocess.run(
        [*command, *args], check=False, capture_output=True, text=True, timeout=timeout, env=env
    )


def ran(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


CASES = [(name, False) for name in sorted(OPTIMIZERS)] + [("adam", True)]


@pytest.mark.parametrize("optimizer, loss_scaling", CASES)
def test_two_ranks_match_one_process_at_twice_the_batch(optimizer, loss_scaling, tmp_path):
    scaling = ["loss_scaling"] if loss_scaling else []
    output = ran(
        mpirun("train_replicas.py", 2, optimizer, str(PER_RANK_BATCH), str(tmp_path), *scaling)
    )
    # The same bits on every rank after every step: each applies the same averaged gradient.
    for rank in range(2):
        assert f"rank {rank} of 2: weights differed from rank 0's after 0 steps" in output, output
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)

    gm.set_num_threads(1)
    reference = mlp(seed=1)  # rank 0's initial weights, which every rank starts from
    trainer = gm.Trainer(
        reference,
        "mse",
        OPTIMIZERS[optimizer](),
        batch_size=2 * PER_RANK_BATCH,
        loss_scaling=loss_scaling,
    )
    train(trainer, 2 * PER_RANK_BATCH)
    expected = reference.get_weights()
    assert set(expected) == set(ranks[0])
    for name, value in expected.items():
        scale = np.abs(value).max()
        np.testing.assert_allclose(
            ranks[0][name], value, rtol=1e-6, atol=1e-6 * scale, err_msg=name
        )
    moved = mlp(seed=1).get_weights()
    assert any(not np.allclose(moved[name], expected[name]) for name in expected)


def test_each_rank_draws_its_own_dropout_masks_and_applies_the_same_update(tmp_path):
    ran(mpirun("dropout_streams.py", 2, str(tmp_path)))
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    # The same batch and weights: only the dropout masks tell the ranks' losses apart.
    assert (ranks[0]["losses"] != ranks[1]["losses"]).all()
    for name in ranks[0]:
        if name != "losses":
            np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)


def test_mismatched_models_are_refused_at_init_on_every_rank():
    output = ran(mpirun("mismatched_models.py", 2, timeout=60))
    expected = (
        "the model on rank 1 differs from rank 0's: dense_0.weight has shape [25, 12] on "
        "rank 1, [24, 12] on rank 0"
    )
    for rank in range(2):
        assert f"rank {rank} refused: distributed training: {expected}" in output, output


def test_a_killed_rank_stops_the_job_naming_it_and_the_checkpoint_resumes(tmp_path):
    result = mpirun("killed_rank.py", 2, str(tmp_path), timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert re.search(r"process rank 1 .* exited on\s+signal 9", output), output
    assert "finished without noticing" not in output
    # The checkpoint written before the failure loads in one process, at its step.
    resumed = gm.Trainer.load(tmp_path / "checkpoint.safetensors")
    assert resumed.step == 3
    resumed.train_batch(*(a[:8] for a in regression_data()))
    assert resumed.step == 4


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_of_three_ranks_are_distributed_sampler_shards(shuffle, tmp_path):
    samples, batch = 11, 3
    ran(mpirun("shard_orders.py", 3, str(samples), str(batch), str(int(shuffle)), str(tmp_path)))
    shards = [np.load(tmp_path / f"rank{r}.npz") for r in range(3)]
    for epoch in (0, 1):
        full = gm.training.ArrayLoader(
            np.zeros((samples, 1)), np.zeros(samples), shuffle=shuffle, seed=7, shard=False
        ).sample_order(epoch)
        dataset = torch.utils.data.Subset(range(samples), full.tolist())
        for rank, shard in enumerate(shards):
            # torch's sampler over the same order: padded by repeating its start, strided.
            sampler = torch.utils.data.DistributedSampler(
                dataset, num_replicas=3, rank=rank, shuffle=False, drop_last=False
            )
            expected = [dataset[i] for i in sampler]
            np.testing.assert_array_equal(shard[f"epoch{epoch}"], expected)
            # Every rank takes the same number of steps, the last one smaller alike.
            np.testing.assert_array_equal(shard[f"sizes{epoch}"], [3, 1])
        covered = np.concatenate([s[f"epoch{epoch}"] for s in shards])
        assert set(covered.tolist()) == set(range(samples))
    assert (shards[0]["epoch0"] != shards[0]["epoch1"]).any() == shuffle


def test_outside_a_job_the_loader_reads_everything_and_the_trainer_is_local():
    x = np.arange(10, dtype=np.float32)[:, None]
    loader = gm.training.ArrayLoader(x, x[:, 0], batch_size=4, shuffle=False)
    np.testing.assert_array_equal(loader.shard_order(0), np.arange(10))
    assert not gm.distributed.is_initialized()
    assert (gm.distributed.rank(), gm.distributed.size()) == (0, 1)
    np.testing.assert_array_equal(gm.distributed.all_reduce_mean(np.arange(3)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"gm.distributed.init\(\) first"):
        gm.Trainer(mlp(seed=0), "mse", "adam", distributed=True)
    with pytest.raises(TypeError, match="distributed must be True, False or None"):
        gm.Trainer(mlp(seed=0), "mse", "adam", distributed="yes")
    with pytest.raises(TypeError, match="shard must be True, False or None"):
        gm.training.ArrayLoader(x, x[:, 0], shard=1)


def test_buckets_cut_the_averaged_gradients_back_to_their_shapes():
    # One process: the mean over one rank is the value, so each output must be its input.
    g = _core.Graph()
    shapes = {"a": (3, 4), "b": (5,), "c": (), "d": (2, 2, 3), "e": (7,)}
    nodes = {name: g.variable(name, shape) for name, shape in shapes.items()}
    averaged = averaged_over_ranks(g, nodes, bucket_floats=10)
    assert list(averaged) == list(shapes)
    reduces = [i for i in range(len(g)) if g.op_name(i) == "all_reduce_mean"]
    assert len(reduces) == 4  # in reverse order, 10 floats at most: e | d | c, b | a
    engine = _core.Engine(g)
    engine.define("f", inputs=[], outputs=list(averaged.values()), effects=[], advance_rng=False)
    rng = np.random.default_rng(0)
    values = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    for name, value in values.items():
        engine.set_variable(name, value)
    for name, got in zip(shapes, engine.run("f", [])):
        np.testing.assert_array_equal(np.reshape(got, shapes[name]), values[name], err_msg=name)


def test_a_saved_two_rank_run_resumes_bit_for_bit_in_new_processes(tmp_path):
    ran(mpirun("resume.py", 2, "through", str(tmp_path)))
    ran(mpirun("resume.py", 2, "resumed", str(tmp_path)))
    through = [dict(np.load(tmp_path / f"through{r}.npz")) for r in range(2)]
    resumed = [dict(np.load(tmp_path / f"resumed{r}.npz")) for r in range(2)]
    for name in through[0]:
        for rank in range(2):
            np.testing.assert_array_equal(resumed[rank][name], through[0][name], err_msg=name)
            np.testing.assert_array_equal(through[rank][name], through[0][name], err_msg=name)


def test_launch_runs_a_script_on_every_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    monkeypatch.setenv("PYTHONPATH", str(SCRIPTS))
    script = SCRIPTS / "train_replicas.py"
    assert gm.distributed.launch(2, script, ["adam", "4", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.npz", "rank1.npz"]
    command = gm.distributed.mpirun_command(3, script, ["x"], hosts=["a", "b"], launcher="mpirun")
    assert command == ["mpirun", "-n", "3", "--host", "a,b", sys.executable, str(script), "x"]
    with pytest.raises(ValueError, match="ranks must be an int >= 1, got 0"):
        gm.distributed.mpirun_command(0, script)
    with pytest.raises(FileNotFoundError, match="missing.py"):
        gm.distributed.mpirun_command(2, tmp_path / "missing.py")


def test_the_ring_cost_model_follows_its_formula():
    link = Link(latency=1e-5, bandwidth=1e9)
    # 2 (p - 1) steps of (latency + n / (p bandwidth)), written out for p = 4, n = 4 MB.
    assert ring_all_reduce_seconds(4e6, 4, link) == pytest.approx(6 * (1e-5 + 1e6 / 1e9))
    assert ring_all_reduce_seconds(4e6, 1, link) == 0.0
    exposed = 6 * (1e-5 + 1e-3) * 0.5
    assert scaling_efficiency(0.1, 4e6, 4, link, hidden=0.5) == pytest.approx(0.1 / (0.1 + exposed))
    # Times generated by a known link fit back to it.
    sizes = [1e3, 1e5, 1e6, 1e7]
    fitted = fit_link(sizes, [ring_all_reduce_seconds(n, 2, link) for n in sizes], 2)
    assert fitted.latency == pytest.approx(1e-5) and fitted.bandwidth == pytest.approx(1e9)
    with pytest.raises(ValueError, match="hidden must be in"):
        scaling_efficiency(0.1, 4e6, 4, link, hidden=1.5)


def test_fit_shards_the_arrays_and_only_rank_0_prints(tmp_path):
    output = ran(mpirun("fit_replicas.py", 2, str(PER_RANK_BATCH), str(tmp_path)))
    assert output.count("epoch 1/2") == 1 and output.count("epoch 2/2") == 1, output
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    gm.set_num_threads(1)
    reference = gm.Trainer(mlp(seed=1), "mse", "adam", batch_size=2 * PER_RANK_BATCH)
    x, y = regression_data()
    reference.fit((x, y), epochs=2, batch_size=2 * PER_RANK_BATCH, seed=4, verbose=0)
    for name, value in reference.model.get_weights().items():
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
        scale = np.abs(value).max()
        np.testing.assert_allclose(
            ranks[0][name], value, rtol=1e-6, atol=1e-6 * scale, err_msg=name
        )


@pytest.mark.parametrize("loss_scaling", [False, True])
def test_compute_gradients_gives_each_rank_its_own_gradient(loss_scaling):
    output = ran(mpirun("local_gradients.py", 2, *(["loss_scaling"] if loss_scaling else [])))
    for rank in range(2):
        assert f"rank {rank}: local gradients match" in output, output
