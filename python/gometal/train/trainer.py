"""``Trainer``: compiles the whole training step into one engine graph and runs it.

The graph holds the training forward pass (dropout on), the loss and accuracy, the
gradients, the optimizer updates and a step counter, plus an inference forward pass for
``eval``, ``predict`` and ``predict_proba``. Parameters and optimizer slots live in the
engine; ``train_batch`` is exactly one native call.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np

from ..base.arrays import (
    check_batch_size,
    check_seed,
)
from ..base.runtime import resolve_backend
from ..nn.inference import (
    is_batch_stream,
    predict_stream,
    predict_structured,
    predict_with_engine,
)
from ..nn.layers.base import trainable_changes
from ..nn.model import Model
from . import optim
from .data_parallel import (
    replica_seed,
    resolve_distributed,
    synchronize_replicas,
    use_sync_batch_norm,
)
from .evaluation import evaluate as _evaluate
from .fit import fit as _fit
from .fit import keras_fit_arguments
from .history import History
from .mixed_precision import LossScaler
from .output_losses import (
    BatchPreparer,
    OutputLoss,
    read_step,
    resolve_output_losses,
)
from .precision import DEFAULT_GROWTH_INTERVAL, check_growth_interval, plan_precision
from .sample_weights import as_sample_weights
from .session import BatchEvaluation, OutputEvaluation, StepResult
from .step_graph import (
    GRADIENTS_FUNCTION,
    STEP_VARIABLE,
    StepOptions,
    check_accumulate_steps,
    compile_step,
)
from .trainer_state import EngineState
from .zero_sharding import reduces_own_gradients


class Trainer(EngineState):
    """Trains a model with one compiled engine step per batch.

    Args:
        model: the model; its weights move into this trainer's engine.
        loss: a loss name (see ``gm.losses.available()``) or a ``gm.losses.Loss``; for a
            model with several outputs, one loss for all of them, a list with one per
            output, or a dict by output name.
        optimizer: a name from ``gm.optim.available()`` or a ``gm.optim.Optimizer``.
        batch_size: the batch size you intend to train with (any size works; each new
            size compiles one more plan).
        seed: seed of the engine's random generator (dropout); defaults to the model seed.
        mixed_precision: ``None`` (float32), ``"bf16"``, ``"fp16"`` or ``"bf16-emulated"``.
            Matmul and conv inputs use the reduced type while weights stay float32
            masters; losses, softmax, reductions, batch-norm statistics and the optimizer
            stay float32. Without a fast path for the type here (bf16: a CPU with
            ``avx512_bf16`` or ``amx_bf16``; fp16: the Metal backend), one warning says so
            and training runs in float32. ``"bf16-emulated"`` rounds matmul and conv
            operands to bfloat16 on any CPU: bf16 hardware's arithmetic, slower than float32.
        loss_scaling: dynamic loss scaling inside the training step (scale 65536, halved
            and the update skipped on an inf/NaN gradient, doubled after
            ``growth_interval`` clean steps); ``None`` turns it on with mixed precision.
        growth_interval: consecutive clean steps before the loss scale doubles.
        backend: the engine's backend, ``"cpu"`` or ``"metal"``; ``None`` reads
            ``$GOMETAL_BACKEND`` (default ``"cpu"``).
        loss_weights: each output's factor in the total loss that training minimizes
            (``sum(weight * loss)``): a list with one number per output or a dict by
            output name (outputs left out weigh 1); ``None`` weighs every output 1.
        accumulate_steps: gradient accumulation: each update averages the gradients of
            this many ``train_batch`` calls (equal to one update on a batch that many
            times larger); ``step`` counts updates. Not with loss scaling or L-BFGS.
        distributed: average gradients over the ranks of ``gm.distributed.init()``'s job
            inside the step, after checking every rank built the same model and giving
            each rank 0's weights; ``None``: whenever ``init()`` was called.
        sync_batch_norm: batch norms use the statistics of the job's whole batch (every
            rank's), as torch's ``SyncBatchNorm``; ``False``: each rank's own (as DDP).

    A model with several inputs or outputs (or given them as dicts) takes lists (in the
    model's order) or dicts (by name) of arrays for ``x`` and ``y`` everywhere; results
    then add each output's loss and accuracy (``StepResult.losses``, ``evaluate``'s
    ``"<output>_loss"`` and ``"<output>_accuracy"``), and ``loss`` is the weighted total.

    Example:
        >>> trainer = gm.Trainer(model, loss="cross_entropy",
        ...                      optimizer=gm.optim.Adam(lr=1e-3), batch_size=32)
        >>> step = trainer.train_batch(x[:32], y[:32])
        >>> step.loss, step.accuracy  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Model,
        loss: Any,
        optimizer: Any = "adam",
        batch_size: int = 32,
        seed: int | None = None,
        mixed_precision: str | None = None,
        loss_scaling: bool | None = None,
        growth_interval: int = DEFAULT_GROWTH_INTERVAL,
        backend: str | None = None,
        loss_weights: Any = None,
        accumulate_steps: int = 1,
        distributed: bool | None = None,
        sync_batch_norm: bool = False,
    ):
        if not isinstance(model, Model):
            raise TypeError(f"model must be a gm.Model, got {type(model).__name__}")
        self.model = model
        self.output_losses: list[OutputLoss] = resolve_output_losses(model, loss, loss_weights)
        self.loss = self.output_losses[0].loss
        self.losses = {output.name: output.loss for output in self.output_losses}
        self.loss_weights = {output.name: output.weight for output in self.output_losses}
        self.optimizer = optim.get(optimizer)
        self.batch_size = check_batch_size(batch_size)
        # Several outputs (or a dict of them) report a loss and accuracy per output.
        self._per_output = model.output_signature.structured
        # Read once: the model's structure is fixed, and a step reads these every batch.
        self._structured = model.structured
        self._batches = BatchPreparer(self.output_losses, model)
        self._set_precision(mixed_precision, loss_scaling, growth_interval)
        self.backend = resolve_backend(backend)
        self._seed = model.seed if seed is None else check_seed(seed)
        self.accumulate_steps = check_accumulate_steps(
            accumulate_steps, self.loss_scaling, self.optimizer
        )
        self.distributed = resolve_distributed(distributed, self.optimizer)
        if sync_batch_norm is not False:  # before the step is built
            use_sync_batch_norm(model, sync_batch_norm)
        # ZeRO-1 reduce-scatters the gradients itself, each rank receiving only its shards.
        averaged = self.distributed and not reduces_own_gradients(self.optimizer)
        self._options = StepOptions(self.accumulate_steps, distributed=averaged)
        self._waiting_slots: dict[str, np.ndarray] = {}
        self._step_offsets: dict[str, int] = {}
        self._frozen_since: dict[str, int] = {}
        self._compile()
        if self.distributed:
            with self._using_engine() as engine:
                synchronize_replicas(engine)
        if model.trainable_weight_names:
            self._follow_trainable()
        else:  # a quantized model: it evaluates and predicts; train_batch refuses
            self._trainable_seen, self._trained_names = trainable_changes(), ()
        # Fit state, carried across fit calls (and saved by checkpoints): completed epochs,
        # their History, the attached scheduler, and the flag callbacks set to stop fit.
        self.epoch = 0
        self.history = History()
        self.scheduler: Any = None
        self.stop_training = False

    def _compile(self) -> None:
        """Compiles the step for the model's trainable weights; the engine takes them."""
        compiled = compile_step(
            self.model,
            self.output_losses,
            self.optimizer,
            self.precision,
            self._loss_scaler,
            replica_seed(self._seed, self.distributed),
            self.backend,
            self._options,
        )
        self._held = compiled.weights
        self._accuracy_kinds = compiled.accuracy_kinds
        self._has_probabilities = compiled.has_probabilities
        self.model.attach_engine(self._held)
        # L-BFGS (host-driven) evaluates loss and gradients several times per batch.
        self._host_optimizer = (
            self.optimizer.bind(self._engine, self.model.trainable_weight_names)
            if self.optimizer.host_driven
            else None
        )

    @property
    def _engine(self) -> Any:
        # The engine itself, for its scalars and plans; weights are run and read under
        # `_using_engine`, which takes shared layers back first.
        return self._held.engine

    def _using_engine(self) -> contextlib.AbstractContextManager[Any]:
        """Holds the weights' lock with every layer in this trainer's engine; yields it."""
        return self._held.use()

    def _weighted(self, function: str) -> str:
        """The sample-weighted variant of ``function``, compiling it on first use."""
        if self._host_optimizer is not None and function == "train":
            raise ValueError(
                f"sample_weight needs an in-graph optimizer, got the host-driven "
                f"{type(self.optimizer).__name__}"
            )
        if not self._options.sample_weighted:
            self._options = dataclasses.replace(self._options, sample_weighted=True)
            self._recompile()
        return f"{function}_weighted"

    def _set_precision(self, mode: Any, loss_scaling: Any, growth_interval: Any) -> None:
        """Checks the mixed-precision arguments and decides what the graph runs."""
        if loss_scaling is not None and not isinstance(loss_scaling, bool):
            raise TypeError(f"loss_scaling must be True, False or None, got {loss_scaling!r}")
        growth_interval = check_growth_interval(growth_interval)
        self.precision = plan_precision(mode)
        if loss_scaling is None:
            # Host-driven optimizers (L-BFGS) read plain gradients; they are not scaled.
            loss_scaling = mode is not None and not self.optimizer.host_driven
        elif loss_scaling and self.optimizer.host_driven:
            raise ValueError(
                f"loss_scaling=True needs an in-graph optimizer, got the host-driven "
                f"{type(self.optimizer).__name__}"
            )
        self.mixed_precision: str | None = self.precision.requested
        self.loss_scaling: bool = loss_scaling
        self.growth_interval = growth_interval
        self._loss_scaler = LossScaler(growth_interval) if loss_scaling else None

    # -- data ------------------------------------------------------------------------------
    def prepare_batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Checks a batch and converts it to what the engine reads.

        Args:
            x: inputs of shape ``(N, *model.input_shape)`` (a list or dict of them for a
                model with several inputs).
            y: labels or targets, as for ``train_batch``.

        Returns:
            ``(x, y)``: float32 inputs (a C-contiguous float32 array as it is), int32 class
            indices or float32 targets; for a model with several inputs or outputs, two
            lists of them in the model's order.

        Raises:
            TypeError, ValueError: an array of the wrong type or shape, or a label out of
                range, named with what was expected.

        Example:
            >>> x, y = trainer.prepare_batch(x_batch, y_batch)  # doctest: +SKIP
        """
        # The engine itself rejects NaN and inf in every float input, naming it, so the
        # hot path skips a second pass over the data here.
        return self._batches(x, y)

    def _step_result(self, values: Any, num_samples: int) -> StepResult:
        """What ``train`` or ``eval`` (or the host optimizer's first evaluation) gave."""
        return read_step(
            values, self.output_losses, self._accuracy_kinds, num_samples, self._per_output
        )

    # -- steps -----------------------------------------------------------------------------
    def train_batch(self, x: Any, y: Any, sample_weight: Any = None) -> StepResult:
        """Runs one training step (forward, loss, backward, update) as one engine call.

        Args:
            x: inputs of shape ``(N, *model.input_shape)`` (a list or dict of them for a
                model with several inputs).
            y: labels: integer class indices ``(N,)`` for ``cross_entropy``, otherwise
                targets with the model's output shape (a list or dict, one per output,
                for a model with several outputs).
            sample_weight: optional ``(N,)`` weights scaling each sample's loss (the
                batch loss is ``sum(w * loss) / N``, as Keras's); accuracy is unweighted.

        Returns:
            The batch's loss and accuracy (and each output's, for several outputs),
            measured before the update.

        Example:
            >>> result = trainer.train_batch(x_batch, y_batch)  # doctest: +SKIP
        """
        # A model with every weight frozen (a quantized one) has nothing to train: refused.
        if not self.model.trainable_weight_names or trainable_changes() != self._trainable_seen:
            self._follow_trainable()
        inputs, rows = self._batches.engine_batch(x, y)
        function = "train"
        if sample_weight is not None:
            inputs.append(as_sample_weights(sample_weight, rows))
            function = self._weighted(function)
        with self._using_engine() as engine:
            if self._host_optimizer is not None:
                values = self._host_optimizer.step(inputs, self.learning_rate)
                engine.set_variable(STEP_VARIABLE, np.array(self.step + 1, np.float32))
            else:
                values = engine.run(function, inputs)
        return self._step_result(values, rows)

    def compute_gradients(self, x: Any, y: Any) -> dict[str, np.ndarray]:
        """The gradients of the training loss on one batch, for inspection; nothing is
        updated and the random generator does not advance (the next ``train_batch`` on
        the same batch draws the same dropout masks and computes these gradients).

        Args:
            x: inputs, as for ``train_batch``.
            y: labels or targets, as for ``train_batch``.

        Returns:
            Each trainable weight's gradient (before clipping and accumulation), by name,
            shaped like the weight.

        Example:
            >>> trainer.compute_gradients(x_batch, y_batch)["dense_0.weight"].shape  # doctest: +SKIP
            (64, 784)
        """
        if trainable_changes() != self._trainable_seen:
            self._follow_trainable()
        inputs, _ = self._batches.engine_batch(x, y)
        with self._using_engine() as engine:
            values = engine.run(GRADIENTS_FUNCTION, inputs)
        names = self.model.trainable_weight_names
        return {name: np.asarray(value) for name, value in zip(names, values)}

    def evaluate_batch(
        self, x: Any, y: Any, with_outputs: bool = False, sample_weight: Any = None
    ) -> BatchEvaluation:
        """Runs one batch through the inference pass (dropout off, no update).

        Args:
            x: inputs, as for ``train_batch``.
            y: labels or targets, as for ``train_batch``.
            with_outputs: also return the batch's probabilities (``predict_proba``), or
                its raw outputs for regression losses, from the same weights.
            sample_weight: optional ``(N,)`` weights scaling each sample's loss.

        Returns:
            The batch's loss, accuracy sums, converted labels and (if asked) outputs;
            for several outputs, each output's too (``per_output``).

        Example:
            >>> trainer.evaluate_batch(x_batch, y_batch).loss  # doctest: +SKIP
        """
        x, y = self._batches(x, y)
        inputs, rows = ([*x, *y], len(x[0])) if self._structured else ([x, y], len(x))
        xs, ys = (x, y) if self.model.structured else ([x], [y])
        outputs: list[Any] = [None] * len(ys)
        function = "eval"
        if sample_weight is not None:
            inputs.append(as_sample_weights(sample_weight, rows))
            function = self._weighted(function)
        with self._using_engine() as engine:
            values = engine.run(function, inputs)
            if with_outputs:
                function = "predict_proba" if self._has_probabilities else "predict"
                outputs = [np.asarray(value) for value in engine.run(function, xs)]
        step = self._step_result(values, rows)
        per_output = {
            name: OutputEvaluation(
                step.losses[name], step.output_totals[name], labels, output_values
            )
            for name, labels, output_values in zip(step.losses, ys, outputs)
        }
        return BatchEvaluation(
            loss=step.loss,
            totals=step.totals,
            labels=ys[0],
            outputs=outputs[0],
            per_output=per_output,
        )

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        batch_size: int | None = None,
        metrics: Any = (),
        sample_weight: Any = None,
    ) -> dict[str, Any]:
        """Computes the loss, accuracy and metrics over a dataset, dropout off, no updates.

        Args:
            x: inputs of shape ``(N, *model.input_shape)``, or any loader or generator
                yielding ``(x, y)`` batches (or ``(x, y, sample_weight)``), with ``y``
                left out.
            y: labels, as for ``train_batch``; ``None`` with a loader.
            batch_size: rows per engine call for arrays; ``None`` uses up to 1024.
            metrics: metric names (``"f1_macro"``, ``"auc_roc"``, ``"mae"``, ...) or
                ``gm.metrics`` objects, accumulated batch by batch. Classification metrics
                receive probabilities (``predict_proba``), regression metrics the raw
                predictions. For several outputs, a list for every output or a dict by
                output name.
            sample_weight: ``(N,)`` weights of the arrays' samples in the loss.

        Returns:
            ``{"loss": ..., "accuracy": ..., <metric name>: ...}``: loss and accuracy are
            sample-weighted means over batches (for regression losses, accuracy is each
            batch's ``1 - NMAE``); each metric its ``result()`` (a float, or an array for a
            confusion matrix).

        Example:
            >>> trainer.evaluate(x_test, y_test, metrics=["f1_macro"])  # doctest: +SKIP
            {'loss': 0.09, 'accuracy': 0.97, 'f1_macro': 0.97}
        """
        return _evaluate(
            self, x, y, batch_size=batch_size, metrics=metrics, sample_weight=sample_weight
        )

    def fit(
        self,
        train: Any,
        *positional: Any,
        epochs: int | None = None,
        validation: Any = None,
        scheduler: Any = None,
        callbacks: Any = (),
        verbose: int = 1,
        metrics: Any = (),
        shuffle: bool = True,
        seed: int | None = None,
        batch_size: int | None = None,
        plots: str | None = None,
        plots_dir: Any = "gometal-plots",
        validation_split: float | None = None,
        validation_data: Any = None,
        sample_weight: Any = None,
        class_weight: Any = None,
    ) -> History:
        """Trains for ``epochs`` more epochs; returns ``self.history``.

        Epoch numbers continue from ``self.epoch`` (completed epochs, across calls and
        checkpoints), and each loader gets ``set_epoch(self.epoch)`` before its epoch, so
        ``fit(n)`` then ``fit(m)`` (or a checkpoint resumed in between) trains exactly as
        ``fit(n + m)``. The first Ctrl-C lets the running step finish, then stops: callbacks'
        ``on_train_end`` run, ``history.interrupted`` is set, one line says so, and the
        trainer stays usable; a second Ctrl-C raises ``KeyboardInterrupt`` at once.

        Two call forms: ``fit(train, epochs, ...)`` and Keras's ``fit(x, y, batch_size,
        epochs, ...)`` (``fit(x, y, epochs=5, batch_size=32)``).

        Args:
            train: a loader yielding ``(x, y)`` batches (or ``(x, y, sample_weight)``
                triples), with ``__len__`` and ideally ``set_epoch``
                (``gm.vision.DataLoader``), or a tuple ``(x, y)`` of arrays; in the Keras
                form, the inputs ``x``.
            positional: ``epochs``, or in the Keras form ``y`` then optionally
                ``batch_size`` and ``epochs``.
            epochs: how many more epochs to train (int >= 0; 1 when given nowhere).
            validation: data evaluated after each epoch (``val_*`` keys), like ``train``;
                arrays are not shuffled.
            scheduler: a ``gm.schedulers`` scheduler; attached on the first call that gets
                it and kept as ``self.scheduler``, which later calls keep stepping. Epoch
                schedulers step after each epoch with ``val_loss`` (``loss`` without
                validation) as the metric ``ReduceLROnPlateau`` watches; batch schedulers
                step after each step.
            callbacks: ``gm.callbacks.Callback`` instances (``EarlyStopping``,
                ``ModelCheckpoint``, ``CSVLogger``, ``JSONLogger``, your own).
            verbose: 0 silent, 1 a progress bar per epoch (loss, accuracy, lr, steps/s)
                and one line per epoch, 2 only the lines.
            metrics: metric names or objects computed on the validation data each epoch,
                recorded as ``val_<name>``.
            shuffle: shuffle ``(x, y)`` arrays each epoch (a loader shuffles as built).
            seed: the arrays' shuffle seed; ``None`` uses 0, so every run, and every
                resumed run, visits the same order. The order of epoch ``e`` is
                ``gm.training.epoch_permutation(seed, e, N)``, as ``DataLoader``'s.
            batch_size: rows per batch for arrays; ``None`` uses ``self.batch_size``.
            plots: ``"html"`` writes ``<plots_dir>/dashboard.html`` (one self-contained
                page of training and evaluation plots) at the end; ``"sidecar"`` sends the
                plot payloads to the sidecar service after each epoch; ``None`` neither.
                Unless ``verbose=0``, fit prints the dashboard's path or URL at the end.
                Plotting problems become a warning, never a failed fit. Sugar for adding
                ``gm.viz.Dashboard(plots, plots_dir, validation=validation)`` to
                ``callbacks``.
            plots_dir: the dashboard's folder (created if missing).
            validation_split: a fraction in ``(0, 1)``: the last samples of the ``(x, y)``
                arrays (before shuffling) are held out as the validation data, as Keras.
            validation_data: Keras's name for ``validation``.
            sample_weight: ``(N,)`` weights of the ``(x, y)`` arrays' samples, scaling
                each sample's loss (see ``train_batch``).
            class_weight: ``{class index: weight}``, scaling each sample's loss by its
                class's weight (absent classes weigh 1); one output trained on labels.

        Returns:
            ``self.history``: per-epoch ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy``, ``val_<metric>``, ``lr`` and ``time``, across all calls.

        Raises:
            TypeError, ValueError: a bad argument, named with what was expected and received.

        Example:
            >>> stop = gm.callbacks.EarlyStopping(patience=2, restore_best=True)
            >>> history = trainer.fit(  # doctest: +SKIP
            ...     (x, y), 10, validation=(xv, yv), callbacks=[stop]
            ... )
        """
        train, epochs, batch_size, validation = keras_fit_arguments(
            train, positional, epochs, batch_size, validation, validation_data
        )
        return _fit(
            self,
            train,
            epochs,
            validation=validation,
            scheduler=scheduler,
            callbacks=callbacks,
            verbose=verbose,
            metrics=metrics,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            plots=plots,
            plots_dir=plots_dir,
            validation_split=validation_split,
            sample_weight=sample_weight,
            class_weight=class_weight,
        )

    def _predict(self, x: Any, batch_size: int | None, function: str) -> Any:
        model = self.model
        if is_batch_stream(x):
            return predict_stream(
                lambda batch: self._predict(batch, batch_size, function),
                x,
                model.output_signature,
            )
        if not model.structured:
            return predict_with_engine(
                self._held,
                x,
                model.input_shape,
                batch_size,
                function=function,
                dtype=model.input_signature.dtype(0),
            )
        return predict_structured(
            self._held, model.input_signature, model.output_signature, x, batch_size, function
        )

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """Returns the model's raw outputs (e.g. logits) with dropout off.

        Args:
            x: inputs of shape ``(N, *model.input_shape)`` (a list or dict of them for a
                model with several inputs), or a loader or generator of such batches (or
                of ``(x, y)`` batches, whose targets are ignored).
            batch_size: rows per engine call; ``None`` uses up to 1024.

        Returns:
            A float32 array of shape ``(N, *model.output_shape)``; for several outputs a
            list of them, or a dict by output name, as ``model.predict``.

        Example:
            >>> logits = trainer.predict(x_test)  # doctest: +SKIP
        """
        return self._predict(x, batch_size, "predict")

    def predict_proba(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Returns probabilities: softmax of logits for the cross-entropy family, sigmoid for
        ``bce_with_logits``, and the outputs themselves for losses that take probabilities.

        Args:
            x: inputs, as for ``predict``.
            batch_size: rows per engine call; ``None`` uses up to 1024.

        Returns:
            A float32 array of shape ``(N, *model.output_shape)``; for several outputs a
            list or dict as ``predict``, where an output under a regression loss gives its
            raw predictions.

        Raises:
            ValueError: when no output's loss has probabilities (regression losses).

        Example:
            >>> trainer.predict_proba(x_test).sum(axis=1)  # doctest: +SKIP
        """
        if not self._has_probabilities:
            raise ValueError(
                f"predict_proba is undefined for the regression loss '{self.loss.name}'"
            )
        return self._predict(x, batch_size, "predict_proba")

    def __repr__(self) -> str:
        loss = self.loss if not self._per_output else self.losses
        return (
            f"Trainer(loss={loss!r}, optimizer={self.optimizer!r}, batch_size={self.batch_size}, "
            f"step={self.step})"
        )
