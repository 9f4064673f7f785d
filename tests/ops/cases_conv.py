"""conv2d, max_pool2d and avg_pool2d with their gradient primitives.

Forward and gradients against PyTorch in float64 (the conv and pooling gradients have no
short NumPy form), central differences on NumPy loops for small cases, gradient primitives
forward against torch's autograd, and a batch dimension of -1 through a conv-pool chain.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import references
from .domains import distinct, distinct_small, negative_corner, ties, unit
from .harness import NO_GRADIENT, TORCH, Arg, OpCase, Tolerance, from_torch
from .references import conv_output_size, pair

TORCH_TOLERANCE = Tolerance(1e-4, 1e-4, scaled=True)

# (N, C, H, W), (O, KH, KW), stride, padding, dilation, groups, bias
CONV_SHAPES = [
    ((2, 3, 8, 8), (4, 3, 3), 1, 0, 1, 1, False),
    ((2, 3, 9, 8), (4, 3, 3), 2, 1, 1, 1, True),
    ((1, 2, 7, 9), (3, 3, 2), (2, 1), (2, 0), 1, 1, True),
    ((2, 3, 10, 9), (4, 3, 3), 1, 1, 2, 1, False),
    ((2, 3, 11, 10), (5, 3, 3), 2, (2, 0), (2, 1), 1, True),
    ((2, 4, 8, 8), (6, 3, 3), 1, 1, 1, 2, True),
    ((3, 4, 9, 7), (2, 3, 2), (2, 1), (2, 0), 2, 2, False),
    ((2, 5, 7, 8), (5, 3, 3), 1, 1, 1, 5, True),
    ((7, 3, 9, 9), (6, 3, 3), 2, 1, 1, 3, True),
    ((7, 6, 5, 5), (8, 1, 1), 1, 0, 1, 1, True),
    ((2, 6, 7, 6), (4, 1, 1), 2, 0, 1, 1, False),
    ((2, 3, 5, 4), (4, 7, 4), 1, (1, 0), 1, 1, True),
    ((1, 2, 3, 3), (3, 3, 3), 2, 1, 2, 1, True),
    ((1, 3, 12, 10), (4, 3, 3), 1, 1, 1, 1, True),
    ((7, 8, 16, 15), (16, 3, 3), 1, 1, 1, 2, True),
    # Output planes of >= 2048 pixels in rows of a multiple of 8: the direct weight
    # gradient (sums over pixels in vector lanes) instead of im2col + BLAS.
    ((2, 3, 48, 48), (8, 3, 3), 1, 1, 1, 1, True),
    ((1, 4, 50, 48), (6, 3, 3), 1, 2, 2, 2, False),
    ((1, 2, 100, 48), (5, 3, 3), (2, 1), 1, 1, 1, True),
]


def conv_attrs(stride, padding, dilation, groups) -> dict:
    pairs = {"stride": pair(stride), "padding": pair(padding), "dilation": pair(dilation)}
    return {**pairs, "groups": groups}


def _torch_geometry(attrs) -> dict:
    return {k: tuple(attrs[k]) for k in ("stride", "padding", "dilation")}


def torch_conv(attrs):
    """torch's conv2d with `attrs`, and an optional (O, 1, 1) bias added after it."""

    def conv(x, w, b=None):
        out = F.conv2d(x, w, groups=attrs["groups"], **_torch_geometry(attrs))
        return out if b is None else out + b

    return conv


def _conv_plus_bias(g, nodes, attrs):
    return g.op("add", [g.op("conv2d", nodes[:2], attrs), nodes[2]])


