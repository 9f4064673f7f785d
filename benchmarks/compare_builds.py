"""Time two builds of gometal side by side on the benchmark's workloads.

Each build runs in its own child process under its own Python environment: a git revision
is installed once into a virtual environment under the cache folder (reused by later runs),
and "worktree" is the environment this script runs in (the checkout's editable install).
For one workload both children are alive at once, warm up in turn, then take their timed
windows round-robin, the order swapped every other round; a round's ratio is new/base of
the two rates of that round. The script prints every round, the median ratio, its spread
(min..max, interquartile range, and a 95 % distribution-free confidence interval of the
median) and whether 1.0 lies within that noise, the CPU, each build's compile flags and
BLAS kernel, and each child's engine allocations during its timed windows (zero in the
steady state). Ratios use the quiet rounds (other processes used under 0.15 cores) when
there are --rounds of them, else every round, flagged.

Children run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from their environment,
so the BLAS picks its kernel for the actual CPU, and with OMP/MKL/OpenBLAS thread counts set.

Usage (a round takes 2 x --window-s per workload; a revision's first build a minute or two):
  python benchmarks/compare_builds.py --base main                      # main vs the worktree
  python benchmarks/compare_builds.py --base ec7b0dd --rounds 20 --json bench-results/cmp.json
  python benchmarks/compare_builds.py --base main --new HEAD --workloads A-small,C
  python benchmarks/compare_builds.py --base HEAD --new HEAD           # A/A: the noise alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _builds import (
    WORKTREE,
    cpu_description,
    engine_compile_flags,
    native_target,
    repo_root,
    resolve_build,
)
from _child import UNSET_VARS
from _core_probe import SHARED_L3_NS, round_trip_ns
from _frameworks import skip_reason
from _ratios import CONFIDENCE, RatioSummary, paired_ratios, summarize_ratios
from _runner import ChildSpec, pin_cpus, run_rounds
from _timing import QUIET_CORES
from _workload import WORKLOADS
from bench_mlp import parse_list, rate_unit

LABELS = ("base", "new")
DEFAULT_CACHE = ".bench-builds"  # under the checkout's root; git-ignored


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; a bad value exits naming the option and the value.

    Args:
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        The options, with `windows`, `max_windows` set for the runner from the rounds.

    Example:
        >>> parse_args(["--base", "main", "--rounds", "9"]).max_windows
        27
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", required=True, help="git revision of the reference build")
    p.add_argument(
        "--new",
        default=WORKTREE,
        help=f"git revision of the build to compare, or '{WORKTREE}' (default): this Python's "
        "gometal, the checkout's editable install",
    )
    runnable = [w for w in WORKLOADS if skip_reason("gometal", w) is None]
    p.add_argument(
        "--workloads",
        default=",".join(runnable),
        help="comma-separated subset (default: every workload this Python's gometal runs; "
        "E and E-infer need gm.layers.LSTM)",
    )
    p.add_argument("--rounds", type=int, default=15, help="quiet rounds to time (default 15)")
    p.add_argument("--max-rounds", type=int, help="rounds allowed in all (default 3 x --rounds)")
    p.add_argument("--window-s", type=float, default=2.0, help="seconds per window (default 2)")
    p.add_argument("--warmup-s", type=float, default=2.0, help="warm-up seconds (default 2)")
    p.add_argument("--threads", type=int, default=2, help="threads per child (default 2)")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per child")
    p.add_argument("--no-pin", action="store_true", help="do not confine children to CPUs")
    p.add_argument(
        "--cache-dir", type=Path, help=f"build cache (default <checkout>/{DEFAULT_CACHE})"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild revisions found in the cache")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a ratio's noise excludes 1.0 or a timed window allocated",
    )
    p.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds: expected an integer >= 1, got {args.rounds}")
    args.max_rounds = 3 * args.rounds if args.max_rounds is None else args.max_rounds
    if args.max_rounds < args.rounds:
        p.error(f"--max-rounds: expected at least --rounds ({args.rounds}), got {args.max_rounds}")
    if args.window_s <= 0:
        p.error(f"--window-s: expected seconds > 0, got {args.window_s}")
    if args.warmup_s < 0:
        p.error(f"--warmup-s: expected seconds >= 0, got {args.warmup_s}")
    if args.threads < 1:
        p.error(f"--threads: expected an integer >= 1, got {args.threads}")
    try:
        args.workloads = parse_list(args.workloads, WORKLOADS, "workload")
    except SystemExit as exc:
        p.error(f"--workloads: {exc}")
    if not args.workloads:
        p.error(f"--workloads: expected at least one of {', '.join(WORKLOADS)}, got none")
    # The runner's names for the same settings.
    args.windows, args.max_windows = args.rounds, args.max_rounds
    return args


def quiet_round_flags(loads: dict[str, list[float | None]]) -> list[bool]:
    """Per round, whether every child's window was quiet (unknown load counts as quiet)."""
    per_child = list(loads.values())
    rounds = min((len(v) for v in per_child), default=0)
    return [all((v[i] or 0.0) < QUIET_CORES for v in per_child) for i in range(rounds)]


