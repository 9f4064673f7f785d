"""Runs op cases on an engine backend and compares them with their references.

An `OpCase` builds one primitive (or a small graph around it) over its arguments, runs the
forward pass and compares it with a NumPy reference; when the op is differentiable it also
takes `g.gradients` of sum(out * R) for a random R and compares them with float64 central
differences of the NumPy reference (the engine is not involved), with float64 autograd of a
torch reference, or with an explicit VJP formula (`gradient` says which). A `ScenarioCase`
checks an op whose behaviour is not a function of its inputs (effects, checks, random
draws). An `ErrorCase` builds an op from bad inputs or attributes and expects a ValueError
that names the op.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from gometal import _core

from .domains import Domain, Shape, any_values

BATCH = -1  # the batch dimension of a graph input, bound when a plan is compiled
SEQ = _core.dim_symbol("seq")  # a named sequence dimension, bound per run like the batch

# How a case's gradient is checked.
NUMERIC = "numeric"  # float64 central differences of the NumPy reference
TORCH = "torch"  # float64 autograd of the case's torch reference
VJP = "vjp"  # an explicit NumPy formula (gradients that are defined, not derived)
NO_GRADIENT = "none"  # not differentiable: forward only

FD_EPS = 1e-3
FLOAT_DTYPES = {"float32": np.float32}  # float dtypes a case can run in, and their NumPy type
INT_DTYPES = {"int32": np.int32}


@dataclass(frozen=True)
class Tolerance:
    """`rtol`/`atol` for `np.testing.assert_allclose`; with `scaled`, `atol` is multiplied by
    max(1, max |expected|) (large convolution outputs)."""

    rtol: float
    atol: float
    scaled: bool = False


FORWARD_TOLERANCE = Tolerance(1e-5, 1e-5)
GRADIENT_TOLERANCE = Tolerance(1e-3, 1e-4)
EXACT = Tolerance(0.0, 0.0)


@dataclass(frozen=True)
class Arg:
    """One argument of a case.

    `shape` may hold BATCH at dimension 0 (a graph input, run at each of the case's batch
    sizes) and SEQ elsewhere (run at each of the case's sequence lengths). `dtype` None means the case's float dtype; "int32" marks labels and indices.
    `grad` says whether the gradient with respect to this argument is checked. `leaf` is
    "input", "variable" or "constant"; by default batch-shaped and integer arguments are
    graph inputs and the others engine variables.
    """

    shape: Shape
    values: Domain = any_values
    dtype: str | None = None
    grad: bool = True
    leaf: str | None = None

    def __post_init__(self) -> None:
        if self.leaf not in (None, "input", "variable", "constant"):
            raise ValueError(f"Arg.leaf must be input, variable or constant, got {self.leaf!r}")
        if BATCH in self.shape[1:]:
            raise ValueError(f"Arg.shape may hold the batch only at dimension 0, got {self.shape}")

    @property
    def is_integer(self) -> bool:
        return self.dtype in INT_DTYPES

    @property
    def leaf_kind(self) -> str:
        if self.leaf is not None:
            return self.leaf
        symbolic = BATCH in self.shape or SEQ in self.shape
        return "input" if symbolic or self.is_integer else "variable"

    def numpy_dtype(self, float_dtype: str) -> type:
        return INT_DTYPES[self.dtype] if self.is_integer else FLOAT_DTYPES[float_dtype]


def single_op(op: str) -> Callable:
    """The default graph of a case: the op itself over the case's arguments."""

    def build(g: _core.Graph, nodes: list[int], attrs: dict) -> int:
        out = g.op(op, nodes, attrs)
        assert g.op_name(out) == op
        return out

    return build


@dataclass(frozen=True)
class OpCase:
    """A primitive over given arguments, checked forward against `reference` (a float64 NumPy
    formula of the arguments) and backward as `gradient` says.

    `build(g, nodes, attrs) -> node` builds a small graph around the op when the op alone is
    not the point (a bias added to a convolution, a composite whose gradient crosses a batch).
    `torch_reference` (torch tensors in, tensor out) serves TORCH gradients, `vjp(*arrays,
    cotangent) -> one gradient per argument` serves VJP gradients. `batches` are the batch
    sizes a case with a BATCH argument runs at, one plan each, in order; `seq_lengths` are
    the sizes SEQ takes on those runs (cycled). `dtypes` are the
    float dtypes the case runs in; `out_dtype` is the dtype the graph must infer; `exact`
    compares the forward value bit for bit (integer and 0/1 outputs, rounding, layout).
    """

    op: str
    args: tuple[Arg, ...]
    reference: Callable[..., np.ndarray]
    attrs: Mapping[str, object] = field(default_factory=dict)
    name: str = ""
    build: Callable[[_core.Graph, list[int], dict], int] | None = None
    gradient: str = NUMERIC
    torch_reference: Callable[..., torch.Tensor] | None = None
    vjp: Callable[..., Sequence[np.ndarray]] | None = None
    batches: tuple[int, ...] = (2, 5)
    seq_lengths: tuple[int, ...] = (3, 1)
    dtypes: tuple[str, ...] = ("float32",)
    out_dtype: str = "float32"
    exact: bool = False
    forward_tol: Tolerance = FORWARD_TOLERANCE
    grad_tol: Tolerance = GRADIENT_TOLERANCE

    def __post_init__(self) -> None:
        if self.gradient not in (NUMERIC, TORCH, VJP, NO_GRADIENT):
            raise ValueError(f"[{self.op}] unknown gradient mode {self.gradient!r}")
        if self.gradient == TORCH and self.torch_reference is None:
            raise ValueError(f"[{self.op}] a TORCH gradient needs torch_reference")
        if self.gradient == VJP and self.vjp is None:
            raise ValueError(f"[{self.op}] a VJP gradient needs vjp")
        if self.gradient != NO_GRADIENT and not any(a.grad and not a.is_integer for a in self.args):
            raise ValueError(
                f"[{self.op}] a {self.gradient} gradient needs a float argument with grad"
            )
        unknown = [d for d in self.dtypes if d not in FLOAT_DTYPES]
        if unknown:
            raise ValueError(f"[{self.op}] dtypes {unknown} have no NumPy type in FLOAT_DTYPES")

    @property
    def id(self) -> str:
        return case_id(self.op, self.name, self.args, self.attrs)

    @property
    def has_batch(self) -> bool:
        return any(BATCH in a.shape or SEQ in a.shape for a in self.args)


@dataclass(frozen=True)
class ScenarioCase:
    """An op checked by a scenario of its own: `check(backend, rng)` raises on a mismatch."""

    op: str
    name: str
    check: Callable[[str, np.random.Generator], None]

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}"


