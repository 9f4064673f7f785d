"""Views: an ONNX tensor held as an engine tensor whose axes are grouped and reordered.

torch's exporters write attention sequence-first inside a batch-first model: the batch
moves to axis 1 (``Transpose``), merges with the sequence (``Reshape`` to ``(T * N, E)``)
or with the heads (``(T, N * H, D)``), and comes back. gometal keeps the batch on axis 0
and cannot merge two run-time sizes into one axis, so the importer keeps the engine
("physical") tensor batch-first and records, per ONNX axis, the group of physical axes
it stands for, in row-major order: ``groups[i]`` lists the physical axes whose product
is ONNX axis ``i``. Transpose, Unsqueeze and Squeeze then only change the groups; a
Reshape regroups, and splits a fixed physical axis where it must (a physical reshape);
the data moves only where an operator needs its axes in order (``MatMul``, the output).

Functions raise ``ValueError`` for what a view cannot express; the importer adds the node.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ...nn.tensor import BATCH, SymbolicTensor
from ._shape_values import Entry, SymbolicSize, factors, size_entry

Groups = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class View:
    """A handler's result: the engine tensor and, per ONNX axis, its physical axes.

    Attributes:
        tensor: the engine ("physical") tensor, batch first.
        groups: the physical axes of each ONNX axis, in row-major order.
    """

    tensor: SymbolicTensor
    groups: Groups


def identity(rank: int) -> Groups:
    """The groups of a tensor in its own order: one physical axis per ONNX axis.

    Example:
        >>> identity(2)
        ((0,), (1,))
    """
    return tuple((axis,) for axis in range(rank))


def multiply(a: Entry, b: Entry) -> Entry:
    """The product of two sizes.

    Example:
        >>> multiply(4, size_entry(1, [BATCH]))
        4*batch
    """
    (ca, sa), (cb, sb) = factors(a), factors(b)
    return size_entry(ca * cb, sa + sb)


def divide(a: Entry, b: Entry) -> Entry | None:
    """``a / b`` if it is exact (an int, or a product of the same symbols), else ``None``.

    Example:
        >>> divide(size_entry(4, [BATCH]), 2)
        2*batch
    """
    (ca, sa), (cb, sb) = factors(a), factors(b)
    if cb <= 0 or ca % cb:
        return None
    remaining = list(sa)
    for symbol in sb:
        if symbol not in remaining:
            return None
        remaining.remove(symbol)
    return size_entry(ca // cb, remaining)


def dim_entry(dim: int) -> Entry:
    """A physical dim as a size: the int, or the symbol it stands for."""
    return size_entry(1, [dim]) if dim < 0 else int(dim)


def group_size(shape: Sequence[int], group: Sequence[int]) -> Entry:
    """The size of one ONNX axis: the product of its physical axes."""
    size: Entry = 1
    for axis in group:
        size = multiply(size, dim_entry(shape[axis]))
    return size


def onnx_dims(shape: Sequence[int], groups: Groups) -> list[Entry]:
    """The ONNX shape a view stands for.

    Example:
        >>> onnx_dims((-1, 5, 8), ((1,), (0,), (2,)))
        [5, batch, 8]
    """
    return [group_size(shape, group) for group in groups]


def engine_dim(size: Entry, what: str) -> int:
    """A size as one engine dim: an int or a single symbol, else ``ValueError``."""
    if not isinstance(size, SymbolicSize):
        return int(size)
    coefficient, symbols = factors(size)
    if coefficient != 1 or len(symbols) != 1:
        raise ValueError(
            f"{what} has size {size}, which merges a run-time size with other axes; gometal "
            "keeps each run-time size on an axis of its own"
        )
    return symbols[0]


def resolve_target(
    dims: Sequence[Entry], requested: Sequence[Entry], allowzero: bool
) -> list[Entry]:
    """ONNX ``Reshape``'s target with ``0`` copied and the one ``-1`` inferred.

    Example:
        >>> resolve_target([5, size_entry(1, [BATCH]), 8], [0, -1], False)
        [5, 8*batch]
    """
    numbers = [e for e in requested if not isinstance(e, SymbolicSize)]
    if any(int(e) < -1 for e in numbers) or numbers.count(-1) > 1:
        raise ValueError(f"shape {list(requested)} may hold at most one -1 and no other negative")
    target: list[Entry] = []
    for index, entry in enumerate(requested):
        if entry == 0 and not isinstance(entry, SymbolicSize) and not allowzero:
            if index >= len(dims):
                raise ValueError(
                    f"shape {list(requested)} copies axis {index}, which the input lacks"
                )
            entry = dims[index]
        target.append(entry)
    total: Entry = 1
    for size in dims:
        total = multiply(total, size)
    if any(not isinstance(e, SymbolicSize) and e == -1 for e in target):
        known: Entry = 1
        for entry in target:
            if isinstance(entry, SymbolicSize) or entry != -1:
                known = multiply(known, entry)
        inferred = divide(total, known)
        if inferred is None:
            raise ValueError(f"cannot reshape {list(dims)} to {list(requested)}")
        target = [inferred if not isinstance(e, SymbolicSize) and e == -1 else e for e in target]
    product: Entry = 1
    for entry in target:
        product = multiply(product, entry)
    if product != total:
        raise ValueError(f"cannot reshape {list(dims)} to {list(requested)}")
    return target


def plan_reshape(
    shape: Sequence[int], groups: Groups, target: Sequence[Entry]
) -> tuple[list[int], Groups]:
    """The physical shape and groups that give the ONNX shape ``target`` (resolved).

    The physical axes are walked in the view's ONNX order; each target size takes whole
    axes, or the leading part of a fixed axis, which is then split in place.

    Returns:
        The new physical shape (the old one with some fixed axes split) and its groups.

    Raises:
        ValueError: a size that needs part of a run-time axis, or axes out of order.

    Example:
        >>> plan_reshape((-1, 5, 96), ((1,), (0,), (2,)), [5, size_entry(1, [BATCH]), 3, 32])
        ([-1, 5, 3, 32], ((1,), (0,), (2,), (3,)))
    """
    queue = deque((axis, shape[axis]) for group in groups for axis in group)
    parts: dict[int, list[int]] = {axis: [] for axis in range(len(shape))}
    taken: list[list[tuple[int, int]]] = []
    for size in target:
        group: list[tuple[int, int]] = []
        remaining: Entry = size
        while remaining != 1:
            if not queue:
                raise ValueError(f"cannot reshape {onnx_dims(shape, groups)} to {list(target)}")
            axis, dim = queue.popleft()
            rest = divide(remaining, dim_entry(dim))
            if rest is None and dim > 0 and isinstance(remaining, int) and dim % remaining == 0:
                queue.appendleft((axis, dim // remaining))
                dim, rest = remaining, 1
            if rest is None:
                raise ValueError(
                    f"cannot reshape {onnx_dims(shape, groups)} to {list(target)}: size "
                    f"{size} needs part of an axis of size {dim_entry(dim)}"
                )
            group.append((axis, len(parts[axis])))
            parts[axis].append(dim)
            remaining = rest
        taken.append(group)
    for axis, dim in queue:  # axes of size 1 that no target size needed
        if dim != 1:
            raise ValueError(f"cannot reshape {onnx_dims(shape, groups)} to {list(target)}")
        parts[axis].append(dim)
        if taken:
            taken[-1].append((axis, len(parts[axis]) - 1))
    first: dict[int, int] = {}
    new_shape: list[int] = []
    for axis in range(len(shape)):
        first[axis] = len(new_shape)
        new_shape.extend(parts[axis] or [1])
    new_groups = tuple(tuple(first[axis] + part for axis, part in group) for group in taken)
    return new_shape, new_groups


def arrangement(
    shape: Sequence[int], groups: Groups, merged: Sequence[int]
) -> tuple[list[int], list[int], Groups]:
    """A physical transpose into ONNX order, then a reshape merging the groups in
    ``merged`` into one axis each (the others keep their physical axes).

    Returns:
        ``(perm, new_shape, new_groups)``.

    Raises:
        ValueError: the batch would leave physical axis 0, or a merged group holds a
            run-time size with other axes.

    Example:
        >>> arrangement((-1, 5, 4, 8), ((0,), (2,), (1,), (3,)), [1, 2, 3])
        ([0, 2, 1, 3], [-1, 4, 5, 8], ((0,), (1,), (2,), (3,)))
    """
    # Size-1 axes may sit anywhere in their group; last, they never hide the batch.
    groups = tuple(
        tuple(a for a in g if shape[a] != 1) + tuple(a for a in g if shape[a] == 1) for g in groups
    )
    perm = [axis for group in groups for axis in group]
    if shape and shape[0] == BATCH and perm[:1] != [0]:
        raise ValueError(
            f"its ONNX axes {onnx_dims(shape, groups)} put the batch after another axis; "
            "gometal keeps the batch first"
        )
    new_shape: list[int] = []
    new_groups: list[tuple[int, ...]] = []
    for index, group in enumerate(groups):
        if index in merged:
            new_groups.append((len(new_shape),))
            new_shape.append(engine_dim(group_size(shape, group), f"ONNX axis {index}"))
        else:
            # Axes of size 1 are dropped (one stays for a group of size 1), so two operands
            # that broadcast in ONNX get the same leading engine axes.
            sizes = [shape[axis] for axis in group if shape[axis] != 1] or [1]
            new_groups.append(tuple(range(len(new_shape), len(new_shape) + len(sizes))))
            new_shape.extend(sizes)
    return perm, new_shape, tuple(new_groups)


def drop_axes(groups: Groups, dropped: Sequence[int]) -> Groups:
    """The groups once the ONNX axes ``dropped`` (of size 1) are squeezed: their physical
    axes (all of size 1) join a neighbouring group, so nothing moves.

    Example:
        >>> drop_axes(((0,), (1,), (2,)), [1])
        ((0, 1), (2,))
    """
    kept = [list(group) for index, group in enumerate(groups) if index not in dropped]
    for index in dropped:
        orphans = list(groups[index])
        if not orphans:
            continue
        before = sum(1 for i in range(index) if i not in dropped)
        if before:
            kept[before - 1].extend(orphans)
        elif kept:
            kept[0].extend(orphans)
    return tuple(tuple(group) for group in kept)