def verdict_lines(s: RatioSummary, noisy: bool) -> list[str]:
    """Whether 1.0 lies within the noise of the ratios summarised by `s`, in words.

    Args:
        s: the summary of one workload's per-round ratios.
        noisy: True when the rounds ran under other load (too few quiet ones).

    Returns:
        One or two lines: the interval used and the verdict, and a warning when noisy.

    Example:
        >>> verdict_lines(summarize_ratios([0.99, 1.02, 1.0]), noisy=False)
        ['too few rounds for a 95% interval; 1.0 inside min..max']
    """
    if s.ci_level is not None:
        verdict = "inside: within noise" if s.within_noise else "OUTSIDE: a real change"
        interval = f"{s.ci_low:.3f}..{s.ci_high:.3f}"
        lines = [f"{s.ci_level:.1%} confidence interval of the median: {interval} -> 1.0 {verdict}"]
    else:
        where = "inside" if s.within_noise else "OUTSIDE"
        lines = [f"too few rounds for a {CONFIDENCE:.0%} interval; 1.0 {where} min..max"]
    if noisy:
        # Other processes come and go, so such rounds are not alike, as the interval assumes.
        lines.append(
            "(rounds under other load: the verdict is not trustworthy; rerun when quieter)"
        )
    return lines


def _print_rounds(run, scale: float, unit: str) -> None:
    base, new = run.rates["base"], run.rates["new"]
    print(
        f"  {'round':>5} {'base ' + unit:>14} {'new ' + unit:>14} {'new/base':>9} "
        f"{'other load':>11} {'allocations base/new':>21} {'round trip ns':>14}"
    )
    for i, (b, n) in enumerate(zip(base, new)):
        load = max((run.loads[k][i] or 0.0) for k in LABELS)
        allocs = "/".join(
            "-" if run.allocations[k][i] is None else str(run.allocations[k][i]) for k in LABELS
        )
        mark = " *" if load >= QUIET_CORES else ""
        trip = run.probes[i] if i < len(run.probes) else None
        print(
            f"  {i + 1:>5} {b * scale:>14.1f} {n * scale:>14.1f} {n / b:>9.3f} "
            f"{load:>9.2f}{mark:<2} {allocs:>21} {'-' if trip is None else f'{trip:.0f}':>14}"
        )