@dataclass(frozen=True)
class ErrorCase:
    """`g.op(op, inputs, attrs)` over leaves of `args` (only shapes and dtypes matter) raises a
    ValueError naming the op and matching every regex in `patterns`. `prepare(g, nodes)`
    replaces the leaves with other nodes (an input that must not be a variable)."""

    op: str
    args: tuple[Arg, ...]
    attrs: Mapping[str, object] = field(default_factory=dict)
    patterns: tuple[str, ...] = ()
    name: str = ""
    prepare: Callable[[_core.Graph, list[int]], list[int]] | None = None

    @property
    def id(self) -> str:
        return case_id(self.op, self.name, self.args, self.attrs)


# -- naming ----------------------------------------------------------------------------------


def describe_shape(shape: Shape) -> str:
    """2x3, Nx3 for a batch of 3-vectors, NxT for a batch of sequences, scalar for ()."""
    if not shape:
        return "scalar"
    return "x".join("N" if d == BATCH else "T" if d == SEQ else str(d) for d in shape)


def case_id(op: str, name: str, args: Sequence[Arg], attrs: Mapping[str, object]) -> str:
    """A test id: the op, the case's name, its argument shapes and its attributes."""
    shapes = ",".join(describe_shape(a.shape) for a in args)
    attributes = ",".join(f"{k}={v}".replace(" ", "") for k, v in attrs.items())
    return "-".join(part for part in (op, name, shapes, attributes) if part)


def shape_pattern(shape: Shape) -> str:
    """A regex for `shape` as the engine prints it: (2, 3), (batch, 3) or (5,)."""
    dims = ["batch" if d == BATCH else str(d) for d in shape]
    return r"\(" + r",\s*".join(dims) + r",?\)"


# -- backends and coverage -------------------------------------------------------------------


def available_backends() -> list[str]:
    """Every backend this build of the engine runs; "cpu" is always built."""
    backends = ["cpu"]
    if _core.metal_available():
        backends.append("metal")
    return backends


def op_case_params(cases: Iterable[OpCase], backends: Sequence[str]) -> list:
    """pytest params (case, dtype, backend) for every dtype of every case on every backend.
    Where a backend declares which (op, dtype) it supports, this is where to filter."""
    return [
        pytest.param(case, dtype, backend, id=f"{backend}-{dtype}-{case.id}")
        for case in cases
        for dtype in case.dtypes
        for backend in backends
    ]


