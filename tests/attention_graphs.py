"""Graph builders shared by the attention tests."""

from __future__ import annotations

from gometal.graph.composites import matmul, op


def packed_qkv_heads(g, h, weight, bias, n, t, e, heads):
    """q, k and v of shape (n, heads, t, e // heads) from h's packed projection, split into
    heads by a reshape, a transpose and three slices, as MultiHeadAttention emits them."""
    split = op(
        g,
        "reshape",
        op(g, "add", matmul(g, h, weight, transpose_b=True), bias),
        shape=[n, t, 3, heads, e // heads],
    )
    stacked = op(g, "transpose", split, perm=[2, 0, 3, 1, 4])
    return [
        op(
            g,
            "reshape",
            op(g, "slice", stacked, axis=0, start=i, end=i + 1),
            shape=[n, heads, t, e // heads],
        )
        for i in range(3)
    ]