def placement_lines(ratios: list[float], trips: list[float | None]) -> list[str]:
    """The rounds' new/base ratios by where the two CPUs sat when each round began (the
    cross-CPU round trip, `_core_probe.SHARED_L3_NS` apart): a VM's host moves them, and a
    change to how threads share data can win in one placement and not the other.

    Example:
        >>> placement_lines([1.0, 1.2, 1.1], [50.0, 300.0, None])
        ['  by placement: CPUs sharing an L3: median 1.000 over 1 rounds; CPUs on different dies: median 1.200 over 1 rounds']
    """
    groups = {"CPUs sharing an L3": [], "CPUs on different dies": []}
    for ratio, trip in zip(ratios, trips):
        if trip is not None:
            key = "CPUs sharing an L3" if trip < SHARED_L3_NS else "CPUs on different dies"
            groups[key].append(ratio)
    parts = [
        f"{name}: median {statistics.median(values):.3f} over {len(values)} rounds"
        for name, values in groups.items()
        if values
    ]
    return ["  by placement: " + "; ".join(parts)] if parts else []


def compare_workload(workload: str, builds: dict, args, pin) -> dict:
    """Time both builds on one workload; print its rounds and verdict; return its record."""
    spec = WORKLOADS[workload]
    _, unit = rate_unit(workload)
    scale = 1 if spec.train else spec.batch  # C reports images/s
    print(f"\nWorkload {workload}: {spec.title}, batch {spec.batch}")
    children = [ChildSpec(label, "gometal", builds[label].python) for label in LABELS]
    # The CPUs' placement before each round, where there are two to place.
    probe = (lambda: round_trip_ns(pin, trips=50_000)) if args.threads >= 2 else None
    run = run_rounds(children, workload, args, pin, alternate=True, before_round=probe)
    record = {
        "workload": workload,
        "unit": unit,
        "rows": run.rows,
        "rates": run.rates,
        "loads": run.loads,
        "allocations": run.allocations,
    }
    failed = [r for r in run.rows if not r.get("ok")]
    for r in failed:
        print(f"  {r['label']}: FAILED: {r.get('error', '?')[:300]}")
    if failed or not all(run.rates.get(k) for k in LABELS):
        record["ok"] = False
        return record
    _print_rounds(run, scale, unit)
    quiet = quiet_round_flags(run.loads)
    use_quiet = sum(quiet) >= args.rounds
    chosen = [i for i, q in enumerate(quiet) if q or not use_quiet]
    ratios = paired_ratios(
        [run.rates["new"][i] for i in chosen], [run.rates["base"][i] for i in chosen]
    )
    s = summarize_ratios(ratios)
    which = "quiet rounds" if use_quiet else "rounds (too few quiet ones: * = other load)"
    print(
        f"  new/base: median {s.median:.3f} over {s.rounds} {which}; min..max "
        f"{s.low:.3f}..{s.high:.3f}; IQR {s.q1:.3f}..{s.q3:.3f}"
    )
    for line in verdict_lines(s, noisy=not use_quiet):
        print("  " + line)
    for line in placement_lines(
        ratios, [run.probes[i] if i < len(run.probes) else None for i in chosen]
    ):
        print(line)
    allocs = {k: run.allocations[k] for k in LABELS}
    counted = {k: [a for a in v if a is not None] for k, v in allocs.items()}
    print(
        "  engine allocations during the timed windows: "
        + ", ".join(f"{k} {sum(v) if v else 'not counted'}" for k, v in counted.items())
    )
    rows = {r["label"]: r for r in run.rows}
    if builds["base"].python != builds["new"].python and (
        rows["base"].get("engine_file") == rows["new"].get("engine_file")
    ):
        print("  WARNING: both children imported the same engine file")
    record.update(
        ok=True,
        noisy=not use_quiet,
        used_rounds=chosen,
        quiet_rounds=sum(quiet),
        summary=s._asdict(),
        timed_allocations={k: sum(v) for k, v in counted.items() if v},
    )
    return record


