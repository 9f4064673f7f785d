"""benchmarks/compare_builds.py: its arguments, its ratio arithmetic, how it reads a build's
compile flags, and the interleaved children's per-window allocation counts.

No timing is asserted: these check the arithmetic and the plumbing, not anyone's speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binom

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _builds import engine_compile_flags, resolve_commit
from _ratios import median_interval_ranks, paired_ratios, summarize_ratios
from _runner import ChildSpec, round_order, run_rounds
from compare_builds import parse_args, placement_lines, quiet_round_flags, verdict_lines

# -- ratio arithmetic ------------------------------------------------------------------------


def test_paired_ratios_divide_round_by_round_and_skip_empty_rounds():
    new, base = [110.0, 90.0, 50.0, 80.0], [100.0, 100.0, 0.0, 40.0]
    assert paired_ratios(new, base) == pytest.approx([1.1, 0.9, 2.0])


def test_paired_ratios_reject_rates_of_different_rounds():
    with pytest.raises(ValueError, match=r"same rounds, got 3 and 2"):
        paired_ratios([1.0, 2.0, 3.0], [1.0, 2.0])


def test_summary_matches_numpy_median_extremes_and_quartiles():
    rng = np.random.default_rng(3)
    ratios = list(rng.normal(1.0, 0.05, size=17))
    s = summarize_ratios(ratios)
    assert s.rounds == 17
    assert s.median == pytest.approx(np.median(ratios))
    assert (s.low, s.high) == (min(ratios), max(ratios))
    assert s.q1 == pytest.approx(np.percentile(ratios, 25))
    assert s.q3 == pytest.approx(np.percentile(ratios, 75))


@pytest.mark.parametrize("n", [6, 7, 10, 15, 20, 31, 60])
def test_median_interval_is_the_narrowest_with_95_percent_binomial_coverage(n):
    # Reference: scipy's binomial CDF. [x_(j), x_(n+1-j)] covers the median unless fewer
    # than j of the n values fall on one side of it.
    def coverage(j):
        return binom.cdf(n - j, n, 0.5) - binom.cdf(j - 1, n, 0.5)

    j, cov = median_interval_ranks(n)
    assert cov == pytest.approx(coverage(j))
    assert coverage(j) >= 0.95
    assert j + 1 > n // 2 or coverage(j + 1) < 0.95


def test_median_interval_ranks_match_the_published_table():
    # Conover's table of order statistics for the median: n=10 -> (2, 9), n=20 -> (6, 15).
    assert median_interval_ranks(10)[0] == 2
    assert median_interval_ranks(20)[0] == 6
    # Five values cover the median with 1 - 2/32 = 93.75 % at best: no 95 % interval.
    assert median_interval_ranks(5) is None


def test_median_interval_level_must_be_a_probability():
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        median_interval_ranks(10, level=1.5)


def test_ratios_consistently_above_one_are_not_within_noise():
    # Ten rounds, every one at least 3 % faster: the interval [x_(2), x_(9)] excludes 1.0.
    ratios = [1.03, 1.05, 1.04, 1.06, 1.035, 1.045, 1.07, 1.04, 1.05, 0.99]
    s = summarize_ratios(ratios)
    assert (s.ci_low, s.ci_high) == (sorted(ratios)[1], sorted(ratios)[8])
    assert s.ci_low > 1.0
    assert not s.within_noise


def test_ratios_scattered_around_one_are_within_noise():
    ratios = [0.97, 1.02, 1.01, 0.99, 1.04, 0.98, 1.0, 1.03, 0.96, 1.01]
    s = summarize_ratios(ratios)
    assert s.ci_low < 1.0 < s.ci_high
    assert s.within_noise


def test_few_rounds_fall_back_to_min_max():
    s = summarize_ratios([1.02, 1.05, 1.01])
    assert s.ci_level is None and s.ci_low is None
    assert not s.within_noise
    assert summarize_ratios([0.98, 1.05, 1.01]).within_noise


def test_summary_needs_a_round():
    with pytest.raises(ValueError, match="at least one round, got none"):
        summarize_ratios([])


def test_a_round_is_quiet_only_when_every_child_was():
    loads = {"base": [0.0, 0.5, None, 0.1], "new": [0.1, 0.0, 0.0, 0.2]}
    assert quiet_round_flags(loads) == [True, False, True, False]


def test_verdict_names_the_interval_and_warns_under_other_load():
    outside = summarize_ratios([0.97, 0.975, 0.972, 0.974, 0.976, 0.973, 0.971])
    # Seven rounds: [x_(1), x_(7)] covers the median with 1 - 2/128 = 98.4 %.
    assert verdict_lines(outside, noisy=False) == [
        "98.4% confidence interval of the median: 0.970..0.976 -> 1.0 OUTSIDE: a real change"
    ]
    noisy = verdict_lines(summarize_ratios([1.01, 0.98]), noisy=True)
    assert noisy[0] == "too few rounds for a 95% interval; 1.0 inside min..max"
    assert "not trustworthy" in noisy[1]


def test_rounds_are_grouped_by_the_placement_they_began_in():
    # 120 ns splits the two placements; an unmeasured round joins neither group.
    ratios = [1.0, 1.3, 0.9, 1.5, 1.1, 2.0]
    trips = [55.0, 300.0, 61.0, 280.0, 119.9, None]
    (line,) = placement_lines(ratios, trips)
    assert "CPUs sharing an L3: median 1.000 over 3 rounds" in line
    assert "CPUs on different dies: median 1.400 over 2 rounds" in line
    assert placement_lines([1.0], [None]) == []


def test_alternate_rounds_swap_the_order():
    assert [round_order(["a", "b"], i, True) for i in range(3)] == [
        ["a", "b"],
        ["b", "a"],
        ["a", "b"],
    ]
    assert round_order(["a", "b"], 1, False) == ["a", "b"]


# -- arguments -------------------------------------------------------------------------------


def test_arguments_defaults_and_runner_names():
    args = parse_args(["--base", "main", "--rounds", "9", "--workloads", "A-small,C"])
    assert args.new == "worktree"
    assert args.workloads == ["A-small", "C"]
    assert (args.windows, args.max_windows) == (9, 27)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "--rounds: expected an integer >= 1, got 0"),
        (["--rounds", "5", "--max-rounds", "4"], "--max-rounds: expected at least --rounds (5)"),
        (["--window-s", "0"], "--window-s: expected seconds > 0, got 0.0"),
        (["--warmup-s", "-1"], "--warmup-s: expected seconds >= 0, got -1.0"),
        (["--threads", "0"], "--threads: expected an integer >= 1, got 0"),
        (["--workloads", "A,Z"], "--workloads: unknown workload: Z (choose from A, A-small"),
        (["--workloads", ","], "--workloads: expected at least one of A, A-small, B, C"),
    ],
)
def test_bad_arguments_name_the_option_and_the_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--base", "main", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_base_is_required(capsys):
    with pytest.raises(SystemExit):
        parse_args([])
    assert "--base" in capsys.readouterr().err


def test_unknown_revision_names_the_option(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("x")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert resolve_commit(tmp_path, "HEAD", "--base") == head
    with pytest.raises(SystemExit, match=r"--base: expected a git revision .* got 'no-such-rev'"):
        resolve_commit(tmp_path, "no-such-rev", "--base")


# -- a build's compile flags -----------------------------------------------------------------

# As CMake's Ninja generator writes them; the bindings' object comes first, so its flags
# must not be taken for the engine's.
NINJA = """\
build cmake_object_order_depends_target_gometal: phony || .

