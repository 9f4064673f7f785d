"""The optimizer base class, argument checks, and the graph helpers every update shares.

An optimizer emits, for every parameter, the effect nodes that write the new parameter
and its slots. Slots are engine variables named ``<param>.<slot>`` (e.g.
``dense_0.weight.exp_avg``), zero-initialized by the engine; state shared by all
parameters is named ``optimizer.<name>``. The learning rate is a runtime scalar and the
step count a persistent variable, so neither recompiles anything.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, ClassVar

from ... import _core
from ...graph.composites import const, op
from .clipping import clip_gradients
from .param_groups import ParamGroup, assign_groups, check_param_groups

# Optimizer-wide engine variables share this prefix; layer names may not use it.
STATE_PREFIX = "optimizer."


def check_learning_rate(lr: Any) -> float:
    """Returns ``lr`` as a float, or raises ``ValueError`` if it is negative or not finite.

    Args:
        lr: the learning rate.

    Returns:
        The learning rate.

    Raises:
        TypeError: if ``lr`` is not a real number.
        ValueError: if ``lr`` is negative, NaN or infinite.

    Example:
        >>> check_learning_rate(0.01)
        0.01
    """
    if isinstance(lr, bool) or not isinstance(lr, Real):
        raise TypeError(f"learning rate must be a number, got {lr!r}")
    if not math.isfinite(float(lr)) or lr < 0:
        raise ValueError(f"learning rate must be a finite number >= 0, got {lr}")
    return float(lr)


def check_real(
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    *,
    high_open: bool = False,
    low_open: bool = False,
) -> float:
    """Returns ``value`` as a float inside the interval, or raises naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    if not (above and below and math.isfinite(value)):
        opening = "(" if low_open else "["
        closing = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be in {opening}{low:g}, {high:g}{closing}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Returns ``value`` if it is a bool, or raises ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value: Any, low: int) -> int:
    """Returns ``value`` as an int ``>= low``, or raises naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def check_betas(value: Any) -> tuple[float, float]:
    """Returns ``(beta1, beta2)``, each in ``[0, 1)``, or raises naming ``betas``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}")
    return (
        check_real("betas[0]", value[0], 0.0, 1.0, high_open=True),
        check_real("betas[1]", value[1], 0.0, 1.0, high_open=True),
    )


def _check_clip(name: str, value: Any) -> float | None:
    if value is None:
        return None
    return check_real(name, value, 0.0, math.inf, low_open=True)


