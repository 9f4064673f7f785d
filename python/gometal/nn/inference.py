"""Running a model's inference functions over arrays, a chunk of rows per engine call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..base.arrays import as_engine_rows, check_batch_size, check_input_batch
from .layers.weight_store import EngineWeights
from .signature import Signature

# Default rows per inference call: large enough to amortize the call, small enough that
# the engine's arena stays modest for big arrays.
DEFAULT_INFERENCE_BATCH_SIZE = 1024


def iter_batches(num_samples: int, batch_size: int) -> Iterator[slice]:
    """Yields row slices covering ``range(num_samples)`` in chunks of ``batch_size``."""
    for start in range(0, num_samples, batch_size):
        yield slice(start, min(start + batch_size, num_samples))


def inference_batch_size(batch_size: int | None) -> int:
    """Rows per inference call: ``batch_size`` checked, or the default for ``None``."""
    return DEFAULT_INFERENCE_BATCH_SIZE if batch_size is None else check_batch_size(batch_size)


def predict_with_engine(
    held: EngineWeights,
    x: Any,
    sample_shape: tuple[int, ...],
    batch_size: int | None,
    function: str = "predict",
    dtype: str = "float32",
) -> np.ndarray:
    """Validates ``x`` and runs a one-input, one-output engine function over it in batches
    (``dtype`` is the input's: ``"int32"`` for token ids)."""
    rows = inference_batch_size(batch_size)
    # The engine rejects NaN and inf itself, naming the input, so no second pass here.
    # Converted a chunk at a time: a broadcast view or a float64 array is never copied whole.
    x = check_input_batch(x, sample_shape, check_finite=False, dtype=dtype)
    # One weight set for the whole call: a trainer sharing the layers waits until it ends.
    with held.use() as engine:
        chunks = [
            np.asarray(engine.run(function, [as_engine_rows(x[r], dtype)])[0])
            for r in iter_batches(len(x), rows)
        ]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)


def check_input_arrays(
    signature: Signature, x: Any, argument: str = "x", check_finite: bool = False
) -> list[np.ndarray]:
    """Checks a structured model's inputs: one array per input, each of its input's shape,
    all with the same number of rows (not converted: see ``check_input_batch``).

    Args:
        signature: the model's input signature.
        x: a list (in the model's order) or a dict (by input name) of array-likes.
        argument: the argument's name for messages.
        check_finite: also reject NaN and infinity here.

    Returns:
        The arrays, in the model's input order.

    Raises:
        TypeError, ValueError: a missing, unknown or misshapen input, or inputs with
            different numbers of rows (each named as ``x['image']``).

    Example:
        >>> xs = check_input_arrays(model.input_signature, {"image": i, "meta": m})  # doctest: +SKIP
    """
    arrays = []
    for index, (value, shape) in enumerate(
        zip(signature.arrange(x, argument), signature.sample_shapes)
    ):
        label = signature.label(argument, index)
        arrays.append(
            check_input_batch(
                value, shape, label, check_finite=check_finite, dtype=signature.dtype(index)
            )
        )
    check_same_rows(arrays, [signature.label(argument, i) for i in range(len(arrays))])
    return arrays


def check_same_rows(arrays: list[np.ndarray], labels: list[str]) -> None:
    """Raises ``ValueError`` naming the first array whose row count differs from the first's.

    Example:
        >>> check_same_rows([np.zeros((2, 1)), np.zeros((2, 3))], ["x['a']", "x['b']"])
    """
    for array, label in zip(arrays[1:], labels[1:]):
        if len(array) != len(arrays[0]):
            raise ValueError(
                f"{label} has {len(array)} samples but {labels[0]} has {len(arrays[0])}; "
                "every input and target needs one row per sample"
            )


def predict_structured(
    held: EngineWeights,
    inputs: Signature,
    outputs: Signature,
    x: Any,
    batch_size: int | None,
    function: str = "predict",
) -> Any:
    """Runs a structured model's inference function over ``x`` in batches.

    Args:
        held: the engine holding the model's weights, defining ``function`` with one
            input per model input and one output per model output.
        inputs: the model's input signature.
        outputs: the model's output signature.
        x: a list or dict of input arrays (see ``check_input_arrays``).
        batch_size: rows per engine call; ``None`` uses up to 1024.
        function: the engine function (``"predict"`` or ``"predict_proba"``).

    Returns:
        The outputs as the model returns them: a list, or a dict by output name.

    Example:
        >>> predict_structured(held, sig_in, sig_out, [i, m], None)  # doctest: +SKIP
    """
    rows = inference_batch_size(batch_size)
    arrays = check_input_arrays(inputs, x)
    chunks: list[list[np.ndarray]] = [[] for _ in outputs.names]
    with held.use() as engine:
        for r in iter_batches(len(arrays[0]), rows):
            values = engine.run(
                function, [as_engine_rows(a[r], inputs.dtype(i)) for i, a in enumerate(arrays)]
            )
            for collected, value in zip(chunks, values):
                collected.append(np.asarray(value))
    joined = [c[0] if len(c) == 1 else np.concatenate(c, axis=0) for c in chunks]
    return outputs.pack(joined)


def is_batch_stream(x: Any) -> bool:
    """Whether ``x`` is a loader or generator of batches rather than the data itself:
    iterable, and not an array, list, tuple, dict or string."""
    if isinstance(x, (np.ndarray, list, tuple, dict, str, bytes)):
        return False
    return hasattr(x, "__iter__")


def predict_stream(predict: Any, batches: Any, outputs: Signature) -> Any:
    """Predicts each batch of a loader or generator and joins the results.

    A batch is the inputs themselves (an array, or a list or dict for several inputs) or a
    tuple ``(x, y)`` / ``(x, y, sample_weight)`` whose targets are ignored, as Keras's
    ``predict`` does with a dataset.

    Args:
        predict: a function from one batch's inputs to the model's outputs.
        batches: the loader or generator.
        outputs: the model's output signature (how results are joined and returned).

    Returns:
        The outputs over every batch, as ``predict`` returns them for arrays.

    Raises:
        ValueError: the loader yielded no batch.

    Example:
        >>> predict_stream(model.predict, loader, model.output_signature)  # doctest: +SKIP
    """
    chunks: list[list[np.ndarray]] = [[] for _ in outputs.names]
    for batch in batches:
        if isinstance(batch, tuple) and len(batch) in (2, 3):
            batch = batch[0]
        values = outputs.arrange(predict(batch), "predict")
        for collected, value in zip(chunks, values):
            collected.append(np.asarray(value))
    if not chunks[0]:
        raise ValueError("predict got a loader that yielded no batch")
    joined = [c[0] if len(c) == 1 else np.concatenate(c, axis=0) for c in chunks]
    return outputs.pack(joined)
