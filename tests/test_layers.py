"""The house: the core (``dispatch``) imports nothing above it.

Layers, bottom up: ``dispatch`` (config, models, the decision logic, the ledger, ids, limits,
the codec: pure) <- ``workflows`` and ``activities`` <- ``app`` (processes, web routes, CLI,
demo, board) and the two top-level programs. A core module that imported a workflow, an
activity or the shell would make the pure logic carry the whole application with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABOVE = {
    "dispatch": ("app", "workflows", "activities", "sandbox", "simulation", "benchmarks"),
    "workflows": ("app", "sandbox", "simulation", "benchmarks"),
    "activities": ("app", "sandbox", "simulation", "benchmarks"),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imported(path)):
            top = name.split(".")[0]
            if top in ABOVE[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)
