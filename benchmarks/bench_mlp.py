"""Training and inference speed and peak memory of gometal against its peers.

Workloads (every one a fixed random batch, float32):
  A        MLP 784 -> Dense 512 -> ReLU -> Dense 256 -> ReLU -> Dense 10, cross-entropy with
           integer labels, Adam lr 1e-3, batch 128; steps/s of full training steps
  A-small  the same MLP at batch 32 (the regime where per-op overhead dominates)
  B        cats-vs-dogs CNN on 3x64x64 images, batch 32: Conv 3->16 3x3 pad 1, ReLU,
           MaxPool 2; Conv 16->32, BatchNorm, ReLU, MaxPool 2; Conv 32->64, ReLU, MaxPool 2;
           Flatten; Dense 4096->128, ReLU, Dropout 0.5; Dense 128->2; cross-entropy, Adam
           lr 1e-3; steps/s of full training steps
  C        the CNN of B in eval mode (dropout off, BatchNorm on running statistics),
           batch 256; images/s of inference
  D        GPT training at nanoGPT's CPU configuration: 4 layers, 4 heads, 128 embedding,
           block 64, batch 12, vocabulary 65, dropout 0, AdamW (betas 0.9/0.95, decay 0.1
           on 2-D weights); the peer is nanoGPT's model with scaled_dot_product_attention
  D-long   the GPT of D at block 1024, batch 4
  E        character-level LSTM language model training: Embedding 65 -> 64, 2-layer LSTM
           with hidden size 256 (zero initial states), Linear 256 -> 65, sequence length 64,
           batch 32, cross-entropy over every position, Adam lr 1e-3; the peer is nn.LSTM
  E-infer  the model of E in inference, batch 32 x 256 steps, logits of every step;
           sequences/s
  D-infer  the GPT of D in inference (logits of every position), batch 12, block 64;
           sequences/s; D-infer-1 the same at batch 1

Frameworks:
  gometal            Trainer.train_batch (whole step compiled, one native call);
                     C: Trainer.predict(x, batch_size=256)
  torch-eager        PyTorch eager (NCHW), default Adam; C: forward under torch.inference_mode()
  torch-eager-fused  PyTorch eager, Adam(fused=True) (training workloads only)
  torch-compile      torch.compile of forward+loss and torch.compile of opt.step;
                     C: torch.compile(model) under torch.inference_mode()
  torch-channels-last  the CNN workloads B and C only: PyTorch eager with the model and the
                     batch in channels_last (NHWC) memory format, Adam(fused=True)
  jax-jit            plain jax (no flax): jax.jit of the whole step with optax Adam (D:
                     AdamW with nanoGPT's groups; E: each LSTM layer a jax.lax.scan);
                     the CNN in NHWC with jax.lax.conv_general_dilated; C: jitted forward
                     (skipped if jax, or for training optax, is absent)
  onnxruntime        the inference workloads (C, D-infer, D-infer-1, E-infer): the torch model
                     exported by torch.onnx.export (dynamo exporter) and gometal's model
                     exported by gometal, each in its own process, run by an onnxruntime
                     InferenceSession with --threads intra-op threads; the faster of the
                     two exports is timed (its info names both and their call times)
The token models' inference peers (D-infer, D-infer-1, E-infer) are torch-eager and
onnxruntime; training workloads have no onnxruntime peer.
gometal's E and E-infer entries need gm.layers.LSTM; without it they are skipped, and say so.

Each framework x workload runs in its own child process, so the peak resident memory
reported is that framework's own. For one workload all children are alive at once: each
warms up in turn, then they time windows of calls round-robin, one child at a time, so
every framework meets the same machine conditions (on a shared machine those drift by
tens of percent within minutes). A framework's headline is its median steps/s (C:
images/s) over its windows; gometal's ratio to a peer is the median over rounds of the
two rates of that round. --sequential times each child alone instead. Children run
with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from their environment, so every BLAS
picks its kernel for the actual CPU, and with OMP/MKL/OpenBLAS thread counts set.

Targets (gometal against the best peer in the same run): A >= 1.1x, A-small >= 1.5x,
B >= 2x, C >= 1.5x (and >= 1.1x onnxruntime), D >= 1.5x, D-long >= 1.5x, E >= 1.5x;
against onnxruntime: D-infer and D-infer-1 >= 1.0x, E-infer >= 1.2x; peak RSS <=
torch-eager's on every workload.

Usage (on 2 cores with every framework, A to C take about 10 minutes: about 5 for A and
A-small, about 5 for B and C, torch.compile's cold compiles included; D and D-long about 20
more, E and E-infer about 12 (the ONNX export included); --quick shortens the timing, not
the compiles):
  pip install .[bench]                       # torch, jax, optax, onnxruntime, onnxscript, ...
  python benchmarks/bench_mlp.py             # 5 windows of 3 s per run
  python benchmarks/bench_mlp.py --workloads D,D-long,E,E-infer
  python benchmarks/bench_mlp.py --quick     # smoke run: 3 windows of 0.5 s
  python benchmarks/bench_mlp.py --frameworks gometal,torch-eager --workloads A-small
  python benchmarks/bench_mlp.py --workloads B,C --json bench-results/cnn.json
  python benchmarks/bench_mlp.py --workloads D,E --ceiling   # each rate's share of the
                                             # machine's best float32 products (_ceiling.py)
At 2 threads and more each workload also prints the round trip of a cache line between its
first two CPUs before and after it (_core_probe.py): on a VM whose host moves the vCPUs
between sharing an L3 and sitting on different dies, it says which placement the windows met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

# The helper modules sit beside this script; keep them importable however it is launched
# (from any directory, with python -P, or as python -m benchmarks.bench_mlp).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _ceiling
import _core_probe
from _child import UNSET_VARS, run_child
from _frameworks import FRAMEWORKS, skip_reason
from _runner import child_env, pin_cpus, run_interleaved, run_one
from _workload import WORKLOADS, step_flops

PEERS = FRAMEWORKS[1:]
# gometal's rate over a peer's, per workload: None stands for the best of the peers that the
# workload does not name (steps/s; images/s or sequences/s for inference); peak RSS is held
# against torch-eager's.
SPEED_TARGETS: dict[str, tuple[tuple[str | None, float], ...]] = {
    "A": ((None, 1.1),),
    "A-small": ((None, 1.5),),
    "B": ((None, 2.0),),
    "C": ((None, 1.5), ("onnxruntime", 1.1)),
    "D": ((None, 1.5),),
    "D-long": ((None, 1.5),),
    "D-infer": (("onnxruntime", 1.0),),
    "D-infer-1": (("onnxruntime", 1.0),),
    "E": ((None, 1.5),),
    "E-infer": (("onnxruntime", 1.2),),
}
RSS_REFERENCE = "torch-eager"


def _fmt(v, spec=".1f", missing="-"):
    return missing if v is None else format(v, spec)


def rate_unit(workload: str) -> tuple[str, str]:
    """(result key, label) of a workload's headline rate: steps/s, or for inference images/s
    (sequences/s for the token models)."""
    spec = WORKLOADS[workload]
    if spec.train:
        return "steps_per_s", "steps/s"
    return "images_per_s", "images/s" if spec.model in ("mlp", "cnn") else "sequences/s"


def paired_ratio(rounds: dict[str, list[float]], name: str) -> float | None:
    """The median over interleaved rounds of gometal's rate over `name`'s in that round."""
    gm, peer = rounds.get("gometal") or [], rounds.get(name) or []
    pairs = [a / b for a, b in zip(gm, peer) if b > 0]
    return statistics.median(pairs) if pairs else None


def print_workload(
    workload: str,
    rows: list[dict],
    rounds: dict[str, list[float]],
    gometal_skipped: str | None = None,
) -> dict:
    """Print one workload's table; return its target verdicts. With interleaved rounds the
    ratios are paired: the median over rounds of gometal's rate over the peer's.
    `gometal_skipped` says why gometal did not run, when it did not."""
    spec = WORKLOADS[workload]
    key, unit = rate_unit(workload)
    ok = {r["framework"]: r for r in rows if r.get("ok")}
    gm = ok.get("gometal")
    noisy_seen = False
    print(
        f"\nWorkload {workload}: {spec.title}, batch {spec.batch}, "
        f"{step_flops(workload) / 1e6:.0f} MFLOP per {'step' if spec.train else 'batch'}"
    )
    first = "first step s" if spec.train else "first call s"
    head = (
        f"  {'framework':<18} {unit:>9} {'min..max':>17} {'GFLOP/s':>8} "
        f"{'peak RSS MB':>12} {'gometal x':>10} {first:>13} {'other load':>11}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in rows:
        name = r["framework"]
        if not r.get("ok"):
            print(f"  {name:<18} FAILED: {r.get('error', '?')[:200]}")
            continue
        spread = f"{r[key + '_min']:.1f}..{r[key + '_max']:.1f}"
        ratio = None
        if gm and name != "gometal":
            ratio = paired_ratio(rounds, name) or gm[key] / r[key]
        loads = [v for v in r.get("other_load_cores") or [] if v is not None]
        load = f"{statistics.median(loads):.2f} cores" if loads else "-"
        if r.get("noisy"):
            noisy_seen = True
            load += " *"
        print(
            f"  {name:<19} {r[key]:>8.1f} {spread:>17} {r['gflops']:>8.1f} "
            f"{_fmt(r.get('peak_rss_mb')):>12} {_fmt(ratio, '.2f'):>10} "
            f"{r['first_step_s']:>13.2f} {load:>11}"
        )

    if noisy_seen:
        print(
            "  * fewer than 3 windows were quiet (other processes used the CPUs): the median "
            "is over all windows and not trustworthy"
        )
    verdict = {"workload": workload, "unit": unit}
    if gometal_skipped:
        verdict["gometal_skipped"] = gometal_skipped
        print(f"  gometal not run: {gometal_skipped}; no ratio and no target verdict")
    verdict["targets"] = []
    for named, target in SPEED_TARGETS[workload] if gm else ():
        if named is None:
            others = {n for n, _ in SPEED_TARGETS[workload] if n}
            peers = [r for n, r in ok.items() if n in PEERS and n not in others]
            peer = max(peers, key=lambda r: r[key]) if peers else None
        else:
            peer = ok.get(named)
        if peer is None:
            continue
        role = "best peer" if named is None else "target peer"
        ratio = paired_ratio(rounds, peer["framework"]) or gm[key] / peer[key]
        verdict["targets"].append(
            {"peer": peer["framework"], "role": role, "ratio": ratio, "target": target}
        )
        print(
            f"  {role}: {peer['framework']} {peer[key]:.1f} {unit}; gometal / "
            f"{role} = {ratio:.2f}x{' (median of per-round ratios)' if rounds else ''} "
            f"(target >= {target}x: {'met' if ratio >= target else 'MISSED'})"
        )
    if verdict["targets"]:
        head = verdict["targets"][0]
        verdict.update(
            best_peer=head["peer"],
            ratio_to_best_peer=head["ratio"],
            speed_target=head["target"],
            speed_met=all(t["ratio"] >= t["target"] for t in verdict["targets"]),
        )
    ref = ok.get(RSS_REFERENCE)
    if gm and ref and gm.get("peak_rss_mb") and ref.get("peak_rss_mb"):
        met = gm["peak_rss_mb"] <= ref["peak_rss_mb"]
        verdict.update(
            rss_gometal_mb=gm["peak_rss_mb"], rss_reference_mb=ref["peak_rss_mb"], rss_met=met
        )
        print(
            f"  peak RSS: gometal {gm['peak_rss_mb']:.0f} MB vs {RSS_REFERENCE} "
            f"{ref['peak_rss_mb']:.0f} MB (target <=: {'met' if met else 'MISSED'})"
        )
    if gm and "allocations_after_first_step" in gm:
        print(
            f"  gometal engine allocations after the first {'step' if spec.train else 'call'}: "
            f"{gm['allocations_after_first_step']}"
        )
    check = "loss" if spec.train else "output_mean"
    checks = ", ".join(
        f"{r['framework']} {r[f'first_{check}']:.4g}->{r[f'last_{check}']:.2g}"
        for r in ok.values()
        if f"first_{check}" in r
    )
    if checks:
        what = "loss first->last step" if spec.train else "mean output first->last call"
        print(f"  {what}: {checks}")
    return verdict


def print_blas(results: list[dict]) -> None:
    print(f"\nBLAS per framework (children run with {' and '.join(UNSET_VARS)} unset):")
    seen = set()
    for r in results:
        if not r.get("ok") or r["framework"] in seen:
            continue
        seen.add(r["framework"])
        print(f"  {r['framework']:<18} {r.get('blas', '?')}")
        print(f"  {'':<18} loaded (threadpoolctl): {'; '.join(r.get('libraries', [])) or '-'}")


def print_ceiling(workload: str, rows: list[dict], verdict: dict, before: dict, after: dict):
    """The ceiling's lines under a workload's table, from the product timings taken just
    before and just after the workload (the faster of the two, per library)."""
    spec = WORKLOADS[workload]
    key, unit = rate_unit(workload)
    flops = step_flops(workload) / (1 if spec.train else spec.batch)
    ceiling = {lib: max(before.get(lib, 0.0), after.get(lib, 0.0)) for lib in {*before, *after}}
    rates = {r["framework"]: r[key] for r in rows if r.get("ok")}
    targets = [(t["peer"], t["target"]) for t in verdict.get("targets", [])]
    for line in _ceiling.ceiling_lines(flops, unit, ceiling, rates, targets):
        print(line)


def parse_list(text: str, allowed, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help=f"comma-separated subset of {','.join(FRAMEWORKS)}",
    )
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {','.join(WORKLOADS)}"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 0.5 s warm-up, 3 windows of 0.5 s (unless overridden)",
    )
    p.add_argument("--windows", type=int, help="timed windows per run (default 5; quick 3)")
    p.add_argument("--window-s", type=float, help="seconds per window (default 3; quick 0.5)")
    p.add_argument("--warmup-s", type=float, help="warm-up seconds (default 3; quick 0.5)")
    p.add_argument(
        "--max-windows",
        type=int,
        help="windows allowed while waiting for quiet ones (default 3 x --windows)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per child")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not confine children to --threads CPUs on larger machines",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time each framework alone, one after another (default: all children alive, "
        "their windows taken in turn, so they share the machine's conditions)",
    )
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also time the machine's best large float32 products (OpenBLAS, MKL) before and "
        "after each workload, and print each framework's and each target's share of them",
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--interleave", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = (0.5, 3, 0.5) if args.quick else (3.0, 5, 3.0)
    args.warmup_s = defaults[0] if args.warmup_s is None else args.warmup_s
    args.windows = defaults[1] if args.windows is None else args.windows
    args.window_s = defaults[2] if args.window_s is None else args.window_s
    args.max_windows = args.max_windows or 3 * args.windows
    if args.windows < 1 or args.window_s <= 0:
        raise SystemExit("--windows must be >= 1 and --window-s > 0")
    if args.child:
        return run_child(args)

    frameworks = parse_list(args.frameworks, FRAMEWORKS, "framework")
    workloads = parse_list(args.workloads, WORKLOADS, "workload")
    skipped = {}  # "framework/workload" -> why it is not run
    for workload in workloads:
        for name in frameworks:
            reason = skip_reason(name, workload)
            if reason:
                skipped[f"{name}/{workload}"] = reason
    pin = None if args.no_pin else pin_cpus(args.threads)

    print(
        f"gometal benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {args.threads} threads per framework"
        + (f", children pinned to CPUs {pin}" if pin else "")
    )
    print(
        f"timing: {args.warmup_s:g} s warm-up, then median rate of {args.windows} quiet "
        f"windows of >= {args.window_s:g} s (at most {args.max_windows} windows); "
        "each framework x workload in its own process"
        + (
            ", one after another"
            if args.sequential
            else ", all alive at once, taking their windows in turn"
        )
    )
    parent_vals = ", ".join(
        f"{k}={os.environ[k]}" if k in os.environ else f"{k} not set" for k in UNSET_VARS
    )
    print(
        f"environment: children run with {' and '.join(UNSET_VARS)} unset (here: "
        f"{parent_vals}), OMP/OPENBLAS/MKL_NUM_THREADS={args.threads}"
    )
    notes: dict[str, list[str]] = {}  # one line per reason, naming the runs it skips
    for run, reason in skipped.items():
        notes.setdefault(reason, []).append(run)
    for reason, runs in notes.items():
        print(f"note: skipping {', '.join(runs)}: {reason}")

    results, verdicts = [], []
    ceiling_before = _ceiling.measure(args.threads, child_env(args.threads)) if args.ceiling else {}
    for workload in workloads:
        names = [name for name in frameworks if f"{name}/{workload}" not in skipped]
        rounds: dict[str, list[float]] = {}
        probe = args.threads >= 2
        trip_before = _core_probe.round_trip_ns(pin) if probe else None
        if args.sequential:
            rows = []
            for name in names:
                print(f"  running {name} on {workload} ...", end="", flush=True)
                r = run_one(name, workload, args, pin)
                key, unit = rate_unit(workload)
                print(f" {r[key]:.1f} {unit}" if r.get("ok") else " failed", flush=True)
                rows.append(r)
        else:
            rows, rounds = run_interleaved(names, workload, args, pin)
        results += rows
        verdicts.append(print_workload(workload, rows, rounds, skipped.get(f"gometal/{workload}")))
        if args.ceiling:
            after = _ceiling.measure(args.threads, child_env(args.threads))
            print_ceiling(workload, rows, verdicts[-1], ceiling_before, after)
            ceiling_before = after
        if probe:
            trip_after = _core_probe.round_trip_ns(pin)
            print(_core_probe.describe(trip_before, trip_after))
            verdicts[-1]["round_trip_ns"] = [trip_before, trip_after]
    print_blas(results)

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "pinned_cpus": pin,
            "threads": args.threads,
            "warmup_s": args.warmup_s,
            "windows": args.windows,
            "window_s": args.window_s,
            "unset_in_children": list(UNSET_VARS),
            "parent_env": {k: os.environ.get(k) for k in UNSET_VARS},
            "skipped": skipped,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with open(args.json, "w") as f:
            json.dump(
                {"meta": meta, "results": results, "targets": verdicts}, f, indent=1, default=str
            )
        print(f"\nwrote {args.json}")

    failed = [f"{r['framework']}/{r['workload']}" for r in results if not r.get("ok")]
    if failed:
        print(f"\nfailed runs: {', '.join(failed)}")
        return 1
    missed = [
        v["workload"] for v in verdicts if v.get("speed_met") is False or v.get("rss_met") is False
    ]
    if args.check and missed:
        print(f"\ntargets missed on: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
