"""Graph pieces of the recurrent layers (``recurrent.py``) around their ``recurrence`` ops:
the input projection of every step; each row's length from a key-padding mask, checked when
the step runs; one layer and direction's initial state; the final states stacked as
``(N, D*num_layers, W)``."""

from __future__ import annotations

from typing import Any

from ...graph.composites import const, matmul, op


def join(g: Any, parts: list[int], axis: int) -> int:
    """``parts`` concatenated along ``axis`` (the one part itself when alone).

    Args:
        g: the graph.
        parts: node ids.
        axis: the axis to concatenate along.

    Returns:
        The joined node.

    Example:
        >>> both = join(g, [forward, backward], 2)  # doctest: +SKIP
    """
    return parts[0] if len(parts) == 1 else op(g, "concat", *parts, axis=axis)


def mask_lengths(g: Any, mask: int, label: str) -> int:
    """Each row's length (N,) int32 from a key_padding_mask (N, T) holding 1 at padded steps.

    The step checks that the mask holds 0 and 1 only, with the padding a suffix of each row,
    and otherwise raises naming ``label``, the first row and step that break it (the mask's
    values are only known when the step runs).

    Args:
        g: the graph.
        mask: the mask's node, float32 ``(N, T)``.
        label: the layer's name for messages.

    Returns:
        The lengths' node.

    Example:
        >>> lengths = mask_lengths(g, mask, "lstm_0")  # doctest: +SKIP
    """
    values = op(
        g,
        "check_range",
        mask,
        low=0.0,
        high=1.0,
        label=label,
        message="key_padding_mask must hold 1 at padded steps and 0 elsewhere",
    )
    kept = op(g, "sum", op(g, "sub", const(g, 1.0), mask), axes=[1])
    # The suffix of padding after `kept` steps: the mask must equal it. Adding `values`
    # orders the checks, so a value outside {0, 1} is reported as such.
    steps = op(g, "cast", op(g, "positions", mask, axis=1), dtype="float32")
    suffix = op(g, "greater_equal", steps, op(g, "reshape", kept, shape=[-1, 1]))
    misplaced = op(g, "add", op(g, "sub", mask, suffix), values)
    order = op(
        g,
        "check_range",
        misplaced,
        low=0.0,
        high=0.0,
        label=label,
        message="key_padding_mask must pad the end of each row only (no 0 after a 1): "
        "a padded step before a kept one",
    )
    return op(g, "cast", op(g, "add", kept, order), dtype="int32")


def initial_state(g: Any, states: Any, index: int, width: int, rows: int) -> int:
    """Layer-direction ``index``'s initial state (rows, width) from ``states`` (N,
    D*num_layers, width), or zeros when ``states`` is None.

    Args:
        g: the graph.
        states: the node of every layer and direction's states, or ``None``.
        index: the layer and direction, ``layer * D + direction``.
        width: the state's width (``H_out`` for h, ``H`` for an LSTM's c).
        rows: the states' rows, or ``-1`` for the batch.

    Returns:
        The state's node.

    Example:
        >>> h0_l1 = initial_state(g, h0, 1, 16, -1)  # doctest: +SKIP
    """
    if states is None:
        return op(g, "broadcast_to", const(g, 0.0), shape=[-1, width])
    one = op(g, "slice", states, axis=1, start=index, end=index + 1)
    return op(g, "reshape", one, shape=[rows, width])


def final_states(g: Any, ends: list[int], batch_size: int | None) -> int:
    """Final states (N, W) of every layer and direction as (N, D*num_layers, W), with
    ``batch_size`` rows when given (the shape of state variables).

    Args:
        g: the graph.
        ends: each layer and direction's final state, in torch's order.
        batch_size: the rows of the result, or ``None`` for the batch.

    Returns:
        The stacked node.

    Example:
        >>> h_n = final_states(g, [h_forward, h_backward], None)  # doctest: +SKIP
    """
    rows = []
    for end in ends:
        one_step = op(g, "reshape", end, shape=[-1, 1, g.shape(end)[1]])
        if batch_size is not None:
            # sequence_end of a one-step sequence is the identity: `rows` gives the batch.
            state = op(g, "sequence_end", one_step, rows=batch_size)
            one_step = op(g, "reshape", state, shape=[batch_size, 1, g.shape(end)[1]])
        rows.append(one_step)
    return join(g, rows, 1)


# The table is projected once per batch, the steps once per sequence: a table with no more
# rows than this many sequences have steps costs less for any batch at least this large.
TABLE_ROWS_PER_STEP = 2


def input_projection(g: Any, x: int, weight_ih: int, in_loop: bool) -> tuple[list[int], dict]:
    """The recurrence's first operands and the attributes they need: the input projection
    ``x @ weight_ih^T`` of every step, ``[(N, T, G*H)]``.

    When ``x`` is an embedding lookup (a ``gather`` of table rows by int32 ids) whose table
    has no more rows than ``TABLE_ROWS_PER_STEP`` sequences have steps, the table is
    projected instead, ``[(V, G*H), ids (N, T)]``, and the recurrence reads each step's row
    of it in place: no projected sequence written out and read back, and a product ``N T /
    V`` times smaller (a character model's 65 rows against 32 x 64 steps). In training the
    rows' gradients are summed into the table's (``scatter_add``), and the products of the
    weight's and the table's gradients are as small. A longer table, or an unknown sequence
    length (a generator feeding a step at a time), keeps the product of every step.

    Otherwise, with ``in_loop`` (an LSTM or plain RNN cell), ``[x, weight_ih]`` with
    ``project_input``: each step's product takes ``x_t`` and ``h`` together, so the projected
    sequence is neither written out nor read back (the gradients are the same products).

    Args:
        g: the graph.
        x: the layer's input ``(N, T, I)``.
        weight_ih: the weight ``(G*H, I)``.
        in_loop: the recurrence may project each step itself.

    Returns:
        The operand nodes that stand for the projection, and the recurrence's attributes.

    Example:
        >>> operands, attrs = input_projection(g, x, w_ih, in_loop=False)  # doctest: +SKIP
    """
    if g.op_name(x) == "gather":
        table, ids = g.inputs_of(x)
        steps = g.shape(ids)[-1] if len(g.shape(ids)) == 2 else -1
        rows = g.shape(table)[0] if len(g.shape(table)) == 2 else 0
        if 0 < rows <= TABLE_ROWS_PER_STEP * steps:
            return [matmul(g, table, weight_ih, transpose_b=True), ids], {}
    if in_loop:
        return [x, weight_ih], {"project_input": True}
    return [matmul(g, x, weight_ih, transpose_b=True)], {}
