"""Benchmark F: greedy generation, batch 1, 256 new tokens after a 64-token prompt, with
workload D's GPT (4 layers, 4 heads, embedding 128, vocabulary 65, dropout 0) at block_size
320, so that prompt and new tokens fit the context.

    python benchmarks/bench_generate.py [--threads 2] [--windows 5] [--window-s 1.0]

With D's block_size of 64 every token after the prompt would need the whole cropped window
recomputed, in any framework, and a KV cache would not apply; block 320 measures decoding.

Peers, timed in interleaved windows (one window each, in turn, `--windows` rounds): gometal
with the KV cache in the engine (``gm.models.generate``: one native call per token), PyTorch
eager with a KV cache (the nanoGPT-style model of ``_torch_gpt.py`` and a cached forward
written here, under ``torch.inference_mode()``, the same weights and threads), and gometal
recomputing the context for every token (``kv_cache=False``) for reference. Each window
counts whole generations; the script prints tokens/s per window and the median, and the
ratio of gometal's median to torch's (target: >= 3). It checks first that the three give
the same tokens. On a machine whose cores other processes keep busy ("other processes
meanwhile" near the thread count), torch's threads wait on each other for every small op and
its rate collapses at 2 threads: compare there at ``--threads 1``.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (old OpenBLAS workarounds that force slower kernels)
are removed from this script's own environment, and the BLAS and OpenMP thread variables set
to ``--threads``, as the other benchmarks' children run.
"""

from __future__ import annotations

import argparse
import statistics

from _builds import cpu_description
from _child import reexec_with_clean_environment

VOCAB, BLOCK, LAYERS, HEADS, EMBD = 65, 320, 4, 4, 128
PROMPT, NEW_TOKENS = 64, 256


class TorchCachedGPT:
    """nanoGPT's forward for new tokens with per-layer key and value caches of
    ``(1, heads, block, head_dim)``: a prefill of the prompt, then one token at a time."""

    def __init__(self, net, batch: int = 1):
        import torch

        self.torch, self.net = torch, net
        shape = (batch, HEADS, BLOCK, EMBD // HEADS)
        self.keys = [torch.zeros(shape) for _ in range(LAYERS)]
        self.values = [torch.zeros(shape) for _ in range(LAYERS)]

    def forward(self, idx, start: int):
        """Logits of the last of ``idx`` (N, T) at positions start..start + T - 1."""
        F = self.torch.nn.functional
        blocks = self.net.transformer
        batch, length = idx.shape
        end = start + length
        x = blocks.wte(idx) + blocks.wpe(self.torch.arange(start, end))
        for block, keys, values in zip(blocks.h, self.keys, self.values):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(EMBD, dim=2)
            q, k, v = (
                t.view(batch, length, HEADS, EMBD // HEADS).transpose(1, 2) for t in (q, k, v)
            )
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            # A prefill from 0 is causal; one new token sees every cached position.
            y = F.scaled_dot_product_attention(
                q, keys[:, :, :end], values[:, :, :end], is_causal=length > 1
            )
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(batch, length, EMBD))
            x = x + block.mlp(block.ln_2(x))
        return self.net.lm_head(blocks.ln_f(x[:, -1]))

    def generate(self, prompt):
        torch = self.torch
        with torch.inference_mode():
            idx = torch.as_tensor(prompt, dtype=torch.long)[None]
            out = [idx]
            token = self.forward(idx, 0).argmax(-1, keepdim=True)
            for position in range(PROMPT, PROMPT + NEW_TOKENS - 1):
                out.append(token)
                token = self.forward(token, position).argmax(-1, keepdim=True)
            out.append(token)
            return torch.cat(out, dim=1)[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=1.0)
    args = parser.parse_args()
    reexec_with_clean_environment(args.threads)

    import numpy as np
    import torch

    import gometal as gm
    from _timing import time_window, warm_up
    from _torch_gpt import TorchGPT
    from gometal import _core

    gm.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = TorchGPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD).eval()
    model = gm.models.GPT(VOCAB, BLOCK, LAYERS, HEADS, EMBD, dropout=0.0)
    model.set_weights(gm.models.gpt_weights_from_nanogpt(net.state_dict(), LAYERS))
    prompt = np.random.default_rng(0).integers(0, VOCAB, PROMPT).astype(np.int32)
    cached = TorchCachedGPT(net)

    runs = {
        "gometal (KV cache)": lambda: gm.models.generate(model, prompt, NEW_TOKENS, greedy=True),
        "torch eager (KV cache)": lambda: cached.generate(prompt),
        "gometal (recompute)": lambda: gm.models.generate(
            model, prompt, NEW_TOKENS, greedy=True, kv_cache=False
        ),
    }
    tokens = {name: np.asarray(run()) for name, run in runs.items()}
    reference = tokens["torch eager (KV cache)"]
    for name, got in tokens.items():
        agree = int(np.argmin(got == reference)) if not np.array_equal(got, reference) else len(got)
        print(
            f"{name}: {'same tokens as torch' if agree == len(got) else f'differs from torch at {agree}'}"
        )

    print(f"cpu: {cpu_description()}")
    print(
        f"threads: {args.threads} (gometal {gm.get_num_threads()}, torch {torch.get_num_threads()})"
    )
    print(f"blas: {_core.blas_info()}")
    print(f"F: batch 1, {PROMPT}-token prompt, {NEW_TOKENS} new tokens, greedy, block {BLOCK}")
    for run in runs.values():
        warm_up(run, 0.5, 1)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    loads: list[float] = []
    for _ in range(args.windows):
        for name, run in runs.items():
            generations, load = time_window(run, args.window_s)
            rates[name].append(generations * NEW_TOKENS)
            if load is not None:
                loads.append(load)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        per_window = ", ".join(f"{x:.0f}" for x in r)
        print(f"{name:24s} {medians[name]:8.0f} tokens/s (windows: {per_window})")
    if loads:
        print(f"other processes meanwhile: {statistics.median(loads):.2f} cores (median window)")
    ratio = medians["gometal (KV cache)"] / medians["torch eager (KV cache)"]
    # Windows of one round ran moments apart: their ratios cancel slow drifts in the load.
    rounds = [a / b for a, b in zip(rates["gometal (KV cache)"], rates["torch eager (KV cache)"])]
    print(
        f"ratio gometal (KV cache) / torch eager (KV cache): {ratio:.2f}x of the medians, "
        f"{statistics.median(rounds):.2f}x the median round (target >= 3)"
    )


if __name__ == "__main__":
    main()
