"""All-reduces overlapped with the backward pass: each bucket of gradients is an
``all_reduce_mean_start`` the engine runs as soon as the bucket's last gradient exists and an
``all_reduce_mean_wait`` it runs only before the first reader of the mean.

Under mpirun the overlapped run must give the blocking run's weights bit for bit, every rank
the same bits, and one process at the global batch within 1e-6 (the mean of the ranks'
gradients is the global batch's gradient).
"""

from __future__ import annotations

import numpy as np
import pytest

import gometal as gm
from distributed_scripts.replica_models import OPTIMIZERS, mlp, train
from gometal import _core
from gometal.nn.layers.base import EmitContext
from gometal.train.data_parallel import (
    BUCKET_FLOATS,
    BUCKET_VARIABLE,
    MIN_BUCKET_FLOATS,
    averaged_over_ranks,
    backward_order,
    bucket_floats_from_environment,
    default_bucket_floats,
)
from test_distributed import PER_RANK_BATCH, mpirun, ran


def _two_layer_step(
    bucket_floats: int, declared: tuple[str, str] = ("w1", "w2")
) -> tuple[_core.Engine, dict[str, np.ndarray]]:
    """A tanh layer (w1) and a linear one (w2), each weight's averaged gradient subtracted
    from it; ``declared`` is the order the weights are declared and handed to the buckets."""
    g = _core.Graph()
    x = g.input("x", (-1, 4))
    shapes = {"w1": (4, 8), "w2": (8, 3)}
    weights = {name: g.variable(name, shapes[name]) for name in declared}
    h = g.op("tanh", [g.op("matmul", [x, weights["w1"]])])
    y = g.op("matmul", [h, weights["w2"]])
    loss = g.op("sum", [g.op("square", [y])], {"axes": []})
    grads = dict(zip(weights, g.gradients(loss, list(weights.values()))))
    averaged = averaged_over_ranks(g, grads, bucket_floats=bucket_floats, overlap=True)
    effects = [g.op("assign", [w, g.op("sub", [w, averaged[n]])]) for n, w in weights.items()]
    engine = _core.Engine(g)
    engine.define("step", inputs=[x], outputs=list(averaged.values()), effects=effects)
    rng = np.random.default_rng(0)
    values = {n: rng.standard_normal(g.shape(w)).astype(np.float32) for n, w in weights.items()}
    for name, value in values.items():
        engine.set_variable(name, value)
    return engine, values


def _lines(plan: list[str], prefix: str) -> list[int]:
    return [i for i, line in enumerate(plan) if line.startswith(prefix)]


@pytest.mark.parametrize("declared", [("w1", "w2"), ("w2", "w1")])
def test_a_bucket_starts_before_the_backward_pass_ends_and_is_awaited_before_its_update(
    declared,
):
    # Declared last layer first, the weights' reverse order is not the backward pass's:
    # the buckets still follow the order the gradients can be finished in.
    engine, _ = _two_layer_step(bucket_floats=24, declared=declared)  # w2's 24, w1's 32
    plan = engine.describe("step", 5)
    starts, waits = _lines(plan, "all_reduce_mean_start"), _lines(plan, "all_reduce_mean_wait")
    blocking = _lines(plan, "all_reduce_mean ")
    # w1's gradient, the backward pass's last product, is (4, 8).
    last_backward = max(_lines(plan, "matmul (4, 8)"))
    # w2's bucket is exchanged meanwhile; w1's, filled last, has nothing to hide behind.
    assert len(starts) == len(waits) == len(blocking) == 1, plan
    assert starts[0] < last_backward < blocking[0] < waits[0], plan
    assert "assign" in plan[waits[0] + 1], plan  # the wait comes right before its update


def _small_gpt_gradients():
    """A 2-layer GPT's training graph: the model, graph, inputs, parameters and gradients
    of a sum-of-squares loss, by parameter name."""
    model = gm.models.GPT(29, 16, 2, 2, 32, seed=0)
    g = _core.Graph()
    xs = model.declare_inputs(g)
    variables = model.declare_variables(g)
    (logits,) = model.emit(EmitContext(g, training=True, variables=variables), xs)
    loss = g.op("sum", [g.op("square", [logits])], {"axes": []})
    params = {name: variables[name] for name in model.trainable_weight_names}
    grads = dict(zip(params, g.gradients(loss, list(params.values()))))
    return model, g, xs, params, grads


