"""RMSprop, Adagrad and Adadelta, as ``torch.optim``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import _core
from ...graph.composites import const, op
from .base import Optimizer, check_bool, check_real, first_step


def _running_square(g: _core.Graph, avg: int, grad: int, decay: float) -> int:
    """``decay * avg + (1 - decay) * grad^2`` (torch: ``mul_(decay).addcmul_(g, g, 1 - decay)``)."""
    return op(
        g,
        "add",
        op(g, "mul", avg, const(g, decay)),
        op(g, "mul", op(g, "square", grad), const(g, 1.0 - decay)),
    )


class RMSprop(Optimizer):
    """RMSprop, matching ``torch.optim.RMSprop``.

    With ``g += wd * p``: ``v = alpha v + (1 - alpha) g^2``; centered: ``a = alpha a +
    (1 - alpha) g`` and ``avg = sqrt(v - a^2) + eps``, else ``avg = sqrt(v) + eps``;
    with momentum ``buf = momentum buf + g / avg`` and ``p -= lr buf``, else
    ``p -= lr g / avg``.

    Args:
        lr: learning rate (>= 0).
        alpha: smoothing constant of the squared-gradient average, in ``[0, 1]``.
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty (>= 0).
        momentum: momentum factor in ``[0, 1)``.
        centered: normalize by the estimated variance of the gradient instead of its
            second moment.
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.RMSprop(lr=1e-2, momentum=0.9, centered=True)
    """

    name = "rmsprop"

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
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
        self.alpha = check_real("alpha", alpha, 0.0, 1.0)
        self.eps = check_real("eps", eps)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0, high_open=True)
        self.centered = check_bool("centered", centered)
        self.maximize = check_bool("maximize", maximize)

    @property
    def slot_names(self) -> tuple[str, ...]:
        names = ("square_avg",)
        if self.momentum > 0.0:
            names += ("momentum_buffer",)
        if self.centered:
            names += ("grad_avg",)
        return names

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        effects: list[int] = []
        for name, param in params.items():
            grad = self._gradient(g, param, grads[name], self.weight_decay)
            square_avg = self._slot(g, name, param, "square_avg")
            new_square_avg = _running_square(g, square_avg, grad, self.alpha)
            effects.append(op(g, "assign", square_avg, new_square_avg))
            if self.centered:
                grad_avg = self._slot(g, name, param, "grad_avg")
                # torch: grad_avg.lerp_(grad, 1 - alpha)
                step = op(g, "mul", op(g, "sub", grad, grad_avg), const(g, 1.0 - self.alpha))
                new_grad_avg = op(g, "add", grad_avg, step)
                effects.append(op(g, "assign", grad_avg, new_grad_avg))
                variance = op(g, "sub", new_square_avg, op(g, "square", new_grad_avg))
                avg = op(g, "sqrt", variance)
            else:
                avg = op(g, "sqrt", new_square_avg)
            avg = op(g, "add", avg, const(g, self.eps))
            direction = op(g, "div", grad, avg)
            if self.momentum > 0.0:
                buffer = self._slot(g, name, param, "momentum_buffer")
                direction = op(g, "add", op(g, "mul", buffer, const(g, self.momentum)), direction)
                effects.append(op(g, "assign", buffer, direction))
            new_param = op(g, "sub", param, op(g, "mul", direction, lr_node))
            effects.append(op(g, "assign", param, new_param))
        return effects


class Adagrad(Optimizer):
    """Adagrad, matching ``torch.optim.Adagrad``.

    With ``g += wd * p``: ``sum += g^2`` (``sum`` starts at
    ``initial_accumulator_value``); ``clr = lr / (1 + (t - 1) lr_decay)``;
    ``p -= clr g / (sqrt(sum) + eps)``.

    Args:
        lr: learning rate (>= 0).
        lr_decay: learning-rate decay per step (>= 0).
        weight_decay: L2 penalty (>= 0).
        initial_accumulator_value: starting value of the squared-gradient sum (>= 0).
        eps: added to the denominator (>= 0).
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.Adagrad(lr=0.05, initial_accumulator_value=0.1)
    """

    name = "adagrad"

    def __init__(
        self,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
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
        self.lr_decay = check_real("lr_decay", lr_decay)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.initial_accumulator_value = check_real(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.eps = check_real("eps", eps)
        self.maximize = check_bool("maximize", maximize)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("sum",)

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        # The learning rate is a runtime scalar, so the decayed rate is computed in the graph.
        clr = lr_node
        if self.lr_decay != 0.0:
            steps_before = op(g, "sub", step_node, const(g, 1.0))
            divisor = op(
                g, "add", const(g, 1.0), op(g, "mul", steps_before, const(g, self.lr_decay))
            )
            clr = op(g, "div", lr_node, divisor)
        # The slot starts at zero; the initial value joins it on the first step, so the slot
        # holds torch's state_sum from then on.
        offset = None
        if self.initial_accumulator_value != 0.0:
            offset = op(
                g, "mul", first_step(g, step_node), const(g, self.initial_accumulator_value)
            )
        effects: list[int] = []
        for name, param in params.items():
            grad = self._gradient(g, param, grads[name], self.weight_decay)
            state_sum = self._slot(g, name, param, "sum")
            start = state_sum if offset is None else op(g, "add", state_sum, offset)
            new_sum = op(g, "add", start, op(g, "square", grad))
            effects.append(op(g, "assign", state_sum, new_sum))
            std = op(g, "add", op(g, "sqrt", new_sum), const(g, self.eps))
            new_param = op(g, "sub", param, op(g, "mul", clr, op(g, "div", grad, std)))
            effects.append(op(g, "assign", param, new_param))
        return effects


class Adadelta(Optimizer):
    """Adadelta, matching ``torch.optim.Adadelta``.

    With ``g += wd * p``: ``v = rho v + (1 - rho) g^2``;
    ``delta = sqrt(u + eps) / sqrt(v + eps) * g``; ``u = rho u + (1 - rho) delta^2``;
    ``p -= lr delta``.

    Args:
        lr: coefficient that scales delta before it is applied (>= 0).
        rho: decay rate of the running averages, in ``[0, 1]``.
        eps: added inside the square roots (>= 0).
        weight_decay: L2 penalty (>= 0).
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.Adadelta(lr=1.0, rho=0.95)
    """

    name = "adadelta"

    def __init__(
        self,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
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
        self.rho = check_real("rho", rho, 0.0, 1.0)
        self.eps = check_real("eps", eps)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.maximize = check_bool("maximize", maximize)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        eps = const(g, self.eps)
        effects: list[int] = []
        for name, param in params.items():
            grad = self._gradient(g, param, grads[name], self.weight_decay)
            square_avg = self._slot(g, name, param, "square_avg")
            acc_delta = self._slot(g, name, param, "acc_delta")
            new_square_avg = _running_square(g, square_avg, grad, self.rho)
            std = op(g, "sqrt", op(g, "add", new_square_avg, eps))
            rms_delta = op(g, "sqrt", op(g, "add", acc_delta, eps))
            delta = op(g, "mul", op(g, "div", rms_delta, std), grad)
            new_acc_delta = _running_square(g, acc_delta, delta, self.rho)
            new_param = op(g, "sub", param, op(g, "mul", delta, lr_node))
            effects += [
                op(g, "assign", square_avg, new_square_avg),
                op(g, "assign", acc_delta, new_acc_delta),
                op(g, "assign", param, new_param),
            ]
        return effects
