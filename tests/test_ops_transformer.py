"""The engine ops of transformers against PyTorch: embedding lookups (gather), batched
matmul, layer_norm, rms_norm and both GELUs, through the graph composites layers use. Same
values in float32, outputs and gradients within 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gometal import _core
from gometal.graph import composites

RTOL = 1e-5


def _run(build, inputs: dict[str, np.ndarray], variables: dict[str, np.ndarray], symbolic=None):
    """Builds `build(g, nodes) -> out` over graph inputs and variables named as the arrays,
    returns out and the gradients of sum(out * cotangent) w.r.t. every float input and
    variable, in the order of `inputs` then `variables`, and the cotangent used. Inputs are
    (batch, seq, ...) unless `symbolic` gives a name another shape."""
    g = _core.Graph()
    nodes = {}
    for name, value in inputs.items():
        dtype = "int32" if value.dtype == np.int32 else "float32"
        shape = (symbolic or {}).get(name, ("batch", "seq", *value.shape[2:]))
        nodes[name] = g.input(name, shape, dtype)
    for name, value in variables.items():
        nodes[name] = g.variable(name, value.shape)
    out = build(g, nodes)
    cot = g.input("cotangent", g.shape(out))
    loss = composites.reduce_sum(g, composites.op(g, "mul", out, cot))
    wrt = [n for n in [*inputs, *variables] if {**inputs, **variables}[n].dtype != np.int32]
    grads = g.gradients(loss, [nodes[n] for n in wrt])
    engine = _core.Engine(g, seed=0)
    feeds = [nodes[n] for n in inputs] + [cot]
    engine.define("f", inputs=feeds, outputs=[out, *grads], effects=[], advance_rng=False)
    for name, value in variables.items():
        engine.set_variable(name, value)
    first = next(iter(inputs.values()))
    seq_symbol = _core.dim_symbol("seq")
    seq = None
    for name, value in inputs.items():
        shape = g.shape(nodes[name])
        if seq_symbol in shape:
            seq = value.shape[shape.index(seq_symbol)]
    out_shape = tuple(
        first.shape[0] if d == -1 else seq if d == seq_symbol else d for d in g.shape(out)
    )
    cotangent = np.random.default_rng(5).standard_normal(out_shape).astype(np.float32)
    results = engine.run("f", [*inputs.values(), cotangent])
    return results[0], dict(zip(wrt, results[1:])), cotangent


def _torch_run(fn, arrays: dict[str, np.ndarray], cotangent: np.ndarray):
    tensors = {
        n: torch.tensor(v, requires_grad=v.dtype != np.int32)
        if v.dtype != np.int32
        else torch.tensor(v, dtype=torch.long)
        for n, v in arrays.items()
    }
    out = fn(**tensors)
    (out * torch.tensor(cotangent)).sum().backward()
    grads = {n: t.grad.numpy() for n, t in tensors.items() if t.grad is not None}
    return out.detach().numpy(), grads


def _assert_close(got, want, what):
    # 1e-5 relative, elementwise or to the tensor's largest value (elements near zero).
    atol = RTOL * float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=what)


def _assert_matches(got, want, got_grads, want_grads):
    _assert_close(got, want, "output")
    assert sorted(got_grads) == sorted(want_grads)
    for name in want_grads:
        _assert_close(got_grads[name], want_grads[name], f"gradient of {name}")


def test_gather_is_torch_embedding_with_its_gradient():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 11, (3, 7)).astype(np.int32)
    ids[0, :3] = 4  # a row looked up several times sums its gradients
    table = rng.standard_normal((11, 6)).astype(np.float32)
    got, grads, cot = _run(
        lambda g, n: composites.gather(g, n["table"], n["ids"]), {"ids": ids}, {"table": table}
    )
    want, want_grads = _torch_run(
        lambda ids, table: F.embedding(ids, table), {"ids": ids, "table": table}, cot
    )
    _assert_matches(got, want, grads, want_grads)


@pytest.mark.parametrize(
    "shape_b, transpose_b",
    [((4, 5), False), ((2, 1, 4, 5), False), ((2, 1, 5, 4), True)],
    ids=["shared-weight", "broadcast-heads", "broadcast-heads-transposed"],
)
def test_batched_matmul_is_torch_matmul_with_its_gradients(shape_b, transpose_b):
    rng = np.random.default_rng(1)
    # (batch, 3 heads, seq, 4) against a weight shared by all, or one per batch element
    # broadcast over the heads: (batch, 1, 4, 5).
    a = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)
    seq = _core.dim_symbol("seq")
    symbolic = {"a": (-1, 3, seq, 4)}
    if len(shape_b) == 2:
        inputs, variables = {"a": a}, {"b": b}
    else:
        inputs, variables = {"a": a, "b": b}, {}
        symbolic["b"] = (-1, *shape_b[1:])
    got, grads, cot = _run(
        lambda g, n: composites.matmul(g, n["a"], n["b"], transpose_b=transpose_b),
        inputs,
        variables,
        symbolic,
    )

    def reference(a, b):
        return torch.matmul(a, b.transpose(-1, -2) if transpose_b else b)

    want, want_grads = _torch_run(reference, {"a": a, "b": b}, cot)
    _assert_matches(got, want, grads, want_grads)


@pytest.mark.parametrize("affine", ["weight-and-bias", "weight", "bias", "none"])
def test_layer_norm_is_torch_layer_norm(affine):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 5, 16)) * 3 + 1).astype(np.float32)
    params = {}
    if "weight" in affine:
        params["weight"] = rng.standard_normal(16).astype(np.float32)
    if "bias" in affine:
        params["bias"] = rng.standard_normal(16).astype(np.float32)

    def build(g, n):
        return composites.layer_norm(g, n["x"], n.get("weight"), n.get("bias"), eps=1e-5)

    got, grads, cot = _run(build, {"x": x}, params)

    def reference(x, weight=None, bias=None):
        return F.layer_norm(x, (16,), weight, bias, eps=1e-5)

    want, want_grads = _torch_run(reference, {"x": x, **params}, cot)
    _assert_matches(got, want, grads, want_grads)


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no-weight"])
def test_rms_norm_is_torch_rms_norm(eps, with_weight):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 12)).astype(np.float32)
    params = {"weight": rng.standard_normal(12).astype(np.float32)} if with_weight else {}
    got, grads, cot = _run(
        lambda g, n: composites.rms_norm(g, n["x"], n.get("weight"), eps=eps), {"x": x}, params
    )
    want, want_grads = _torch_run(
        lambda x, weight=None: F.rms_norm(x, (12,), weight, eps=eps), {"x": x, **params}, cot
    )
    _assert_matches(got, want, grads, want_grads)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_is_torch_gelu(approximate):
    x = np.random.default_rng(4).standard_normal((3, 5, 8)).astype(np.float32) * 3
    got, grads, cot = _run(
        lambda g, n: composites.gelu(g, n["x"], approximate=approximate), {"x": x}, {}
    )
    want, want_grads = _torch_run(lambda x: F.gelu(x, approximate=approximate), {"x": x}, cot)
    _assert_matches(got, want, grads, want_grads)


def test_gelu_refuses_an_unknown_approximation():
    g = _core.Graph()
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh', got 'erf'"):
        composites.gelu(g, g.input("x", (-1, 3)), approximate="erf")


def test_an_embedding_index_outside_the_table_names_the_value():
    g = _core.Graph()
    ids = g.input("ids", ("batch", "seq"), "int32")
    out = composites.gather(g, g.variable("table", (65, 4)), ids)
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[ids], outputs=[out])
    with pytest.raises(ValueError, match=r"\[gather\] index 65 at position \(0, 2\).*65 rows"):
        engine.run("f", [np.array([[1, 2, 65]], np.int32)])
