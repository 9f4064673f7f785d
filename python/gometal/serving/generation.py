"""The Open Inference Protocol's generate extension for language models: text in, text out.

A model version whose folder holds ``tokenizer.json`` beside ``model.safetensors`` (a
``gometal train-lm`` run folder is one) and maps ``(N, block)`` int32 token ids to
next-token logits answers ``POST /v2/models/{name}/generate``::

    {"text_input": "def ", "parameters": {"max_tokens": 32, "temperature": 0.8,
                                          "top_k": 20, "top_p": 0.9, "seed": 1, "greedy": false}}
    -> {"model_name": ..., "model_version": ..., "text_output": "def main():..."}

Parameters may also sit at the top level, as Triton's clients send them. The text is what
``gm.models.generate`` gives for the same prompt and parameters (``gometal generate``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..viz.server_guard import UploadSlots
from .protocol import RETRY_AFTER_S, ProtocolError

__all__ = ["DEFAULT_MAX_WAITING", "MAX_NEW_TOKENS", "TOKENIZER_FILE", "TextGenerator"]

TOKENIZER_FILE = "tokenizer.json"
MAX_NEW_TOKENS = 4096  # one request may not hold the model for longer than this
DEFAULT_NEW_TOKENS = 64
DEFAULT_MAX_WAITING = 256  # requests waiting behind the one generating, per model version
# Parameter -> (accepted types, description for messages).
_PARAMETERS: dict[str, tuple[tuple[type, ...], str]] = {
    "max_tokens": ((int,), f"an int in [0, {MAX_NEW_TOKENS}]"),
    "temperature": ((int, float), "a number > 0"),
    "top_k": ((int,), "an int >= 1"),
    "top_p": ((int, float), "a number in (0, 1]"),
    "seed": ((int,), "an int >= 0"),
    "greedy": ((bool,), "true or false"),
}


def _bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


class TextGenerator:
    """Generates text with a language model and its tokenizer, one request at a time.

    Requests wait their turn; at most ``max_waiting`` wait at once (:meth:`admit` refuses
    the next with a 503), so a burst of clients cannot grow the server without bound.

    Args:
        model: a model from ``(N, block)`` int32 ids to ``(N, block, vocab)`` logits.
        tokenizer: its tokenizer (``gometal.text``).
        max_waiting: the most requests waiting behind the one generating.

    Example:
        >>> generator = TextGenerator.for_version(model, Path("run/model.safetensors"))  # doctest: +SKIP
        >>> generator.generate(b'{"text_input": "def ", "max_tokens": 8}')  # doctest: +SKIP
        'def main'
    """

    def __init__(self, model: Any, tokenizer: Any, max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 1:
            raise ValueError(f"max_waiting must be an int >= 1, got {max_waiting!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_waiting = max_waiting
        self.lock = threading.Lock()  # decoding holds the model's KV cache: one at a time
        self._slots = UploadSlots(max_waiting + 1)  # the one generating, and those waiting

    def admitted(self) -> int:
        """The requests admitted and not finished: the one generating and those waiting."""
        return self._slots.in_use

    def admit(self, model_name: str) -> None:
        """Admits one request (event loop only); :meth:`release` it when it has ended.

        Raises:
            ProtocolError: 503 with ``Retry-After`` when ``max_waiting`` requests wait.
        """
        if not self._slots.try_acquire():
            raise ProtocolError(
                503, f"model {model_name!r} is overloaded: {self.max_waiting} generate requests "
                f"are waiting, the most allowed (max_queue); retry after {RETRY_AFTER_S} s",
                {"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip

    def release(self) -> None:
        """Ends a request :meth:`admit` took (event loop only)."""
        self._slots.release()

    @classmethod
    def for_version(
        cls, model: Any, path: Path | None, max_waiting: int = DEFAULT_MAX_WAITING
    ) -> TextGenerator | None:
        """The generator of a model version whose folder holds ``tokenizer.json`` and whose
        model takes token ids (``max_waiting`` as for the class), or ``None``."""
        if path is None or not (path.parent / TOKENIZER_FILE).is_file():
            return None
        signature = model.input_signature
        takes_ids = len(signature.names) == 1 and signature.dtype(0) == "int32"
        if not takes_ids or len(signature.sample_shapes[0]) != 1:
            return None
        from ..text import load_tokenizer

        return cls(model, load_tokenizer(path.parent / TOKENIZER_FILE), max_waiting)

    def parse(self, body: bytes) -> tuple[str, dict[str, Any]]:
        """The prompt and the generation parameters of a request body.

        Raises:
            ProtocolError: 400 for malformed JSON, a missing ``text_input`` or a parameter
                that is unknown or out of range (named, with what it must be).
        """
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as err:
            raise _bad(f"malformed JSON in the request body: {err}") from None
        if not isinstance(document, dict):
            raise _bad(f"the request must be a JSON object, got {type(document).__name__}")
        text = document.get("text_input")
        if not isinstance(text, str) or not text:
            raise _bad(f"'text_input' must be a non-empty string, got {text!r:.80}")
        nested = document.get("parameters") or {}
        if not isinstance(nested, dict):
            raise _bad("'parameters' must be an object")
        given = {k: v for k, v in document.items() if k not in ("text_input", "parameters", "id")}
        given.update(nested)
        unknown = sorted(set(given) - set(_PARAMETERS))
        if unknown:
            raise _bad(f"unknown generate parameters {unknown}; it takes {sorted(_PARAMETERS)}")
        for key, value in given.items():
            types, expected = _PARAMETERS[key]
            fits = isinstance(value, types) and (key == "greedy" or not isinstance(value, bool))
            fits = fits and {
                "max_tokens": lambda v: 0 <= v <= MAX_NEW_TOKENS,
                "temperature": lambda v: v > 0,
                "top_k": lambda v: v >= 1,
                "top_p": lambda v: 0 < v <= 1,
                "seed": lambda v: v >= 0,
                "greedy": lambda v: True,
            }[key](value)
            if not fits:
                raise _bad(f"generate parameter {key!r} must be {expected}, got {value!r}")
        return text, given

    def _prompt_ids(self, text: str) -> np.ndarray:
        ids = np.asarray(self.tokenizer.encode(text))
        if ids.size == 0:
            raise _bad("'text_input' encodes to no token")
        return ids

    def generate(self, text: str, parameters: dict[str, Any]) -> str:
        """The prompt followed by the generated text (blocking; run it off the event loop).

        Raises:
            ProtocolError: 400 when the prompt encodes to no token or to more than the
                model's context.
        """
        ids = self._prompt_ids(text)
        out = self._run(ids, parameters, None)
        return self.tokenizer.decode(np.asarray(out))

    def stream(self, text: str, parameters: dict[str, Any], emit: Callable[[str], None]) -> None:
        """Generates as :meth:`generate` does, calling ``emit(piece)`` once per new token
        as soon as it is chosen (blocking; run it off the event loop).

        The pieces joined are :meth:`generate`'s text for the same request: the first
        holds the prompt too. A token that ends inside a character (a byte-level BPE)
        gives an empty piece; the character comes with a later one. With ``max_tokens``
        0 a single piece holds the prompt's text.

        Args:
            text: the prompt.
            parameters: the generation parameters from :meth:`parse`.
            emit: receives each piece; an exception it raises stops the generation and
                propagates (how a server stops for a client that went away).

        Raises:
            ProtocolError: 400 when the prompt encodes to no token or to more than the
                model's context (before any ``emit``).

        Example:
            >>> generator.stream("def ", {"max_tokens": 4}, print)  # doctest: +SKIP
        """
        ids = self._prompt_ids(text)
        sequence = [int(i) for i in ids]
        sent: list[str] = []
        last_step = parameters.get("max_tokens", DEFAULT_NEW_TOKENS) - 1

        def on_token(step: int, token_ids: np.ndarray) -> None:
            sequence.append(int(token_ids[0]))
            emit(_next_piece(self.tokenizer.decode(np.asarray(sequence, np.int32)), sent,
                             final=step == last_step))  # fmt: skip

        out = self._run(ids, parameters, on_token)
        if not sent:  # no token asked: the prompt alone
            emit(_next_piece(self.tokenizer.decode(np.asarray(out)), sent, final=True))

    def _run(self, ids: np.ndarray, parameters: dict[str, Any], on_token: Any) -> np.ndarray:
        from ..models import generate

        arguments = {k: v for k, v in parameters.items() if k != "max_tokens"}
        with self.lock:
            try:
                return generate(self.model, ids, parameters.get("max_tokens", DEFAULT_NEW_TOKENS),
                                on_token=on_token, **arguments)  # fmt: skip
            except (TypeError, ValueError) as err:  # the prompt is too long for the context
                raise _bad(str(err)) from None


def _next_piece(decoded: str, sent: list[str], final: bool) -> str:
    """The text of ``decoded`` past the pieces already ``sent`` (appended to them).

    A trailing U+FFFD is a character cut by the last token: it waits for the next one,
    except in the final piece.
    """
    done = "".join(sent)
    piece = decoded[len(done) :] if decoded.startswith(done) else ""
    if not final:
        piece = piece.rstrip("\ufffd")
    sent.append(piece)
    return piece
