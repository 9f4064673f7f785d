"""How a recurrent layer (``recurrent.py``) is called in the functional API: initial states
given by keyword, ``layer(x, initial_state=[h0, c0])``, join the call's inputs in the order
the layer reads them (x, h0, [c0], [lengths or mask])."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tensor import SymbolicTensor, show_dim


def shown(shape: Sequence[int]) -> tuple[Any, ...]:
    """A shape as users see it: None for the batch and the sequence length.

    Example:
        >>> shown((-1, 4))
        (None, 4)
    """
    return tuple(show_dim(d) for d in shape)


def positive_int(value: Any, what: str) -> int:
    """``value`` if it is a positive int, else a ``ValueError`` naming ``what``.

    Example:
        >>> positive_int(3, "LSTM hidden_size")
        3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def state_names(has_cell_state: bool) -> list[str]:
    """The initial states a layer takes: ``["h0", "c0"]`` for an LSTM, else ``["h0"]``.

    Example:
        >>> state_names(True)
        ['h0', 'c0']
    """
    return ["h0", "c0"] if has_cell_state else ["h0"]


def inputs_with_states(
    inputs: SymbolicTensor | Sequence[SymbolicTensor],
    initial_state: SymbolicTensor | Sequence[SymbolicTensor],
    has_cell_state: bool,
    label: str,
) -> list[Any]:
    """A call's inputs with its initial states placed after ``x``.

    Args:
        inputs: ``x``, or ``[x]``, or ``[x, lengths]`` (or a key-padding mask).
        initial_state: ``[h0, c0]`` for an LSTM, ``[h0]`` (or ``h0``) for the others.
        has_cell_state: whether the layer is an LSTM.
        label: the layer as messages name it.

    Returns:
        ``[x, h0, (c0), (lengths)]``.

    Raises:
        ValueError: the wrong number of initial states (both numbers named).

    Example:
        >>> inputs_with_states(x, [h, c], True, "layer 'lstm_1' (LSTM)")  # doctest: +SKIP
        [x, h, c]
    """
    states = [initial_state] if isinstance(initial_state, SymbolicTensor) else initial_state
    if not isinstance(states, (list, tuple)):
        raise TypeError(
            f"{label}: initial_state must be a list of symbolic tensors, got "
            f"{type(initial_state).__name__}"
        )
    wanted = state_names(has_cell_state)
    if len(states) != len(wanted):
        raise ValueError(
            f"{label} takes initial_state as [{', '.join(wanted)}] ({len(wanted)} tensor(s), "
            f"each (N, D*num_layers, width)), got {len(states)}"
        )
    items = [inputs] if isinstance(inputs, SymbolicTensor) else list(inputs)
    if not items:
        raise ValueError(f"{label} needs x before its initial states, got no inputs")
    return [items[0], *states, *items[1:]]