def missing_ops(cases: Iterable[OpCase | ScenarioCase], op_names: Iterable[str]) -> list[str]:
    """The ops among `op_names` that no case runs, sorted."""
    covered = {case.op for case in cases}
    return sorted(set(op_names) - covered)


# -- running an op case ----------------------------------------------------------------------


def bind_batch(shape: Shape, batch: int | None, seq: int | None = None) -> Shape:
    return tuple(batch if d == BATCH else seq if d == SEQ else d for d in shape)


def assert_close(got, expected, tolerance: Tolerance, what: str) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    atol = tolerance.atol
    if tolerance.scaled:
        atol *= max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), expected, rtol=tolerance.rtol, atol=atol, err_msg=what
    )


def cotangent(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """The R of the loss sum(out * R): magnitudes in [0.5, 1.5) with random signs."""
    signs = rng.choice([-1.0, 1.0], shape)
    return (rng.uniform(0.5, 1.5, shape) * signs).astype(np.float32)


def numeric_gradient(fn, arrays, weights, index, eps=FD_EPS) -> np.ndarray:
    """Central differences of sum(fn(*arrays) * weights) with respect to arrays[index],
    evaluated in float64 on the NumPy formula (the engine is not involved)."""
    args = [np.array(a, dtype=np.float64) if a.dtype.kind == "f" else a for a in arrays]
    x = args[index]
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        original = x[idx]
        x[idx] = original + eps
        plus = np.sum(np.asarray(fn(*args)) * weights)
        x[idx] = original - eps
        minus = np.sum(np.asarray(fn(*args)) * weights)
        x[idx] = original
        grad[idx] = (plus - minus) / (2.0 * eps)
    return grad


def torch_gradients(fn, arrays, weights, wrt) -> list[np.ndarray]:
    """float64 autograd of sum(fn(*arrays) * weights) with respect to arrays[i], i in wrt."""
    tensors = [
        torch.tensor(a, dtype=torch.float64, requires_grad=i in wrt) for i, a in enumerate(arrays)
    ]
    out = fn(*tensors)
    (out * torch.tensor(weights, dtype=torch.float64)).sum().backward()
    return [tensors[i].grad.numpy() for i in wrt]


def from_torch(fn: Callable[..., torch.Tensor]) -> Callable[..., np.ndarray]:
    """A NumPy reference computed by a float64 torch function."""

    def reference(*arrays: np.ndarray) -> np.ndarray:
        return fn(*[torch.tensor(a, dtype=torch.float64) for a in arrays]).detach().numpy()

    return reference


def _leaf(g: _core.Graph, name: str, arg: Arg, dtype: str, value: np.ndarray | None) -> int:
    kind = arg.leaf_kind
    if kind == "input":
        return g.input(name, arg.shape, arg.dtype or dtype)
    if kind == "variable":
        return g.variable(name, arg.shape)
    if value.ndim == 0:
        return g.constant(float(value))
    return g.constant(value)


def _expected_gradients(case: OpCase, values, weights, wrt) -> list[np.ndarray]:
    if case.gradient == NUMERIC:
        return [numeric_gradient(case.reference, values, weights, i) for i in wrt]
    if case.gradient == TORCH:
        return torch_gradients(case.torch_reference, values, weights, wrt)
    vjp = case.vjp(*values, weights)
    return [np.asarray(vjp[i], dtype=np.float64) for i in wrt]


def _gradient_nodes(g: _core.Graph, out: int, wrt: list[int], dtype: str, rng):
    """Gradients of sum(out * R) with respect to `wrt`. R is a graph input when `out` has a
    batch dimension (drawn per run), else a constant drawn here.

    Returns the gradient nodes, the R input as a list (empty for a constant) and R's value
    (None for an input)."""
    symbolic = tuple(g.shape(out))
    if any(d < 0 for d in symbolic):
        weights_node, fixed_weights = g.input("cotangent", symbolic, dtype), None
    else:
        fixed_weights = cotangent(rng, symbolic)
        weights_node = g.constant(fixed_weights if symbolic else float(fixed_weights))
    product = g.op("mul", [out, weights_node], {})
    loss = g.op("sum", [product], {"axes": [], "keepdims": False})
    weights_input = [] if fixed_weights is not None else [weights_node]
    return g.gradients(loss, wrt), weights_input, fixed_weights


def check_op_case(case: OpCase, dtype: str, backend: str, rng: np.random.Generator) -> None:
    """Builds `case` in `dtype`, runs it on `backend` at each batch size and compares forward
    and gradients with the case's references."""
    types = [arg.numpy_dtype(dtype) for arg in case.args]

    def draw(i: int, batch: int | None, seq: int | None = None) -> np.ndarray:
        arg = case.args[i]
        return np.asarray(arg.values(rng, bind_batch(arg.shape, batch, seq))).astype(types[i])

    g = _core.Graph()
    constants = {i: draw(i, None) for i, a in enumerate(case.args) if a.leaf_kind == "constant"}
    nodes = [_leaf(g, f"in{i}", arg, dtype, constants.get(i)) for i, arg in enumerate(case.args)]
    build = case.build or single_op(case.op)
    out = build(g, nodes, dict(case.attrs))
    assert g.dtype(out) == case.out_dtype, (g.dtype(out), case.out_dtype)
    symbolic = tuple(g.shape(out))

    inputs = [i for i, a in enumerate(case.args) if a.leaf_kind == "input"]
    variables = [i for i, a in enumerate(case.args) if a.leaf_kind == "variable"]
    wrt = []
    if case.gradient != NO_GRADIENT:
        wrt = [i for i, a in enumerate(case.args) if a.grad and not a.is_integer]
    grads, weights_input, fixed_weights = [], [], None
    if wrt:
        grads, weights_input, fixed_weights = _gradient_nodes(
            g, out, [nodes[i] for i in wrt], dtype, rng
        )

    engine = _core.Engine(g, seed=0, backend=backend)
    input_nodes = [nodes[i] for i in inputs]
    engine.define("forward", inputs=input_nodes, outputs=[out], effects=[], advance_rng=False)
    if wrt:
        backward_inputs = input_nodes + weights_input
        engine.define("backward", backward_inputs, grads, effects=[], advance_rng=False)

    runs = (
        zip(case.batches, itertools.cycle(case.seq_lengths)) if case.has_batch else [(None, None)]
    )
    for batch, seq in runs:
        values = [
            constants[i] if i in constants else draw(i, batch, seq) for i in range(len(types))
        ]
        for i in variables:
            engine.set_variable(f"in{i}", values[i])
        feeds = [values[i] for i in inputs]
        (got,) = engine.run("forward", feeds)
        got = np.asarray(got)
        wide = [v.astype(np.float64) if v.dtype.kind == "f" else v for v in values]
        expected = np.asarray(case.reference(*wide))
        where = f"{case.id} on {backend}, batch {batch}, seq {seq}"
        assert bind_batch(symbolic, batch, seq) == expected.shape, (symbolic, expected.shape, where)
        assert got.shape == expected.shape, (got.shape, expected.shape, where)
        if case.exact:
            np.testing.assert_array_equal(got, expected, err_msg=f"forward of {where}")
        else:
            assert_close(got, expected, case.forward_tol, f"forward of {where}")
        if not wrt:
            continue
        weights = fixed_weights if fixed_weights is not None else cotangent(rng, expected.shape)
        results = engine.run("backward", feeds + ([weights] if weights_input else []))
        # The graph multiplies by the float32 weights: the reference uses the same values.
        wanted = _expected_gradients(case, wide, weights.astype(np.float64), wrt)
        for i, grad, want in zip(wrt, results, wanted):
            grad = np.asarray(grad)
            assert grad.shape == values[i].shape, (grad.shape, values[i].shape, where)
            assert_close(grad, want, case.grad_tol, f"d/d(argument {i}) of {where}")


# -- running an error case -------------------------------------------------------------------


def check_error_case(case: ErrorCase) -> None:
    """Expects `case` to raise a ValueError naming its op and matching its patterns, and the
    graph to stay usable afterwards."""
    g = _core.Graph()
    nodes = []
    for i, arg in enumerate(case.args):
        if arg.leaf_kind == "input":
            nodes.append(g.input(f"in{i}", arg.shape, arg.dtype or "float32"))
        else:
            nodes.append(g.variable(f"in{i}", arg.shape))
    if case.prepare is not None:
        nodes = case.prepare(g, nodes)
    with pytest.raises(ValueError) as caught:
        g.op(case.op, nodes, dict(case.attrs))
    message = str(caught.value)
    assert case.op in message, message
    for pattern in case.patterns:
        assert re.search(pattern, message), (pattern, message)
    after = g.op("neg", [g.variable("after_the_error", (2, 3))], {})
    assert tuple(g.shape(after)) == (2, 3)