class Optimizer:
    """Base class of every optimizer.

    A subclass lists its ``slot_names`` and implements ``_emit`` (the update of each
    parameter from its already clipped gradient). Clipping, the configuration
    (``get_config``) and ``repr`` come from here. The configuration is read back from
    attributes named like the constructor's arguments.

    Args:
        lr: learning rate (finite, >= 0): the initial value of the trainer's runtime
            learning-rate scalar.
        clip_grad_norm: if set, scale all gradients together so that their global L2 norm
            is at most this value (``torch.nn.utils.clip_grad_norm_``), before the update.
        clip_grad_value: if set, clamp every gradient element to
            ``[-clip_grad_value, clip_grad_value]`` (``torch.nn.utils.clip_grad_value_``),
            after norm clipping when both are set.
        param_groups: per-group hyperparameters, as torch's parameter groups: a list of
            dicts, each with ``"params"`` (``fnmatch`` patterns of full weight names such
            as ``"*.bias"``, or a predicate of the name) and the constructor arguments it
            overrides (``"lr"``, ``"weight_decay"``, ...). Weights no group selects use
            this optimizer's arguments; a group's lr keeps its ratio to ``lr`` when a
            scheduler changes the rate (see ``gometal.train.optim.param_groups``).

    Example:
        >>> opt = gm.optim.SGD(lr=0.1, clip_grad_norm=1.0)
        >>> opt.get_config()["class_name"]
        'SGD'
    """

    name: ClassVar[str] = ""
    # True for an optimizer the trainer drives from the host (L-BFGS) instead of a
    # graph update: see ``gometal.optim.LBFGS``.
    host_driven: ClassVar[bool] = False

    def __init__(
        self,
        lr: float,
        *,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        param_groups: Any = None,
    ):
        self.lr = check_learning_rate(lr)
        self.clip_grad_norm = _check_clip("clip_grad_norm", clip_grad_norm)
        self.clip_grad_value = _check_clip("clip_grad_value", clip_grad_value)
        self._groups = check_param_groups(param_groups, self._argument_names(), self.lr)
        self._group_optimizers: list[Optimizer] = []
        # Optimizer-wide state of a group is kept apart from the default group's.
        self._state_suffix = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Each group's optimizer is this class built with the group's arguments, so its
        # constructor checks them; that needs every attribute set, i.e. the outermost
        # __init__ finished.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def initialize(self: Optimizer, *args: Any, **kw: Any) -> None:
            depth = self.__dict__.get("_init_depth", 0)
            self.__dict__["_init_depth"] = depth + 1
            try:
                init(self, *args, **kw)
            finally:
                self.__dict__["_init_depth"] = depth
            if depth == 0:
                self._group_optimizers = [self._group_optimizer(g) for g in self._groups]

        cls.__init__ = initialize  # type: ignore[method-assign]

    @classmethod
    def _argument_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    @property
    def param_groups(self) -> list[dict[str, Any]] | None:
        """The parameter groups as given (patterns or predicates and overrides)."""
        if not self._groups:
            return None
        return [
            {"params": g.params if callable(g.params) else list(g.params), **g.overrides}
            for g in self._groups
        ]

    def _group_optimizer(self, group: ParamGroup) -> Optimizer:
        arguments = {name: getattr(self, name) for name in self._argument_names()}
        arguments.update(group.overrides, param_groups=None)
        arguments.update(clip_grad_norm=None, clip_grad_value=None)
        try:
            return type(self)(**arguments)
        except (TypeError, ValueError) as err:
            index = self._groups.index(group)
            raise type(err)(f"param_groups[{index}]: {err}") from None

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Per-parameter state, stored as engine variables ``<param>.<slot>``."""
        return ()

    @property
    def state_names(self) -> tuple[str, ...]:
        """Engine variables shared by all parameters (besides the trainer's step count)."""
        return ()

    def emit_updates(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
        step_offsets: Mapping[str, float] | None = None,
    ) -> list[int]:
        """Appends the clipping and the update of every parameter; returns the effect ids.

        Args:
            g: the training graph.
            params: parameter name -> variable node id.
            grads: parameter name -> gradient node id.
            lr_node: the runtime learning-rate scalar.
            step_node: the step number of this update (1 on the first step), float32.
            step_offsets: steps a parameter sat out (frozen), by name: its own step
                number is ``step - offset``, as torch counts a parameter's steps only
                while it has a gradient (Adam's bias corrections, first-step rules).

        Returns:
            Effect node ids (assigns, fused updates), to run as effects of the step.

        Example:
            >>> effects = Adam(1e-3).emit_updates(g, params, grads, lr, step)  # doctest: +SKIP
        """
        missing = [name for name in params if name not in grads]
        if missing:
            raise ValueError(f"no gradient given for parameters {missing}")
        grads = clip_gradients(
            g, {name: grads[name] for name in params}, self.clip_grad_norm, self.clip_grad_value
        )
        offsets = step_offsets or {}
        assigned = assign_groups(self._groups, list(params)) if self._groups else [list(params)]
        effects: list[int] = []
        for index, names in enumerate(assigned):
            optimizer, lr = self, lr_node
            if index < len(self._groups):
                optimizer = self._group_optimizers[index]
                if optimizer.lr != self.lr:
                    lr = op(g, "mul", lr_node, const(g, optimizer.lr / self.lr))
            # Parameters with the same step number share one update emission (and its
            # optimizer-wide state).
            by_offset: dict[float, list[str]] = {}
            for name in names:
                by_offset.setdefault(float(offsets.get(name, 0.0)), []).append(name)
            for offset, members in by_offset.items():
                suffix = f".group{index}" if index < len(self._groups) else ""
                optimizer._state_suffix = suffix + (f".offset{offset:g}" if offset else "")
                step = step_node if not offset else op(g, "sub", step_node, const(g, offset))
                effects += optimizer._emit(
                    g, {n: params[n] for n in members}, {n: grads[n] for n in members}, lr, step
                )
        self._state_suffix = ""
        return effects

    def _emit(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
    ) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} does not emit graph updates")

    # -- helpers for subclasses ------------------------------------------------------------
    def _slot(self, g: _core.Graph, param_name: str, param: int, slot: str) -> int:
        return g.variable(f"{param_name}.{slot}", tuple(g.shape(param)))

    def _state(self, g: _core.Graph, name: str) -> int:
        return g.variable(STATE_PREFIX + name + self._state_suffix, ())

    def _gradient(self, g: _core.Graph, param: int, grad: int, weight_decay: float) -> int:
        # maximize flips the sign first, then the L2 penalty joins the gradient, both as
        # torch.optim does (decoupled decay, as in AdamW, is applied to the parameter).
        if getattr(self, "maximize", False):
            grad = op(g, "neg", grad)
        if weight_decay == 0.0:
            return grad
        return op(g, "add", grad, op(g, "mul", param, const(g, weight_decay)))

    def _gradient_and_slots(
        self, g: _core.Graph, name: str, param: int, grad: int, weight_decay: float, *slots: str
    ) -> tuple[int, ...]:
        # The gradient as _gradient gives it, then each named slot of the parameter.
        gradient = self._gradient(g, param, grad, weight_decay)
        return (gradient, *(self._slot(g, name, param, slot) for slot in slots))

    # -- configuration ---------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Returns the class name and constructor arguments, JSON-serializable.

        Returns:
            ``{"class_name": "Adam", "config": {"lr": 0.001, "betas": [0.9, 0.999], ...}}``;
            ``gm.optim.from_config`` rebuilds the optimizer from it.

        Example:
            >>> gm.optim.SGD(lr=0.1).get_config()["config"]["lr"]
            0.1
        """
        config: dict[str, Any] = {}
        for name in self._argument_names():
            if name == "param_groups":
                if self._groups:
                    config[name] = [g.to_config(i) for i, g in enumerate(self._groups)]
                continue
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return {"class_name": type(self).__name__, "config": config}

    def __repr__(self) -> str:
        config = {n: getattr(self, n) for n in self._argument_names() if n != "param_groups"}
        if self._groups:
            config["param_groups"] = self.param_groups
        args = ", ".join(f"{key}={value!r}" for key, value in config.items())
        return f"{type(self).__name__}({args})"


def first_step(g: _core.Graph, step_node: int) -> int:
    """A float32 scalar node: 1 on the optimizer's first step, else 0.

    torch.optim initializes some state from the first gradient (SGD's momentum buffer)
    or to a non-zero value (Adagrad's sum, NAdam's mu product); engine slots start at
    zero, so those updates read this flag.
    """
    return op(g, "equal", step_node, const(g, 1.0))