build CMakeFiles/_core.dir/cpp/bindings/module.cpp.o: CXX_COMPILER___core_Release /s/cpp/bindings/module.cpp
  FLAGS = -O3 -DNDEBUG -std=gnu++20 -fPIC -fvisibility=hidden

build CMakeFiles/gometal.dir/cpp/src/ir/graph.cpp.o: CXX_COMPILER__gometal_Release /s/cpp/src/ir/graph.cpp
  DEFINES = -DGOMETAL_BLAS_SCIPY_OPENBLAS
  FLAGS = -O3 -DNDEBUG -std=gnu++20 -fPIC -march=native
  INCLUDES = -I/s/cpp/include
"""


def test_compile_flags_come_from_an_engine_source_in_build_ninja(tmp_path):
    (tmp_path / "build.ninja").write_text(NINJA)
    assert engine_compile_flags(tmp_path) == "-O3 -DNDEBUG -std=gnu++20 -fPIC -march=native"


def test_compile_flags_from_a_makefiles_tree(tmp_path):
    target = tmp_path / "CMakeFiles" / "gometal.dir"
    target.mkdir(parents=True)
    (target / "flags.make").write_text(
        "# CMAKE generated file: DO NOT EDIT!\nCXX_DEFINES = -DX\n\nCXX_FLAGS = -O3 -mavx2\n"
    )
    assert engine_compile_flags(tmp_path) == "-O3 -mavx2"
    assert engine_compile_flags(tmp_path / "missing") is None
    assert engine_compile_flags(None) is None


# -- the children ----------------------------------------------------------------------------


def test_interleaved_children_report_rates_and_allocations_per_window(monkeypatch):
    # Two children of this interpreter's gometal, labelled as two builds: each timed window
    # answers its rate and the engine allocations it made, which are zero in steady state.
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    args = SimpleNamespace(
        threads=1, warmup_s=0.0, windows=3, window_s=0.02, max_windows=3, timeout=120
    )
    children = [ChildSpec("base", "gometal"), ChildSpec("new", "gometal", sys.executable)]
    probed = []
    run = run_rounds(
        children,
        "A-small",
        args,
        pin=None,
        alternate=True,
        before_round=lambda: probed.append(1) or len(probed),
    )
    assert run.probes == (1, 2, 3)  # one probe before each round, kept in order
    assert [r["label"] for r in run.rows] == ["base", "new"]
    assert all(r["ok"] for r in run.rows), [r.get("error") for r in run.rows]
    for label in ("base", "new"):
        assert len(run.rates[label]) == 3 and all(r > 0 for r in run.rates[label])
        assert run.allocations[label] == [0, 0, 0]
    from gometal import _core

    for row in run.rows:
        assert row["engine_file"] == _core.__file__  # the build the child imported
        assert row["env"]["OPENBLAS_CORETYPE"] is None  # removed from the child's environment
