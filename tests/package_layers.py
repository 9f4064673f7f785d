"""The layer order of the ``gometal`` package, and a static check that imports follow it.

Each folder under ``python/gometal`` is a layer; a module may import from its own folder
and from layers of a lower rank, never from a higher one or from a sibling of the same
rank. Every import counts: at module level, inside a function, under ``TYPE_CHECKING``,
and ``importlib.import_module`` with a literal name. The package's ``__init__`` sits on
top of every layer (it gathers the public names); no module may import it back.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "gometal"
PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "python" / PACKAGE

# Layer folder -> rank. Equal ranks are siblings that may not import each other.
LAYER_RANKS = {
    "base": 0,
    "graph": 1,
    "nn": 2,
    "train": 3,
    "models": 3,  # ready-made models built from nn, beside train/
    "quantization": 3,  # int8 models built from a float model and calibration batches
    "io": 4,
    "data": 4,
    "text": 4,  # tokenizers and token files: data for language models, beside data/
    "viz": 5,
    "distributed": 5,
    "serving": 6,  # the inference server; reuses viz's HTTP guards
    "apps": 7,
}
TOP = "top"  # the package's __init__, above every layer
# The compiled engine and its loader: base-layer modules the build keeps at the root.
BASE_ROOT_MODULES = ("_core", "_native")


@dataclass(frozen=True)
class Violation:
    """One import that goes against the layer order."""

    module: str
    line: int
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}: {self.reason}"


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module in ``path`` under the package folder ``root``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer folder a module belongs to, ``TOP`` for the package itself, or ``None``."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return TOP
    if parts[1] in BASE_ROOT_MODULES:
        return "base"
    return parts[1] if parts[1] in LAYER_RANKS else None


def _is_module(name: str, root: Path) -> bool:
    if name in {f"{PACKAGE}.{m}" for m in BASE_ROOT_MODULES}:
        return True  # the compiled engine is built outside the source tree
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    folder = root / relative
    return folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file()


def _imports(tree: ast.AST, module: str, is_package: bool, root: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``tree``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # `from package import submodule` imports the submodule.
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate, root) else base
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            yield node.lineno, node.args[0].value


def check_import(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target`` (``None`` when it may)."""
    source_layer, target_layer = layer_of(module), layer_of(target)
    if target_layer is None or source_layer == TOP:
        return None  # not gometal, or the package root, which gathers everything
    if source_layer is None:
        return None  # reported once per module by the caller
    if target_layer == TOP:
        return "the package root sits above every layer"
    if source_layer == target_layer:
        return None
    source_rank, target_rank = LAYER_RANKS[source_layer], LAYER_RANKS[target_layer]
    if target_rank > source_rank:
        return (
            f"layer {target_layer!r} (rank {target_rank}) is above {source_layer!r} ({source_rank})"
        )
    if target_rank == source_rank:
        return f"layers {source_layer!r} and {target_layer!r} are siblings of rank {source_rank}"
    return None


def layer_violations(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """Every import under the package folder ``root`` that breaks the layer order, and
    every module that belongs to no layer.

    Args:
        root: the ``gometal`` package folder (a copy of it in the tests of this check).

    Returns:
        The violations, sorted by module and line.
    """
    found: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        if layer_of(module) is None:
            found.append(Violation(module, 0, "-", "the module belongs to no layer"))
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in _imports(tree, module, path.name == "__init__.py", root):
            reason = check_import(module, target)
            if reason is not None:
                found.append(Violation(module, line, target, reason))
    return sorted(found, key=lambda v: (v.module, v.line, v.target))
