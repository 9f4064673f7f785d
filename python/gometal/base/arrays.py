"""Validation and conversion of user arrays before they cross into the engine.

The rule, in one place:

* ``x`` must be array-like with shape ``(N, *input_shape)`` and ``N >= 1``.
* A C-contiguous ``float32`` array passes through untouched (the engine reads it in place).
* Other real dtypes (float64, float16, integers, bool) and non-contiguous arrays are
  converted once to a C-contiguous ``float32`` copy.
* Complex, object, string, datetime and structured arrays raise ``TypeError``.
* NaN or infinity raises ``ValueError`` naming the argument: the engine checks every float
  input it reads, so the training and inference paths skip a second pass in Python, and
  ``check_finite=True`` adds one that also reports the first bad position.

Labels follow the loss: integer-label losses take integer class indices in
``[0, num_classes)`` with shape ``(N,)`` (``(N, 1)`` is accepted); float labels are rejected
with ``TypeError``, as PyTorch's cross entropy does. Every other loss takes float targets with
the model's output shape; ``(N,)`` is accepted for an ``(N, 1)`` output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# dtype.kind codes accepted as real-valued numeric input: bool, signed, unsigned, float.
_REAL_KINDS = frozenset("biuf")
_INTEGER_KINDS = frozenset("iu")
_INT32_MAX = np.iinfo(np.int32).max


def to_ndarray(value: Any, name: str) -> np.ndarray:
    """``value`` as an ndarray (an ndarray as it is), or ``ValueError`` naming ``name``."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} could not be read as an array: {err}") from None


def check_real_dtype(arr: np.ndarray, name: str) -> None:
    """Raises ``TypeError`` naming ``name`` unless ``arr`` holds bools, ints or floats."""
    if arr.dtype.kind not in _REAL_KINDS:
        raise TypeError(
            f"{name} has dtype {arr.dtype}; expected a real numeric dtype "
            "(float32, float64, float16, an integer type or bool)"
        )


def format_shape(shape: tuple[int, ...]) -> str:
    """A shape as Python prints a tuple: ``(3,)``, ``(2, 4)``."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _expected_batch_shape(sample_shape: tuple[int, ...]) -> str:
    # A symbolic dim (a sequence length set at run time) is any size.
    return "(N" + "".join(f", {d}" if d >= 0 else ", T" for d in sample_shape) + ")"


def _fits_sample_shape(shape: tuple[int, ...], sample_shape: tuple[int, ...]) -> bool:
    if shape[1:] == sample_shape:  # the common case, checked first: every batch runs this
        return True
    return len(shape) == len(sample_shape) + 1 and all(
        want < 0 or got == want for got, want in zip(shape[1:], sample_shape)
    )


# Rows converted or scanned at a time: a bound on the temporary memory that validating or
# converting a large input (or a broadcast view of one row) may take.
CHUNK_BYTES = 1 << 24


def rows_per_chunk(arr: np.ndarray) -> int:
    """How many rows of ``arr`` make about ``CHUNK_BYTES`` of float32 (at least one)."""
    row_bytes = 4 * max(1, int(np.prod(arr.shape[1:], dtype=np.int64)))
    return max(1, CHUNK_BYTES // row_bytes)


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raises naming the count and first position of NaN or inf, scanning in chunks."""
    rows = arr if arr.ndim else arr[None]
    step = rows_per_chunk(rows)
    count, first = 0, None
    for start in range(0, len(rows), step):
        bad = ~np.isfinite(rows[start : start + step])
        found = int(np.count_nonzero(bad))
        if found and first is None:
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            first = (index[0] + start, *index[1:])
        count += found
    if count:
        position = first if arr.ndim else ()
        raise ValueError(
            f"{name} contains {count} non-finite value(s) (NaN or inf); the first is "
            f"{arr[position]} at index {position}"
        )


