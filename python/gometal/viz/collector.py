"""``VisualizationCollector``: a fit callback that records training and turns it into plot
payloads.

Everything the collector does is guarded: an exception in recording or plotting becomes
one ``RuntimeWarning`` (the first; later ones are only kept in ``collector.errors``) and
training goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..train.callback_base import Callback
from . import plots
from ._checks import check_bins
from ._checks import feature_names as checked_feature_names
from ._probes import ActivationProbe, GradientProbe

__all__ = ["VisualizationCollector"]

# Tabular inputs up to this many features get the feature plots by default.
MAX_AUTO_FEATURES = 100
# Wider feature vectors (flattened image pixels, say) show only their most important
# features in the importance bars and the correlation heatmap: a 64 x 64 heatmap of
# pixels cannot be read.
TOP_FEATURES = 20
REGRESSION_LOSSES = ("mse", "mae", "huber")


def _is_regression(loss: Any) -> bool:
    """Whether a loss fits real targets (its ``task``), a custom function loss included."""
    return getattr(loss, "task", None) == "regression" or loss.name in REGRESSION_LOSSES


def _probe_arrays(data: Any, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to ``rows`` samples of ``(x, y)`` arrays or of a loader's first batches."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        return x[:rows], y[:rows]
    xs, ys, count = [], [], 0
    iterator = iter(data)  # a loader: take batches until enough rows
    try:
        for x, y in iterator:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
            count += len(xs[-1])
            if count >= rows:
                break
    finally:
        close = getattr(iterator, "close", None)
        if callable(close):  # stops a prefetching loader's pending work
            close()
    if not xs:
        return None
    return np.concatenate(xs)[:rows], np.concatenate(ys)[:rows]


class VisualizationCollector(Callback):
    """Records losses, accuracy, learning rate, weights, gradients and activations during
    ``fit`` and builds go-metal plot payloads from them.

    Per step (every ``every_n_steps``): loss, accuracy, learning rate. Per epoch: the
    epoch's logs; histograms of every weight; histograms of the gradients of the training
    loss on the probe batch (computed by a side engine with the current weights); the mean,
    std and fraction of zeros of every layer's output on the probe batch. At the end, with
    ``validation`` data: ROC, precision-recall and confusion matrix (classification
    losses), or predicted-vs-true, residuals, Q-Q and prediction intervals (regression
    losses); for tabular inputs (rank-1 samples, a feature vector; never images) also
    the permutation importance, the feature-correlation heatmap and the partial
    dependence on the most important feature. Inputs of more than ``TOP_FEATURES`` (20)
    features show only the 20 most important ones in the importance bars and the heatmap.

    Args:
        trainer: the trainer (``fit`` sets it too).
        model_name: the name put in every payload; defaults to the model's class and size.
        every_n_steps: record every n-th training step.
        validation: ``(x, y)`` arrays or a loader; the probe batch and end-of-training
            plots use up to ``sample_size`` rows of it.
        sample_size: rows used from ``validation``.
        bins: histogram bins.
        class_names: names of the classes, for classification plots.
        feature_names: names of the input features, for feature plots.
        feature_plots: ``True``, ``False`` or ``"auto"`` (1-D inputs of at most 100
            features).
        sink: called with the current payload list after each epoch and at the end (the
            sidecar client's hook); its failures are guarded like the rest.

    Example:
        >>> viz = gm.viz.VisualizationCollector(validation=(x_val, y_val))
        >>> trainer.fit((x, y), epochs=5, callbacks=[viz])  # doctest: +SKIP
        >>> html = gm.viz.dashboard_html(viz.payloads())  # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: Any = None,
        model_name: str | None = None,
        every_n_steps: int = 1,
        validation: Any = None,
        sample_size: int = 256,
        bins: int = 30,
        class_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        feature_plots: bool | str = "auto",
        sink: Callable[[list[dict]], Any] | None = None,
    ):
        for name, value in (("every_n_steps", every_n_steps), ("sample_size", sample_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        check_bins(bins)
        if feature_plots not in (True, False, "auto"):
            raise ValueError(f"feature_plots must be True, False or 'auto', got {feature_plots!r}")
        if sink is not None and not callable(sink):
            raise TypeError(f"sink must be callable or None, got {sink!r}")
        self.trainer = trainer
        self.model_name = model_name
        self.every_n_steps = every_n_steps
        self.validation = validation
        self.sample_size = sample_size
        self.bins = bins
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.feature_names = feature_names
        self.feature_plots = feature_plots
        self.sink = sink
        # The sink's answer to its latest call; None before any call or when it failed.
        self.sink_answer: Any = None
        self.errors: list[str] = []
        self.steps: dict[str, list[float]] = {"step": [], "loss": [], "accuracy": [], "lr": []}
        self.epochs: dict[str, list[float]] = {}
        self.epoch_numbers: list[int] = []
        self.weights: dict[str, np.ndarray] = {}
        self.gradients: dict[str, np.ndarray] = {}
        self.activations: dict[str, dict[str, float]] = {}
        self.last_epoch: int | None = None
        self._evaluation: list[dict] = []
        self._probe: tuple[np.ndarray, np.ndarray] | None = None
        self._gradient_probe: GradientProbe | None = None
        self._activation_probe: ActivationProbe | None = None
        self._step = 0

    # -- guarding -------------------------------------------------------------------------
    def _guarded(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001  (plotting must never stop training)
            message = f"gometal.viz: {what} failed ({type(error).__name__}: {error})"
            self.errors.append(message)
            if len(self.errors) == 1:
                warnings.warn(
                    f"{message}; training continues, later plotting errors are kept in "
                    "collector.errors",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None

    # -- callback hooks ---------------------------------------------------------------------
    def set_trainer(self, trainer: Any) -> None:
        """Binds the trainer being fitted."""
        self.trainer = trainer

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Takes the global step count and the probe batch."""
        self._guarded("starting", self._begin)

    def on_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """Records the step's loss, accuracy and learning rate every ``every_n_steps``."""
        index = self._step  # 0-based global step; its loss is from before its update
        self._step += 1
        if index % self.every_n_steps == 0:
            self._guarded("recording a step", self._record_step, index, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        """Records the epoch's logs, weights, gradients and activations."""
        self._guarded("recording an epoch", self._record_epoch, epoch, logs)
        self._send()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Computes the evaluation plots on the validation data."""
        self._guarded("evaluating", self._evaluate)
        self._send()

    def _send(self) -> None:
        if self.sink is not None:
            self.sink_answer = self._guarded("sending payloads", lambda: self.sink(self.payloads()))

    # -- recording ----------------------------------------------------------------------------
    def _begin(self) -> None:
        if self.trainer is None:
            raise RuntimeError("no trainer: pass trainer= or use the collector in fit")
        self._step = self.trainer.step
        if self.model_name is None:
            model = self.trainer.model
            self.model_name = f"{type(model).__name__} ({model.count_params():,} params)"
        if self._probe is None:
            self._probe = _probe_arrays(self.validation, self.sample_size)

    def _record_step(self, index: int, logs: dict[str, Any]) -> None:
        self.steps["step"].append(float(index))
        for key in ("loss", "accuracy", "lr"):
            self.steps[key].append(float(logs.get(key, np.nan)))

    def _record_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        self.epoch_numbers.append(int(epoch))
        for key, value in logs.items():
            if key != "time" and np.ndim(value) == 0:
                column = self.epochs.setdefault(key, [np.nan] * (len(self.epoch_numbers) - 1))
                column.append(float(value))
        for column in self.epochs.values():  # keys missing this epoch stay aligned
            column.extend([np.nan] * (len(self.epoch_numbers) - len(column)))
        self.last_epoch = int(epoch)
        self.weights = self.trainer.model.get_weights()
        if self._probe is not None:
            x, y = self._probe
            self._guarded("computing gradients", self._record_gradients, x, y)
            self._guarded("computing activations", self._record_activations, x)

    def _record_gradients(self, x: np.ndarray, y: np.ndarray) -> None:
        if self._gradient_probe is None:
            self._gradient_probe = GradientProbe(self.trainer)
        self.gradients = self._gradient_probe(x, y)

    def _record_activations(self, x: np.ndarray) -> None:
        if self._activation_probe is None:
            self._activation_probe = ActivationProbe(self.trainer.model)
        self.activations = self._activation_probe(x)

    # -- end-of-training evaluation ---------------------------------------------------------
    def _evaluate(self) -> None:
        self._evaluation = []
        if self._probe is None:
            return
        x, y = self._probe
        loss = self.trainer.loss
        name = self.model_name or "model"
        kw = {"model_name": name}
        if _is_regression(loss):
            pred = np.asarray(self.trainer.predict(x), dtype=np.float64).ravel()
            truth = np.asarray(y, dtype=np.float64).ravel()
            builders = [
                lambda: plots.regression_scatter(truth, pred, **kw),
                lambda: plots.residual_plot(truth, pred, **kw),
                lambda: plots.qq_plot(truth - pred, **kw),
                lambda: plots.prediction_interval(pred, y_true=truth, **kw),
            ]
        else:
            proba = np.asarray(self.trainer.predict_proba(x), dtype=np.float64)
            if loss.integer_labels:
                labels = np.asarray(y).astype(np.int64)
            elif proba.shape[1] == 1:
                labels = (np.asarray(y).ravel() > 0.5).astype(np.int64)
            else:
                labels = np.asarray(y).argmax(axis=1)
            if proba.shape[1] == 1:
                score, predicted = proba[:, 0], (proba[:, 0] > 0.5).astype(np.int64)
            else:
                score, predicted = proba, proba.argmax(axis=1)
            names = self.class_names
            builders = [
                lambda: plots.roc_curve(labels, score, names, **kw),
                lambda: plots.precision_recall(labels, score, names, **kw),
                lambda: plots.confusion_matrix(labels, predicted, names, **kw),
            ]
        if self._wants_feature_plots(x):
            builders += self._feature_builders(x, y, kw)
        for build in builders:
            payload = self._guarded("building an evaluation plot", build)
            if payload is not None:
                self._evaluation.append(payload)

    def _wants_feature_plots(self, x: np.ndarray) -> bool:
        if self.feature_plots == "auto":
            return x.ndim == 2 and x.shape[1] <= MAX_AUTO_FEATURES
        return bool(self.feature_plots) and x.ndim == 2

    def _feature_builders(self, x: np.ndarray, y: np.ndarray, kw: dict) -> list[Callable]:
        trainer = self.trainer
        regression = _is_regression(trainer.loss)
        predict = trainer.predict if regression else trainer.predict_proba
        metric = "r2" if regression else "accuracy"
        if not regression and not trainer.loss.integer_labels:
            y = np.asarray(y).argmax(axis=1) if np.ndim(y) == 2 and y.shape[1] > 1 else y
        names = self.feature_names
        importance: dict[str, np.ndarray] = {}

        def measure_importance() -> tuple[np.ndarray, np.ndarray]:
            if not importance:  # computed once, shared by the three plots
                mean, std = plots.permutation_importance(predict, x, y, metric=metric, n_repeats=5)
                importance.update(mean=mean, std=std)
            return importance["mean"], importance["std"]

        def importance_plot() -> dict:
            mean, std = measure_importance()
            return plots.feature_importance(mean, std, names, top_k=TOP_FEATURES, **kw)

        def correlation_plot() -> dict:
            count = x.shape[1]
            if count <= TOP_FEATURES:
                return plots.feature_correlation(x, names, **kw)
            # Column order, so the cells are a block of the full correlation matrix.
            keep = np.sort(np.argsort(-measure_importance()[0], kind="mergesort")[:TOP_FEATURES])
            labels = checked_feature_names(names, count)
            return plots.feature_correlation(
                x[:, keep],
                [labels[k] for k in keep],
                title=f"Feature correlation: the {TOP_FEATURES} most important of {count}",
                **kw,
            )

        def dependence_plot() -> dict:
            top = int(np.argmax(measure_importance()[0]))
            # For classifiers: the probability of the most frequent class.
            target = (
                None if regression else int(np.bincount(np.asarray(y, np.int64).ravel()).argmax())
            )
            return plots.partial_dependence(predict, x, top, names, target=target, **kw)

        return [
            correlation_plot,
            importance_plot,
            dependence_plot,
        ]

    # -- payloads -----------------------------------------------------------------------------
    def payloads(self) -> list[dict]:
        """Builds the payloads from what was recorded so far.

        Returns:
            Payload dicts: step and epoch training curves, the learning-rate schedule,
            parameter distributions, gradient histograms and activation statistics (of
            the last epoch), then the evaluation plots computed at the end of ``fit``.
            A plot whose data is missing (e.g. no validation data) is left out.

        Example:
            >>> [p["plot_type"] for p in viz.payloads()][:2]  # doctest: +SKIP
            ['training_curves', 'training_curves']
        """
        name = self.model_name or "model"
        kw = {"model_name": name}
        # Epochs are numbered from 1 on the plots, as fit's console lines number them.
        where = "" if self.last_epoch is None else f" (epoch {self.last_epoch + 1})"
        builders: list[tuple[bool, Callable[[], dict]]] = [
            (
                bool(self.steps["step"]),
                lambda: plots.training_curves(
                    {k: self.steps[k] for k in ("loss", "accuracy")},
                    self.steps["step"],
                    "step",
                    title="Training curves per step",
                    **kw,
                ),
            ),
            (
                bool(self.epoch_numbers),
                lambda: plots.training_curves(
                    {k: v for k, v in self.epochs.items() if k != "lr"},
                    self._epochs_from_one(),
                    "epoch",
                    title="Training curves per epoch",
                    **kw,
                ),
            ),
            (bool(self.steps["step"]) or "lr" in self.epochs, self._lr_payload),
            (
                bool(self.weights),
                lambda: plots.parameter_distribution(
                    self.weights, self.bins, title=f"Parameter distributions{where}", **kw
                ),
            ),
            (
                bool(self.gradients),
                lambda: plots.gradient_histogram(
                    self.gradients,
                    self.bins,
                    title=f"Gradient histograms on the probe batch{where}",
                    **kw,
                ),
            ),
            (
                bool(self.activations),
                lambda: plots.activation_pattern(
                    self.activations, title=f"Activation statistics{where}", **kw
                ),
            ),
        ]
        out = []
        for wanted, build in builders:
            if wanted:
                payload = self._guarded("building a training plot", build)
                if payload is not None:
                    out.append(payload)
        return out + list(self._evaluation)

    def _lr_payload(self) -> dict:
        kw = {"model_name": self.model_name or "model"}
        if self.steps["step"]:
            return plots.learning_rate_schedule(self.steps["step"], self.steps["lr"], **kw)
        return plots.learning_rate_schedule(
            self._epochs_from_one(),
            self.epochs["lr"],
            title="Learning rate per epoch",
            x_label="epoch",
            **kw,
        )

    def _epochs_from_one(self) -> list[int]:
        """The recorded epochs numbered from 1 (``epoch_numbers`` holds fit's 0-based ones)."""
        return [epoch + 1 for epoch in self.epoch_numbers]
