"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s values for the same settings.

A scheduler writes its rate into the trainer's runtime learning-rate scalar, which the
compiled training step reads on every update: changing it recompiles nothing. Each
scheduler has an ``interval`` (``"epoch"`` or ``"batch"``) telling ``fit`` when to call
``step``; ``state_dict``/``load_state_dict`` and ``get_config``/``from_config`` let a
checkpoint resume the schedule exactly.

Example:
    >>> sched = gm.schedulers.StepLR(trainer, step_size=10, gamma=0.1)  # doctest: +SKIP
    >>> for epoch in range(30):  # doctest: +SKIP
    ...     train_one_epoch(trainer)
    ...     sched.step()
"""

from .base import LRScheduler, from_config
from .decay import Constant, ConstantLR, CosineAnnealingLR, ExponentialLR, MultiStepLR, StepLR
from .one_cycle import OneCycleLR
from .plateau import ReduceLROnPlateau
from .warmup import LinearWarmup

__all__ = [
    "Constant",
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearWarmup",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "StepLR",
    "from_config",
]
