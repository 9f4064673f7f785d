"""Stochastic gradient descent, as ``torch.optim.SGD``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import _core
from ...graph.composites import const, op
from .base import Optimizer, check_bool, check_real, first_step


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    Matches ``torch.optim.SGD``: ``g += wd * p``; on the first step ``buf = g``, later
    ``buf = momentum * buf + (1 - dampening) * g``; ``g = g + momentum * buf`` (Nesterov)
    or ``buf``; ``p -= lr * g``.

    Args:
        lr: learning rate (>= 0).
        momentum: momentum factor in ``[0, 1)``.
        dampening: dampening of the momentum in ``[0, 1]``.
        weight_decay: L2 penalty (>= 0).
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.SGD(lr=0.1, momentum=0.9, dampening=0.1)
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        param_groups: Any = None,
    ):
        super().__init__(
            lr,
            clip_grad_norm=clip_grad_norm,
            clip_grad_value=clip_grad_value,
            param_groups=param_groups,
        )
        self.momentum = check_real("momentum", momentum, 0.0, 1.0, high_open=True)
        self.dampening = check_real("dampening", dampening, 0.0, 1.0)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.nesterov = check_bool("nesterov", nesterov)
        self.maximize = check_bool("maximize", maximize)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError(
                "Nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={self.momentum}, dampening={self.dampening}"
            )

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum > 0.0 else ()

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        # torch copies the first gradient into the buffer, undamped; later steps scale it by
        # (1 - dampening). From a zero buffer, a per-step scalar factor gives both.
        grad_scale = None
        if self.momentum > 0.0 and self.dampening != 0.0:
            grad_scale = op(
                g,
                "select",
                first_step(g, step_node),
                const(g, 1.0),
                const(g, 1.0 - self.dampening),
            )
        assigns: list[int] = []
        for name, param in params.items():
            grad = self._gradient(g, param, grads[name], self.weight_decay)
            if self.momentum > 0.0:
                buffer = self._slot(g, name, param, "momentum_buffer")
                incoming = grad if grad_scale is None else op(g, "mul", grad, grad_scale)
                new_buffer = op(g, "add", op(g, "mul", buffer, const(g, self.momentum)), incoming)
                assigns.append(op(g, "assign", buffer, new_buffer))
                if self.nesterov:
                    grad = op(g, "add", grad, op(g, "mul", new_buffer, const(g, self.momentum)))
                else:
                    grad = new_buffer
            new_param = op(g, "sub", param, op(g, "mul", grad, lr_node))
            assigns.append(op(g, "assign", param, new_param))
        return assigns
