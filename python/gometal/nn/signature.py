"""How a model's inputs and outputs are named, ordered and passed: one array, a list or a dict.

A model built on one input and one output (``gm.Model(x, y)``, or one-item lists) takes
and returns plain arrays, as it always has. A model with several inputs or outputs, or
one given them as a dict, is *structured*: it takes a list (in the model's order) or a
dict (by name) of arrays, and returns its outputs as it was given them: a list, or a dict
keyed by name.

Names: dict keys when the model was given a dict; otherwise an input is named by
``gm.Input(..., name=...)`` (``input_<i>`` when unnamed, ``input`` for a lone one) and an
output by the layer that produces it (``dense_1``), or by its input when an output is an
input itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .tensor import SymbolicTensor


def parse_tensors(value: Any, argument: str) -> tuple[list[SymbolicTensor], list[str] | None]:
    """Reads a model's ``inputs`` or ``outputs`` argument.

    Args:
        value: a symbolic tensor, a non-empty list or tuple of them, or a non-empty dict
            from string names to them.
        argument: ``"inputs"`` or ``"outputs"``, for error messages.

    Returns:
        ``(tensors, keys)``: the tensors in order, and the dict's keys (``None`` when
        ``value`` is not a dict).

    Raises:
        TypeError: ``value`` is none of these, or a dict key is not a non-empty string.

    Example:
        >>> tensors, keys = parse_tensors({"image": Input((4,))}, "inputs")  # doctest: +SKIP
        >>> keys
        ['image']
    """
    if isinstance(value, Mapping):
        keys = list(value)
        bad = [key for key in keys if not isinstance(key, str) or not key]
        if bad:
            raise TypeError(
                f"Model {argument} given as a dict need non-empty string keys, got {bad!r}"
            )
        tensors = list(value.values())
    else:
        keys = None
        tensors = [value] if isinstance(value, SymbolicTensor) else _as_list(value, argument)
    if not tensors or not all(isinstance(t, SymbolicTensor) for t in tensors):
        raise TypeError(
            f"Model {argument} must be a symbolic tensor, or a non-empty list or dict of them"
        )
    return tensors, keys


def _as_list(value: Any, argument: str) -> list[Any]:
    try:
        return [] if isinstance(value, (str, bytes)) else list(value)
    except TypeError:
        raise TypeError(
            f"Model {argument} must be a symbolic tensor, or a non-empty list or dict of them, "
            f"got {type(value).__name__}"
        ) from None


def input_names(tensors: Sequence[SymbolicTensor], keys: Sequence[str] | None) -> list[str]:
    """The names of a model's inputs (see the module docstring for the rule).

    Args:
        tensors: the input tensors, in order.
        keys: the dict keys they were given under, or ``None`` for a list.

    Returns:
        One unique name per input.

    Raises:
        ValueError: two inputs of a list share a ``gm.Input`` name.

    Example:
        >>> input_names([Input((2,), name="a"), Input((3,))], None)  # doctest: +SKIP
        ['a', 'input_1']
    """
    if keys is not None:
        return list(keys)
    if len(tensors) == 1:
        return [tensors[0].name or "input"]
    names = [t.name or f"input_{index}" for index, t in enumerate(tensors)]
    _check_unique(names, "inputs", "gm.Input(..., name=...)")
    return names


def output_names(
    tensors: Sequence[SymbolicTensor],
    keys: Sequence[str] | None,
    inputs: Sequence[SymbolicTensor],
    names_of_inputs: Sequence[str],
) -> list[str]:
    """The names of a model's outputs: dict keys, else the producing layers' names.

    Args:
        tensors: the output tensors, in order (their layers already named).
        keys: the dict keys they were given under, or ``None`` for a list.
        inputs: the model's input tensors (an output may be one of them).
        names_of_inputs: the inputs' names.

    Returns:
        One unique name per output.

    Raises:
        ValueError: two outputs of a list come from the same layer.

    Example:
        >>> output_names([head], None, [x], ["input"])  # doctest: +SKIP
        ['dense_1']
    """
    if keys is not None:
        return list(keys)
    by_input = {id(t): name for t, name in zip(inputs, names_of_inputs)}
    names = []
    for tensor in tensors:
        producer = tensor.producer
        if producer is None:
            names.append(by_input[id(tensor)])
        else:
            names.append(producer.layer.output_name(tensor.output_index))
    _check_unique(names, "outputs", "a dict of outputs")
    return names


def _check_unique(names: Sequence[str], what: str, remedy: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"the model {what} need distinct names, but {repeated} name more than one of "
            f"them ({list(names)}); name them with {remedy}"
        )


@dataclass(frozen=True)
class Signature:
    """The names, order and sample shapes of a model's inputs or of its outputs.

    Attributes:
        role: ``"input"`` or ``"output"``.
        names: one name per tensor, in the model's order.
        sample_shapes: each tensor's shape without the batch dimension.
        keyed: the model was given these tensors as a dict, so it returns (outputs) a
            dict keyed by name.
        dtypes: each tensor's element type (``"float32"``, ``"int32"`` for token ids).

    Example:
        >>> model.input_signature.names  # doctest: +SKIP
        ('image', 'meta')
    """

    role: str
    names: tuple[str, ...]
    sample_shapes: tuple[tuple[int, ...], ...]
    keyed: bool
    dtypes: tuple[str, ...] = ()

    def dtype(self, index: int) -> str:
        """The element type of tensor ``index`` (``"float32"`` unless given)."""
        return self.dtypes[index] if self.dtypes else "float32"

    @property
    def structured(self) -> bool:
        """Whether values go in and out as a list or dict (several tensors, or a dict)."""
        return self.keyed or len(self.names) > 1

    def label(self, argument: str, index: int) -> str:
        """How messages name value ``index`` of ``argument``: ``x['image']``, or ``x``.

        Example:
            >>> model.input_signature.label("x", 1)  # doctest: +SKIP
            "x['meta']"
        """
        return f"{argument}[{self.names[index]!r}]" if self.structured else argument

    def arrange(self, value: Any, argument: str) -> list[Any]:
        """A user's values in the model's order: ``[value]`` for an unstructured model, else
        the list's items or the dict's values by name.

        Args:
            value: one value per tensor: a list or tuple in order, or a dict by name (a
                lone keyed tensor also takes its value bare).
            argument: the argument's name for messages (``"x"``, ``"y"``, ``"loss"``).

        Returns:
            The values, one per tensor, in order.

        Raises:
            TypeError: ``value`` is neither a list, a tuple nor a dict.
            ValueError: a list of the wrong length, or a dict with missing or unknown keys
                (every one is named, with the model's names).

        Example:
            >>> model.input_signature.arrange({"meta": m, "image": i}, "x")  # doctest: +SKIP
            [i, m]
        """
        if not self.structured:
            return [value]
        names = list(self.names)
        if isinstance(value, Mapping):
            missing = [name for name in names if name not in value]
            unknown = [key for key in value if key not in self.names]
            if missing or unknown:
                parts = []
                if missing:
                    parts.append(f"no entry for the {self.role}(s) {missing}")
                if unknown:
                    parts.append(f"the key(s) {unknown!r}, which name no {self.role}")
                raise ValueError(
                    f"{argument} has {' and '.join(parts)}; the model's {self.role}s are {names}"
                )
            return [value[name] for name in names]
        if isinstance(value, (list, tuple)):
            if len(value) != len(names):
                raise ValueError(
                    f"{argument} must hold one value per {self.role}: the model has "
                    f"{len(names)} {self.role}(s) {names}, got a {type(value).__name__} of "
                    f"{len(value)}"
                )
            return list(value)
        if len(names) == 1:
            return [value]
        raise TypeError(
            f"{argument} must be a list (in the order {names}) or a dict keyed by {self.role} "
            f"name for a model with {len(names)} {self.role}s, got {type(value).__name__}"
        )

    def pack(self, values: Sequence[Any]) -> Any:
        """Values in the model's order as the model returns them: the value itself for an
        unstructured model, else a dict by name (``keyed``) or a list.

        Example:
            >>> model.output_signature.pack([labels, boxes])  # doctest: +SKIP
            {'label': labels, 'box': boxes}
        """
        if not self.structured:
            return values[0]
        if self.keyed:
            return dict(zip(self.names, values))
        return list(values)

    def describe(self) -> str:
        """The names and sample shapes, e.g. ``image (3, 8, 8), meta (4,)``."""
        return ", ".join(f"{name} {shape}" for name, shape in zip(self.names, self.sample_shapes))
