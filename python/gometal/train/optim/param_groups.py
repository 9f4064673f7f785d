"""Parameter groups, as ``torch.optim`` users write them: per-group hyperparameters.

``gm.optim.AdamW(lr=1e-3, weight_decay=0.01, param_groups=[{"params": ["*.bias",
"batch_norm_*"], "weight_decay": 0.0}, {"params": lambda name: name.startswith("dense_0"),
"lr": 1e-4}])``: a group selects weights by their full names (``dense_0.bias``) with
``fnmatch`` patterns or a predicate, and overrides any constructor argument of the
optimizer. Weights no group selects use the optimizer's own arguments. A group's learning
rate keeps its ratio to the optimizer's: a scheduler that sets the trainer's learning rate
scales every group by the same factor, as torch's schedulers scale each group's base rate.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Constructor arguments that apply to all parameters together, never per group.
GLOBAL_ARGUMENTS = ("clip_grad_norm", "clip_grad_value", "param_groups")


@dataclass(frozen=True)
class ParamGroup:
    """One checked parameter group.

    Attributes:
        params: the ``fnmatch`` patterns (a tuple of str) or the predicate that selects
            weights by full name.
        overrides: the constructor arguments the group sets.
    """

    params: tuple[str, ...] | Callable[[str], Any]
    overrides: Mapping[str, Any]

    def selects(self, name: str) -> bool:
        """Whether the weight ``name`` belongs to this group."""
        if callable(self.params):
            return bool(self.params(name))
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.params)

    def to_config(self, index: int) -> dict[str, Any]:
        """The group as JSON data (patterns only: a predicate cannot be stored)."""
        if callable(self.params):
            raise TypeError(
                f"param_groups[{index}] selects weights with a function, which a checkpoint "
                "cannot store; select them with name patterns (e.g. '*.bias') instead"
            )
        return {"params": list(self.params), **self.overrides}


def check_param_groups(groups: Any, arguments: Sequence[str], lr: float) -> tuple[ParamGroup, ...]:
    """Checks ``param_groups`` against the optimizer's constructor arguments.

    Args:
        groups: ``None`` or a list of dicts, each with ``"params"`` (a pattern, a list of
            patterns, or a predicate of the weight name) and overrides of constructor
            arguments.
        arguments: the optimizer's constructor argument names.
        lr: the optimizer's learning rate (a group's lr is kept as a ratio to it).

    Returns:
        The checked groups.

    Raises:
        TypeError: a group is not a dict, or its ``params`` is not patterns or a callable.
        ValueError: a group lacks ``params``, names an argument the optimizer does not
            take (or one that applies to all parameters), or sets an lr while the
            optimizer's lr is 0.

    Example:
        >>> check_param_groups([{"params": "*.bias", "weight_decay": 0.0}], ["lr", "weight_decay"], 1e-3)[0].params
        ('*.bias',)
    """
    if groups is None:
        return ()
    if isinstance(groups, Mapping) or not isinstance(groups, (list, tuple)):
        raise TypeError(f"param_groups must be a list of dicts, got {type(groups).__name__}")
    allowed = [name for name in arguments if name not in GLOBAL_ARGUMENTS]
    checked = []
    for index, group in enumerate(groups):
        where = f"param_groups[{index}]"
        if not isinstance(group, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{where} needs 'params': name patterns or a predicate")
        unknown = [key for key in group if key != "params" and key not in allowed]
        if unknown:
            raise ValueError(
                f"{where} sets {unknown}, which a group cannot set; a group may set {allowed}"
            )
        overrides = {key: value for key, value in group.items() if key != "params"}
        if "lr" in overrides and lr == 0.0 and overrides["lr"] != 0.0:
            raise ValueError(
                f"{where} sets lr={overrides['lr']!r}, but the optimizer's lr is 0: a group's "
                "rate is kept as a ratio to it, so give the optimizer a rate > 0"
            )
        checked.append(ParamGroup(_check_params(group["params"], where), overrides))
    return tuple(checked)


def _check_params(params: Any, where: str) -> tuple[str, ...] | Callable[[str], Any]:
    if callable(params):
        return params
    patterns = [params] if isinstance(params, str) else params
    if (
        not isinstance(patterns, (list, tuple))
        or not patterns
        or not all(isinstance(p, str) and p for p in patterns)
    ):
        raise TypeError(
            f"{where}['params'] must be a name pattern, a non-empty list of them, or a "
            f"function of the weight name, got {params!r}"
        )
    return tuple(patterns)


def assign_groups(groups: Sequence[ParamGroup], names: Sequence[str]) -> list[list[str]]:
    """Each group's weights, in order, then the weights no group selects.

    Args:
        groups: the checked groups.
        names: the trained weights' full names.

    Returns:
        ``len(groups) + 1`` lists of names.

    Raises:
        ValueError: a weight is selected by two groups (as torch refuses a parameter in
            two groups).

    Example:
        >>> assign_groups([ParamGroup(("*.bias",), {})], ["d.weight", "d.bias"])
        [['d.bias'], ['d.weight']]
    """
    assigned: list[list[str]] = [[] for _ in range(len(groups) + 1)]
    for name in names:
        chosen = [index for index, group in enumerate(groups) if group.selects(name)]
        if len(chosen) > 1:
            raise ValueError(
                f"weight {name!r} is selected by param_groups {chosen}; a weight may belong "
                "to one group only"
            )
        assigned[chosen[0] if chosen else len(groups)].append(name)
    return assigned
