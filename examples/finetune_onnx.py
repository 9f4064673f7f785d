"""Fine-tune a CNN loaded from an ONNX file: new head, training, export again.

    python examples/finetune_onnx.py [--onnx CNN.onnx] [--out DIR] [--epochs 4]

Without --onnx, a CNN is first trained on five of scikit-learn's ten handwritten digits
and exported to DIR/pretrained.onnx, standing in for a network exported elsewhere (any
ONNX CNN with one NCHW float input and a Flatten before its dense head works, e.g. one
from torch.onnx.export). The script then loads the file with gm.onnx.load, keeps
everything up to the last Flatten, puts a new 10-class head on it, fine-tunes on all ten
digits (an image folder written under DIR/data) and exports DIR/finetuned.onnx, which it
checks against onnxruntime when that is installed. PyTorch, Keras and MLX cannot train
from an ONNX file; gometal can.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import gometal as gm
from gometal.apps.train_job import build_cnn
from gometal.datasets import write_digits_folder
from gometal.vision import DataLoader, ImageFolderDataset

IMAGE_SIZE = 32


def loaders(dataset, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    train, val = dataset.split(0.2, seed=seed)
    return (
        DataLoader(train, batch_size, shuffle=True, seed=seed),
        DataLoader(val, batch_size, shuffle=False),
    )


def pretrain(digits: ImageFolderDataset, out: Path, epochs: int, seed: int) -> Path:
    """Trains a CNN on the digits 0-4 only and exports it: the network to start from."""
    five = digits.filter_classes(["0", "1", "2", "3", "4"])
    train, val = loaders(five, 32, seed)
    model = build_cnn((1, IMAGE_SIZE, IMAGE_SIZE), len(five.classes), seed)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-3), batch_size=32)
    history = trainer.fit(train, epochs, validation=val, verbose=0)
    print(f"pretrained on digits 0-4: val accuracy {history.val_accuracy[-1]:.3f}")
    path = out / "pretrained.onnx"
    model.export_onnx(path)
    return path


def new_head(base: gm.Model, classes: int, seed: int) -> gm.Model:
    """The base up to its last Flatten, then Dense 64, ReLU, Dropout and a new classifier."""
    flattens = [layer for layer in base.layers if isinstance(layer, gm.layers.Flatten)]
    if not flattens:
        raise SystemExit("the ONNX model has no Flatten to cut its head at")
    features = base.layer_output(flattens[-1].name)
    hidden = gm.layers.ReLU()(gm.layers.Dense(64)(features))
    logits = gm.layers.Dense(classes)(gm.layers.Dropout(0.3)(hidden))
    model = gm.Model(base.input, logits, seed=seed)
    # The layers the two models share keep their imported, trained values.
    shared = {layer.name for layer in model.layers if any(layer is old for old in base.layers)}
    weights = base.get_weights()
    model.set_weights(
        {name: w for name, w in weights.items() if any(name.startswith(f"{s}.") for s in shared)}
    )
    return model


def check_with_onnxruntime(path: Path, model: gm.Model, x: np.ndarray) -> None:
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime not installed: skipped the check of the exported file")
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    diff = float(np.max(np.abs(got - model.predict(x))))
    print(f"onnxruntime agrees with gometal on {path.name}: max |difference| {diff:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="an exported CNN (default: pretrain one)")
    parser.add_argument("--out", type=Path, default=Path("gometal-finetune"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    root = write_digits_folder(args.out / "data")
    digits = ImageFolderDataset(root, image_size=IMAGE_SIZE, channels=1)
    source = args.onnx or pretrain(digits, args.out, args.epochs, args.seed)

    base = gm.onnx.load(source)
    model = new_head(base, len(digits.classes), args.seed)
    model.summary()
    train, val = loaders(digits, 32, args.seed)
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(1e-3), batch_size=32)
    history = trainer.fit(train, args.epochs, validation=val, verbose=0)
    print(f"fine-tuned on all ten digits: val accuracy {history.val_accuracy[-1]:.3f}")

    out = args.out / "finetuned.onnx"
    model.export_onnx(out)
    print(f"wrote {out}")
    check_with_onnxruntime(out, model, next(iter(val))[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