def test_the_gpts_first_bucket_is_exchanged_while_the_first_layers_backward_pass_runs():
    # A weight used through slices (the attention's packed Q/K/V) gets its gradient summed
    # after the whole backward pass in the builder's order; the bucket holding it must
    # still start as soon as it is complete, before the first layer's attention gradient.
    model, g, xs, params, grads = _small_gpt_gradients()
    layer_floats = sum(
        int(np.prod(shape))
        for name, shape in model.weight_shapes.items()
        if name.startswith("h.layers.1.")
    )
    averaged = averaged_over_ranks(g, grads, bucket_floats=layer_floats // 2, overlap=True)
    effects = [g.op("assign", [w, g.op("sub", [w, averaged[n]])]) for n, w in params.items()]
    engine = _core.Engine(g)
    engine.define("step", inputs=list(xs), outputs=[], effects=effects)
    plan = engine.describe("step", 3)
    starts, attention_grads = _lines(plan, "all_reduce_mean_start"), _lines(plan, "attention_grad")
    assert len(attention_grads) == 2 and len(starts) >= 3, plan
    assert starts[0] < attention_grads[1], plan
    # The last layer's two buckets are both under way before the first layer's gradients.
    assert starts[1] < attention_grads[1], plan
    assert len(_lines(plan, "all_reduce_mean ")) == 1, plan


def test_buckets_follow_the_backward_pass_not_the_declaration_order():
    # The GPT declares embeddings first and the blocks in order; its packed Q/K/V weights
    # are concatenated after the whole backward pass, yet their pieces exist with their
    # block's; the tied token embedding is finished last, by the input's gradient.
    _, g, _, params, grads = _small_gpt_gradients()
    order = backward_order(g, grads)
    assert sorted(order) == sorted(params)
    block = [name.split(".")[2] if name.startswith("h.layers.") else name for name in order]
    assert block[:2] == ["h.norm.bias", "h.norm.weight"], order
    first_of_block_0 = block.index("0")
    assert set(block[2:first_of_block_0]) == {"1"} and set(block[first_of_block_0:-2]) == {"0"}
    assert order.index("h.layers.1.self_attn.in_proj_weight") < first_of_block_0
    assert order[-2:] == ["wte.weight", "wpe.weight"], order
    # Gradients that are variables have no backward pass: the reverse declaration order.
    plain = {name: g.variable(f"plain_{name}", (2,)) for name in ("a", "b", "c")}
    assert backward_order(g, plain) == ["c", "b", "a"]


def test_overlapped_buckets_in_one_process_give_each_gradient_back():
    engine, values = _two_layer_step(bucket_floats=1000)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    grad_w1, grad_w2 = engine.run("step", [x])
    # The NumPy gradient of sum((tanh(x w1) w2)^2).
    h = np.tanh(x @ values["w1"])
    dy = 2 * (h @ values["w2"])
    expected_w1 = x.T @ ((dy @ values["w2"].T) * (1 - h**2))
    for got, expected in ((grad_w2, h.T @ dy), (grad_w1, expected_w1)):
        # float32 sums of terms of either sign: relative to the largest term
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_a_wait_must_read_its_own_start():
    g = _core.Graph()
    a, b = g.variable("a", (3,)), g.variable("b", (3,))
    started = g.op("all_reduce_mean_start", [a])
    with pytest.raises(ValueError, match=r"all_reduce_mean_wait\] expects \(all_reduce_mean_start"):
        g.op("all_reduce_mean_wait", [started, b])
    with pytest.raises(ValueError, match=r"got a 'exp' node"):
        g.op("all_reduce_mean_wait", [g.op("exp", [a]), a])


def test_the_default_bucket_holds_a_sixteenth_of_the_gradients_within_its_bounds(monkeypatch):
    monkeypatch.delenv(BUCKET_VARIABLE, raising=False)
    assert default_bucket_floats(16 * 2**17) == 2**17
    assert default_bucket_floats(16 * 2**17 + 1) == 2**17 + 1  # rounded up
    assert default_bucket_floats(1000) == MIN_BUCKET_FLOATS == 2**16
    assert default_bucket_floats(10**9) == BUCKET_FLOATS == 25 * 2**18
    # 32 gradients of 2**16 floats: buckets of 2**17 floats take two each, so fifteen
    # overlapped buckets and the last, blocking one; GOMETAL_BUCKET_MB overrides the default.
    for variable, overlapped, blocking in ((None, 15, 1), ("25", 0, 1), ("0.25", 31, 1)):
        if variable is not None:
            monkeypatch.setenv(BUCKET_VARIABLE, variable)
        g = _core.Graph()
        grads = {f"p{i}": g.variable(f"p{i}", (2**16,)) for i in range(32)}
        averaged_over_ranks(g, grads, overlap=True)
        ops = [g.op_name(i) for i in range(len(g))]
        assert ops.count("all_reduce_mean_start") == overlapped, variable
        assert ops.count("all_reduce_mean") == blocking, variable


def test_the_bucket_size_variable_is_checked(monkeypatch):
    monkeypatch.setenv("GOMETAL_BUCKET_MB", "1")
    assert bucket_floats_from_environment() == 2**18
    monkeypatch.setenv("GOMETAL_BUCKET_MB", "-2")
    with pytest.raises(
        ValueError, match="GOMETAL_BUCKET_MB must be a positive number of MiB, got '-2'"
    ):
        bucket_floats_from_environment()


def _overlapped_and_blocking_runs(optimizer: str, ranks: int, tmp_path) -> dict:
    """Both runs of overlap_replicas.py on every rank, checked bit-identical to rank 0's
    blocking run; returns rank 0's overlapped weights."""
    output = ran(
        mpirun("overlap_replicas.py", ranks, optimizer, str(PER_RANK_BATCH), str(tmp_path))
    )
    for mode in ("blocking", "overlapped"):
        for rank in range(ranks):
            assert f"{mode} rank {rank} of {ranks}: weights differed after 0 steps" in output, (
                output
            )
    runs = {
        (mode, rank): dict(np.load(tmp_path / f"{mode}{rank}.npz"))
        for mode in ("blocking", "overlapped")
        for rank in range(ranks)
    }
    reference_run = runs["blocking", 0]
    for (mode, rank), weights in runs.items():
        for name, value in weights.items():
            np.testing.assert_array_equal(
                value, reference_run[name], err_msg=f"{mode} {rank} {name}"
            )
    return runs["overlapped", 0]


def test_two_overlapped_ranks_match_blocking_ones_and_one_process_at_twice_the_batch(tmp_path):
    overlapped = _overlapped_and_blocking_runs("adam", 2, tmp_path)
    gm.set_num_threads(1)
    reference = mlp(seed=1)  # rank 0's initial weights, which every rank starts from
    trainer = gm.Trainer(reference, "mse", OPTIMIZERS["adam"](), batch_size=2 * PER_RANK_BATCH)
    train(trainer, 2 * PER_RANK_BATCH)
    for name, value in reference.get_weights().items():
        np.testing.assert_allclose(overlapped[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_three_overlapped_ranks_match_blocking_ones_bit_for_bit(tmp_path):
    # Three ranks sum in an order that depends on the MPI's algorithm: the blocking kernel
    # runs the same non-blocking collective, so the bits agree. Clipping reads every bucket.
    _overlapped_and_blocking_runs("sgd_clipped", 3, tmp_path)


def test_mpis_own_waits_give_the_sleeping_waits_bits(tmp_path, monkeypatch):
    # GOMETAL_MPI_WAIT=block waits in MPI_Wait and MPI_Allreduce (which poll); the default
    # tests the request and sleeps in between. The same collectives run either way.
    runs = {}
    for mode in ("poll", "block"):
        monkeypatch.setenv("GOMETAL_MPI_WAIT", mode)
        out = tmp_path / mode
        out.mkdir()
        ran(mpirun("overlap_replicas.py", 2, "adam", str(PER_RANK_BATCH), str(out)))
        runs[mode] = [dict(np.load(out / f"overlapped{rank}.npz")) for rank in range(2)]
    for rank in range(2):
        for name, value in runs["poll"][rank].items():
            np.testing.assert_array_equal(runs["block"][rank][name], value, err_msg=name)


def test_an_unknown_wait_mode_is_refused_on_every_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("GOMETAL_MPI_WAIT", "spin")
    result = mpirun("overlap_replicas.py", 2, "adam", str(PER_RANK_BATCH), str(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "GOMETAL_MPI_WAIT must be poll or block, got 'spin'" in output, output
