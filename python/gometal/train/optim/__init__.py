"""Optimizers with ``torch.optim``'s names, defaults and exact formulas.

Every optimizer but L-BFGS is a set of graph nodes: its update runs inside the compiled
training step, its per-parameter slots are engine variables named ``<param>.<slot>``,
and the learning rate is a runtime scalar (a scheduler changes it without recompiling).
Each also clips gradients in the graph when asked (``clip_grad_norm``,
``clip_grad_value``). L-BFGS is the one host-driven optimizer: it evaluates the loss
several times per batch and runs its recursion and line search in NumPy.

Example:
    >>> opt = gm.optim.AdamW(lr=1e-3, weight_decay=0.01, clip_grad_norm=1.0)
    >>> gm.optim.from_config(opt.get_config()).clip_grad_norm
    1.0
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from .adam import Adam, AdamW, NAdam
from .adaptive import Adadelta, Adagrad, RMSprop
from .base import STATE_PREFIX, Optimizer, check_learning_rate
from .clipping import clip_by_global_norm, clip_by_value, clip_gradients, global_norm
from .lbfgs import HOST_GRADIENT_FUNCTION, LBFGS, LBFGSRunner
from .sgd import SGD

__all__ = [
    "HOST_GRADIENT_FUNCTION",
    "LBFGS",
    "SGD",
    "STATE_PREFIX",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "LBFGSRunner",
    "NAdam",
    "Optimizer",
    "RMSprop",
    "ZeroRedundancyOptimizer",
    "available",
    "check_learning_rate",
    "clip_by_global_norm",
    "clip_by_value",
    "clip_gradients",
    "from_config",
    "get",
    "global_norm",
]

_CLASSES: tuple[type[Optimizer], ...] = (
    SGD,
    Adam,
    AdamW,
    RMSprop,
    Adagrad,
    Adadelta,
    NAdam,
    LBFGS,
)
_BY_NAME: dict[str, type[Optimizer]] = {cls.name: cls for cls in _CLASSES}
_BY_CLASS_NAME: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in _CLASSES}
# torch.optim's defaults, except that SGD by name keeps gometal's historical lr of 0.01.
_DEFAULT_ARGS: dict[str, dict[str, Any]] = {"sgd": {"lr": 0.01}}


def available() -> list[str]:
    """The optimizer names ``get`` accepts.

    Returns:
        Lower-case names, e.g. ``["sgd", "adam", ...]``.

    Example:
        >>> "adamw" in gm.optim.available()
        True
    """
    return list(_BY_NAME)


def get(identifier: Any) -> Optimizer:
    """Resolves an optimizer name or object.

    Args:
        identifier: an ``Optimizer`` instance or a name from ``available()``: ``"sgd"``
            (lr 0.01), or ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``,
            ``"adadelta"``, ``"nadam"``, ``"lbfgs"`` with torch.optim's defaults.

    Returns:
        The optimizer.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
        TypeError: for anything else.

    Example:
        >>> get("adam").lr
        0.001
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(
                f"unknown optimizer {identifier!r}; valid optimizers: {', '.join(_BY_NAME)}"
            )
        return _BY_NAME[key](**_DEFAULT_ARGS.get(key, {}))
    raise TypeError(
        f"optimizer must be a name or a gm.optim.Optimizer instance, got {identifier!r}"
    )


def from_config(config: Mapping[str, Any]) -> Optimizer:
    """Rebuilds an optimizer from ``Optimizer.get_config()``'s output.

    Args:
        config: ``{"class_name": "Adam", "config": {constructor arguments}}``.

    Returns:
        A new optimizer with those arguments.

    Raises:
        TypeError: if ``config`` is not a mapping of that form.
        ValueError: for an unknown class name or constructor argument.

    Example:
        >>> opt = gm.optim.from_config({"class_name": "SGD", "config": {"lr": 0.1}})
        >>> opt.lr
        0.1
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("config"), Mapping):
        raise TypeError(
            f"config must be a mapping {{'class_name': str, 'config': mapping}}, got {config!r}"
        )
    class_name = config.get("class_name")
    if class_name == "ZeroRedundancyOptimizer":
        inner = config["config"].get("optimizer")
        if set(config["config"]) != {"optimizer"} or not isinstance(inner, Mapping):
            raise ValueError(
                "ZeroRedundancyOptimizer's config must be {'optimizer': <an optimizer's "
                f"config>}}, got {dict(config['config'])!r}"
            )
        return _zero_redundancy_optimizer()(from_config(inner))
    if class_name not in _BY_CLASS_NAME:
        raise ValueError(
            f"unknown optimizer class_name {class_name!r}; valid: {', '.join(_BY_CLASS_NAME)}"
        )
    cls = _BY_CLASS_NAME[class_name]
    arguments = dict(config["config"])
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise ValueError(
            f"{class_name} has no argument(s) {unknown}; valid: {', '.join(sorted(accepted))}"
        )
    return cls(**arguments)


def __getattr__(name: str) -> Any:
    # ZeRO-1's wrapper builds on the data-parallel step, which imports this package.
    if name == "ZeroRedundancyOptimizer":
        return _zero_redundancy_optimizer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _zero_redundancy_optimizer() -> type[Optimizer]:
    from ..zero_sharding import ZeroRedundancyOptimizer

    return ZeroRedundancyOptimizer
