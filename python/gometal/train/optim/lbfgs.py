"""L-BFGS, as ``torch.optim.LBFGS``: the one optimizer driven from the host.

One L-BFGS step evaluates the loss and gradients several times (up to ``max_iter``
iterations and a line search each), with decisions that depend on the values, so it
cannot be one graph update. The trainer compiles an extra engine function that returns
the loss and every gradient without updating anything; this module runs the two-loop
recursion and the line search in NumPy (float32 vectors, as torch) and writes the
parameters back into the engine.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import _core
from .base import Optimizer, check_int, check_learning_rate, check_real
from .line_search import strong_wolfe

# The engine function a host-driven optimizer calls: (x, y) -> (loss, accuracy, *grads)
# (for several outputs: inputs, targets -> total, losses, accuracies, *grads).
HOST_GRADIENT_FUNCTION = "loss_and_gradients"
LINE_SEARCHES = (None, "strong_wolfe")
# torch.optim.LBFGS skips a curvature pair with y.s at or below this.
_MIN_CURVATURE = 1e-10


def _scale(vector: np.ndarray, factor: float) -> np.ndarray:
    """``factor * vector`` in the vector's precision (float32 from the engine, as torch)."""
    return vector * vector.dtype.type(factor)


class _EngineObjective:
    """The loss and gradient of one batch, as functions of all parameters as one vector."""

    def __init__(self, engine: Any, names: Sequence[str], inputs: Sequence[np.ndarray]):
        self.engine, self.names, self.inputs = engine, list(names), list(inputs)
        self.shapes = [tuple(np.shape(engine.get_variable(name))) for name in self.names]
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]

    def parameters(self) -> np.ndarray:
        values = [np.asarray(self.engine.get_variable(name)) for name in self.names]
        return np.concatenate([value.ravel() for value in values])

    def set_parameters(self, flat: np.ndarray) -> None:
        offset = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            self.engine.set_variable(name, flat[offset : offset + size].reshape(shape))
            offset += size

    def evaluate(self) -> tuple[float, list[Any], np.ndarray]:
        # What precedes the gradients (the loss, accuracy outputs, per-output losses) is
        # passed on as the engine gave it: the trainer interprets it.
        values = self.engine.run(HOST_GRADIENT_FUNCTION, self.inputs)
        reported, grads = values[: -len(self.names)], values[-len(self.names) :]
        flat = np.concatenate([np.asarray(grad).ravel() for grad in grads])
        return float(reported[0]), list(reported), flat


@dataclass
class _Memory:
    """What L-BFGS keeps between steps (torch keeps the same in its ``state``)."""

    iterations: int = 0
    evaluations: int = 0
    direction: np.ndarray | None = None
    step: float = 0.0
    steps: list[np.ndarray] = field(default_factory=list)  # s_k = x_{k+1} - x_k
    grad_changes: list[np.ndarray] = field(default_factory=list)  # y_k = g_{k+1} - g_k
    inverse_curvatures: list[float] = field(default_factory=list)  # 1 / (y_k . s_k)
    hessian_scale: float = 1.0
    previous_grad: np.ndarray | None = None
    previous_loss: float | None = None