def conv_case(xs, ws, stride, padding, dilation, groups, bias) -> OpCase:
    attrs = conv_attrs(stride, padding, dilation, groups)
    o, kh, kw = ws
    args = [Arg(xs, unit), Arg((o, xs[1] // groups, kh, kw), unit)]
    if bias:
        args.append(Arg((o, 1, 1), unit))
    reference = torch_conv(attrs)
    return OpCase(
        "conv2d",
        tuple(args),
        from_torch(reference),
        attrs=attrs,
        name="bias" if bias else "",
        build=_conv_plus_bias if bias else None,
        gradient=TORCH,
        torch_reference=reference,
        forward_tol=TORCH_TOLERANCE,
        grad_tol=TORCH_TOLERANCE,
    )


CONV_CASES = [conv_case(*shape) for shape in CONV_SHAPES]

# Small cases against central differences of NumPy loops, with a bias.
CONV_NUMERIC_CASES = [
    OpCase(
        "conv2d",
        (
            Arg(xs, unit),
            Arg((ws[0], xs[1] // groups, ws[1], ws[2]), unit),
            Arg((ws[0], 1, 1), unit),
        ),
        lambda x, w, b, s=stride, p=padding, d=dilation, gr=groups: (
            references.conv2d(x, w, s, p, d, gr) + b
        ),
        attrs=conv_attrs(stride, padding, dilation, groups),
        name="numpy",
        build=_conv_plus_bias,
    )
    for xs, ws, stride, padding, dilation, groups in [
        ((1, 2, 5, 4), (3, 3, 2), 1, 0, 1, 1),
        ((2, 2, 5, 4), (4, 3, 2), (2, 1), 1, (1, 2), 2),
        ((1, 3, 4, 5), (3, 3, 3), 2, (2, 0), 1, 3),
    ]
]


def conv_grad_cases(xs, ws, stride, padding, dilation, groups) -> list[OpCase]:
    """conv2d_input_grad and conv2d_weight_grad forward against torch.nn.grad."""
    attrs = conv_attrs(stride, padding, dilation, groups)
    o, kh, kw = ws
    w_shape = (o, xs[1] // groups, kh, kw)
    dims = zip(xs[2:], (kh, kw), attrs["stride"], attrs["padding"], attrs["dilation"])
    out_shape = (xs[0], o, *(conv_output_size(*d) for d in dims))
    geometry = {**_torch_geometry(attrs), "groups": groups}
    # conv2d_input_grad is also the transposed convolution: its gradients are checked
    # through torch's conv_transpose2d, whose output_padding reaches x's full size.
    sizes = zip(out_shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"], (kh, kw))
    natural = [(size - 1) * s - 2 * p + d * (k - 1) + 1 for size, s, p, d, k in sizes]
    transposed = functools.partial(
        F.conv_transpose2d,
        output_padding=tuple(full - n for full, n in zip(xs[2:], natural)),
        **geometry,
    )
    return [
        OpCase(
            "conv2d_input_grad",
            (Arg(out_shape, unit), Arg(w_shape, unit)),
            from_torch(lambda gy, w: torch.nn.grad.conv2d_input(xs, w, gy, **geometry)),
            attrs={**attrs, "shape": list(xs)},
            gradient=TORCH,
            torch_reference=transposed,
            forward_tol=TORCH_TOLERANCE,
            grad_tol=TORCH_TOLERANCE,
        ),
        OpCase(
            "conv2d_weight_grad",
            (Arg(xs, unit), Arg(out_shape, unit)),
            from_torch(lambda x, gy: torch.nn.grad.conv2d_weight(x, w_shape, gy, **geometry)),
            attrs={**attrs, "shape": list(w_shape)},
            gradient=NO_GRADIENT,
            forward_tol=TORCH_TOLERANCE,
        ),
    ]


CONV_GRAD_CASES = [
    case
    for shape in (CONV_SHAPES[4], CONV_SHAPES[6], CONV_SHAPES[8])
    for case in conv_grad_cases(*shape[:6])
]

# (N, C, H, W), kernel, stride, padding; stride == kernel is torch's stride=None
POOL_SHAPES = [
    ((2, 3, 8, 6), 2, 2, 0),
    ((2, 2, 5, 7), 2, 1, 0),
    ((2, 3, 9, 7), 3, 2, 1),
    ((1, 2, 6, 5), 3, 1, 1),
    ((2, 2, 10, 7), 3, 3, 0),
    ((2, 3, 7, 5), 2, 2, 1),
    ((2, 2, 9, 6), (3, 2), (2, 1), (1, 0)),
    ((7, 4, 11, 9), 3, 2, 1),
    ((2, 3, 8, 38), 2, 2, 0),  # 2x2: eight windows at a time, then a tail of three
]


def pool_attrs(kernel, stride, padding) -> dict:
    return {"kernel_size": pair(kernel), "stride": pair(stride), "padding": pair(padding)}


def torch_pool(kind, attrs):
    """torch's max_pool2d, or avg_pool2d counting padding (count_include_pad=True)."""
    geometry = {k: tuple(v) for k, v in attrs.items()}
    if kind == "max":
        return lambda t: F.max_pool2d(t, **geometry)
    return lambda t: F.avg_pool2d(t, count_include_pad=True, **geometry)


def pool_case(kind, xs, kernel, stride, padding, domain=None, name="", build=None, exact=False):
    attrs = pool_attrs(kernel, stride, padding)
    reference = torch_pool(kind, attrs)
    if domain is None:  # distinct values: one winner per max-pool window
        domain = distinct_small if kind == "max" else unit
    return OpCase(
        f"{kind}_pool2d",
        (Arg(xs, domain),),
        from_torch(reference),
        attrs=attrs,
        name=name,
        build=build,
        gradient=TORCH,
        torch_reference=reference,
        exact=exact,
        forward_tol=TORCH_TOLERANCE,
        grad_tol=TORCH_TOLERANCE,
    )


POOL_CASES = [pool_case(kind, *shape) for kind in ("max", "avg") for shape in POOL_SHAPES]

# relu's mask moves to the pooled gradient (a window's max is > 0 exactly when the pooled
# value is); whole windows of zeros after relu must still get no gradient.
RELU_THEN_MAX_POOL_CASES = [
    OpCase(
        "max_pool2d",
        (Arg(xs, negative_corner),),
        from_torch(lambda t, a=attrs: torch_pool("max", a)(torch.relu(t))),
        attrs=attrs,
        name="after-relu",
        build=lambda g, nodes, a: g.op("max_pool2d", [g.op("relu", nodes)], a),
        gradient=TORCH,
        torch_reference=lambda t, a=attrs: torch_pool("max", a)(torch.relu(t)),
        forward_tol=TORCH_TOLERANCE,
        grad_tol=TORCH_TOLERANCE,
    )
    for xs, attrs in [
        ((2, 3, 8, 8), pool_attrs(2, 2, 0)),
        ((2, 2, 7, 9), pool_attrs(3, 2, 1)),
    ]
]

# Many equal maxima per window: the gradient goes to the first, as torch's does.
MAX_POOL_TIE_CASES = [
    pool_case("max", xs, kernel, stride, padding, domain=ties, name="ties", exact=True)
    for xs, kernel, stride, padding in [
        ((2, 2, 6, 7), 2, 2, 0),
        ((2, 2, 6, 37), 2, 2, 0),
        ((2, 2, 6, 7), 3, 1, 1),
        ((1, 3, 7, 6), (3, 2), (2, 1), (1, 1)),
    ]
]

POOL_NUMERIC_CASES = [
    OpCase(
        f"{kind}_pool2d",
        (Arg((2, 2, 5, 6), distinct),),
        lambda v, kind=kind, k=kernel, s=stride, p=padding: references.pool2d(v, kind, k, s, p),
        attrs=pool_attrs(kernel, stride, padding),
        name="numpy",
    )
    for kind in ("max", "avg")
    for kernel, stride, padding in [(2, 2, 0), (3, 1, 1), ((3, 2), (2, 1), (1, 0))]
]


def pool_grad_cases(xs, kernel, stride, padding) -> list[OpCase]:
    """max_pool2d_grad and avg_pool2d_grad forward against torch's autograd."""
    attrs = pool_attrs(kernel, stride, padding)
    dims = zip(xs[2:], attrs["kernel_size"], attrs["stride"], attrs["padding"])
    out_shape = (*xs[:2], *(conv_output_size(n, k, s, p, 1) for n, k, s, p in dims))

    def max_grad(x, gy):
        x = x.clone().requires_grad_(True)
        torch_pool("max", attrs)(x).backward(gy)
        return x.grad

    def avg_grad(gy):
        x = torch.zeros(xs, dtype=torch.float64, requires_grad=True)
        torch_pool("avg", attrs)(x).backward(gy)
        return x.grad

    return [
        OpCase(
            "max_pool2d_grad",
            (Arg(xs, distinct_small), Arg(out_shape, unit)),
            from_torch(max_grad),
            attrs=attrs,
            gradient=NO_GRADIENT,
            forward_tol=TORCH_TOLERANCE,
        ),
        OpCase(
            "avg_pool2d_grad",
            (Arg(out_shape, unit),),
            from_torch(avg_grad),
            attrs={**attrs, "shape": list(xs)},
            gradient=NO_GRADIENT,
            forward_tol=TORCH_TOLERANCE,
        ),
    ]


POOL_GRAD_CASES = [case for shape in POOL_SHAPES[1:4] for case in pool_grad_cases(*shape)]


def _conv_pool_chain(g, nodes, attrs):
    conv = g.op("conv2d", nodes, attrs)
    pooled = g.op("max_pool2d", [conv], pool_attrs(2, 2, 0))
    return g.op("avg_pool2d", [pooled], pool_attrs(3, 1, 1))


def _torch_conv_pool_chain(x, w):
    y = F.max_pool2d(F.conv2d(x, w, padding=1), 2, 2)
    return F.avg_pool2d(y, 3, 1, 1, count_include_pad=True)


# A batch dimension of -1 through conv, max pool and avg pool: a plan per batch size, and the
# gradient with respect to the batch input as well as the weight.
BATCH_CHAIN_CASE = OpCase(
    "conv2d",
    (Arg((-1, 3, 6, 8), unit), Arg((4, 3, 3, 3), unit)),
    from_torch(_torch_conv_pool_chain),
    attrs=conv_attrs(1, 1, 1, 1),
    name="then-pools-over-a-batch",
    build=_conv_pool_chain,
    gradient=TORCH,
    torch_reference=_torch_conv_pool_chain,
    batches=(3, 5, 3),
    forward_tol=TORCH_TOLERANCE,
    grad_tol=TORCH_TOLERANCE,
)

CASES = [
    *CONV_CASES,
    *CONV_NUMERIC_CASES,
    *CONV_GRAD_CASES,
    *POOL_CASES,
    *RELU_THEN_MAX_POOL_CASES,
    *MAX_POOL_TIE_CASES,
    *POOL_NUMERIC_CASES,
    *POOL_GRAD_CASES,
    BATCH_CHAIN_CASE,
]