def _as_float32_contiguous(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.float32 and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_token_ids(arr: np.ndarray, name: str) -> None:
    """Integer ids that fit int32 (the engine's index type)."""
    if arr.dtype.kind not in _INTEGER_KINDS:
        raise TypeError(f"{name} holds token ids: expected an integer array, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < np.iinfo(np.int32).min or int(arr.max()) > _INT32_MAX):
        raise ValueError(f"{name} holds ids outside the int32 range")


def check_input_batch(
    x: Any,
    sample_shape: tuple[int, ...],
    name: str = "x",
    check_finite: bool = True,
    dtype: str = "float32",
) -> np.ndarray:
    """Validates a batch of model inputs without converting it (see ``as_input_batch``).

    Large inputs can then be converted a chunk at a time: a broadcast view of one row
    stays a view, and a float64 array is never copied whole.

    Args:
        x: array-like of shape ``(N, *sample_shape)``.
        sample_shape: the model's input shape without the batch dimension (a negative,
            symbolic dim takes any size).
        name: the argument name used in error messages.
        check_finite: whether to reject NaN and infinity here (scanned in chunks).
        dtype: the input's type: ``"float32"`` (any real dtype converts) or ``"int32"``
            (integer token ids only).

    Returns:
        ``x`` as an ndarray of any real dtype and layout.

    Example:
        >>> check_input_batch(np.zeros((10**6, 4)), (4,)).dtype
        dtype('float64')
    """
    arr = to_ndarray(x, name)
    if dtype == "int32":
        _check_token_ids(arr, name)
    else:
        check_real_dtype(arr, name)
    if not _fits_sample_shape(arr.shape, tuple(sample_shape)):
        expected = _expected_batch_shape(sample_shape)
        hint = ""
        if arr.shape == tuple(sample_shape):
            hint = "; it looks like a single sample: add a batch dimension, e.g. x[None]"
        raise ValueError(
            f"{name} must have shape {expected} for this model, got {format_shape(arr.shape)}{hint}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {format_shape(arr.shape)} has 0 samples")
    if check_finite and dtype != "int32":
        _check_finite(arr, name)
    return arr


def as_engine_rows(arr: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """Rows of a checked input as the engine reads them: C-contiguous float32 (or int32 for
    token ids; no copy when they already are)."""
    if dtype == "int32":
        if arr.dtype == np.int32 and arr.flags.c_contiguous:
            return arr
        return np.ascontiguousarray(arr, dtype=np.int32)
    return _as_float32_contiguous(arr)


def as_input_batch(
    x: Any,
    sample_shape: tuple[int, ...],
    name: str = "x",
    check_finite: bool = True,
    dtype: str = "float32",
) -> np.ndarray:
    """Validates a batch of model inputs and returns it as C-contiguous float32.

    Args:
        x: array-like of shape ``(N, *sample_shape)``.
        sample_shape: the model's input shape without the batch dimension.
        name: the argument name used in error messages.
        check_finite: whether to reject NaN and infinity here.
        dtype: ``"float32"``, or ``"int32"`` for token ids.

    Returns:
        ``x`` itself when it is already C-contiguous in ``dtype``, otherwise one converted
        copy.

    Example:
        >>> as_input_batch([[1, 2], [3, 4]], (2,)).dtype
        dtype('float32')
    """
    checked = check_input_batch(x, sample_shape, name, check_finite, dtype)
    return as_engine_rows(checked, dtype)


def _check_length(arr: np.ndarray, num_samples: int, name: str) -> None:
    if arr.ndim == 0 or arr.shape[0] != num_samples:
        length = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]} samples"
        raise ValueError(
            f"x and {name} have different lengths: x has {num_samples} samples, {name} has {length}"
        )


def as_class_labels(
    y: Any,
    num_samples: int,
    num_classes: int,
    name: str = "y",
    ignore_index: int | None = None,
    label_shape: tuple[int, ...] = (),
) -> np.ndarray:
    """Validates integer class labels and returns them as a C-contiguous int32 array.

    Args:
        y: integer array-like of shape ``(N,)`` or ``(N, 1)``; ``(N, *label_shape)`` for
            one label per position (a language model's ``(N, T)`` next tokens).
        num_samples: ``N``, the number of samples in the matching ``x``.
        num_classes: labels must lie in ``[0, num_classes)``.
        name: the argument name used in error messages.
        ignore_index: a label the loss ignores (torch's ``ignore_index``, e.g. -100),
            accepted beside the classes.
        label_shape: the labels of one sample (a negative, symbolic dim takes any size).

    Returns:
        An ``int32`` array of shape ``(N, *label_shape)``.

    Example:
        >>> as_class_labels(np.array([0, 2, 1]), 3, num_classes=3).dtype
        dtype('int32')
    """
    arr = to_ndarray(y, name)
    if arr.dtype.kind not in _INTEGER_KINDS:
        raise TypeError(
            f"{name} has dtype {arr.dtype}; this loss takes integer class indices "
            f"(e.g. int64 or int32) in [0, {num_classes}). Convert with {name}.astype(np.int64) "
            "if the values are whole numbers"
        )
    if label_shape:
        if not _fits_sample_shape(arr.shape, tuple(label_shape)):
            raise ValueError(
                f"{name} must have shape {_expected_batch_shape(tuple(label_shape))} of class "
                f"indices, got {format_shape(arr.shape)}"
            )
    else:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
        if arr.ndim != 1:
            raise ValueError(
                f"{name} must have shape (N,) of class indices, got {format_shape(arr.shape)}"
            )
    _check_length(arr, num_samples, name)
    if arr.size == 0:
        return np.ascontiguousarray(arr, dtype=np.int32)
    low, high = int(arr.min()), int(arr.max())
    if (low < 0 or high >= num_classes) and ignore_index is not None:
        kept = arr[arr != ignore_index]
        low, high = (int(kept.min()), int(kept.max())) if kept.size else (0, 0)
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} holds the label {bad}, outside the valid range [0, {num_classes}) "
            f"for a model with {num_classes} outputs"
        )
    if arr.dtype == np.int32 and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=np.int32)