class LBFGS(Optimizer):
    """L-BFGS, matching ``torch.optim.LBFGS``; the one optimizer driven from the host.

    Each ``trainer.train_batch(x, y)`` performs what one ``optimizer.step(closure)``
    does in torch: up to ``max_iter`` iterations on that batch, each with a direction
    from the two-loop recursion over the last ``history_size`` curvature pairs and a step
    of ``lr`` (the first iteration ever: ``min(1, 1 / |g|_1) * lr``), or a strong-Wolfe
    line search. Every loss and gradient evaluation is one engine call (the trainer's
    ``loss_and_gradients`` function); the direction and line search run in NumPy. The
    reported loss and accuracy are those of the first evaluation, before the step.
    Gradient clipping does not apply (it would break the line search's model of the loss).

    Args:
        lr: learning rate (>= 0); ``trainer.set_learning_rate`` changes it between steps.
        max_iter: the most iterations per step (>= 1).
        max_eval: the most loss evaluations per step (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when the largest gradient element is at most this (>= 0).
        tolerance_change: stop when the loss or the parameters change less (>= 0).
        history_size: how many curvature pairs to keep (>= 1).
        line_search_fn: ``None`` (fixed step ``lr``) or ``"strong_wolfe"``.

    Example:
        >>> opt = gm.optim.LBFGS(lr=1, history_size=10, line_search_fn="strong_wolfe")
        >>> trainer = gm.Trainer(model, loss="mse", optimizer=opt)  # doctest: +SKIP
    """

    name = "lbfgs"
    host_driven = True

    def __init__(
        self,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ):
        super().__init__(lr)
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.max_eval = (
            self.max_iter * 5 // 4 if max_eval is None else check_int("max_eval", max_eval, 1)
        )
        self.tolerance_grad = check_real("tolerance_grad", tolerance_grad)
        self.tolerance_change = check_real("tolerance_change", tolerance_change)
        self.history_size = check_int("history_size", history_size, 1)
        if line_search_fn not in LINE_SEARCHES:
            raise ValueError(
                f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}"
            )
        self.line_search_fn = line_search_fn

    def emit_updates(
        self,
        g: _core.Graph,
        params: Mapping[str, int],
        grads: Mapping[str, int],
        lr_node: int,
        step_node: int,
        step_offsets: Mapping[str, float] | None = None,
    ) -> list[int]:
        """Emits nothing: L-BFGS updates the parameters from the host (see ``bind``).

        Args:
            g: the training graph.
            params: parameter name -> variable node id.
            grads: parameter name -> gradient node id.
            lr_node: the runtime learning-rate scalar.
            step_node: the step number of this update.
            step_offsets: unused (L-BFGS has no per-parameter step).

        Returns:
            An empty list.

        Example:
            >>> LBFGS().emit_updates(g, params, grads, lr, step)  # doctest: +SKIP
            []
        """
        return []

    def bind(self, engine: Any, parameter_names: Sequence[str]) -> LBFGSRunner:
        """Returns the runner that performs this optimizer's steps on ``engine``.

        Args:
            engine: a ``_core.Engine`` defining ``loss_and_gradients(x, y)`` with outputs
                ``(loss, accuracy, *gradients)`` in the order of ``parameter_names``.
            parameter_names: the engine variables to optimize.

        Returns:
            An ``LBFGSRunner`` holding the optimizer's memory for that engine.

        Example:
            >>> runner = gm.optim.LBFGS().bind(engine, names)  # doctest: +SKIP
        """
        return LBFGSRunner(self, engine, parameter_names)


