"""Ops of recurrent layers: recurrence (a layer's whole time loop: RNN tanh and relu, LSTM
with and without a projection, GRU; forward and reverse; with and without lengths),
recurrence_grad (its backpropagation through time), sequence_end and its gradient. The
reference is a float64 NumPy loop over the steps, written from the cells' formulas; the
gradients are its central differences."""

from __future__ import annotations

import numpy as np

from gometal import _core

from .harness import (
    BATCH,
    NO_GRADIENT,
    SEQ,
    Arg,
    ErrorCase,
    OpCase,
    ScenarioCase,
    numeric_gradient,
)

LENGTHS_T = 4  # the static sequence length of cases with lengths (lengths drawn in [1, T])
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _lengths(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(1, LENGTHS_T + 1, shape).astype(np.int32)


def _ids(rows: int):
    """Ids in [0, rows): rows of a recurrence's table of projected inputs."""

    def draw(rng: np.random.Generator, shape) -> np.ndarray:
        return rng.integers(0, rows, shape).astype(np.int32)

    return draw


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _cell_step(cell, x, h, c, w_hh, w_hr, b_hn):
    """One step of every row: the new (h, c) from the projected input x and the state."""
    a = h @ w_hh.T
    if cell in ("rnn_tanh", "rnn_relu"):
        pre = x + a
        return (np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0.0)), c
    if cell == "lstm":
        i, f, g, o = np.split(x + a, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h @ w_hr.T if w_hr is not None else h), c
    xr, xz, xn = np.split(x, 3, axis=-1)
    ar, az, an = np.split(a, 3, axis=-1)
    r, z = _sigmoid(xr + ar), _sigmoid(xz + az)
    n = np.tanh(xn + r * (an + b_hn))
    return (1 - z) * n + z * h, c


