"""What ``fit(..., plots=...)`` does: attach a collector, then write the dashboard or
send the payloads to the sidecar. Nothing here may make training fail: every step after
the argument checks is guarded by a warning."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .collector import VisualizationCollector

__all__ = ["DASHBOARD_FILE", "PLOTS_MODES", "SIDECAR_URL_ENV", "finish_plots", "start_plots"]

PLOTS_MODES = ("html", "sidecar")
DASHBOARD_FILE = "dashboard.html"
# The sidecar's address for plots="sidecar"; unset lets the sidecar client pick its default.
SIDECAR_URL_ENV = "GOMETAL_SIDECAR_URL"


def check_plots(plots: Any, plots_dir: Any) -> None:
    """Raises for a bad ``plots`` or ``plots_dir`` argument of ``fit``."""
    if plots is not None and plots not in PLOTS_MODES:
        raise ValueError(f"plots must be None, 'html' or 'sidecar', got {plots!r}")
    if not isinstance(plots_dir, (str, os.PathLike)) or not os.fspath(plots_dir):
        raise TypeError(f"plots_dir must be a folder path (str or PathLike), got {plots_dir!r}")


def _sidecar_sink() -> Callable[[list[dict]], Any] | None:
    """The sidecar client's per-run sink (one dashboard per run, replaced each epoch), or
    its ``send`` where it has no ``RunSink``; ``None`` (after a warning) if unavailable."""
    url = os.environ.get(SIDECAR_URL_ENV)
    try:
        from . import sidecar_client

        run_sink = getattr(sidecar_client, "RunSink", None)
        if run_sink is not None:
            return run_sink(url)
        send = sidecar_client.send
    except Exception as error:  # noqa: BLE001  (no sidecar must not mean no training)
        warnings.warn(
            f"gometal.viz: the sidecar client is unavailable ({type(error).__name__}: "
            f"{error}); training continues without plots",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return lambda payloads: send(payloads, url)


def start_plots(
    plots: str | None, plots_dir: Any, validation: Any
) -> VisualizationCollector | None:
    """Checks the arguments and returns the collector ``fit`` appends to its callbacks.

    Args:
        plots: ``None`` (no collector), ``"html"`` or ``"sidecar"`` (after each epoch and
            at the end, the payloads go to ``gometal.viz.sidecar_client.RunSink(url)``,
            or to its ``send(payloads, url)``; ``url`` comes from the
            ``GOMETAL_SIDECAR_URL`` environment variable, unset: the client's default).
        plots_dir: the dashboard's folder for ``"html"``.
        validation: fit's validation data (arrays or a loader), for the evaluation plots.

    Returns:
        A :class:`VisualizationCollector`, or ``None`` for ``plots=None`` (or when the
        sidecar client cannot be loaded: then one warning).

    Raises:
        ValueError, TypeError: a bad ``plots`` or ``plots_dir``.

    Example:
        >>> start_plots(None, "gometal-plots", None) is None
        True
    """
    check_plots(plots, plots_dir)
    if plots is None:
        return None
    if plots == "sidecar":
        sink = _sidecar_sink()
        if sink is None:
            return None
        return VisualizationCollector(validation=validation, sink=sink)
    return VisualizationCollector(validation=validation)


def _write_dashboard(collector: VisualizationCollector, plots_dir: Any) -> Path:
    from ..base.atomic import write_atomically
    from .render import dashboard_html

    folder = Path(os.fspath(plots_dir))
    folder.mkdir(parents=True, exist_ok=True)
    title = f"gometal training: {collector.model_name or 'model'}"
    path = folder / DASHBOARD_FILE
    write_atomically(path, dashboard_html(collector.payloads(), title).encode("utf-8"))
    return path


def finish_plots(
    collector: VisualizationCollector | None, plots: str | None, plots_dir: Any
) -> Path | None:
    """Writes ``<plots_dir>/dashboard.html`` for ``plots="html"`` (atomically).

    Args:
        collector: what :func:`start_plots` returned.
        plots: the ``plots`` argument of ``fit``.
        plots_dir: the dashboard's folder, created if missing.

    Returns:
        The dashboard's path, or ``None`` (no dashboard, or writing it failed: then one
        ``RuntimeWarning`` says why and training's result stands).

    Example:
        >>> finish_plots(None, None, "gometal-plots") is None
        True
    """
    if collector is None or plots != "html":
        return None
    try:
        return _write_dashboard(collector, plots_dir)
    except Exception as error:  # noqa: BLE001  (the trained model matters more than its plots)
        warnings.warn(
            f"gometal.viz: writing the dashboard to {os.fspath(plots_dir)!r} failed "
            f"({type(error).__name__}: {error}); training is unaffected",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
