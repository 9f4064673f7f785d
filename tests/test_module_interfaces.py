"""Modules of ``gometal`` meet at public interfaces: no module reads another module's
``_private`` names (``trainer._engine``, ``model._calls``, ``from .x import _helper``).

A private name is one with a single leading underscore. A module may use the private
names it defines itself (on its own classes, whatever object holds them), ``super()``'s
and ``type(self)``'s, and private submodules of a package (``from . import _layers``).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from package_layers import PACKAGE_ROOT, module_name

# Modules whose private names belong to the base layer's contract with the build.
ROOT_MODULES = {"_core", "_native"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names(tree: ast.AST) -> set[str]:
    """Private names this module defines: functions, classes, attributes it assigns."""
    owned: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            owned.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            owned.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            owned.add(node.id)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            owned.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return {name for name in owned if _is_private(name)}


def _is_self_like(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("super", "type")
    return False


def private_uses(root: Path = PACKAGE_ROOT) -> list[str]:
    """Every use of another module's private name under the package folder ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owned = _own_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                if node.attr not in owned and not _is_self_like(node.value):
                    found.append(f"{module}:{node.lineno} reads {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                folder = (path.parent / "/".join([".."] * (node.level - 1))).resolve()
                source = folder.joinpath(*(node.module or "").split("."))
                for alias in node.names:
                    submodule = source / alias.name
                    is_module = submodule.with_suffix(".py").is_file() or submodule.is_dir()
                    if _is_private(alias.name) and alias.name not in ROOT_MODULES and not is_module:
                        found.append(f"{module}:{node.lineno} imports {alias.name}")
    return found


def test_no_module_reads_another_modules_private_names():
    uses = private_uses()
    assert uses == [], "\n".join(uses)


def test_the_check_finds_a_private_member_read_across_modules(tmp_path):
    copy = tmp_path / "gometal"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    evaluation = copy / "train" / "evaluation.py"
    evaluation.write_text(
        evaluation.read_text() + "\n\ndef _engine_of(trainer):\n    return trainer._engine\n"
    )
    export = copy / "io" / "onnx" / "export.py"
    export.write_text(export.read_text() + "\nfrom ...nn.model import _as_tensor_list\n")
    uses = private_uses(copy)
    assert len(uses) == 2, uses
    assert uses[0].startswith("gometal.io.onnx.export:") and uses[0].endswith(
        "imports _as_tensor_list"
    )
    assert uses[1].startswith("gometal.train.evaluation:")
    assert uses[1].endswith("reads trainer._engine")
