"""A real corpus that ships with every Python: the source of 40 standard-library modules.

The language-model job trains on it when given no files. The list is fixed; the text is
read from this interpreter's standard library (``sysconfig``'s ``stdlib`` path, no module
is imported), so it is the same on every machine with the same Python version and differs
a little between versions: :func:`stdlib_corpus` returns its sha256 and the Python version
for a run's notes.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Pure-Python modules present from Python 3.10 on (none of the modules 3.12 and 3.13
# removed), 100 KB or more of source each on average: about 3 MB in all.
STDLIB_CORPUS_MODULES = (
    "_pydecimal",
    "argparse",
    "ast",
    "calendar",
    "collections",
    "configparser",
    "contextlib",
    "dataclasses",
    "difflib",
    "doctest",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "http.client",
    "http.server",
    "imaplib",
    "inspect",
    "ipaddress",
    "locale",
    "logging",
    "mailbox",
    "optparse",
    "os",
    "pdb",
    "pickle",
    "platform",
    "pydoc",
    "shutil",
    "smtplib",
    "statistics",
    "subprocess",
    "tarfile",
    "threading",
    "traceback",
    "typing",
    "unittest.case",
    "urllib.parse",
    "urllib.request",
    "zipfile",
)


def module_separator(module: str) -> str:
    """The line put before each module's source in the corpus.

    Example:
        >>> module_separator("ast")
        '# ---- module ast ----\\n'
    """
    return f"# ---- module {module} ----\n"


@dataclass(frozen=True)
class StdlibCorpus:
    """The corpus text and what identifies it.

    Attributes:
        text: the modules' sources in sorted module order, each after its separator line.
        sha256: the hex digest of ``text`` encoded as UTF-8.
        modules: the module names, sorted.
        paths: each module's source file, in the same order.
        python_version: the interpreter whose standard library was read, e.g. ``"3.11.7"``.

    Example:
        >>> corpus = stdlib_corpus()  # doctest: +SKIP
        >>> note = f"{corpus.sha256} (Python {corpus.python_version})"  # doctest: +SKIP
    """

    text: str
    sha256: str
    modules: tuple[str, ...]
    paths: tuple[Path, ...]
    python_version: str


def module_source_path(module: str, stdlib: Path | None = None) -> Path:
    """The source file of a standard-library module, found without importing it.

    Args:
        module: a dotted module name, e.g. ``"email.message"``.
        stdlib: the standard library's folder (default: this interpreter's).

    Returns:
        ``<stdlib>/a/b.py``, or ``<stdlib>/a/b/__init__.py`` for a package.

    Example:
        >>> module_source_path("ast").name
        'ast.py'
    """
    root = Path(sysconfig.get_path("stdlib")) if stdlib is None else Path(stdlib)
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the standard-library module {module!r} has no source file under {str(root)!r} "
        f"(looked for {base.name}.py and {base.name}/__init__.py); this Python installation "
        "lacks part of its standard library"
    )


def stdlib_corpus(
    modules: Sequence[str] = STDLIB_CORPUS_MODULES, stdlib: Path | None = None
) -> StdlibCorpus:
    """Reads the corpus: the modules' sources, sorted by name, each after its separator.

    Args:
        modules: the module names (default: :data:`STDLIB_CORPUS_MODULES`).
        stdlib: the standard library's folder (default: this interpreter's).

    Returns:
        The :class:`StdlibCorpus`.

    Example:
        >>> corpus = stdlib_corpus()  # doctest: +SKIP
        >>> len(corpus.text) > 2_000_000, len(corpus.sha256)  # doctest: +SKIP
        (True, 64)
    """
    if isinstance(modules, str) or not modules:
        raise ValueError(f"modules must be a non-empty sequence of module names, got {modules!r}")
    names = tuple(sorted(set(modules)))
    paths = tuple(module_source_path(name, stdlib) for name in names)
    pieces = []
    for name, path in zip(names, paths):
        source = path.read_bytes().decode("utf-8")
        pieces.append(module_separator(name) + source + ("" if source.endswith("\n") else "\n"))
    text = "".join(pieces)
    return StdlibCorpus(
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        modules=names,
        paths=paths,
        python_version=".".join(str(part) for part in sys.version_info[:3]),
    )
