"""Static shape rules for the importer: ONNX ``Reshape`` targets and convolution or
pooling padding, resolved once at import against the known input shape.

Both raise ``ValueError`` for what gometal cannot express; the importer adds the node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...nn.tensor import BATCH, SEQ
from ._safety import OnnxImportError, check_sample_bytes
from ._shape_values import BATCH_SIZE, Entry

_FLOAT = 1  # onnx.TensorProto.FLOAT
_BOOL = 9  # a mask (key padding), read as float32 0 or 1
_TOKEN_IDS = (6, 7)  # INT32, INT64: ids of an embedding, read as the engine's int32


def input_dtype(value: Any) -> str:
    """The engine dtype of a graph input: ``"int32"`` for token ids, else ``"float32"``."""
    return "int32" if value.type.tensor_type.elem_type in _TOKEN_IDS else "float32"


def _show(shape: Sequence[int]) -> str:
    return str(tuple("batch" if d == BATCH else d for d in shape))


def resolve_reshape(shape: Sequence[int], requested: Sequence[Entry], allowzero: bool) -> list[int]:
    """The engine shape ONNX ``Reshape`` gives ``shape`` (``-1`` at 0 is a dynamic batch).

    Args:
        shape: the input's engine shape.
        requested: the ONNX ``shape`` input (``0`` copies an axis unless ``allowzero``,
            one ``-1`` is inferred); its first entry may be ``BATCH_SIZE``, the batch
            size computed from a ``Shape``.
        allowzero: ONNX's ``allowzero`` attribute.

    Returns:
        The target engine shape; a dynamic batch stays ``-1`` at position 0.

    Raises:
        ValueError: the element counts differ, or the dynamic batch would not stay axis 0.

    Example:
        >>> resolve_reshape((-1, 4, 5), [0, -1], False)
        [-1, 20]
    """
    entries = list(requested)
    if any(e is BATCH_SIZE for e in entries[1:]):
        raise ValueError(
            f"shape {entries} puts the batch size after dimension 0; the dynamic batch "
            "must stay dimension 0"
        )
    numbers = [int(e) for e in entries if e is not BATCH_SIZE]  # type: ignore[call-overload]
    if any(v < -1 for v in numbers) or numbers.count(-1) > 1:
        raise ValueError(f"shape {entries} may hold at most one -1 and no other negative")
    target: list[int] = []
    for i, v in enumerate(entries):
        if v is BATCH_SIZE:
            target.append(BATCH)
            continue
        v = int(v)  # type: ignore[call-overload]
        if v == 0 and not allowzero:
            if i >= len(shape):
                raise ValueError(f"shape {entries} copies axis {i}, which the input lacks")
            v = shape[i]
        target.append(v)
    dynamic = bool(shape) and shape[0] == BATCH
    head: list[int] = []
    if dynamic:
        first = entries[0] if entries else None
        if not (first is BATCH_SIZE or first == -1 or (first == 0 and not allowzero)):
            raise ValueError(
                f"shape {entries} must keep the dynamic batch as dimension 0 (0, -1 or the "
                "batch size first)"
            )
        # A leading -1 is the batch itself; the one -1 allowed is then spent.
        head, target, shape = [BATCH], target[1:], shape[1:]
    elif entries and entries[0] is BATCH_SIZE:
        raise ValueError(f"shape {entries} holds the batch size but the input has no batch axis")
    total = math.prod(shape)
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = total // known if known else 0
    if math.prod(target) != total:
        raise ValueError(f"cannot reshape {_show([*head, *shape])} to {entries}")
    return head + target


def check_window(
    kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], rank: int
) -> None:
    """Checks a convolution's or pool's window: one positive size per spatial axis each.

    Raises:
        ValueError: naming the attribute, what it must be and what it holds.

    Example:
        >>> check_window([3, 3], [1, 1], [1, 1], 2)
    """
    for label, values in (("kernel_shape", kernel), ("strides", strides), ("dilations", dilations)):
        if len(values) != rank or any(v < 1 for v in values):
            raise ValueError(f"{label} must be {rank} positive ints, got {list(values)}")


def spatial_pads(
    auto_pad: str,
    pads: Sequence[int] | None,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """The padding before and after each spatial axis of a convolution or pool.

    Args:
        auto_pad: ONNX's ``auto_pad`` (``NOTSET``, ``VALID``, ``SAME_UPPER``, ``SAME_LOWER``).
        pads: ONNX's ``pads`` (all begins, then all ends), or ``None`` for zeros.
        spatial: the input's spatial sizes.
        kernel: the kernel sizes.
        strides: the strides.
        dilations: the dilations.

    Returns:
        ``(begins, ends)``, one entry per spatial axis.

    Raises:
        ValueError: an unknown ``auto_pad`` or malformed ``pads``.

    Example:
        >>> spatial_pads("SAME_UPPER", None, [4, 4], [2, 2], [1, 1], [1, 1])
        ([0, 0], [1, 1])
    """
    rank = len(kernel)
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins, ends
    if auto_pad != "NOTSET":
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    values = [int(p) for p in (pads if pads is not None else [0] * 2 * rank)]
    if len(values) != 2 * rank or min(values, default=0) < 0:
        raise ValueError(f"pads {values} must be {2 * rank} non-negative ints")
    return values[:rank], values[rank:]


def ceil_extra(
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    begins: Sequence[int],
    ends: Sequence[int],
) -> list[int]:
    """Padding ``ceil_mode=1`` adds after each axis so a floor-mode pool gives its size.

    A last window that would start inside the end padding is dropped, as ONNX does.

    Example:
        >>> ceil_extra([4], [3], [2], [0], [0])
        [1]
    """
    extra = []
    for size, k, s, b, e in zip(spatial, kernel, strides, begins, ends):
        padded = size + b + e
        out = -(-(padded - k) // s) + 1
        if (out - 1) * s >= size + b:
            out -= 1
        extra.append(max(0, (out - 1) * s + k - padded))
    return extra


def input_engine_shape(
    value: Any, dynamic_batch: bool | None
) -> tuple[tuple[int, ...], int | None]:
    """The engine shape of a graph input: float32, fixed sizes but for dimension 0 and one
    named run-time length (``seq``).

    Args:
        value: the input's ``onnx.ValueInfoProto``.
        dynamic_batch: as ``load``'s argument: dimension 0 is a dynamic batch unless it
            is ``False``.

    Returns:
        The shape, with ``-1`` at 0 for a dynamic batch, and the size the file fixes for
        dimension 0 (``None`` where the file leaves it symbolic).

    Raises:
        OnnxImportError: a non-float or non-tensor input, a missing or dynamic inner
            size, or a sample larger than the cap.

    Example:
        >>> input_engine_shape(graph.input[0], None)  # doctest: +SKIP
        ((-1, 3, 32, 32), 2)
    """
    what = f"input {value.name!r}"
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise OnnxImportError(f"{what} must be a tensor, got a {kind}")
    if value.type.tensor_type.elem_type not in (_FLOAT, *_TOKEN_IDS, _BOOL):
        raise OnnxImportError(
            f"{what} must be float32 (elem_type 1), token ids of int32 or int64 (elem_type "
            f"6 or 7) or bool (elem_type 9, read as float32 0 or 1), got elem_type "
            f"{value.type.tensor_type.elem_type}"
        )
    if not value.type.tensor_type.HasField("shape"):
        raise OnnxImportError(f"{what} declares no shape")
    dims = list(value.type.tensor_type.shape.dim)
    if not dims:
        raise OnnxImportError(f"{what} is a scalar; it needs a batch dimension")
    sample = []
    lengths: set[str] = set()
    for axis, dim in enumerate(dims[1:], start=1):
        if dim.HasField("dim_param") and dim.dim_param:
            # A named run-time size besides the batch: the sequence length.
            lengths.add(dim.dim_param)
            if len(lengths) > 1:
                raise OnnxImportError(
                    f"{what} has run-time sizes {sorted(lengths)} besides the batch; gometal "
                    "imports one (a sequence length)"
                )
            sample.append(SEQ)
            continue
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise OnnxImportError(
                f"{what} dimension {axis} must be a fixed positive size or a named run-time "
                f"size, got {dim.dim_param or dim.dim_value!r}"
            )
        sample.append(int(dim.dim_value))
    check_sample_bytes(tuple(sample), what)
    first = dims[0]
    if first.HasField("dim_value") and first.dim_value <= 0:
        raise OnnxImportError(
            f"{what} dimension 0 must be positive or symbolic, got {first.dim_value}"
        )
    fixed = int(first.dim_value) if first.HasField("dim_value") else None
    dynamic = dynamic_batch is not False
    if fixed is None and not dynamic:
        raise OnnxImportError(
            f"dynamic_batch=False needs a fixed dimension 0 for {what}, got {first.dim_param!r}"
        )
    if dynamic:
        return (BATCH, *sample), fixed
    check_sample_bytes((fixed or 1, *sample), what)
    return (fixed or 1, *sample), fixed
