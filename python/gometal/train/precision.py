"""Mixed-precision modes: argument checks and detection of fast reduced-precision hardware.

``Trainer(mixed_precision=...)`` accepts ``None`` (float32), ``"bf16"``, ``"fp16"`` and
``"bf16-emulated"``. A reduced type is used only where this machine and backend have a
fast path for it: bfloat16 needs a CPU with ``avx512_bf16`` or ``amx_bf16`` and bfloat16
kernels in the CPU backend, which it does not have yet; float16 is the Metal (Apple GPU)
path. Otherwise training runs in float32 and one ``UserWarning`` says what is missing.

``"bf16-emulated"`` is an explicit opt-in that runs anywhere: it rounds the inputs of
every matmul and convolution to bfloat16 (round to nearest, ties to even) and keeps
float32 accumulation, which is the arithmetic of bfloat16 hardware. It is slower than
float32, not faster; it exists so the numerics of bf16 training can be tested on any
machine.
"""

from __future__ import annotations

import platform
import sys
import warnings
from dataclasses import dataclass
from typing import Any

MIXED_PRECISION_MODES = (None, "bf16", "fp16", "bf16-emulated")
# CPU flags (as /proc/cpuinfo names them) that give bfloat16 dot products in hardware.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
DEFAULT_GROWTH_INTERVAL = 2000


@dataclass(frozen=True)
class PrecisionPlan:
    """What a trainer runs for a requested mixed-precision mode.

    Attributes:
        requested: the mode passed to the trainer (``None``, ``"bf16"``, ...).
        compute: ``"float32"`` or ``"bf16"``: the arithmetic of matmul and conv inputs.
        reason: why a requested reduced type fell back to float32 (``None`` if it did not).
    """

    requested: str | None
    compute: str
    reason: str | None = None


def check_mixed_precision(value: Any) -> str | None:
    """Returns ``value`` if it names a mixed-precision mode, else raises ``ValueError``.

    Args:
        value: ``None``, ``"bf16"``, ``"fp16"`` or ``"bf16-emulated"``.

    Returns:
        The mode.

    Example:
        >>> check_mixed_precision("bf16")
        'bf16'
    """
    if value is not None and not isinstance(value, str):
        raise TypeError(
            f"mixed_precision must be None or one of 'bf16', 'fp16', 'bf16-emulated', "
            f"got {type(value).__name__} {value!r}"
        )
    if value not in MIXED_PRECISION_MODES:
        raise ValueError(
            f"mixed_precision must be None, 'bf16', 'fp16' or 'bf16-emulated', got {value!r}"
        )
    return value


def check_growth_interval(value: Any) -> int:
    """Returns ``value`` if it is an int >= 1 (clean steps before the loss scale doubles).

    Args:
        value: the proposed interval.

    Returns:
        The interval.

    Example:
        >>> check_growth_interval(2000)
        2000
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"growth_interval must be an int >= 1, got {value!r}")
    return value


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports in ``/proc/cpuinfo`` (empty elsewhere).

    Returns:
        The set of flag names, e.g. ``{"avx2", "fma", ...}``.

    Example:
        >>> "avx2" in cpu_flags()  # doctest: +SKIP
        True
    """
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def is_apple_silicon() -> bool:
    """Whether this is macOS on arm64 (where float16 belongs to the Metal backend)."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def missing_fast_path(mode: str, backend: str = "cpu") -> str | None:
    """Says what this machine lacks for a fast ``mode`` path, or ``None`` if it has one.

    Args:
        mode: ``"bf16"`` or ``"fp16"``.
        backend: the engine backend that would run it (only ``"cpu"`` exists today).

    Returns:
        A sentence naming the missing feature, or ``None``.

    Example:
        >>> missing_fast_path("fp16")
        'float16 runs on the Metal backend (Apple GPU); the CPU backend has no float16 path'
    """
    if mode == "fp16":
        if backend == "metal" and is_apple_silicon():
            return None
        return "float16 runs on the Metal backend (Apple GPU); the CPU backend has no float16 path"
    found = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags()]
    if found:
        # The hardware is there, but emulating bf16 on it would be slower than float32.
        return f"this CPU has {found[0]}, but the CPU backend has no bfloat16 kernels yet"
    return f"this CPU has neither {' nor '.join(BF16_CPU_FLAGS)} (no fast bfloat16 path)"


def plan_precision(mode: Any, backend: str = "cpu") -> PrecisionPlan:
    """Decides the arithmetic for a requested mode, warning once if it falls back.

    Args:
        mode: the ``mixed_precision`` argument.
        backend: the engine backend.

    Returns:
        The plan; a fallback emits one ``UserWarning`` naming the missing feature.

    Example:
        >>> plan_precision(None).compute
        'float32'
    """
    mode = check_mixed_precision(mode)
    if mode is None:
        return PrecisionPlan(None, "float32")
    if mode == "bf16-emulated":
        return PrecisionPlan(mode, "bf16")
    reason = missing_fast_path(mode, backend)
    if reason is not None:
        warnings.warn(
            f"mixed_precision={mode!r}: {reason}; training runs in float32 "
            "(mixed_precision='bf16-emulated' reproduces bf16 arithmetic, slowly)",
            UserWarning,
            stacklevel=3,
        )
        return PrecisionPlan(mode, "float32", reason)
    return PrecisionPlan(mode, "bf16" if mode == "bf16" else "float32")
