"""One convolution, forward and both gradients: gometal's kernels against PyTorch.

    python benchmarks/bench_conv.py [--batch 32 --in-channels 32 --out-channels 64 --size 32]
    python benchmarks/bench_conv.py --layers --threads 1 --batch 256
    python benchmarks/bench_conv.py --threads 1 --in-channels 16 --out-channels 32 \
        --ab GOMETAL_CONV_WINOGRAD_GRAD=never
    python benchmarks/bench_conv.py --threads 1 --in-channels 16 --out-channels 32 --base a0eff11

The default is the reference layer of ../shared/bench/README.md (N=32, 32->64 channels,
32x32, 3x3, padding 1; 1.21 GFLOP forward), 2 threads each. ``--layers`` times the inference
layers of workload C's CNN and of the batch-norm CNN instead (conv, bias or batch norm, ReLU
and 2x2 max pooling, fused) against onnxruntime on the same layer (_conv_layers.py). ``--ab
VAR=VALUE`` times each pass of gometal's with the environment variable unset and set to VALUE
(one engine each, its variable set before every call) in alternating windows of CPU time: the
medians and the median and range of the windows' ratios, which a loaded machine disturbs less
than separate runs. ``--base REV`` times each pass in two processes instead, the build of git
revision REV (cached in .bench-builds/, as compare_builds.py builds it; "worktree" for an A/A
run) and this Python's gometal, in alternating windows of CPU time: the speed-up of a change to
a kernel that no variable switches. Name a commit, not HEAD: in a shared checkout HEAD moves
with every commit, and each new revision takes minutes to build.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gometal as gm
from gometal import _core


def timed_ms(fn, repeats: int = 20) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def pass_engines(n: int, c: int, o: int, s: int):
    """An engine with "forward", "input grad" and "weight grad" functions of a 3x3, padding 1
    convolution, and its input."""
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    g = _core.Graph()
    x = g.input("x", (n, c, s, s))
    w = g.variable("w", (o, c, 3, 3))
    dy = g.variable("dy", (n, o, s, s))
    y = g.op("conv2d", [x, w], attrs)
    dx = g.op("conv2d_input_grad", [dy, w], {**attrs, "shape": [n, c, s, s]})
    dw = g.op("conv2d_weight_grad", [x, dy], {**attrs, "shape": [o, c, 3, 3]})
    engine = _core.Engine(g)
    for name, node in (("forward", y), ("input grad", dx), ("weight grad", dw)):
        engine.define(name, [x], [node])
    rng = np.random.default_rng(0)
    engine.set_variable("w", rng.standard_normal((o, c, 3, 3), dtype=np.float32))
    engine.set_variable("dy", rng.standard_normal((n, o, s, s), dtype=np.float32))
    return engine, rng.standard_normal((n, c, s, s), dtype=np.float32)


def compare_setting(args) -> None:
    """Each pass with args.ab's variable unset and set, in alternating windows of CPU time."""
    import os

    name, _, value = args.ab.partition("=")
    if not name or not value:
        raise SystemExit(f"bench_conv.py: --ab takes VAR=VALUE, got {args.ab!r}")
    gm.set_num_threads(args.threads)
    shape = (args.batch, args.in_channels, args.out_channels, args.size)
    settings = {"unset": None, f"{name}={value}": value}

    def use(setting):
        if setting is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = setting

    engines = {}
    for label, setting in settings.items():
        use(setting)  # each engine plans and runs under its own setting
        engines[label] = pass_engines(*shape)
    print(
        f"conv {shape[0]}x{shape[1]}x{shape[3]}x{shape[3]} -> {shape[2]}, {args.threads} thread(s): "
        f"CPU ms per call, {args.windows} alternating windows"
    )
    for pass_name in ("forward", "input grad", "weight grad"):
        times = {label: [] for label in settings}
        for window in range(args.windows):
            order = list(settings) if window % 2 == 0 else list(reversed(settings))
            for label in order:
                use(settings[label])
                engine, x = engines[label]
                times[label].append(cpu_ms(lambda e=engine, x=x, p=pass_name: e.run(p, [x])))
        base, new = times.values()
        ratios = sorted(b / a for a, b in zip(base, new))
        medians = " / ".join(f"{np.median(v):.2f}" for v in times.values())
        print(
            f"  {pass_name:12s} {' / '.join(settings)}: {medians} ms; set/unset median "
            f"{np.median(ratios):.2f}x, {ratios[0]:.2f}..{ratios[-1]:.2f}"
        )
    use(None)