def _print_builds(builds: dict, records: list[dict]) -> None:
    print(f"\nBuilds (children run with {' and '.join(UNSET_VARS)} unset):")
    for label in LABELS:
        b = builds[label]
        row = next(
            (r for rec in records for r in rec["rows"] if r.get("label") == label and r.get("ok")),
            {},
        )
        print(f"  {label}: {b.requested} = {b.describe}")
        print(f"    python {b.python}; gometal from {row.get('package_file', '?')}")
        print(
            f"    engine compile flags: {engine_compile_flags(b.build_dir) or 'unknown'}"
            f" (build tree {b.build_dir or 'unknown'})"
        )
        print(f"    BLAS: {row.get('blas', '?')}")
        print(f"    loaded (threadpoolctl): {'; '.join(row.get('libraries', [])) or '-'}")


def _print_summary(records: list[dict], args) -> list[str]:
    """The closing table; returns the workloads that fail --check's conditions."""
    print(
        f"\nSummary: new/base, median of per-round ratios ({args.rounds} quiet rounds wanted, "
        f"windows of {args.window_s:g} s; median CI: {CONFIDENCE:.0%} or more, see above; "
        "* = too few quiet rounds, every round used)"
    )
    print(
        f"  {'workload':<8} {'rounds':>6} {'median':>7} {'min..max':>14} {'IQR':>14} "
        f"{'median CI':>14} {'1.0 within':>10} {'allocations':>11}"
    )
    bad = []
    for rec in records:
        if not rec.get("ok"):
            print(f"  {rec['workload']:<8} FAILED")
            bad.append(rec["workload"])
            continue
        s = rec["summary"]
        ci = "-" if s["ci_low"] is None else f"{s['ci_low']:.3f}..{s['ci_high']:.3f}"
        spread = f"{s['low']:.3f}..{s['high']:.3f}"
        iqr = f"{s['q1']:.3f}..{s['q3']:.3f}"
        allocs = "/".join(str(rec["timed_allocations"].get(k, "-")) for k in LABELS)
        rounds = f"{s['rounds']}{'*' if rec.get('noisy') else ''}"
        print(
            f"  {rec['workload']:<8} {rounds:>6} {s['median']:>7.3f} "
            f"{spread:>14} {iqr:>14} {ci:>14} "
            f"{'yes' if s['within_noise'] else 'NO':>10} {allocs:>11}"
        )
        if not s["within_noise"] or any(rec["timed_allocations"].values()):
            bad.append(rec["workload"])
    return bad


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) both builds, time them on every workload, print and return 0/1."""
    args = parse_args(argv)
    repo = repo_root(Path(__file__).resolve().parent)
    cache = (args.cache_dir or repo / DEFAULT_CACHE).resolve()
    print("builds:")
    builds = {
        "base": resolve_build("base", args.base, repo, cache, args.rebuild),
        "new": resolve_build("new", args.new, repo, cache, args.rebuild),
    }
    pin = None if args.no_pin else pin_cpus(args.threads)
    native = native_target()
    print(
        f"\ngometal builds side by side: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {args.threads} threads per child"
        + (f", children pinned to CPUs {pin}" if pin else "")
    )
    print(f"CPU: {cpu_description()}" + (f"; -march=native here = {native}" if native else ""))
    print(
        f"timing: {args.warmup_s:g} s warm-up each, then rounds of one {args.window_s:g} s "
        f"window per build (order swapped every other round) until {args.rounds} quiet rounds "
        f"(at most {args.max_rounds})"
    )
    records = [compare_workload(w, builds, args, pin) for w in args.workloads]
    _print_builds(builds, records)
    bad = _print_summary(records, args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu": cpu_description(),
            "native_target": native,
            "threads": args.threads,
            "pinned_cpus": pin,
            "rounds": args.rounds,
            "max_rounds": args.max_rounds,
            "window_s": args.window_s,
            "warmup_s": args.warmup_s,
            "builds": {
                k: {
                    **b._asdict(),
                    "build_dir": str(b.build_dir),
                    "compile_flags": engine_compile_flags(b.build_dir),
                }
                for k, b in builds.items()
            },
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "workloads": records}, f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    if any(not rec.get("ok") for rec in records):
        return 1
    if args.check and bad:
        print(f"\nnot within noise of 1.0, or allocating: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
