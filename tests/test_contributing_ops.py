"""CONTRIBUTING.md's primitives table lists every op of the engine's registry, so the
checklist for adding a primitive stays true as ops are added."""

from __future__ import annotations

import re
from pathlib import Path

from gometal import _core

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def test_every_registered_op_has_a_row_in_the_primitives_table():
    listed: set[str] = set()
    for line in CONTRIBUTING.read_text(encoding="utf-8").splitlines():
        row = re.match(r"^\| ([a-z0-9_]+(?: [a-z0-9_]+)*) \|", line)
        if row:
            listed.update(row.group(1).split())
    missing = sorted(set(_core.op_names()) - listed)
    assert not missing, f"ops without a row in CONTRIBUTING.md's primitives table: {missing}"
