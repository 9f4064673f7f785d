"""Builds of gometal to time side by side: a git revision installed into its own cached
virtual environment, or the Python environment this script runs in ("worktree").

A revision's build lives in <cache>/<commit>/: `src/` (the revision's files, from
`git archive`, so deleting the cache leaves nothing behind in .git), `venv/` (a virtual
environment holding that build), `build/` (its CMake build tree), `build.log` and, once
the install succeeded, `build.json`. A later run reuses a build that has `build.json`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import NamedTuple

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

WORKTREE = "worktree"
# Imported by the benchmark child besides gometal's own dependencies: the BLAS report.
CHILD_EXTRAS = ("threadpoolctl>=3.1",)
READY_FILE = "build.json"


class BuildSpec(NamedTuple):
    """One build to time: `python` is the interpreter whose gometal the child imports."""

    label: str  # "base" or "new"
    requested: str  # what the command line asked for: a revision or "worktree"
    commit: str  # the full commit id (for the worktree: HEAD)
    describe: str  # short commit, subject, and "+ uncommitted changes" for a dirty worktree
    python: str
    build_dir: Path | None  # the CMake build tree, where known


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"git {' '.join(args)} failed")
    return proc.stdout.strip()


def repo_root(start: Path) -> Path:
    """The root of the git checkout holding `start`."""
    return Path(_git(start, "rev-parse", "--show-toplevel"))


def resolve_commit(repo: Path, rev: str, option: str) -> str:
    """The full commit id of `rev`, or a SystemExit naming `option` and the value."""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise SystemExit(
            f"{option}: expected a git revision of {repo} or '{WORKTREE}', got {rev!r} "
            "(no such commit)"
        ) from None


def _subject(repo: Path, commit: str) -> str:
    return _git(repo, "log", "-1", "--format=%h %s", commit)


def _build_tree_of_worktree(repo: Path, engine_file: str | None) -> Path | None:
    """The CMake build tree (scikit-build-core's build/<wheel tag>/) whose engine module is
    the one this interpreter imports: the same file, or a file of the same size."""
    trees = sorted(p.parent for p in repo.glob("build/*/CMakeCache.txt"))
    if engine_file and os.path.exists(engine_file):
        size = os.path.getsize(engine_file)
        name = os.path.basename(engine_file)
        matching = [t for t in trees if (t / name).exists() and (t / name).stat().st_size == size]
        if len(matching) == 1:
            return matching[0]
    return trees[0] if len(trees) == 1 else None


def _imported_engine_file(python: str) -> str | None:
    code = "import gometal._core as c; print(c.__file__)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def worktree_build(label: str, repo: Path) -> BuildSpec:
    """This interpreter's gometal (the checkout's own, editable install), as a build."""
    engine = _imported_engine_file(sys.executable)
    if engine is None:
        raise SystemExit(
            f"--{label} {WORKTREE}: this Python ({sys.executable}) cannot import gometal._core; "
            "run the script from the checkout's environment or pass a revision"
        )
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    describe = _subject(repo, commit) + (" + uncommitted changes" if dirty else "")
    return BuildSpec(
        label, WORKTREE, commit, describe, sys.executable, _build_tree_of_worktree(repo, engine)
    )


def _build_requires(pyproject: Path) -> list[str]:
    """[build-system].requires of a revision's pyproject.toml."""
    if tomllib is None:
        raise SystemExit("building a revision needs Python >= 3.11 (tomllib) to read pyproject")
    with open(pyproject, "rb") as f:
        return list(tomllib.load(f).get("build-system", {}).get("requires", []))


def _run_logged(cmd: list[str], log, what: str, env: dict | None = None) -> None:
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {log.name}")


def _export_revision(repo: Path, commit: str, dest: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit],
        capture_output=True,
        check=True,
    ).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def revision_build(label: str, requested: str, repo: Path, cache: Path, rebuild: bool) -> BuildSpec:
    """The build of git revision `requested`, installed into its own environment under
    `cache` (built now unless an earlier run left it there, or `rebuild`)."""
    commit = resolve_commit(repo, requested, f"--{label}")
    home = cache / commit[:12]
    venv = home / "venv"
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    spec = BuildSpec(label, requested, commit, _subject(repo, commit), python, home / "build")
    if (home / READY_FILE).exists() and os.path.exists(python) and not rebuild:
        print(f"  {label}: reusing {home}", flush=True)
        return spec
    print(f"  {label}: building {spec.describe} into {home} (minutes) ...", flush=True)
    start = time.monotonic()
    (home / READY_FILE).unlink(missing_ok=True)
    src = home / "src"
    shutil.rmtree(src, ignore_errors=True)  # a failed earlier attempt's files
    home.mkdir(parents=True, exist_ok=True)
    _export_revision(repo, commit, src)
    with open(home / "build.log", "w") as log:
        if not os.path.exists(python):
            _run_logged([sys.executable, "-m", "venv", str(venv)], log, "creating the venv")
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
        needs = [*_build_requires(src / "pyproject.toml"), *CHILD_EXTRAS]
        _run_logged([*pip, *needs], log, "installing the build requirements")
        # No build isolation: the build uses the requirements installed just above, so the
        # engine links the scipy-openblas32 that the environment will load at run time.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        install = [*pip, "--no-build-isolation", "-C", f"build-dir={spec.build_dir}", str(src)]
        _run_logged(install, log, f"building {requested}", env)
    with open(home / READY_FILE, "w") as f:
        json.dump({"requested": requested, "commit": commit, "built": time.ctime()}, f)
    print(f"  {label}: built in {time.monotonic() - start:.0f} s", flush=True)
    return spec


def resolve_build(label: str, requested: str, repo: Path, cache: Path, rebuild: bool) -> BuildSpec:
    """A build for --base/--new: "worktree" is this interpreter, anything else a revision."""
    if requested == WORKTREE:
        return worktree_build(label, repo)
    return revision_build(label, requested, repo, cache, rebuild)


def engine_compile_flags(build_dir: Path | None) -> str | None:
    """The compiler flags of the engine library's sources in a CMake build tree (Ninja or
    Makefiles), or None where the tree is unknown."""
    if build_dir is None:
        return None
    ninja = build_dir / "build.ninja"
    if ninja.exists():
        in_engine_object = False
        for line in ninja.read_text().splitlines():
            if line.startswith("build "):
                in_engine_object = "/cpp/src/" in line and ".o:" in line
            elif in_engine_object and line.strip().startswith("FLAGS = "):
                return line.split("=", 1)[1].strip()
    for flags_make in sorted(build_dir.glob("CMakeFiles/*/flags.make")):
        match = re.search(r"^CXX_FLAGS = (.*)$", flags_make.read_text(), re.MULTILINE)
        if match and "gometal" in flags_make.parent.name:
            return match.group(1).strip()
    return None


def native_target() -> str | None:
    """What -march=native (or -mcpu=native) means for this machine's C++ compiler."""
    for flag in ("-march=native", "-mcpu=native"):
        try:
            proc = subprocess.run(
                ["c++", flag, "-Q", "--help=target"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = re.search(rf"^\s+{flag.split('=')[0]}=\s+(\S+)", proc.stdout, re.MULTILINE)
        if proc.returncode == 0 and match:
            return match.group(1)
    return None


def cpu_description() -> str:
    """The CPU's model name and the vector extensions that matter to the kernels."""
    wanted = (
        *("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"),
        *("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"),
        *("asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm"),
    )
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags |= set(value.split())
    except OSError:
        return f"{os.uname().machine} (no /proc/cpuinfo)"
    return f"{model or os.uname().machine}; " + " ".join(f for f in wanted if f in flags)
