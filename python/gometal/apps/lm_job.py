"""``gometal train-lm`` and ``gometal generate``: a GPT language model trained on text
files (or on the standard library's own source when none are given) and sampled from.

The run folder (``--out``) holds ``tokenizer.json``, ``corpus.tokens`` (the tokenized
text, memory-mapped), ``run.json`` (the settings), ``checkpoints/epoch-NNN.gmckpt`` (one
per evaluation interval, resumable with ``--resume``) and ``model.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import models, text
from ..base.atomic import write_atomically
from ..io.serialization.checkpoint import load_model
from ..io.serialization.errors import CheckpointError
from ..nn.model import Model
from ..train import callbacks, optim, schedulers
from ..train.trainer import Trainer
from .arguments import positive_int

SETTINGS = (
    "tokenizer", "vocab_size", "n_layer", "n_head", "n_embd", "block_size", "batch_size",
    "max_iters", "lr", "min_lr", "warmup_iters", "eval_interval", "eval_iters", "dropout",
    "weight_decay", "grad_clip", "seed",
)  # fmt: skip
EXIT_ERROR = 2


class LMJobError(Exception):
    """A problem with the job's input, reported as one line and exit status 2."""


def _fraction(text_value: str) -> float:
    value = float(text_value)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def add_lm_commands(commands: Any) -> None:
    """Registers ``gometal train-lm`` and ``gometal generate``.

    Example:
        >>> add_lm_commands(parser.add_subparsers())  # doctest: +SKIP
    """
    train = commands.add_parser(
        "train-lm",
        help="train a GPT language model on text files (the standard library's source by default)",
        description="Train a GPT (nanoGPT's design) with AdamW (decay on 2-D weights), "
        "linear warmup then cosine decay and gradient clipping, evaluating every "
        "--eval-interval steps and saving a resumable checkpoint each time.",
    )
    train.add_argument("files", nargs="*", metavar="FILE", help="text files (default: stdlib)")
    train.add_argument("--tokenizer", choices=("char", "byte", "bpe"), default="char")
    train.add_argument("--vocab-size", type=positive_int, default=512, help="BPE vocabulary (512)")
    train.add_argument("--n-layer", type=positive_int, default=4)
    train.add_argument("--n-head", type=positive_int, default=4)
    train.add_argument("--n-embd", type=positive_int, default=128)
    train.add_argument("--block-size", type=positive_int, default=64)
    train.add_argument("--batch-size", type=positive_int, default=12)
    train.add_argument("--max-iters", type=positive_int, default=2000)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--min-lr", type=float, default=1e-4)
    train.add_argument("--warmup-iters", type=int, default=100)
    train.add_argument("--eval-interval", type=positive_int, default=250)
    train.add_argument("--eval-iters", type=positive_int, default=20)
    train.add_argument("--dropout", type=_fraction, default=0.0)
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--grad-clip", type=float, default=1.0)
    train.add_argument("--seed", type=int, default=1337)
    train.add_argument("--out", default="gometal-lm", help="the run folder (gometal-lm)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    train.add_argument("--sample-tokens", type=int, default=200, help="tokens sampled at the end")
    train.add_argument("--no-progress", action="store_true", help="only one line per interval")
    train.set_defaults(handler=run_train_lm)

    generate = commands.add_parser(
        "generate",
        help="print text sampled from a model trained by gometal train-lm",
        description="Continue --prompt with tokens sampled from RUN (a train-lm folder).",
    )
    generate.add_argument("run", metavar="RUN")
    generate.add_argument("--prompt", default="\n")
    generate.add_argument("--max-new-tokens", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--greedy", action="store_true")
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(handler=run_generate)


def _read_corpus(files: list[str]) -> str:
    if not files:
        return text.stdlib_corpus().text
    parts = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise LMJobError(f"{name}: no such file")
        try:
            parts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise LMJobError(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return "\n".join(parts)


def _tokenizer(kind: str, corpus: str, vocab_size: int) -> Any:
    if kind == "byte":
        return text.ByteTokenizer()
    if kind == "bpe":
        return text.BPETokenizer.train([corpus], vocab_size=vocab_size)
    return text.CharTokenizer.from_text(corpus)


def _trainer(settings: dict[str, Any], vocab: int) -> Trainer:
    model = models.GPT(
        vocab,
        settings["block_size"],
        settings["n_layer"],
        settings["n_head"],
        settings["n_embd"],
        dropout=settings["dropout"],
        seed=settings["seed"],
    )
    shapes = model.weight_shapes
    two_d = sorted(name for name, shape in shapes.items() if len(shape) >= 2)
    optimizer = optim.AdamW(
        lr=settings["lr"],
        betas=(0.9, 0.95),
        weight_decay=settings["weight_decay"],
        clip_grad_norm=settings["grad_clip"] or None,
        # nanoGPT's groups: decay on matrices and embeddings, none on biases and norms.
        param_groups=[{"params": [n for n in shapes if n not in two_d], "weight_decay": 0.0}],
    )
    return Trainer(
        model, loss="cross_entropy", optimizer=optimizer, batch_size=settings["batch_size"]
    )


def _schedule(settings: dict[str, Any]) -> Any:
    warmup = max(0, settings["warmup_iters"])
    after = max(1, settings["max_iters"] - warmup)
    cosine = schedulers.CosineAnnealingLR(T_max=after, eta_min=settings["min_lr"], interval="batch")
    if warmup == 0:
        return cosine
    return schedulers.LinearWarmup(cosine, warmup, start_factor=1.0 / warmup, interval="batch")


def _latest_checkpoint(folder: Path) -> Path:
    found = sorted((folder / "checkpoints").glob("epoch-*.gmckpt"))
    if not found:
        raise LMJobError(f"{folder}: no checkpoint to resume (checkpoints/epoch-*.gmckpt)")
    return found[-1]


def run_train_lm(args: argparse.Namespace) -> int:
    """Runs ``gometal train-lm``; returns the process exit code (2 after a one-line error).

    Example:
        >>> run_train_lm(build_parser().parse_args(["train-lm", "--max-iters", "10"]))  # doctest: +SKIP
    """
    try:
        return _train_lm(args)
    except (LMJobError, CheckpointError, ValueError, OSError) as err:
        print(f"gometal train-lm: {err}", file=sys.stderr)
        return EXIT_ERROR


def _train_lm(args: argparse.Namespace) -> int:
    out = Path(args.resume or args.out)
    if args.resume:
        settings = json.loads((out / "run.json").read_text())
        tokenizer = text.load_tokenizer(out / "tokenizer.json")
        trainer = Trainer.load(_latest_checkpoint(out))
    else:
        settings = {key: getattr(args, key) for key in SETTINGS}
        corpus = _read_corpus(args.files)
        tokenizer = _tokenizer(args.tokenizer, corpus, args.vocab_size)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out / "tokenizer.json")
        text.cached_token_file(out / "corpus.tokens", corpus, tokenizer)
        write_atomically(out / "run.json", json.dumps(settings, indent=2).encode())
        trainer = _trainer(settings, tokenizer.vocab_size)
    data = text.TokenDataset(out / "corpus.tokens", block_size=settings["block_size"])
    interval = settings["eval_interval"]
    seed = settings["seed"]
    train = data.loader("train", settings["batch_size"], batches_per_epoch=interval, seed=seed)
    val = data.loader("validation", settings["batch_size"], settings["eval_iters"], seed=seed)
    epochs = -(-settings["max_iters"] // interval) - trainer.epoch
    checkpoints = callbacks.ModelCheckpoint(out / "checkpoints", every_n_epochs=1, keep_last=2)
    trainer.fit(
        train,
        max(0, epochs),
        validation=val,
        scheduler=None if args.resume else _schedule(settings),
        callbacks=[checkpoints],
        verbose=2 if args.no_progress else 1,
    )
    trainer.model.save(out / "model.safetensors")
    if args.sample_tokens > 0:
        sample = models.generate(
            trainer.model, tokenizer.encode("\n"), args.sample_tokens, seed=seed
        )
        print(tokenizer.decode(sample))
    return 0


def _load_run(run: str) -> tuple[Model, Any]:
    folder = Path(run)
    if not (folder / "tokenizer.json").is_file() or not (folder / "model.safetensors").is_file():
        raise LMJobError(
            f"{run}: not a gometal train-lm folder (tokenizer.json, model.safetensors)"
        )
    return load_model(folder / "model.safetensors"), text.load_tokenizer(folder / "tokenizer.json")


def run_generate(args: argparse.Namespace) -> int:
    """Runs ``gometal generate``; returns the process exit code (2 after a one-line error).

    Example:
        >>> run_generate(build_parser().parse_args(["generate", "gometal-lm"]))  # doctest: +SKIP
    """
    try:
        model, tokenizer = _load_run(args.run)
        prompt = tokenizer.encode(args.prompt)
        if len(prompt) == 0:
            raise LMJobError("--prompt must hold at least one token")
        ids = models.generate(
            model,
            prompt,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            greedy=args.greedy,
            seed=args.seed,
        )
    except (LMJobError, CheckpointError, ValueError, TypeError, OSError) as err:
        print(f"gometal generate: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(tokenizer.decode(np.asarray(ids)))
    return 0
