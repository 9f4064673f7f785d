"""ZeRO stage 1 (``ZeroRedundancyOptimizer``): each rank keeps and updates 1/N of the
optimizer slots, then the updated weights are all-gathered.

Under mpirun a sharded run must give the unsharded run's weights (within 1e-6), every rank
the same bits, slots of ``ceil(n / N)`` values per parameter, and shards that put together
are the unsharded run's slots.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

import gometal as gm
from distributed_scripts.shard_means import SHAPES
from gometal import _core
from gometal.train.zero_sharding import ZeroRedundancyOptimizer, shard_length
from test_distributed import PER_RANK_BATCH, mpirun, ran


@pytest.mark.parametrize(
    "optimizer, ranks", [("adam", 2), ("adamw", 2), ("sgd_momentum", 2), ("sgd_clipped", 3)]
)
def test_sharded_slots_give_the_unsharded_run_with_1_over_n_of_the_slot_memory(
    optimizer, ranks, tmp_path
):
    output = ran(mpirun("zero_replicas.py", ranks, optimizer, str(PER_RANK_BATCH), str(tmp_path)))
    for mode in ("plain", "zero"):
        for rank in range(ranks):
            assert f"{mode} rank {rank} of {ranks}: weights differed after 0 steps" in output
    load = lambda what, rank: dict(np.load(tmp_path / f"{what}{rank}.npz"))
    plain, zero = load("plain_weights", 0), load("zero_weights", 0)
    for rank in range(1, ranks):
        for name, value in load("zero_weights", rank).items():
            np.testing.assert_array_equal(value, zero[name], err_msg=f"rank {rank} {name}")
    for name, value in plain.items():
        np.testing.assert_allclose(zero[name], value, rtol=1e-6, atol=1e-7, err_msg=name)

    plain_slots = load("plain_slots", 0)
    shards = [load("zero_slots", rank) for rank in range(ranks)]
    assert plain_slots and set(shards[0]) == set(plain_slots)
    for name, whole in plain_slots.items():
        length = shard_length(whole.size, ranks)
        for shard in shards:  # 1/N of the values on each rank
            assert shard[name].shape == (length,), (name, shard[name].shape)
        joined = np.concatenate([shard[name] for shard in shards])[: whole.size]
        np.testing.assert_allclose(
            joined.reshape(whole.shape), whole, rtol=1e-6, atol=1e-7, err_msg=name
        )


@pytest.mark.parametrize("ranks", [2, 3])
def test_each_rank_receives_the_mean_of_its_shards(ranks, tmp_path):
    output = ran(mpirun("shard_means.py", ranks, str(tmp_path)))
    inputs = [dict(np.load(tmp_path / f"inputs{r}.npz")) for r in range(ranks)]
    for rank in range(ranks):
        assert f"rank {rank} of {ranks}: 2 overlapped buckets" in output, output
        means = dict(np.load(tmp_path / f"means{rank}.npz"))
        for name, shape in SHAPES.items():
            size = int(np.prod(shape))
            length = shard_length(size, ranks)
            padded = np.zeros((ranks, length * ranks), np.float32)
            for r in range(ranks):
                padded[r, :size] = inputs[r][name].ravel()
            shard = padded[:, rank * length : (rank + 1) * length]
            # float32 sums scaled by 1/N, as the kernel does; 3 ranks may add in another order.
            expected = shard.sum(axis=0, dtype=np.float32) * np.float32(1 / ranks)
            if ranks == 2:
                np.testing.assert_array_equal(means[name], expected, err_msg=name)
            else:
                np.testing.assert_allclose(means[name], expected, rtol=1e-6, err_msg=name)


def test_a_reduce_scatter_checks_its_parts():
    g = _core.Graph()
    x = g.variable("x", (6,))
    with pytest.raises(ValueError, match=r"\[all_reduce_mean\] with parts 4 expects a fixed"):
        g.op("all_reduce_mean", [x], {"parts": 4})
    mine = g.op("all_reduce_mean", [x], {"parts": 2})
    assert tuple(g.shape(mine)) == (3,)
    whole = g.op("all_reduce_mean_start", [x], {"parts": 1})
    assert tuple(g.shape(g.op("all_reduce_mean_wait", [whole, x]))) == (6,)
    engine = _core.Engine(g)
    engine.define("f", inputs=[], outputs=[mine], effects=[], advance_rng=False)
    with pytest.raises(RuntimeError, match=r"built for 2 ranks \(parts\), the job has 1"):
        engine.run("f", [])
    with pytest.raises(ValueError, match="has no gradient with parts"):
        g.gradients(g.op("sum", [mine], {"axes": []}), [x])


def test_in_one_process_the_wrapped_optimizer_trains_alike():
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    y = (x @ np.arange(5, dtype=np.float32))[:, None]
    weights = []
    for wrap in (False, True):
        model = gm.ModelBuilder((5,)).dense(7).tanh().dense(1).build(seed=0)
        optimizer = gm.optim.Adam(1e-2)
        trainer = gm.Trainer(
            model, "mse", ZeroRedundancyOptimizer(optimizer) if wrap else optimizer, batch_size=16
        )
        for _ in range(5):
            trainer.train_batch(x, y)
        weights.append(model.get_weights())
    for name, value in weights[0].items():
        np.testing.assert_allclose(weights[1][name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_only_an_in_graph_optimizer_is_sharded():
    with pytest.raises(ValueError, match="needs an in-graph optimizer, got LBFGS"):
        ZeroRedundancyOptimizer(gm.optim.LBFGS())
    zero = ZeroRedundancyOptimizer("adam")
    assert zero.slot_names == ("exp_avg", "exp_avg_sq")
    assert zero.get_config() == {
        "class_name": "ZeroRedundancyOptimizer",
        "config": {"optimizer": gm.optim.Adam().get_config()},
    }
    assert shard_length(10, 3) == 4 and shard_length(9, 3) == 3


def test_all_gather_refuses_a_job_of_another_size():
    g = _core.Graph()
    part = g.variable("part", (3,))
    gathered = g.op("all_gather", [part], {"parts": 2})
    assert tuple(g.shape(gathered)) == (6,)
    engine = _core.Engine(g)
    engine.define("f", inputs=[], outputs=[gathered], effects=[], advance_rng=False)
    with pytest.raises(
        RuntimeError, match=r"\[all_gather\] the graph was built for 2 ranks, the job has 1"
    ):
        engine.run("f", [])


def test_a_zero_run_saved_with_whole_slots_resumes_bit_for_bit_in_new_processes(tmp_path):
    for phase in ("through", "first", "resumed"):
        ran(mpirun("zero_resume.py", 2, phase, str(tmp_path)))
    saved = load_file(str(tmp_path / "saved.safetensors"))
    assert saved["dense_0.weight.exp_avg"].shape == saved["dense_0.weight"].shape  # whole
    # The file is an unsharded run's: one process loads it and trains on.
    trainer = gm.Trainer.load(tmp_path / "saved.safetensors")
    assert isinstance(trainer.optimizer, gm.optim.ZeroRedundancyOptimizer)
    model = trainer.model
    before = model.get_weights()
    x = np.ones((32, *model.input_shape), np.float32)
    trainer.train_batch(x, np.zeros((32, *model.output_shape), np.float32))
    assert any(not np.array_equal(before[n], w) for n, w in model.get_weights().items())
    for rank in range(2):
        through = dict(np.load(tmp_path / f"through{rank}.npz"))
        resumed = dict(np.load(tmp_path / f"resumed{rank}.npz"))
        assert set(through) == set(resumed)
        for name, value in through.items():
            np.testing.assert_array_equal(resumed[name], value, err_msg=f"rank {rank} {name}")