def recurrence_reference(
    cell, reverse, xp, h0, c0=None, w_hh=None, w_hr=None, b_hn=None, lengths=None
):
    """(N, T, P) outputs, and for an LSTM the cell states after them (N, T, H) as more
    columns; padded steps (t >= length) keep the state and output zeros. NumPy, float64."""
    n, steps = xp.shape[0], xp.shape[1]
    lengths = np.full(n, steps) if lengths is None else np.asarray(lengths).reshape(-1)
    h, c = h0, c0
    outputs = [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        valid = (t < lengths).astype(np.float64)[:, None]
        new_h, new_c = _cell_step(cell, xp[:, t], h, c, w_hh, w_hr, b_hn)
        h = valid * new_h + (1 - valid) * h
        columns = [valid * new_h]
        if cell == "lstm":
            c = valid * new_c + (1 - valid) * c
            columns.append(valid * new_c)
        outputs[t] = np.concatenate(columns, axis=-1)
    return np.stack(outputs, axis=1)


def _case(
    cell,
    hidden=3,
    proj=0,
    reverse=False,
    with_lengths=False,
    name="",
    lean=False,
    bias=False,
    sequence_only=False,
    table_rows=0,
    input_size=0,
):
    """recurrence over (xp, h0, [c0], w_hh, [w_hr], [b_hn], [bias], [lengths]), its output
    sliced to the columns a layer reads (h, and c for an LSTM; h alone with sequence_only):
    the rest is saved for the backward pass. The reference adds the bias to xp. With
    table_rows, xp is a table of that many rows and int32 ids (N, T) pick each step's row.
    With input_size (project_input), x (N, T, I) and w_ih (G*H, I) stand for xp."""
    out = proj or hidden
    steps = LENGTHS_T if with_lengths else SEQ
    if table_rows:
        args = [
            Arg((table_rows, GATES[cell] * hidden)),
            Arg((BATCH, steps), _ids(table_rows), dtype="int32", grad=False),
        ]
    elif input_size:
        args = [Arg((BATCH, steps, input_size)), Arg((GATES[cell] * hidden, input_size))]
    else:
        args = [Arg((BATCH, steps, GATES[cell] * hidden))]
    args.append(Arg((BATCH, out)))
    if cell == "lstm":
        args.append(Arg((BATCH, hidden)))
    args.append(Arg((GATES[cell] * hidden, out)))
    if proj:
        args.append(Arg((proj, hidden)))
    if cell == "gru":
        args.append(Arg((hidden,)))
    if bias:
        args.append(Arg((GATES[cell] * hidden,)))
    if with_lengths:
        args.append(Arg((BATCH,), _lengths, dtype="int32", grad=False))
    read = out + (hidden if cell == "lstm" and not sequence_only else 0)
    attrs = {"cell": cell, "reverse": reverse, "lean": lean}
    if sequence_only:
        attrs["sequence_only"] = True
    if input_size:
        attrs["project_input"] = True

    def build(g: _core.Graph, nodes: list[int], case_attrs: dict) -> int:
        y = g.op("recurrence", nodes, case_attrs)
        return g.op("slice", [y], {"axis": 2, "start": 0, "end": read})

    def reference(*arrays):
        if table_rows:
            arrays = (arrays[0][arrays[1]], *arrays[2:])
        if input_size:
            arrays = (arrays[0] @ arrays[1].T, *arrays[2:])
        named = {"xp": arrays[0], "h0": arrays[1]}
        rest = list(arrays[2:])
        if cell == "lstm":
            named["c0"] = rest.pop(0)
        named["w_hh"] = rest.pop(0)
        if proj:
            named["w_hr"] = rest.pop(0)
        if cell == "gru":
            named["b_hn"] = rest.pop(0)
        if bias:
            named["xp"] = named["xp"] + rest.pop(0)
        if with_lengths:
            named["lengths"] = rest.pop(0)
        return recurrence_reference(cell, reverse, **named)[..., :read]

    return OpCase(
        "recurrence",
        tuple(args),
        reference,
        attrs=attrs,
        name=name or f"{cell}{'-reverse' if reverse else ''}{'-lengths' if with_lengths else ''}",
        build=build,
        seq_lengths=(3, 1),
    )


RECURRENCE_CASES = [
    _case("rnn_tanh"),
    _case("rnn_tanh", reverse=True, with_lengths=True),
    _case("rnn_relu", with_lengths=True),
    _case("lstm"),
    _case("lstm", reverse=True, with_lengths=True),
    _case("lstm", hidden=4, proj=2, with_lengths=True, name="lstm-projected"),
    _case("lstm", hidden=4, proj=3, reverse=True, name="lstm-projected-reverse"),
    _case("gru"),
    _case("gru", reverse=True, with_lengths=True),
    _case("gru", hidden=5, with_lengths=True, name="gru-wider"),
    # Lean (inference) outputs: only h and c; the gradient recomputes the saving recurrence.
    _case("rnn_relu", reverse=True, with_lengths=True, lean=True, name="rnn_relu-lean"),
    _case("lstm", hidden=4, proj=2, with_lengths=True, lean=True, name="lstm-projected-lean"),
    _case("lstm", reverse=True, lean=True, name="lstm-reverse-lean"),
    _case("gru", with_lengths=True, lean=True, name="gru-lean"),
    # A bias operand, added to xp on every step (a layer passes b_ih + b_hh this way).
    _case("rnn_tanh", reverse=True, bias=True, name="rnn_tanh-bias"),
    _case("lstm", with_lengths=True, bias=True, name="lstm-bias"),
    _case("lstm", hidden=4, proj=2, reverse=True, bias=True, name="lstm-projected-bias"),
    _case("gru", with_lengths=True, bias=True, name="gru-bias"),
    _case("lstm", reverse=True, lean=True, bias=True, name="lstm-lean-bias"),
    # sequence_only: a lean LSTM's output is h alone (a caller that reads no cell state).
    _case(
        "lstm",
        reverse=True,
        with_lengths=True,
        lean=True,
        bias=True,
        sequence_only=True,
        name="lstm-sequence-only",
    ),
    _case("lstm", hidden=4, proj=2, lean=True, sequence_only=True, name="lstm-projected-seq-only"),
    _case("gru", lean=True, sequence_only=True, name="gru-sequence-only"),
    # A table of projected rows picked by ids (an embedding's projection read in place); its
    # gradient sums each step's into the row it picked.
    _case("lstm", lean=True, bias=True, sequence_only=True, table_rows=3, name="lstm-table"),
    _case(
        "lstm",
        hidden=4,
        proj=2,
        reverse=True,
        with_lengths=True,
        table_rows=5,
        name="lstm-table-projected",
    ),
    _case("gru", reverse=True, lean=True, bias=True, table_rows=4, name="gru-table"),
    _case("rnn_tanh", with_lengths=True, table_rows=2, name="rnn_tanh-table"),
    # project_input: each step's product takes x and h together (LSTM and plain RNN).
    _case("lstm", lean=True, bias=True, sequence_only=True, input_size=5, name="lstm-input"),
    _case(
        "lstm",
        hidden=4,
        proj=2,
        reverse=True,
        with_lengths=True,
        lean=True,
        input_size=3,
        name="lstm-input-projected",
    ),
    _case("rnn_relu", reverse=True, lean=True, input_size=1, name="rnn_relu-input"),
    _case("rnn_tanh", with_lengths=True, bias=True, input_size=6, name="rnn_tanh-input"),
    _case("lstm", hidden=4, proj=2, bias=True, input_size=3, name="lstm-input-training"),
    _case("lstm", reverse=True, with_lengths=True, input_size=2, name="lstm-input-reverse"),
]


def _sequence_end(reverse):
    def reference(x, lengths=None):
        steps = x.shape[1]
        ends = np.full(x.shape[0], steps) if lengths is None else lengths
        at = (
            np.zeros(x.shape[0], dtype=np.int64)
            if reverse
            else np.asarray(ends, dtype=np.int64) - 1
        )
        return x[np.arange(x.shape[0]), at]

    return reference


def _sequence_end_grad(reverse):
    def reference(g, like, lengths=None):
        out = np.zeros((g.shape[0], like.shape[1], g.shape[1]))
        ends = np.full(g.shape[0], like.shape[1]) if lengths is None else lengths
        at = (
            np.zeros(g.shape[0], dtype=np.int64)
            if reverse
            else np.asarray(ends, dtype=np.int64) - 1
        )
        out[np.arange(g.shape[0]), at] = g
        return out

    return reference


SEQUENCE_END_CASES = [
    OpCase("sequence_end", (Arg((BATCH, SEQ, 3)),), _sequence_end(False), name="last"),
    OpCase(
        "sequence_end",
        (Arg((BATCH, SEQ, 3)),),
        _sequence_end(True),
        attrs={"reverse": True},
        name="first",
    ),
    OpCase(
        "sequence_end",
        (Arg((BATCH, LENGTHS_T, 5)), Arg((BATCH,), _lengths, dtype="int32", grad=False)),
        _sequence_end(False),
        name="lengths",
    ),
    OpCase(
        "sequence_end_grad",
        (
            Arg((BATCH, 2)),
            Arg((BATCH, LENGTHS_T, 7)),
            Arg((BATCH,), _lengths, dtype="int32", grad=False),
        ),
        _sequence_end_grad(False),
        gradient=NO_GRADIENT,
        name="lengths",
    ),
    OpCase(
        "sequence_end_grad",
        (Arg((BATCH, 2)), Arg((BATCH, SEQ, 1))),
        _sequence_end_grad(True),
        attrs={"reverse": True},
        gradient=NO_GRADIENT,
        name="first",
    ),
]


def recurrence_grad_is_bptt(backend: str, rng: np.random.Generator) -> None:
    """recurrence_grad called directly: its d(xp) columns and the gradient it sends to h0
    (at the first step each sequence runs) are the central differences of the NumPy
    reference, for every cell, with lengths; given the gradient of all of y's columns or of
    h's alone (the form a layer's slice of h gives it)."""
    batch, steps, hidden = 3, 5, 4
    lengths = np.array([5, 2, 3], dtype=np.int32)
    for cell, gates in GATES.items():
        for reverse in (False, True):
            gh = gates * hidden
            xp = rng.uniform(-1, 1, (batch, steps, gh)).astype(np.float32)
            h0 = rng.uniform(-1, 1, (batch, hidden)).astype(np.float32)
            c0 = rng.uniform(-1, 1, (batch, hidden)).astype(np.float32)
            w_hh = rng.uniform(-1, 1, (gh, hidden)).astype(np.float32)
            b_hn = rng.uniform(-1, 1, (hidden,)).astype(np.float32)
            g = _core.Graph()
            nodes = [g.constant(xp), g.constant(h0)] + ([g.constant(c0)] if cell == "lstm" else [])
            nodes.append(g.constant(w_hh))
            nodes += [g.constant(b_hn)] if cell == "gru" else []
            length_node = g.input("lengths", (batch,), "int32")
            attrs = {"cell": cell, "reverse": reverse}
            y = g.op("recurrence", [*nodes, length_node], attrs)
            cotangent = np.zeros(g.shape(y), dtype=np.float32)
            cotangent[..., :hidden] = rng.uniform(-1, 1, (batch, steps, hidden))
            state_inputs = [nodes[1]] + ([nodes[2]] if cell == "lstm" else [])
            rest = [y, *state_inputs, nodes[-1 - (cell == "gru")], length_node]
            full = g.op("recurrence_grad", [g.constant(cotangent), *rest], attrs)
            h_only = g.constant(np.ascontiguousarray(cotangent[..., :hidden]))
            narrow = g.op("recurrence_grad", [h_only, *rest], attrs)
            engine = _core.Engine(g, seed=0, backend=backend)
            engine.define(
                "step", inputs=[length_node], outputs=[full, narrow], effects=[], advance_rng=False
            )
            outputs = engine.run("step", [lengths])
            fixed = {"c0": c0} if cell == "lstm" else {}
            fixed["b_hn"] = b_hn if cell == "gru" else None
            fixed["w_hh"] = w_hh

            def hidden_columns(xp_, h0_, fixed=fixed, cell=cell, reverse=reverse):
                out = recurrence_reference(cell, reverse, xp_, h0_, lengths=lengths, **fixed)
                return out[..., :hidden]

            weights = cotangent[..., :hidden].astype(np.float64)
            d_xp, d_h0 = (
                numeric_gradient(hidden_columns, [xp, h0], weights, index) for index in (0, 1)
            )
            for got, form in zip(outputs, ("all columns", "h alone")):
                what = f"of {cell}, reverse={reverse}, the gradient of {form}"
                np.testing.assert_allclose(
                    got[..., :gh], d_xp, rtol=1e-3, atol=1e-4, err_msg=f"d(xp) {what}"
                )
                first = np.zeros(batch, dtype=np.int64) if not reverse else lengths - 1
                hprev = gh + (hidden if cell == "gru" else 0)
                dh0 = got[np.arange(batch), first, hprev + hidden : hprev + 2 * hidden]
                np.testing.assert_allclose(dh0, d_h0, rtol=1e-3, atol=1e-4, err_msg=f"d(h0) {what}")


def lengths_out_of_range_raise(backend: str, rng: np.random.Generator) -> None:
    """A length of 0 or past T raises from the step, naming the value and its index."""
    g = _core.Graph()
    xp = g.input("xp", (2, 3, 4), "float32")
    lengths = g.input("lengths", (2,), "int32")
    y = g.op(
        "recurrence",
        [
            xp,
            g.constant(np.zeros((2, 4), np.float32)),
            g.constant(np.zeros((4, 4), np.float32)),
            lengths,
        ],
        {"cell": "rnn_tanh"},
    )
    engine = _core.Engine(g, seed=0, backend=backend)
    engine.define("step", inputs=[xp, lengths], outputs=[y], effects=[], advance_rng=False)
    x = np.zeros((2, 3, 4), np.float32)
    for bad, pattern in (
        (np.array([3, 4], np.int32), "got 4 at index 1"),
        (np.array([0, 2], np.int32), "got 0 at index 0"),
    ):
        try:
            engine.run("step", [x, bad])
        except ValueError as error:
            assert "[recurrence] lengths must lie in [1, T] with T = 3" in str(
                error
            ) and pattern in str(error), error
        else:
            raise AssertionError(f"lengths {bad} did not raise")


CASES = [*RECURRENCE_CASES, *SEQUENCE_END_CASES]

SCENARIOS = [
    ScenarioCase("recurrence_grad", "bptt-matches-autograd", recurrence_grad_is_bptt),
    ScenarioCase("recurrence", "lengths-out-of-range", lengths_out_of_range_raise),
]

ERROR_CASES = [
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 8)), Arg((2, 4)), Arg((8, 4))),
        {"cell": "lstm"},
        (r"expects xp, h0, c0, w_hh, \[w_hr\], \[bias\]", r"got 3 inputs"),
    ),
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 8)), Arg((2, 2)), Arg((2, 2)), Arg((8, 2)), Arg((4,))),
        {"cell": "lstm"},
        (r"bias \(G\*H,\) must have shape \(8,\)", r"got \(4,\)"),
    ),
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 8)), Arg((2, 4)), Arg((8, 4))),
        {"cell": "elman"},
        (r"cell must be one of",),
    ),
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 6)), Arg((2, 4)), Arg((4, 4))),
        {"cell": "rnn_tanh"},
        (r"xp \(N, T, G\*H\)", r"\(2, 3, 4\)"),
    ),
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 4)), Arg((3, 4)), Arg((4, 4))),
        {"cell": "rnn_tanh"},
        (r"h0 \(N, H_out\)",),
    ),
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 8)), Arg((2, 2)), Arg((2, 2)), Arg((8, 2))),
        {"cell": "lstm", "sequence_only": True},
        (r"sequence_only \(h alone out\) needs lean",),
    ),
    # A table of projected rows takes int32 ids (N, T) next, and has G*H columns.
    ErrorCase(
        "recurrence",
        (Arg((5, 4)), Arg((2, 3)), Arg((2, 4)), Arg((4, 4))),
        {"cell": "rnn_tanh"},
        (r"ids", r"int32", r"float32"),
    ),
    ErrorCase(
        "recurrence",
        (Arg((5, 6)), Arg((2, 3), dtype="int32"), Arg((2, 4)), Arg((4, 4))),
        {"cell": "rnn_tanh"},
        (r"table must be \(V, 4\) \(V, G\*H\)", r"got \(5, 6\)"),
    ),
    # project_input: x (N, T, I) and w_ih (G*H, I), not a GRU.
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 5)), Arg((4, 6)), Arg((2, 4)), Arg((4, 4))),
        {"cell": "rnn_tanh", "lean": True, "project_input": True},
        (r"w_ih must be \(4, I\) \(G\*H, I\) with I = 5", r"got \(4, 6\)"),
    ),
    ErrorCase(
        "recurrence",
        (Arg((2, 3, 5)), Arg((6, 5)), Arg((2, 2)), Arg((6, 2)), Arg((2,))),
        {"cell": "gru", "lean": True, "project_input": True},
        (r"project_input needs an LSTM or plain RNN cell", r"'gru'"),
    ),
    ErrorCase("sequence_end", (Arg((2, 3)),), {}, (r"rank 3",)),
]
