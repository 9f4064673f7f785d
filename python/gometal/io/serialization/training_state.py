"""The parts of a trainer besides its tensors, as JSON data and back.

Loss, optimizer and scheduler are saved as a class name (or loss name) plus constructor
arguments and rebuilt from explicit registries; nothing here imports a name read from a
file. Errors about what a file holds are ``CheckpointError``; errors about what cannot
be saved are ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...train import losses, optim, schedulers
from ...train.history import History
from .container import CheckpointError

# -- loss --------------------------------------------------------------------------------


def loss_to_config(loss: losses.Loss) -> dict[str, Any]:
    """``{"name": ..., "config": {constructor arguments}}`` for a built-in loss.

    Args:
        loss: the trainer's loss.

    Returns:
        The loss's name and arguments.

    Raises:
        TypeError: for a loss class that is not one of gometal's named losses, or a
            function loss whose function is not registered (``gm.losses.register``).

    Example:
        >>> loss_to_config(gm.losses.Huber(delta=2.0))
        {'name': 'huber', 'config': {'delta': 2.0}}
    """
    if losses.loss_class(loss.name) is not type(loss):
        raise TypeError(
            f"cannot save the loss {loss!r}: only gometal's named losses "
            f"({', '.join(losses.available())}) and registered loss functions can be saved"
        )
    # Every named loss gives its constructor arguments; a function loss raises TypeError
    # here when its function is not registered.
    config = dict(loss.get_config())
    return {"name": loss.name, "config": config}


def loss_from_config(entry: Any) -> losses.Loss:
    """Rebuilds a loss from ``loss_to_config`` output.

    Args:
        entry: ``{"name", "config"}``.

    Returns:
        The loss.

    Raises:
        CheckpointError: for an unknown name or arguments the loss rejects.

    Example:
        >>> loss_from_config({"name": "huber", "config": {"delta": 2.0}})
        Huber(delta=2)
    """
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config", {}), Mapping):
        raise CheckpointError(f"training.loss must be {{'name', 'config'}}, got {entry!r}")
    try:
        cls = losses.loss_class(entry.get("name"))
        if cls is None:
            raise ValueError(f"unknown loss name {entry.get('name')!r}")
        return cls(**entry.get("config", {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot rebuild the loss {entry!r}: {err}") from None


# -- optimizer ---------------------------------------------------------------------------

# Used only while gm.optim lacks get_config/from_config: the two original optimizers.
_FALLBACK_ARGUMENTS = {
    "SGD": ("lr", "momentum", "nesterov", "weight_decay"),
    "Adam": ("lr", "betas", "eps", "weight_decay"),
}


def optimizer_to_config(optimizer: optim.Optimizer) -> dict[str, Any]:
    """``{"class_name": ..., "config": {...}}`` describing ``optimizer``.

    Args:
        optimizer: the trainer's optimizer.

    Returns:
        Its class name and constructor arguments.

    Raises:
        TypeError: for an optimizer that cannot describe itself.

    Example:
        >>> optimizer_to_config(gm.optim.SGD(lr=0.1))["class_name"]
        'SGD'
    """
    get_config = getattr(optimizer, "get_config", None)
    if callable(get_config):
        return dict(get_config())
    names = _FALLBACK_ARGUMENTS.get(type(optimizer).__name__)
    if names is None or getattr(optim, type(optimizer).__name__, None) is not type(optimizer):
        raise TypeError(f"cannot save the optimizer {optimizer!r}: it has no get_config()")
    config = {}
    for name in names:
        value = getattr(optimizer, name)
        config[name] = list(value) if isinstance(value, tuple) else value
    return {"class_name": type(optimizer).__name__, "config": config}


def optimizer_from_config(entry: Any) -> optim.Optimizer:
    """Rebuilds an optimizer from ``optimizer_to_config`` output.

    Args:
        entry: ``{"class_name", "config"}``.

    Returns:
        The optimizer.

    Raises:
        CheckpointError: for an unknown class or arguments it rejects.

    Example:
        >>> optimizer_from_config({"class_name": "SGD", "config": {"lr": 0.1}})  # doctest: +SKIP
    """
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
        raise CheckpointError(
            f"training.optimizer must be {{'class_name', 'config'}}, got {entry!r}"
        )
    try:
        from_config = getattr(optim, "from_config", None)
        if callable(from_config):
            return from_config(dict(entry))
        class_name = entry.get("class_name")
        if class_name not in _FALLBACK_ARGUMENTS:
            raise ValueError(f"unknown optimizer class {class_name!r}")
        return getattr(optim, class_name)(**entry["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the optimizer {dict(entry)!r}: {err}") from None


# -- scheduler and history ---------------------------------------------------------------


def scheduler_to_state(scheduler: Any) -> dict[str, Any] | None:
    """``{"config", "state"}`` of a learning-rate scheduler, or ``None`` without one.

    Args:
        scheduler: ``trainer.scheduler`` (``None`` when no scheduler is attached).

    Returns:
        The scheduler's ``get_config()`` and ``state_dict()``.

    Example:
        >>> scheduler_to_state(None) is None
        True
    """
    if scheduler is None:
        return None
    if not (hasattr(scheduler, "get_config") and hasattr(scheduler, "state_dict")):
        raise TypeError(
            f"cannot save the scheduler {scheduler!r}: it needs get_config() and state_dict()"
        )
    return {"config": scheduler.get_config(), "state": scheduler.state_dict()}


def restore_scheduler(trainer: Any, entry: Any, learning_rate: float) -> None:
    """Rebuilds a saved scheduler, attaches it to ``trainer`` and keeps the saved rate.

    Args:
        trainer: the trainer being restored.
        entry: ``scheduler_to_state`` output, or ``None``.
        learning_rate: the rate the saved trainer would have used next.

    Raises:
        CheckpointError: the scheduler cannot be rebuilt.

    Example:
        >>> restore_scheduler(trainer, None, 1e-3)  # doctest: +SKIP
    """
    if entry is None:
        return
    if not isinstance(entry, Mapping) or "config" not in entry or "state" not in entry:
        raise CheckpointError(f"training.scheduler must be {{'config', 'state'}}, got {entry!r}")
    try:
        scheduler = schedulers.from_config(entry["config"])
        # State first: attaching a scheduler that has a state keeps it, where attaching a
        # fresh one would restart the schedule from the trainer's current rate.
        scheduler.load_state_dict(entry["state"])
        scheduler.attach(trainer)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot restore the scheduler: {err}") from None
    trainer.scheduler = scheduler
    trainer.set_learning_rate(learning_rate)


def history_to_dict(history: Any) -> dict[str, Any] | None:
    """The trainer's ``History`` as plain data, or ``None`` when there is none.

    Example:
        >>> history_to_dict(None) is None
        True
    """
    if history is None:
        return None
    to_dict = getattr(history, "to_dict", None)
    if not callable(to_dict):
        raise TypeError(f"cannot save the history {history!r}: it has no to_dict()")
    return dict(to_dict())


def history_from_dict(data: Any) -> Any:
    """Rebuilds a ``History`` from ``history_to_dict`` output (``None`` stays ``None``).

    Raises:
        CheckpointError: the data is malformed.

    Example:
        >>> history_from_dict(None) is None
        True
    """
    if data is None:
        return None
    try:
        return History.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"cannot restore the training history: {err}") from None
