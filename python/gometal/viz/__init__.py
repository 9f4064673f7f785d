"""``gometal.viz``: training visualization in go-metal's plot-payload JSON format.

- :mod:`~gometal.viz.payload`: payload dicts in go-metal's wire format, the shipped JSON
  Schema (``schema.json``), :func:`validate_payload` and :func:`normalize_payload`.
- :mod:`~gometal.viz.plots`: one builder per plot type, computing its statistics.
- :class:`VisualizationCollector`: a fit callback recording training into payloads.
- :class:`Dashboard`: a fit callback that collects and writes the HTML dashboard (or sends
  the payloads to the sidecar); ``fit(plots=...)`` is sugar for it.
- :mod:`~gometal.viz.render`: plotly figures and the offline HTML dashboard.

Example:
    >>> viz = gm.viz.VisualizationCollector(validation=(x_val, y_val))  # doctest: +SKIP
    >>> trainer.fit((x, y), epochs=5, callbacks=[viz])  # doctest: +SKIP
    >>> html = gm.viz.dashboard_html(viz.payloads(), "digits MLP")  # doctest: +SKIP
"""

from . import plots
from .collector import VisualizationCollector
from .dashboard import PLOTS_MODES, Dashboard, finish_plots, start_plots
from .payload import (
    PLOT_TYPES,
    SERIES_TYPES,
    load_schema,
    make_payload,
    normalize_payload,
    point,
    series,
    validate_payload,
)
from .render import dashboard_html, to_figure

__all__ = [
    "PLOTS_MODES",
    "PLOT_TYPES",
    "SERIES_TYPES",
    "Dashboard",
    "VisualizationCollector",
    "dashboard_html",
    "finish_plots",
    "load_schema",
    "make_payload",
    "normalize_payload",
    "plots",
    "point",
    "series",
    "start_plots",
    "to_figure",
    "validate_payload",
]
