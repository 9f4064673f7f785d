"""``Dashboard``: the fit callback that plots a run, and ``fit(plots=...)``'s sugar over it.

A dashboard records training with a ``VisualizationCollector``, then writes one HTML page
or sends the payloads to the sidecar. Nothing here may make training fail: every step
after the argument checks is guarded by a warning."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..train.callback_base import Callback
from .collector import VisualizationCollector

__all__ = [
    "DASHBOARD_FILE",
    "PLOTS_MODES",
    "SIDECAR_URL_ENV",
    "Dashboard",
    "dashboard_for_fit",
    "finish_plots",
    "start_plots",
]

PLOTS_MODES = ("html", "sidecar")
DASHBOARD_FILE = "dashboard.html"
# The sidecar's address for plots="sidecar"; unset lets the sidecar client pick its default.
SIDECAR_URL_ENV = "GOMETAL_SIDECAR_URL"


def check_plots(
    plots: Any, plots_dir: Any, names: tuple[str, str] = ("plots", "plots_dir")
) -> None:
    """Raises for a bad ``plots`` or ``plots_dir`` argument of ``fit`` (or of the
    arguments called ``names`` elsewhere)."""
    mode_name, folder_name = names
    if plots is not None and plots not in PLOTS_MODES:
        raise ValueError(f"{mode_name} must be None, 'html' or 'sidecar', got {plots!r}")
    if not isinstance(plots_dir, (str, os.PathLike)) or not os.fspath(plots_dir):
        raise TypeError(f"{folder_name} must be a folder path (str or PathLike), got {plots_dir!r}")


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


def announce_dashboard(collector: VisualizationCollector, written: Path | None) -> None:
    """Prints where the dashboard is: the file ``finish_plots`` wrote, or the sidecar page
    that received the run's plots (nothing when neither exists).

    Args:
        collector: the run's collector.
        written: what :func:`finish_plots` returned.

    Example:
        >>> announce_dashboard(collector, Path("plots/dashboard.html"))  # doctest: +SKIP
        fit: dashboard written to /home/me/plots/dashboard.html
    """
    if written is not None:
        print(f"fit: dashboard written to {written.resolve()}", flush=True)
        return
    url = getattr(collector.sink, "dashboard_url", None)
    if url is not None and collector.sink_answer is not None:
        print(f"fit: dashboard at {url}", flush=True)


class Dashboard(Callback):
    """Plots a fit: a :class:`VisualizationCollector` records the run, and at the end the
    dashboard is written to ``<folder>/dashboard.html`` (``mode="html"``), or it has been
    sent to the sidecar after every epoch and at the end (``mode="sidecar"``).

    ``trainer.fit(..., plots=mode, plots_dir=folder)`` appends
    ``Dashboard(mode, folder, validation=<fit's validation>)`` to the callbacks. Unless
    fit runs with ``verbose=0``, the dashboard's path or URL is printed at the end.
    Plotting problems become one warning, never a failed fit.

    Args:
        mode: ``"html"`` or ``"sidecar"`` (the sidecar's URL comes from the
            ``GOMETAL_SIDECAR_URL`` environment variable; unset: the client's default).
        folder: the dashboard's folder for ``"html"`` (created if missing).
        validation: ``(x, y)`` arrays or a loader for the probe batch and the
            end-of-training plots.

    Attributes:
        collector: the collector, or ``None`` when the sidecar client could not be loaded
            (after a warning): then the dashboard does nothing.
        written: the dashboard file after training (``"html"``), else ``None``.

    Raises:
        ValueError, TypeError: a bad ``mode`` or ``folder``.

    Example:
        >>> board = gm.viz.Dashboard("html", "runs/plots", validation=(xv, yv))  # doctest: +SKIP
        >>> trainer.fit((x, y), epochs=5, callbacks=[board])  # doctest: +SKIP
    """

    def __init__(
        self,
        mode: str = "html",
        folder: str | os.PathLike[str] = "gometal-plots",
        validation: Any = None,
    ):
        if mode not in PLOTS_MODES:
            raise ValueError(f"mode must be 'html' or 'sidecar', got {mode!r}")
        check_plots(mode, folder, names=("mode", "folder"))
        self.mode = mode
        self.folder = folder
        self.collector = start_plots(mode, folder, validation)
        self.written: Path | None = None

    def set_trainer(self, trainer: Any) -> None:
        """Binds the trainer being fitted (to the collector too)."""
        super().set_trainer(trainer)
        if self.collector is not None:
            self.collector.set_trainer(trainer)

    def set_params(self, params: Any) -> None:
        """Receives the fit call's parameters (to the collector too)."""
        super().set_params(params)
        if self.collector is not None:
            self.collector.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Starts the collector."""
        if self.collector is not None:
            self.collector.on_train_begin(logs)

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """Records the step."""
        if self.collector is not None:
            self.collector.on_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """Records the epoch (and sends the plots to the sidecar)."""
        if self.collector is not None:
            self.collector.on_epoch_end(epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Adds the evaluation plots, writes the dashboard and says where it is."""
        if self.collector is None:
            return
        self.collector.on_train_end(logs)
        self.written = finish_plots(self.collector, self.mode, self.folder)
        if self.params.get("verbose", 0):
            announce_dashboard(self.collector, self.written)


def dashboard_for_fit(plots: Any, plots_dir: Any, validation: Any) -> Dashboard:
    """The callback ``fit(plots=..., plots_dir=...)`` appends, its arguments checked under
    fit's names.

    Args:
        plots: ``"html"`` or ``"sidecar"``.
        plots_dir: the dashboard's folder.
        validation: fit's validation data.

    Returns:
        The :class:`Dashboard`.

    Raises:
        ValueError, TypeError: a bad ``plots`` or ``plots_dir``.

    Example:
        >>> dashboard_for_fit("html", "gometal-plots", None).mode
        'html'
    """
    check_plots(plots, plots_dir)
    if plots is None:
        raise ValueError("fit adds a dashboard only for plots='html' or 'sidecar', got None")
    return Dashboard(plots, plots_dir, validation=validation)
