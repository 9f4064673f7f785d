"""Inference attention's newer plan, against torch in float64.

Self-attention with a packed in_proj_weight projects q, k and v by three products over the
weight's rows read in place, each with its bias and head transpose in the product's epilogue:
with and without biases, at batch 1 and 3 and 1 and 2 threads, before and after a training
step writes the weight; one head, heads of one float and one step; a query that is its key
but not its value (and the other pairs); a GPT with and without biases, whose plan holds the
GELU, residual and head epilogues; and two GPTs predicting on two Python threads at once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gometal as gm
from test_kernel_review_edges import _with_threads, side_by_side_mismatches

E, HEADS, T = 32, 4, 6


def _attention_pair(bias, seed):
    torch.manual_seed(seed)
    module = torch.nn.MultiheadAttention(E, HEADS, bias=bias, batch_first=True).double()
    x_in = gm.Input((None, E))
    model = gm.Model(x_in, gm.layers.MultiHeadAttention(E, HEADS, bias=bias)(x_in))
    model.set_weights(
        {
            f"multi_head_attention_0.{k}": v.detach().numpy().astype(np.float32)
            for k, v in module.state_dict().items()
        }
    )
    return module, model


def _torch_attention(module, x):
    xt = torch.from_numpy(x).double()
    return module(xt, xt, xt, need_weights=False)[0]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_predicts_as_torch_then_again_after_a_training_step(bias, threads):
    # predict packs the in_proj rows; the SGD step writes the whole in_proj_weight (and
    # bias): the next predict must pack the rows again and see the new values.
    module, model = _attention_pair(bias, seed=threads)
    rng = np.random.default_rng(threads)
    lr = 0.5
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=lr))
    plan = " ".join(trainer._engine.describe("predict", 3))
    assert ("matmul,add,transpose" in plan) == bias, plan

    def body():
        for batch in (1, 3):
            x = rng.standard_normal((batch, T, E)).astype(np.float32)
            want = _torch_attention(module, x).detach().numpy()
            np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-5)
        x = rng.standard_normal((3, T, E)).astype(np.float32)
        target = rng.standard_normal((3, T, E)).astype(np.float32)
        trainer.train_batch(x, target)
        torch.nn.functional.mse_loss(
            _torch_attention(module, x), torch.from_numpy(target).double()
        ).backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= lr * p.grad
        x = rng.standard_normal((3, T, E)).astype(np.float32)
        want = _torch_attention(module, x).detach().numpy()
        np.testing.assert_allclose(model.predict(x), want, rtol=1e-4, atol=1e-5)

    _with_threads(threads, body)


@pytest.mark.parametrize("heads, steps", [(1, 5), (32, 3), (8, 1)])
def test_head_stores_of_one_head_of_heads_of_one_float_and_of_one_step(heads, steps):
    # Each head's rows stored where the transpose puts them: d = 32, d = 1, and t = 1.
    torch.manual_seed(heads)
    module = torch.nn.MultiheadAttention(E, heads, batch_first=True).double()
    x_in = gm.Input((None, E))
    layer = gm.layers.MultiHeadAttention(E, heads)
    model = gm.Model(x_in, layer(x_in))
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    plan = " ".join(gm.Trainer(model, loss="mse")._engine.describe("predict", 2))
    assert "matmul,add,transpose" in plan, plan
    for batch, threads in ((1, 1), (2, 2), (3, 3)):
        x = np.random.default_rng(batch).standard_normal((batch, steps, E)).astype(np.float32)
        got = _with_threads(threads, lambda x=x: model.predict(x))
        want = _torch_attention(module, x).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["qqv", "qkk", "qkq"])
def test_attention_with_two_of_query_key_and_value_the_same_predicts_as_torch(pattern):
    # Not self-attention: each part takes its own product over its rows of in_proj_weight.
    torch.manual_seed(len(pattern) + ord(pattern[1]))
    module = torch.nn.MultiheadAttention(E, HEADS, batch_first=True).double()
    a_in, b_in = gm.Input((None, E)), gm.Input((None, E))
    parts = [a_in if c == "q" else b_in for c in pattern]
    layer = gm.layers.MultiHeadAttention(E, HEADS)
    model = gm.Model([a_in, b_in], layer(parts))
    layer.set_weights(
        {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    )
    rng = np.random.default_rng(ord(pattern[2]))
    a, b = (rng.standard_normal((3, T, E)).astype(np.float32) for _ in range(2))
    tensors = {"q": torch.from_numpy(a).double(), "k": torch.from_numpy(b).double()}
    tensors["v"] = tensors["k"]
    want = module(*(tensors[c] for c in pattern), need_weights=False)[0].detach().numpy()
    np.testing.assert_allclose(model.predict([a, b]), want, rtol=1e-5, atol=1e-5)


VOCAB, BLOCK, LAYERS, GPT_HEADS, EMBD = 37, 12, 2, 4, 48


def _gpt_pair(bias, seed):
    from _torch_gpt import TorchGPT

    torch.manual_seed(seed)
    net = TorchGPT(VOCAB, BLOCK, LAYERS, GPT_HEADS, EMBD, bias=bias).double().eval()
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, GPT_HEADS, EMBD, bias=bias)
    model.set_weights(gm.models.gpt_weights_from_nanogpt(net.state_dict(), LAYERS))
    return net, model


def _ids(batch, seed):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, BLOCK)).astype(np.int32)


@pytest.mark.parametrize("bias", [True, False])
def test_gpt_predicts_nanogpts_logits_with_and_without_biases(bias):
    net, model = _gpt_pair(bias, seed=4)
    plan = " ".join(gm.Trainer(model, loss="cross_entropy")._engine.describe("predict", 3))
    for step in ("matmul,add,transpose", "matmul,add,gelu", "matmul,add,add"):
        assert (step in plan) == bias, plan
    for batch, threads in ((1, 1), (3, 2)):
        ids = _ids(batch, batch)
        got = _with_threads(threads, lambda ids=ids: model.predict(ids))
        with torch.no_grad():
            want = net(torch.from_numpy(ids.astype(np.int64))).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_two_gpts_predict_on_two_python_threads_at_once():
    # Each model's packed weights, epilogues and head stores, run side by side: every answer
    # equals the one its model gives alone, and torch's.
    jobs = []
    for seed in (1, 2):
        net, model = _gpt_pair(True, seed)
        feeds = [_ids(2, seed * 10 + i) for i in range(3)]
        alone = [model.predict(ids) for ids in feeds]
        with torch.no_grad():
            want = net(torch.from_numpy(feeds[0].astype(np.int64))).numpy()
        np.testing.assert_allclose(alone[0], want, rtol=1e-4, atol=1e-5)
        jobs.append((model.predict, feeds, alone))
    assert not side_by_side_mismatches(jobs, runs=30)
