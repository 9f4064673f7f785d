"""``gometal predict MODEL IMAGE...``: classify image files with a model ``gometal train`` saved.

The model file records the classes and the preprocessing of its training images (size,
channels, resize, normalisation); each image is loaded the same way, and the top classes
with their softmax probabilities are printed, one line per image, or as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_USAGE = 2  # argparse's exit status for bad arguments
DEFAULT_TOP = 3
MODEL_FILE = "model.safetensors"
BATCH_IMAGES = 64  # images decoded and run per engine call
# What the model's outputs are: logits go through a softmax, probabilities are shown as they are.
OUTPUT_KINDS = ("logits", "probabilities")


class PredictJobError(ValueError):
    """A model or image ``gometal predict`` cannot use; the message says which and why."""


def add_predict_command(commands: Any) -> None:
    """Registers ``gometal predict`` on an argparse sub-parser collection.

    Args:
        commands: the collection ``add_subparsers`` returned.

    Example:
        >>> add_predict_command(parser.add_subparsers())  # doctest: +SKIP
    """
    predict = commands.add_parser(
        "predict",
        help="classify image files with a model saved by gometal train",
        description="Classify IMAGE files with MODEL (a gometal train --out folder, or its "
        "model.safetensors), loading each image with the preprocessing the model records, "
        "and print the most probable classes with their probabilities.",
    )
    predict.add_argument("model", metavar="MODEL")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        help=f"classes shown per image, most probable first ({DEFAULT_TOP}; at most all)",
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help='print a JSON list: [{"image", "predictions": [{"class", "index", "probability"}]}]',
    )
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Runs ``gometal predict``; returns the process exit code.

    Args:
        args: the parsed ``gometal predict`` arguments.

    Returns:
        0 on success; 2 after a one-line ``gometal predict: ...`` error on stderr when the
        model, an image or ``--top`` cannot be used.

    Example:
        >>> run_predict(build_parser().parse_args(["predict", "run", "cat.png"]))  # doctest: +SKIP
        0
    """
    try:
        results = classify(args.model, args.images, args.top)
    except PredictJobError as err:
        print(f"gometal predict: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            shown = ", ".join(f"{p['class']} {p['probability']:.4f}" for p in result["predictions"])
            print(f"{result['image']}: {shown}")
    return 0


def classify(model_path: str, images: Sequence[str], top: int) -> list[dict[str, Any]]:
    """Classifies image files with a saved ``gometal train`` model.

    Args:
        model_path: a ``gometal train`` output folder, or its ``model.safetensors``.
        images: image file paths.
        top: how many classes to report per image (at most the number of classes).

    Returns:
        One ``{"image": path, "predictions": [{"class", "index", "probability"}, ...]}``
        per image, in the order given, predictions most probable first.

    Raises:
        PredictJobError: the model is missing, not a gometal model, or records no
            preprocessing; an image is missing or not an image; ``top`` is below 1.

    Example:
        >>> classify("gometal-run", ["cat.png"], 1)[0]["predictions"][0]["class"]  # doctest: +SKIP
        'cat'
    """
    if top < 1:
        raise PredictJobError(f"--top must be at least 1, got {top}")
    from ..data.vision import images_to_float_batch

    path = _model_file(model_path)
    model, classes, preprocessing, outputs_kind = _load(path)
    for image in images:
        if not Path(image).is_file():
            reason = "is a folder" if Path(image).is_dir() else "does not exist"
            raise PredictJobError(f"IMAGE {image!r} {reason}; pass image files")
    count = min(top, len(classes))
    results = []
    for start in range(0, len(images), BATCH_IMAGES):
        chunk = list(images[start : start + BATCH_IMAGES])
        batch = images_to_float_batch(
            [_load_image(preprocessing, image) for image in chunk],
            preprocessing.mean,
            preprocessing.std,
        )
        outputs = np.asarray(model.predict(batch), dtype=np.float64)
        probabilities = _softmax(outputs) if outputs_kind == "logits" else outputs
        for image, row in zip(chunk, probabilities):
            # Most probable first; a stable sort keeps equal probabilities in class order.
            order = np.argsort(-row, kind="stable")[:count]
            predictions = [
                {"class": classes[i], "index": int(i), "probability": float(row[i])} for i in order
            ]
            results.append({"image": image, "predictions": predictions})
    return results


def _model_file(model_path: str) -> Path:
    path = Path(model_path)
    if path.is_dir():
        inside = path / MODEL_FILE
        if not inside.is_file():
            raise PredictJobError(
                f"MODEL folder {model_path!r} holds no {MODEL_FILE}; pass a gometal train "
                "--out folder or a model file"
            )
        return inside
    if not path.exists():
        raise PredictJobError(
            f"MODEL {model_path!r} does not exist; pass a gometal train --out folder or its "
            f"{MODEL_FILE}"
        )
    return path


def _load_image(preprocessing: Any, image: str) -> np.ndarray:
    try:
        return preprocessing.load_uint8(image)
    except OSError as err:
        raise PredictJobError(f"IMAGE {image!r} is not a readable image ({err})") from err


def _load(path: Path) -> tuple[Any, list[str], Any, str]:
    """The model, its class names, its preprocessing and its outputs' kind, or a
    PredictJobError."""
    from ..data.vision import ImagePreprocessing
    from ..io.serialization import CheckpointError, load_model, read_metadata

    shown = os.fspath(path)
    try:
        user = read_metadata(path).get("user") or {}
        model = load_model(path)
    except (CheckpointError, OSError) as err:
        raise PredictJobError(f"MODEL {shown!r} is not a gometal model file: {err}") from err
    if "preprocessing" not in user or "classes" not in user:
        raise PredictJobError(
            f"MODEL {shown!r} records no image preprocessing and class names (saved by "
            "model.save rather than gometal train?); save it with metadata holding "
            "'classes' and 'preprocessing' (gm.vision.ImagePreprocessing.to_dict())"
        )
    try:
        preprocessing = ImagePreprocessing.from_dict(user["preprocessing"])
    except (TypeError, ValueError) as err:
        raise PredictJobError(f"MODEL {shown!r}: {err}") from err
    classes = user["classes"]
    expected_input = (preprocessing.channels, *preprocessing.image_size)
    if tuple(model.input_shape) != expected_input:
        raise PredictJobError(
            f"MODEL {shown!r} takes inputs of shape {tuple(model.input_shape)}, but its "
            f"preprocessing makes {expected_input}"
        )
    outputs = model.output_shape[-1] if len(model.output_shape) == 1 else None
    if (
        not isinstance(classes, list)
        or not all(isinstance(name, str) for name in classes)
        or len(classes) != outputs
    ):
        raise PredictJobError(
            f"MODEL {shown!r}: 'classes' must list one name per output ({outputs}), got {classes!r}"
        )
    outputs_kind = user.get("outputs", "logits")
    if outputs_kind not in OUTPUT_KINDS:
        raise PredictJobError(
            f"MODEL {shown!r}: 'outputs' must be one of {OUTPUT_KINDS}, got {outputs_kind!r}"
        )
    return model, classes, preprocessing, outputs_kind


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
