"""Every source file stays under 600 lines: Python under python/, tests/, benchmarks/,
examples/ and sidecar/, C and C++ (and Objective-C++ and Metal) under cpp/. A file that
grows past it is split by concern."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE_LIMIT = 600  # a file must have fewer lines
PYTHON_FOLDERS = ("python", "tests", "benchmarks", "examples", "sidecar")
CPP_FOLDERS = ("cpp",)
CPP_SUFFIXES = {".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".mm", ".metal"}
SKIPPED_PARTS = {"__pycache__", ".venv", "build", "node_modules"}


def source_files(repo: Path = REPO) -> list[Path]:
    """The source files the limit applies to."""
    found = []
    for folder in PYTHON_FOLDERS:
        found += (repo / folder).rglob("*.py")
    for folder in CPP_FOLDERS:
        found += (p for p in (repo / folder).rglob("*") if p.suffix in CPP_SUFFIXES)
    return sorted(
        p for p in found if p.is_file() and not SKIPPED_PARTS & set(p.relative_to(repo).parts)
    )


def oversized(repo: Path = REPO) -> list[str]:
    """``path: N lines`` for every source file at or over the limit."""
    too_long = []
    for path in source_files(repo):
        with path.open("rb") as handle:
            lines = sum(1 for _ in handle)
        if lines >= LINE_LIMIT:
            too_long.append(f"{path.relative_to(repo)}: {lines} lines")
    return too_long


def test_every_source_file_is_under_the_line_limit():
    assert oversized() == [], f"split these files by concern (limit {LINE_LIMIT}):\n" + "\n".join(
        oversized()
    )


def test_the_limit_finds_a_long_file_in_each_kind_of_folder(tmp_path):
    for relative in ("python/gometal/nn/big.py", "tests/test_big.py", "cpp/src/big.cpp"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n" * LINE_LIMIT)
    (tmp_path / "cpp" / "src" / "small.h").write_text("int f();\n" * (LINE_LIMIT - 1))
    (tmp_path / "python" / "build").mkdir()
    (tmp_path / "python" / "build" / "generated.py").write_text("x = 1\n" * 2 * LINE_LIMIT)
    assert oversized(tmp_path) == [
        "cpp/src/big.cpp: 600 lines",
        "python/gometal/nn/big.py: 600 lines",
        "tests/test_big.py: 600 lines",
    ]
