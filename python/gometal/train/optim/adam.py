"""Adam, AdamW and NAdam, as ``torch.optim``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ... import _core
from ...graph.composites import const, op
from .base import STATE_PREFIX, Optimizer, check_betas, check_bool, check_real, first_step


def _one_minus_power(g: _core.Graph, base: float, exponent: int) -> int:
    """``1 - base ** exponent`` as a scalar node (the bias corrections)."""
    return op(g, "sub", const(g, 1.0), op(g, "pow", const(g, base), exponent))


def _moments(g: _core.Graph, grad: int, exp_avg: int, exp_avg_sq: int, betas) -> tuple[int, int]:
    """The new first and second moment estimates, in torch's order of operations."""
    beta1, beta2 = betas
    # torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    new_avg = op(
        g, "add", exp_avg, op(g, "mul", op(g, "sub", grad, exp_avg), const(g, 1.0 - beta1))
    )
    new_avg_sq = op(
        g,
        "add",
        op(g, "mul", exp_avg_sq, const(g, beta2)),
        op(g, "mul", op(g, "square", grad), const(g, 1.0 - beta2)),
    )
    return new_avg, new_avg_sq


def _decay_factor(g: _core.Graph, lr_node: int, weight_decay: float) -> int:
    """``1 - lr * weight_decay``: decoupled weight decay multiplies the parameter by it."""
    return op(g, "sub", const(g, 1.0), op(g, "mul", lr_node, const(g, weight_decay)))


_MOMENTS = ("exp_avg", "exp_avg_sq")  # the slots every Adam form keeps per parameter


