"""Optimizers whose updates are graph nodes, with ``torch.optim``'s exact formulas.

An optimizer emits, for every parameter, the assign nodes that write the new parameter
and its slots. Slots are engine variables named ``<param>.<slot>`` (e.g.
``dense_0.weight.exp_avg``), zero-initialized by the engine. The learning rate is a
runtime scalar and the step count a persistent variable, so neither recompiles anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any, ClassVar

from . import _core
from ._composites import const, op


def check_learning_rate(lr: Any) -> float:
    """Returns ``lr`` as a float, or raises ``ValueError`` if it is negative or not finite.

    Args:
        lr: the learning rate.

    Returns:
        The learning rate.

    Example:
        >>> check_learning_rate(0.01)
        0.01
    """
    if isinstance(lr, bool) or not isinstance(lr, Real):
        raise TypeError(f"learning rate must be a number, got {lr!r}")
    if not math.isfinite(float(lr)) or lr < 0:
        raise ValueError(f"learning rate must be a finite number >= 0, got {lr}")
    return float(lr)


def _check_range(name: str, value: float, low: float, high: float, high_open: bool = True) -> float:
    value = float(value)
    inside = low <= value < high if high_open else low <= value <= high
    if not inside:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}, got {value}")
    return value


class Optimizer:
    """Base class. Subclasses list their ``slot_names`` and implement ``emit_updates``."""

    name: ClassVar[str] = ""

    def __init__(self, lr: float):
        self.lr = check_learning_rate(lr)

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Per-parameter state, stored as engine variables ``<param>.<slot>``."""
        return ()

    def emit_updates(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        """Appends the update for every parameter; returns the assign node ids.

        Args:
            g: the training graph.
            params: parameter name -> variable node id.
            grads: parameter name -> gradient node id.
            lr_node: the runtime learning-rate scalar.
            step_node: the step number of this update (1 on the first step), float32.

        Returns:
            Assign node ids, to run as effects of the training step.

        Example:
            >>> assigns = Adam(1e-3).emit_updates(g, params, grads, lr, step)  # doctest: +SKIP
        """
        raise NotImplementedError

    def _slot(self, g: _core.Graph, param_name: str, param: int, slot: str) -> int:
        return g.variable(f"{param_name}.{slot}", tuple(g.shape(param)))

    def _decayed_gradient(self, g: _core.Graph, param: int, grad: int, weight_decay: float) -> int:
        # L2 penalty folded into the gradient, as torch.optim does (not decoupled AdamW).
        if weight_decay == 0.0:
            return grad
        return op(g, "add", grad, op(g, "mul", param, const(g, weight_decay)))


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and weight decay.

    Matches ``torch.optim.SGD`` with ``dampening=0``: ``g += wd * p``;
    ``buf = momentum * buf + g``; ``g = g + momentum * buf`` (Nesterov) or ``buf``;
    ``p -= lr * g``. Torch sets ``buf = g`` on the first step, which equals this update
    from a zero-initialized buffer.

    Args:
        lr: learning rate (>= 0).
        momentum: momentum factor in ``[0, 1)``.
        nesterov: use Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty (>= 0).

    Example:
        >>> opt = gm.optim.SGD(lr=0.1, momentum=0.9)
    """

    name = "sgd"

    def __init__(
        self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ):
        super().__init__(lr)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0, math.inf)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("Nesterov momentum requires momentum > 0")

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum > 0.0 else ()

    def emit_updates(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        assigns: list[int] = []
        for name, param in params.items():
            grad = self._decayed_gradient(g, param, grads[name], self.weight_decay)
            if self.momentum > 0.0:
                buffer = self._slot(g, name, param, "momentum_buffer")
                new_buffer = op(g, "add", op(g, "mul", buffer, const(g, self.momentum)), grad)
                assigns.append(op(g, "assign", buffer, new_buffer))
                if self.nesterov:
                    grad = op(g, "add", grad, op(g, "mul", new_buffer, const(g, self.momentum)))
                else:
                    grad = new_buffer
            new_param = op(g, "sub", param, op(g, "mul", grad, lr_node))
            assigns.append(op(g, "assign", param, new_param))
        return assigns

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, nesterov={self.nesterov}, "
            f"weight_decay={self.weight_decay:g})"
        )


class Adam(Optimizer):
    """Adam, matching ``torch.optim.Adam`` (``amsgrad=False``).

    With ``g += wd * p``: ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``denom = sqrt(v) / sqrt(1 - b2^t) + eps``; ``p -= lr / (1 - b1^t) * m / denom``.

    Args:
        lr: learning rate (>= 0).
        betas: decay rates of the first and second moment estimates, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).

    Example:
        >>> opt = gm.optim.Adam(lr=1e-3)
    """

    name = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(lr)
        beta1, beta2 = betas
        self.betas = (
            _check_range("betas[0]", beta1, 0.0, 1.0),
            _check_range("betas[1]", beta2, 0.0, 1.0),
        )
        self.eps = _check_range("eps", eps, 0.0, math.inf)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0, math.inf)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def emit_updates(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        beta1, beta2 = self.betas
        # Bias corrections are shared by every parameter: compute them once per step.
        correction1 = op(g, "sub", const(g, 1.0), op(g, "pow", const(g, beta1), step_node))
        correction2 = op(g, "sub", const(g, 1.0), op(g, "pow", const(g, beta2), step_node))
        step_size = op(g, "div", lr_node, correction1)
        sqrt_correction2 = op(g, "sqrt", correction2)
        # One fused engine op per parameter reads p, g, m and v once and writes p, m and v
        # once; the same update composed of elementwise primitives makes ~13 passes.
        hyper = {"beta1": beta1, "beta2": beta2, "eps": self.eps, "weight_decay": self.weight_decay}
        updates: list[int] = []
        for name, param in params.items():
            exp_avg = self._slot(g, name, param, "exp_avg")
            exp_avg_sq = self._slot(g, name, param, "exp_avg_sq")
            inputs = [param, exp_avg, exp_avg_sq, grads[name], step_size, sqrt_correction2]
            updates.append(g.op("adam_update", inputs, hyper))
        return updates

    def __repr__(self) -> str:
        return (
            f"Adam(lr={self.lr:g}, betas=({self.betas[0]:g}, {self.betas[1]:g}), eps={self.eps:g}, "
            f"weight_decay={self.weight_decay:g})"
        )


_BY_NAME: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}
_DEFAULT_ARGS: dict[str, dict[str, Any]] = {"sgd": {"lr": 0.01}, "adam": {}}


def get(identifier: Any) -> Optimizer:
    """Resolves an optimizer name or object.

    Args:
        identifier: an ``Optimizer`` instance, ``"sgd"`` (lr 0.01) or ``"adam"`` (lr 1e-3).

    Returns:
        The optimizer.

    Raises:
        ValueError: for an unknown name, listing the valid ones.

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
        return _BY_NAME[key](**_DEFAULT_ARGS[key])
    raise TypeError(
        f"optimizer must be a name or a gm.optim.Optimizer instance, got {identifier!r}"
    )