class LBFGSRunner:
    """Performs L-BFGS steps on one engine and keeps the memory between them.

    Args:
        optimizer: the settings.
        engine: the engine holding the parameters (see ``LBFGS.bind``).
        parameter_names: the engine variables to optimize.

    Example:
        >>> loss, accuracy = gm.optim.LBFGS().bind(engine, names).step([x, y], lr=1.0)  # doctest: +SKIP
    """

    def __init__(self, optimizer: LBFGS, engine: Any, parameter_names: Sequence[str]):
        self.optimizer = optimizer
        self.engine = engine
        self.parameter_names = list(parameter_names)
        self.memory = _Memory()

    def step(self, inputs: Sequence[np.ndarray], lr: float) -> list[Any]:
        """One ``torch.optim.LBFGS.step`` on one batch.

        Args:
            inputs: the batch as the engine's gradient function takes it (the inputs,
                then the targets).
            lr: the learning rate of this step.

        Returns:
            What the gradient function gives before the gradients (``[loss, accuracy
            output]``, or the total, per-output losses and accuracies), of the first
            evaluation, before any update.

        Example:
            >>> loss, accuracy = runner.step([x, y], lr=1.0)  # doctest: +SKIP
        """
        lr = check_learning_rate(lr)
        objective = _EngineObjective(self.engine, self.parameter_names, inputs)
        # A trial point may fail (a loss's check_range raises): the step then changes
        # nothing, parameters and curvature memory alike, as a refused step does elsewhere.
        start_parameters, start_memory = objective.parameters(), copy.deepcopy(self.memory)
        try:
            return self._step(objective, lr)
        except Exception:
            objective.set_parameters(start_parameters)
            self.memory = start_memory
            raise

    def _step(self, objective: _EngineObjective, lr: float) -> list[Any]:
        settings, memory = self.optimizer, self.memory
        loss, reported, grad = objective.evaluate()
        evaluations = 1
        memory.evaluations += 1
        if np.max(np.abs(grad)) <= settings.tolerance_grad:
            return reported

        direction, step = memory.direction, memory.step
        for iteration in range(1, settings.max_iter + 1):
            memory.iterations += 1
            if memory.iterations == 1:
                direction = -grad
                memory.steps, memory.grad_changes, memory.inverse_curvatures = [], [], []
                memory.hessian_scale = 1.0
            else:
                self._remember(grad - memory.previous_grad, _scale(direction, step))
                direction = self._two_loop(grad)
            memory.previous_grad = grad.copy()
            memory.previous_loss = loss

            if memory.iterations == 1:
                # The very first step scales lr by min(1, 1 / |g|_1), torch's first guess.
                total = float(np.sum(np.abs(grad)))
                step = min(1.0, 1.0 / total) * lr if total > 0.0 else lr
            else:
                step = lr
            slope = float(np.dot(grad, direction))
            if slope > -settings.tolerance_change:
                break

            start = objective.parameters()
            if settings.line_search_fn == "strong_wolfe":

                def along(at: float, start=start, direction=direction) -> tuple[float, np.ndarray]:
                    objective.set_parameters(start + _scale(direction, at))
                    value, _, gradient = objective.evaluate()
                    return value, gradient

                loss, grad, step, used = strong_wolfe(
                    along,
                    step,
                    direction,
                    loss,
                    grad,
                    slope,
                    # As torch, the search keeps its own 1e-9 bracket tolerance whatever
                    # tolerance_change is.
                    max_iterations=settings.max_eval - evaluations,
                )
                objective.set_parameters(start + _scale(direction, step))
                optimal = np.max(np.abs(grad)) <= settings.tolerance_grad
            else:
                objective.set_parameters(start + _scale(direction, step))
                used, optimal = 0, False
                # As torch: no evaluation after the last iteration, whose result would only
                # serve the next step (which evaluates its own batch anyway).
                if iteration != settings.max_iter:
                    loss, _, grad = objective.evaluate()
                    used, optimal = 1, np.max(np.abs(grad)) <= settings.tolerance_grad
            evaluations += used
            memory.evaluations += used

            if iteration == settings.max_iter or evaluations >= settings.max_eval or optimal:
                break
            if np.max(np.abs(_scale(direction, step))) <= settings.tolerance_change:
                break
            if abs(loss - memory.previous_loss) < settings.tolerance_change:
                break

        memory.direction, memory.step = direction, step
        return reported

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The memory, for checkpoints: JSON-ready scalars and float32 vectors by name.

        Returns:
            ``(scalars, vectors)``; ``load_state`` takes them back.

        Example:
            >>> scalars, vectors = runner.state()  # doctest: +SKIP
        """
        m = self.memory
        scalars = {
            "iterations": m.iterations,
            "evaluations": m.evaluations,
            "step": m.step,
            "hessian_scale": m.hessian_scale,
            "inverse_curvatures": list(m.inverse_curvatures),
            "previous_loss": m.previous_loss,
        }
        vectors = {f"steps.{i}": v for i, v in enumerate(m.steps)}
        vectors.update({f"grad_changes.{i}": v for i, v in enumerate(m.grad_changes)})
        if m.direction is not None:
            vectors["direction"] = m.direction
        if m.previous_grad is not None:
            vectors["previous_grad"] = m.previous_grad
        return scalars, vectors

    def load_state(self, scalars: Mapping[str, Any], vectors: Mapping[str, np.ndarray]) -> None:
        """Restores what ``state`` returned.

        Args:
            scalars: the JSON-ready part.
            vectors: the vectors by name.

        Raises:
            ValueError: the parts do not describe a memory of this runner's parameters.

        Example:
            >>> runner.load_state(*saved)  # doctest: +SKIP
        """
        size = sum(
            int(np.prod(np.shape(self.engine.get_variable(n)))) for n in self.parameter_names
        )
        pairs = len(scalars.get("inverse_curvatures", []))
        expected = {f"{kind}.{i}" for kind in ("steps", "grad_changes") for i in range(pairs)}
        extra = set(vectors) - expected - {"direction", "previous_grad"}
        if not expected <= set(vectors) or extra or pairs > self.optimizer.history_size:
            raise ValueError(
                f"L-BFGS state holds vectors {sorted(vectors)} for {pairs} curvature pairs "
                f"(history_size {self.optimizer.history_size})"
            )
        for name, vector in vectors.items():
            if np.shape(vector) != (size,):
                raise ValueError(
                    f"L-BFGS state vector {name!r} has shape {np.shape(vector)}, expected ({size},)"
                )
        memory = _Memory(
            iterations=int(scalars["iterations"]),
            evaluations=int(scalars["evaluations"]),
            direction=vectors.get("direction"),
            step=float(scalars["step"]),
            steps=[np.asarray(vectors[f"steps.{i}"], np.float32) for i in range(pairs)],
            grad_changes=[
                np.asarray(vectors[f"grad_changes.{i}"], np.float32) for i in range(pairs)
            ],
            inverse_curvatures=[float(v) for v in scalars["inverse_curvatures"]],
            hessian_scale=float(scalars["hessian_scale"]),
            previous_grad=vectors.get("previous_grad"),
            previous_loss=None
            if scalars["previous_loss"] is None
            else float(scalars["previous_loss"]),
        )
        for name in ("direction", "previous_grad"):
            value = getattr(memory, name)
            if value is not None:
                setattr(memory, name, np.asarray(value, np.float32))
        self.memory = memory

    def _remember(self, grad_change: np.ndarray, step: np.ndarray) -> None:
        """Adds the curvature pair ``(s, y)`` if ``y . s`` is safely positive."""
        memory = self.memory
        curvature = float(np.dot(grad_change, step))
        if curvature <= _MIN_CURVATURE:
            return
        if len(memory.steps) == self.optimizer.history_size:
            del memory.steps[0], memory.grad_changes[0], memory.inverse_curvatures[0]
        memory.steps.append(step)
        memory.grad_changes.append(grad_change)
        memory.inverse_curvatures.append(1.0 / curvature)
        # Initial inverse Hessian H0 = (s.y / y.y) I (N&W eq. 7.20).
        memory.hessian_scale = curvature / float(np.dot(grad_change, grad_change))

    def _two_loop(self, grad: np.ndarray) -> np.ndarray:
        """``-H grad`` for the L-BFGS inverse Hessian ``H`` (N&W Algorithm 7.4)."""
        memory = self.memory
        pairs = list(zip(memory.steps, memory.grad_changes, memory.inverse_curvatures))
        q = -grad
        alphas = []
        for s, y, rho in reversed(pairs):
            alpha = float(np.dot(s, q)) * rho
            q = q - _scale(y, alpha)
            alphas.append(alpha)
        r = _scale(q, memory.hessian_scale)
        for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
            beta = float(np.dot(y, r)) * rho
            r = r + _scale(s, alpha - beta)
        return r