class Adam(Optimizer):
    """Adam, matching ``torch.optim.Adam``.

    With ``g += wd * p``: ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``v_hat = max(v_hat, v)`` with ``amsgrad``, else ``v``;
    ``p -= lr / (1 - b1^t) * m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps)``.

    Args:
        lr: learning rate (>= 0).
        betas: decay rates of the first and second moment estimates, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        amsgrad: keep the running maximum of the second moment (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.Adam(lr=1e-3, amsgrad=True)
    """

    name = "adam"
    _decoupled: ClassVar[bool] = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
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
        self.betas = check_betas(betas)
        self.eps = check_real("eps", eps)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.amsgrad = check_bool("amsgrad", amsgrad)
        self.maximize = check_bool("maximize", maximize)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        beta1, beta2 = self.betas
        # Bias corrections are shared by every parameter: compute them once per step.
        step_size = op(g, "div", lr_node, _one_minus_power(g, beta1, step_node))
        sqrt_correction2 = op(g, "sqrt", _one_minus_power(g, beta2, step_node))
        decoupled = self._decoupled and self.weight_decay != 0.0
        # ZeRO's shard view (the graph view that collects slot writes) rewrites adam_update
        # knowing only its L2 form: under it the decoupled update is emitted as primitives.
        if not self.amsgrad and decoupled and hasattr(g, "slot_writes"):
            return self._emit_decoupled_primitives(
                g, params, grads, step_size, sqrt_correction2, lr_node
            )
        if not self.amsgrad:
            return self._emit_fused(
                g, params, grads, step_size, sqrt_correction2, lr_node if decoupled else None
            )
        decay = _decay_factor(g, lr_node, self.weight_decay) if decoupled else None
        l2 = 0.0 if self._decoupled else self.weight_decay
        effects: list[int] = []
        for name, param in params.items():
            grad, exp_avg, exp_avg_sq = self._gradient_and_slots(
                g, name, param, grads[name], l2, *_MOMENTS
            )
            new_avg, new_avg_sq = _moments(g, grad, exp_avg, exp_avg_sq, self.betas)
            effects += [op(g, "assign", exp_avg, new_avg), op(g, "assign", exp_avg_sq, new_avg_sq)]
            second = new_avg_sq
            if self.amsgrad:
                max_avg_sq = self._slot(g, name, param, "max_exp_avg_sq")
                second = op(g, "maximum", max_avg_sq, new_avg_sq)
                effects.append(op(g, "assign", max_avg_sq, second))
            denom = op(
                g, "add", op(g, "div", op(g, "sqrt", second), sqrt_correction2), const(g, self.eps)
            )
            start = param if decay is None else op(g, "mul", param, decay)
            new_param = op(g, "sub", start, op(g, "mul", step_size, op(g, "div", new_avg, denom)))
            effects.append(op(g, "assign", param, new_param))
        return effects

    def _emit_fused(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        step_size: int,
        sqrt_correction2: int,
        decay_lr: int | None,
    ) -> list[int]:
        # One fused engine op per parameter reads p, g, m and v once and writes p, m and v
        # once; it adds the L2 term itself, or (given the learning rate) multiplies p by
        # 1 - lr * weight_decay as AdamW does.
        beta1, beta2 = self.betas
        hyper = {"beta1": beta1, "beta2": beta2, "eps": self.eps, "weight_decay": self.weight_decay}
        tail = [] if decay_lr is None else [decay_lr]
        if decay_lr is not None:
            hyper["decoupled_weight_decay"] = True
        updates: list[int] = []
        for name, param in params.items():
            grad, exp_avg, exp_avg_sq = self._gradient_and_slots(
                g, name, param, grads[name], 0.0, *_MOMENTS
            )
            inputs = [param, exp_avg, exp_avg_sq, grad, step_size, sqrt_correction2, *tail]
            updates.append(g.op("adam_update", inputs, hyper))
        return updates

    def _emit_decoupled_primitives(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        step_size: int,
        sqrt_correction2: int,
        lr_node: int,
    ) -> list[int]:
        # adam_update with decoupled_weight_decay, one primitive per operation of its kernel
        # (1 - beta rounded to float32 first), so the bits are the fused update's.
        beta1, beta2 = self.betas
        keep1 = float(np.float32(1.0) - np.float32(beta1))
        keep2 = float(np.float32(1.0) - np.float32(beta2))
        decay = _decay_factor(g, lr_node, self.weight_decay)
        effects: list[int] = []
        for name, param in params.items():
            grad, exp_avg, exp_avg_sq = self._gradient_and_slots(
                g, name, param, grads[name], 0.0, *_MOMENTS
            )
            step = op(g, "mul", const(g, keep1), op(g, "sub", grad, exp_avg))
            new_avg = op(g, "add", exp_avg, step)
            squared = op(g, "mul", op(g, "mul", const(g, keep2), grad), grad)
            new_avg_sq = op(g, "add", op(g, "mul", const(g, beta2), exp_avg_sq), squared)
            denom = op(
                g,
                "add",
                op(g, "div", op(g, "sqrt", new_avg_sq), sqrt_correction2),
                const(g, self.eps),
            )
            update = op(g, "mul", step_size, op(g, "div", new_avg, denom))
            new_param = op(g, "sub", op(g, "mul", param, decay), update)
            effects += [op(g, "assign", exp_avg, new_avg), op(g, "assign", exp_avg_sq, new_avg_sq)]
            effects.append(op(g, "assign", param, new_param))
        return effects


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, matching ``torch.optim.AdamW``.

    Each step first multiplies the parameter by ``1 - lr * weight_decay``, then applies
    Adam's update (without an L2 term in the gradient).

    Args:
        lr: learning rate (>= 0).
        betas: decay rates of the first and second moment estimates, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: decoupled weight decay coefficient (>= 0).
        amsgrad: keep the running maximum of the second moment (AMSGrad).
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.AdamW(lr=1e-3, weight_decay=0.05)
    """

    name = "adamw"
    _decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        param_groups: Any = None,
    ):
        super().__init__(
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            clip_grad_norm=clip_grad_norm,
            clip_grad_value=clip_grad_value,
            param_groups=param_groups,
        )


class NAdam(Optimizer):
    """NAdam (Adam with Nesterov momentum), matching ``torch.optim.NAdam``.

    With ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))`` and the running product
    ``P_t = mu_1 ... mu_t`` (an engine variable, ``optimizer.mu_product``):
    ``m``, ``v`` as Adam; ``denom = sqrt(v / (1 - b2^t)) + eps``;
    ``p -= lr (1 - mu_t) / (1 - P_t) * g / denom + lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / denom``.

    Args:
        lr: learning rate (>= 0).
        betas: decay rates of the first and second moment estimates, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: weight decay (>= 0): an L2 term in the gradient, or decoupled.
        momentum_decay: the momentum schedule's decay ``psi`` (>= 0).
        decoupled_weight_decay: multiply the parameter by ``1 - lr * weight_decay``
            instead of adding an L2 term (NAdamW).
        maximize: maximize the objective instead of minimizing it.
        clip_grad_norm: clip the gradients' global L2 norm to this value (see ``Optimizer``).
        clip_grad_value: clamp each gradient element to ``[-v, v]`` (see ``Optimizer``).

    Example:
        >>> opt = gm.optim.NAdam(lr=2e-3)
    """

    name = "nadam"

    def __init__(
        self,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
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
        self.betas = check_betas(betas)
        self.eps = check_real("eps", eps)
        self.weight_decay = check_real("weight_decay", weight_decay)
        self.momentum_decay = check_real("momentum_decay", momentum_decay)
        self.decoupled_weight_decay = check_bool("decoupled_weight_decay", decoupled_weight_decay)
        self.maximize = check_bool("maximize", maximize)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    @property
    def state_names(self) -> tuple[str, ...]:
        return (STATE_PREFIX + "mu_product",)

    def _mu(self, g: _core.Graph, step: int) -> int:
        beta1 = self.betas[0]
        power = op(g, "pow", const(g, 0.96), op(g, "mul", step, const(g, self.momentum_decay)))
        return op(
            g,
            "mul",
            const(g, beta1),
            op(g, "sub", const(g, 1.0), op(g, "mul", power, const(g, 0.5))),
        )

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        # Scalars shared by all parameters, computed once per step.
        one = const(g, 1.0)
        mu = self._mu(g, step_node)
        mu_next = self._mu(g, op(g, "add", step_node, one))
        # torch starts the product at 1; the engine variable starts at 0, so the first
        # step reads 1 in its place.
        product_var = self._state(g, "mu_product")
        previous = op(g, "select", first_step(g, step_node), one, product_var)
        product = op(g, "mul", previous, mu)
        product_next = op(g, "mul", product, mu_next)
        grad_coef = op(
            g, "div", op(g, "mul", lr_node, op(g, "sub", one, mu)), op(g, "sub", one, product)
        )
        avg_coef = op(g, "div", op(g, "mul", lr_node, mu_next), op(g, "sub", one, product_next))
        correction2 = _one_minus_power(g, self.betas[1], step_node)
        decay = None
        if self.decoupled_weight_decay and self.weight_decay != 0.0:
            decay = _decay_factor(g, lr_node, self.weight_decay)
        l2 = 0.0 if self.decoupled_weight_decay else self.weight_decay

        effects = [op(g, "assign", product_var, product)]
        for name, param in params.items():
            grad, exp_avg, exp_avg_sq = self._gradient_and_slots(
                g, name, param, grads[name], l2, *_MOMENTS
            )
            new_avg, new_avg_sq = _moments(g, grad, exp_avg, exp_avg_sq, self.betas)
            effects += [op(g, "assign", exp_avg, new_avg), op(g, "assign", exp_avg_sq, new_avg_sq)]
            denom = op(
                g, "add", op(g, "sqrt", op(g, "div", new_avg_sq, correction2)), const(g, self.eps)
            )
            start = param if decay is None else op(g, "mul", param, decay)
            # Two steps, gradient term first, as torch's two addcdiv_ calls.
            after_grad = op(g, "sub", start, op(g, "mul", grad_coef, op(g, "div", grad, denom)))
            new_param = op(
                g, "sub", after_grad, op(g, "mul", avg_coef, op(g, "div", new_avg, denom))
            )
            effects.append(op(g, "assign", param, new_param))
        return effects
