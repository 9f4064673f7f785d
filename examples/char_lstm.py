"""A character-level LSTM language model: trained by truncated backpropagation through time,
then sampled one character at a time with its states kept in the engine.

    python examples/char_lstm.py

The text is the source of a few standard-library modules. ``TokenStreamLoader`` gives
batches whose rows continue the previous batch's rows, so the stateful LSTM carries its
final states (detached) from one batch to the next; ``model.generate`` then runs the prompt
once and each new character as one engine call from the states the previous one left.
"""

from __future__ import annotations

import time

import gometal as gm


def build_model(vocab_size: int, batch_size: int, hidden: int, seed: int) -> gm.Model:
    tokens = gm.Input((None,), dtype="int32")
    h = gm.layers.Embedding(vocab_size, 64)(tokens)
    h = gm.layers.LSTM(64, hidden, num_layers=2, stateful=True, batch_size=batch_size)(h)
    return gm.Model(tokens, gm.layers.Dense(vocab_size)(h), seed=seed)


def main(
    epochs: int = 3,
    hidden: int = 256,
    modules: tuple[str, ...] = ("textwrap", "string", "shlex"),
    seed: int = 0,
) -> tuple[float, float, str]:
    """Trains the model and prints a sample.

    Returns:
        ``(first_loss, last_loss, sample)``: the mean loss of the first and the last epoch
        and the generated text (prompt included).
    """
    text = gm.text.stdlib_corpus(modules).text
    tokenizer = gm.text.CharTokenizer.from_text(text)
    loader = gm.text.TokenStreamLoader(tokenizer.encode(text), batch_size=32, seq_len=64)
    model = build_model(tokenizer.vocab_size, 32, hidden, seed)
    model.summary()
    trainer = gm.Trainer(model, loss="cross_entropy", optimizer=gm.optim.Adam(lr=3e-3))
    history = trainer.fit(loader, epochs=epochs, verbose=2)
    losses = history.history["loss"]

    prompt = tokenizer.encode("def ")
    start = time.perf_counter()
    ids = model.generate(prompt, 300, temperature=0.8, top_k=10, seed=seed)
    seconds = time.perf_counter() - start
    sample = tokenizer.decode(ids)
    print(f"--- 300 characters in {seconds * 1e3:.0f} ms ---\n{sample}\n---")
    return float(losses[0]), float(losses[-1]), sample


if __name__ == "__main__":
    first, last, _ = main()
    print(f"loss: {first:.3f} (epoch 1) -> {last:.3f}")