PASSES = ("forward", "input grad", "weight grad")


def serve_passes(args) -> None:
    """The child of --base: builds the passes, says "ready", then answers each pass name read
    from stdin with the CPU ms of one window of it."""
    gm.set_num_threads(args.threads)
    engine, x = pass_engines(args.batch, args.in_channels, args.out_channels, args.size)
    for name in PASSES:
        engine.run(name, [x])
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        print(cpu_ms(lambda name=name: engine.run(name, [x]), repeats=20), flush=True)


def compare_builds(args) -> None:
    """Each pass in the build of revision args.base and in this Python's gometal, one window
    each in turn (the order swapped every window), and the medians and ratios of their times."""
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from _builds import WORKTREE, repo_root, resolve_build

    repo = repo_root(here)
    base = resolve_build("base", args.base, repo, repo / ".bench-builds", rebuild=False)
    command = [__file__, "--child", "--threads", str(args.threads), "--batch", str(args.batch)]
    command += ["--in-channels", str(args.in_channels), "--out-channels", str(args.out_channels)]
    command += ["--size", str(args.size)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    children = {}
    for label, python in (("base", base.python), ("new", sys.executable)):
        children[label] = subprocess.Popen(
            [python, *command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        if children[label].stdout.readline().strip() != "ready":
            raise SystemExit(f"bench_conv.py --base: the {label} child did not start")
    print(
        f"conv {args.batch}x{args.in_channels}x{args.size}x{args.size} -> {args.out_channels}, "
        f"{args.threads} thread(s): CPU ms per call, {args.windows} alternating windows; "
        f"base {args.base} ({base.commit[:10]}), new {WORKTREE}"
    )
    for name in PASSES:
        times = {label: [] for label in children}
        for window in range(args.windows):
            for label in children if window % 2 == 0 else reversed(list(children)):
                children[label].stdin.write(name + "\n")
                children[label].stdin.flush()
                times[label].append(float(children[label].stdout.readline()))
        ratios = sorted(b / n for b, n in zip(times["base"], times["new"]))
        print(
            f"  {name:12s} base / new: {statistics.median(times['base']):.2f} / "
            f"{statistics.median(times['new']):.2f} ms; new's speed-up median "
            f"{statistics.median(ratios):.3f}x, {ratios[0]:.3f}..{ratios[-1]:.3f}"
        )
    for child in children.values():
        child.stdin.close()
        child.wait()


def cpu_ms(fn, repeats: int = 10) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=32)
    parser.add_argument("--out-channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", action="store_true", help="the CNNs' fused inference layers")
    parser.add_argument(
        "--windows", type=int, default=5, help="with --layers or --ab: windows per kernel"
    )
    parser.add_argument(
        "--ab", metavar="VAR=VALUE", help="gometal with VAR unset against VAR=VALUE"
    )
    parser.add_argument(
        "--base", metavar="REV", help="the build of git revision REV against this gometal"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_passes(args)
        return
    if args.base:
        compare_builds(args)
        return
    if args.ab:
        compare_setting(args)
        return
    if args.layers:
        from _conv_layers import compare_layers

        compare_layers(args.batch, args.threads, args.windows)
        return
    n, c, o, s = args.batch, args.in_channels, args.out_channels, args.size
    gm.set_num_threads(args.threads)
    engine, x_np = pass_engines(n, c, o, s)
    flops = 2 * n * o * s * s * c * 9
    print(f"conv {n}x{c}x{s}x{s} -> {o} channels, 3x3, pad 1: {flops / 1e9:.2f} GFLOP per pass")
    for name in ("forward", "input grad", "weight grad"):
        ms = timed_ms(lambda name=name: engine.run(name, [x_np]))
        print(f"  gometal {name:12s} {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")

    import torch

    torch.set_num_threads(args.threads)
    tx, tw = torch.from_numpy(x_np), torch.randn(o, c, 3, 3)
    with torch.no_grad():
        ms = timed_ms(lambda: torch.nn.functional.conv2d(tx, tw, padding=1))
        print(f"  torch NCHW forward       {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")
        cx = tx.contiguous(memory_format=torch.channels_last)
        cw = tw.contiguous(memory_format=torch.channels_last)
        ms = timed_ms(lambda: torch.nn.functional.conv2d(cx, cw, padding=1))
        print(f"  torch channels_last fwd  {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
