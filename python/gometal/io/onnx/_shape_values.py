"""Shape arithmetic evaluated at import: the small integer tensors exporters compute from
``Shape`` to feed ``Reshape`` (``x.view(x.size(0), -1)`` is Shape, Gather, Unsqueeze,
Concat), with the batch size as the one unknown.

A ``ShapeValue`` is a scalar or a 1-D integer tensor whose entries are ints or
``BATCH_SIZE``. Sizes and values are bounded so a hostile file cannot make the
evaluation grow: at most ``MAX_SHAPE_ELEMENTS`` entries, every int within int64.
Functions raise ``ValueError`` for what they cannot evaluate; the importer adds the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ... import _core
from ...nn.tensor import BATCH

# Shapes have at most a handful of axes; a few dozen entries cover every real graph.
MAX_SHAPE_ELEMENTS = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class SymbolicSize:
    """A size known only at run time: ``coefficient`` times a product of engine symbols
    (the batch ``-1``, ``seq`` ...). Exporters write such sizes for reshapes that split
    or merge heads (``batch * num_heads``); they are made through ``size_entry``, so the
    plain batch size is always the one instance ``BATCH_SIZE`` (compared with ``is``)."""

    coefficient: int
    symbols: tuple[int, ...]

    def __repr__(self) -> str:
        names = ["batch" if s == BATCH else _core.symbol_name(s) for s in self.symbols]
        factors = ([str(self.coefficient)] if self.coefficient != 1 else []) + names
        return "*".join(factors)


BATCH_SIZE = SymbolicSize(1, (BATCH,))
Entry = int | SymbolicSize


def size_entry(coefficient: int, symbols: Sequence[int] = ()) -> Entry:
    """The entry for ``coefficient * prod(symbols)``: an int without symbols, else a
    ``SymbolicSize`` (``BATCH_SIZE`` itself for the plain batch).

    Example:
        >>> size_entry(4, [BATCH])
        4*batch
    """
    key = tuple(sorted(int(s) for s in symbols))
    if not key or coefficient == 0:
        return int(coefficient)
    if coefficient == 1 and key == (BATCH,):
        return BATCH_SIZE
    return SymbolicSize(int(coefficient), key)


def factors(entry: Entry) -> tuple[int, tuple[int, ...]]:
    """``(coefficient, symbols)`` of an entry (an int has no symbols).

    Example:
        >>> factors(BATCH_SIZE)
        (1, (-1,))
    """
    if isinstance(entry, SymbolicSize):
        return entry.coefficient, entry.symbols
    return int(entry), ()


@dataclass(frozen=True)
class ShapeValue:
    """An integer scalar or vector computed from shapes; entries may be ``BATCH_SIZE``.

    Attributes:
        entries: the values, in order (one for a scalar).
        scalar: ``True`` for a rank-0 tensor.

    Example:
        >>> ShapeValue((BATCH_SIZE, -1), scalar=False).has_batch
        True
    """

    entries: tuple[Entry, ...]
    scalar: bool = False

    @property
    def has_batch(self) -> bool:
        """Whether any entry is known only at run time (the batch size, a sequence length
        or a product with them)."""
        return any(isinstance(e, SymbolicSize) for e in self.entries)

    def to_array(self) -> np.ndarray:
        """The value as an int64 array; only for values without the batch size."""
        if self.has_batch:
            raise ValueError(f"{self} holds the batch size, which is known only at run time")
        array = np.array(self.entries, np.int64)
        return array.reshape(()) if self.scalar else array

    def __str__(self) -> str:
        shown = [str(e) for e in self.entries]
        return shown[0] if self.scalar else f"[{', '.join(shown)}]"


def _check_int(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} {value} does not fit in int64")
    return value


def _checked(entries: Sequence[Entry], scalar: bool, what: str) -> ShapeValue:
    if len(entries) > MAX_SHAPE_ELEMENTS:
        raise ValueError(
            f"{what} would have {len(entries)} elements; shape tensors of at most "
            f"{MAX_SHAPE_ELEMENTS} are supported"
        )
    return ShapeValue(tuple(entries), scalar)


def from_array(array: np.ndarray, what: str) -> ShapeValue:
    """A constant integer array as a ``ShapeValue``.

    Args:
        array: a scalar or 1-D integer array.
        what: how errors name it.

    Returns:
        The value.

    Raises:
        ValueError: not an integer scalar or vector, or more than ``MAX_SHAPE_ELEMENTS``.

    Example:
        >>> from_array(np.array([0, -1]), "shape").entries
        (0, -1)
    """
    if array.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer tensor, got {array.dtype}")
    if array.ndim > 1:
        raise ValueError(f"{what} must be a scalar or 1-D, got shape {array.shape}")
    if array.size > MAX_SHAPE_ELEMENTS:
        raise ValueError(
            f"{what} has {array.size} elements; shape tensors of at most "
            f"{MAX_SHAPE_ELEMENTS} are supported"
        )
    entries = [_check_int(int(v), what) for v in array.reshape(-1)]
    return ShapeValue(tuple(entries), scalar=array.ndim == 0)


def _clamp_range(start: int, end: int, size: int) -> tuple[int, int]:
    # Negative bounds count from the end; then both are clamped into [0, size] (ONNX).
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    return min(max(start, 0), size), min(max(end, 0), size)


def shape_of(engine_shape: Sequence[Entry], start: int = 0, end: int | None = None) -> ShapeValue:
    """ONNX ``Shape`` of a tensor with this engine shape (negative dims are symbols: ``-1``
    the batch, others run-time lengths such as ``seq``); entries may already be
    ``SymbolicSize``.

    Example:
        >>> str(shape_of((-1, 3, 8), start=0, end=2))
        '[batch, 3]'
    """
    first, last = _clamp_range(start, len(engine_shape) if end is None else end, len(engine_shape))
    entries: list[Entry] = [
        d if isinstance(d, SymbolicSize) else size_entry(1, [d]) if d < 0 else int(d)
        for d in engine_shape
    ]
    return _checked(entries[first:last], False, "Shape")


def gather(data: ShapeValue, indices: ShapeValue) -> ShapeValue:
    """ONNX ``Gather`` on axis 0 of a 1-D shape tensor with constant indices.

    Example:
        >>> str(gather(ShapeValue((BATCH_SIZE, 3, 8)), ShapeValue((-1,), scalar=True)))
        '8'
    """
    if data.scalar:
        raise ValueError("Gather needs a 1-D shape tensor, got a scalar")
    if indices.has_batch:
        raise ValueError("Gather indices must be constants, not the batch size")
    size, picked = len(data.entries), []
    for index in indices.entries:
        assert isinstance(index, int)
        if not -size <= index < size:
            raise ValueError(f"index {index} is out of range for {size} elements")
        picked.append(data.entries[index])
    return _checked(picked, indices.scalar, "Gather")


def unsqueeze(value: ShapeValue, axes: Sequence[int]) -> ShapeValue:
    """ONNX ``Unsqueeze`` of a scalar at axis 0 (the only way a result stays 1-D).

    Example:
        >>> unsqueeze(ShapeValue((4,), scalar=True), [0]).entries
        (4,)
    """
    if not value.scalar or [int(a) for a in axes] not in ([0], [-1]):
        raise ValueError(
            f"Unsqueeze of shape tensors is supported from a scalar to 1-D (axes [0]), got "
            f"a {'scalar' if value.scalar else '1-D tensor'} with axes {list(axes)}"
        )
    return ShapeValue(value.entries, scalar=False)


def squeeze(value: ShapeValue, axes: Sequence[int] | None) -> ShapeValue:
    """ONNX ``Squeeze`` of a one-element 1-D shape tensor to a scalar.

    Example:
        >>> squeeze(ShapeValue((4,)), [0]).scalar
        True
    """
    valid_axes = axes is None or list(axes) in ([0], [-1])
    if value.scalar or len(value.entries) != 1 or not valid_axes:
        raise ValueError(
            f"Squeeze of shape tensors is supported from one element to a scalar, got {value} "
            f"with axes {None if axes is None else list(axes)}"
        )
    return ShapeValue(value.entries, scalar=True)


def concat(values: Sequence[ShapeValue], axis: int) -> ShapeValue:
    """ONNX ``Concat`` of 1-D shape tensors.

    Example:
        >>> str(concat([ShapeValue((BATCH_SIZE,)), ShapeValue((-1,))], 0))
        '[batch, -1]'
    """
    if axis not in (0, -1):
        raise ValueError(f"axis {axis} is out of range for 1-D shape tensors")
    if any(v.scalar for v in values):
        raise ValueError("Concat needs 1-D tensors, got a scalar")
    entries = [e for v in values for e in v.entries]
    return _checked(entries, False, "Concat")


def slice_value(
    value: ShapeValue, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
    steps: Sequence[int] | None,
) -> ShapeValue:  # fmt: skip
    """ONNX ``Slice`` of a 1-D shape tensor (``ends`` may be huge, as torch writes).

    Example:
        >>> slice_value(ShapeValue((5, 3, 8)), [1], [2**63 - 1], None, None).entries
        (3, 8)
    """
    if value.scalar:
        raise ValueError("Slice needs a 1-D shape tensor, got a scalar")
    if len(starts) != 1 or len(ends) != 1:
        raise ValueError(f"a 1-D shape tensor takes one start and end, got {starts} and {ends}")
    if axes is not None and list(axes) not in ([0], [-1]):
        raise ValueError(f"axes {list(axes)} are out of range for a 1-D shape tensor")
    step = 1 if steps is None else int(steps[0])
    if step == 0 or (steps is not None and len(steps) != 1):
        raise ValueError(f"steps must be one non-zero int, got {list(steps or [])}")
    # Python's slice bounds clamp as ONNX's do, for negative steps too.
    return ShapeValue(value.entries[slice(int(starts[0]), int(ends[0]), step)], False)


def slice_array(
    array: np.ndarray, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
    steps: Sequence[int] | None,
) -> np.ndarray:  # fmt: skip
    """ONNX ``Slice`` of a constant array (bounds clamped as ONNX does, for either step).

    Example:
        >>> slice_array(np.arange(6).reshape(2, 3), [1], [99], [1], None).tolist()
        [[1, 2], [4, 5]]
    """
    count = len(starts)
    axes = list(range(count)) if axes is None else [int(a) for a in axes]
    steps = [1] * count if steps is None else [int(s) for s in steps]
    if not len(ends) == len(axes) == len(steps) == count:
        raise ValueError(f"starts, ends, axes and steps differ in length: {starts}, {ends}")
    axes = [a + array.ndim if a < 0 else a for a in axes]
    if any(not 0 <= a < array.ndim for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes} must be distinct axes of a rank-{array.ndim} tensor")
    index: list[slice] = [slice(None)] * array.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        size = array.shape[axis]
        if step == 0:
            raise ValueError("steps must not be 0")
        start, end = int(start), int(end)
        start, end = start + size if start < 0 else start, end + size if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
            index[axis] = slice(start, end, step)
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
            index[axis] = slice(start, None if end < 0 else end, step)
    return np.ascontiguousarray(array[tuple(index)])


def _truncated_division(a: int, b: int) -> int:
    # ONNX integer Div truncates toward zero, as C does; Python's // floors.
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


_ARITHMETIC = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": _truncated_division,
}


def _symbolic_result(op_type: str, x: Entry, y: Entry) -> Entry | None:
    # Products and exact quotients of run-time sizes stay symbolic; sums do not.
    (cx, sx), (cy, sy) = factors(x), factors(y)
    if op_type == "Mul":
        return size_entry(cx * cy, sx + sy)
    if op_type == "Div" and cy and cx % cy == 0:
        remaining = list(sx)
        for symbol in sy:
            if symbol not in remaining:
                return None
            remaining.remove(symbol)
        return size_entry(cx // cy, remaining)
    return None


def arithmetic(op_type: str, a: ShapeValue, b: ShapeValue, symbolic: bool = False) -> ShapeValue:
    """Elementwise ``Add``/``Sub``/``Mul``/``Div`` of shape tensors, with broadcasting of
    one-element operands. Run-time sizes take part in no arithmetic, except products
    and exact quotients with ``symbolic`` (for callers that track how such sizes merge
    axes, as the importer's views do).

    Example:
        >>> str(arithmetic("Mul", ShapeValue((3,), True), ShapeValue((8,), True)))
        '24'
    """
    if (a.has_batch or b.has_batch) and not symbolic:
        raise ValueError(
            f"{op_type} of {a} and {b}: arithmetic on the batch size is not supported (it "
            "would merge or split the batch)"
        )
    left, right = list(a.entries), list(b.entries)
    if len(left) == 1:
        left = left * len(right)
    elif len(right) == 1:
        right = right * len(left)
    if len(left) != len(right):
        raise ValueError(f"{op_type} of {a} and {b}: the sizes cannot be broadcast")
    result: list[Entry] = []
    for x, y in zip(left, right):
        if isinstance(x, SymbolicSize) or isinstance(y, SymbolicSize):
            entry = _symbolic_result(op_type, x, y)
            if entry is None:
                raise ValueError(
                    f"{op_type} of {a} and {b}: only products and exact quotients of run-time "
                    "sizes are supported"
                )
            result.append(entry)
            continue
        if op_type == "Div" and y == 0:
            raise ValueError(f"{op_type} of {a} and {b} divides by zero")
        result.append(_check_int(_ARITHMETIC[op_type](x, y), f"{op_type} result"))
    return ShapeValue(tuple(result), scalar=a.scalar and b.scalar)
