"""Timed windows of training steps, with the CPU time other processes used meanwhile."""

from __future__ import annotations

import os
import time

# A window is quiet when other processes used fewer CPU cores than this meanwhile.
QUIET_CORES = 0.15


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds of this process), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    own = os.times()
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def warm_up(step, warmup_s: float, warmup_steps: int) -> None:
    """Runs `step` for at least `warmup_steps` calls and `warmup_s` seconds."""
    start = time.perf_counter()
    done = 0
    while done < warmup_steps or time.perf_counter() - start < warmup_s:
        step()
        done += 1


def time_window(step, window_s: float) -> tuple[float, float | None]:
    """Calls per second over one window of at least `window_s` seconds, and how many CPU
    cores other processes used meanwhile (None where unknown)."""
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    n = 0
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= window_s:
            break
    cpu1 = _cpu_seconds()
    load = None
    if cpu0 and cpu1:
        busy, own = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        load = round(max(0.0, busy - own) / elapsed, 3)
    return n / elapsed, load


def time_windows(
    step,
    warmup_s: float,
    warmup_steps: int,
    windows: int,
    window_s: float,
    max_windows: int,
    quiet_cores: float = QUIET_CORES,
):
    """Warm up, then time windows of at least `window_s` seconds each.

    The machine may be shared, so each window also records how many CPU cores other
    processes used meanwhile. Timing goes on until `windows` quiet windows (other load
    below `quiet_cores`) or `max_windows` windows in all.
    Returns (steps/s per window, other load per window (None where unknown), quiet flags).
    """
    warm_up(step, warmup_s, warmup_steps)
    rates, other_load, quiet = [], [], []
    while sum(quiet) < windows and len(rates) < max(windows, max_windows):
        rate, load = time_window(step, window_s)
        rates.append(rate)
        other_load.append(load)
        quiet.append(load is None or load < quiet_cores)
    return rates, other_load, quiet