def as_dense_targets(
    y: Any,
    num_samples: int,
    target_shape: tuple[int, ...],
    name: str = "y",
    check_finite: bool = True,
) -> np.ndarray:
    """Validates float targets that have the model's output shape.

    Args:
        y: real array-like of shape ``(N, *target_shape)``; ``(N,)`` is accepted when
            ``target_shape == (1,)``.
        num_samples: ``N``, the number of samples in the matching ``x``.
        target_shape: the model's output shape without the batch dimension.
        name: the argument name used in error messages.
        check_finite: whether to reject NaN and infinity here.

    Returns:
        A C-contiguous float32 array of shape ``(N, *target_shape)``.

    Example:
        >>> as_dense_targets([0.5, 1.0], 2, (1,)).shape
        (2, 1)
    """
    arr = to_ndarray(y, name)
    check_real_dtype(arr, name)
    if tuple(target_shape) == (1,) and arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    _check_length(arr, num_samples, name)
    if not _fits_sample_shape(arr.shape, tuple(target_shape)):
        raise ValueError(
            f"{name} must have shape {_expected_batch_shape(target_shape)} to match the model "
            f"output, got {format_shape(arr.shape)}"
        )
    arr = _as_float32_contiguous(arr)
    if check_finite:
        _check_finite(arr, name)
    return arr


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """Returns ``batch_size`` as a positive int, or raises ``ValueError`` naming it.

    Args:
        batch_size: the value to check.
        name: the argument name used in error messages.

    Returns:
        The batch size as an ``int``.

    Example:
        >>> check_batch_size(32)
        32
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {batch_size!r}")
    if not 1 <= int(batch_size) <= _INT32_MAX:
        raise ValueError(f"{name} must be a positive int, got {batch_size}")
    return int(batch_size)


def check_seed(seed: Any, name: str = "seed") -> int:
    """Returns ``seed`` as a non-negative int, or raises naming it.

    Args:
        seed: the value to check.
        name: the argument name used in error messages.

    Returns:
        The seed as an ``int``.

    Example:
        >>> check_seed(7)
        7
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be a non-negative int, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"{name} must be a non-negative int below 2**64, got {seed}")
    return int(seed)
