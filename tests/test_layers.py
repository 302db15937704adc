"""The house: the core (``dispatch``) imports nothing above it.

Layers, bottom up: ``dispatch`` (config, models, the decision logic, the ledger, ids, limits,
the codec: pure) <- ``workflows`` and ``activities`` <- ``app`` (processes, web routes, CLI,
demo, board) and the two top-level programs. A core module that imported a workflow, an
activity or the shell would make the pure logic carry the whole application with it.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
from pydantic import BaseModel

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


NONDETERMINISTIC_MODULES = {
    "random",
    "secrets",
    "uuid",
    "time",
    "os",
    "socket",
    "threading",
    "subprocess",
    "multiprocessing",
    "httpx",
    "urllib",
}
NONDETERMINISTIC_CALLS = {"now", "utcnow", "today", "open"}
"""``datetime.now()``, ``date.today()``, ``open()``…: workflow code asks ``workflow.now()``."""


def nondeterministic_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if node.level == 0
                else []
            )
            found += [
                f"line {node.lineno}: imports {name}"
                for name in names
                if name.split(".")[0] in NONDETERMINISTIC_MODULES
            ]
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value if isinstance(func, ast.Attribute) else None
            # workflow.now() is the deterministic clock; every other now/today/open is not.
            if called in NONDETERMINISTIC_CALLS and not (
                isinstance(owner, ast.Name) and owner.id == "workflow"
            ):
                found.append(f"line {node.lineno}: calls {called}()")
    return found


def test_workflow_code_uses_no_clock_randomness_or_io() -> None:
    """The worker imports the workflow modules once, outside the sandbox's import isolation
    (``worker.WORKFLOW_RUNNER``), so this is the check that they stay deterministic."""
    wrong = [
        f"{path.relative_to(ROOT)} {use}"
        for path in sorted((ROOT / "workflows").rglob("*.py"))
        for use in nondeterministic_uses(path)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_determinism_check_finds_what_it_forbids(tmp_path: Path) -> None:
    code = tmp_path / "bad.py"
    code.write_text(
        "import uuid\nfrom datetime import datetime\nfrom temporalio import workflow\n"
        "a = datetime.now()\nb = workflow.now()\nc = open('x')\n",
        encoding="utf-8",
    )
    assert nondeterministic_uses(code) == [
        "line 1: imports uuid",
        "line 4: calls now()",
        "line 6: calls open()",
    ]


def test_every_model_is_complete_once_imported() -> None:
    """A model naming a later one is rebuilt at import (``dispatch/models.py``): left to its
    first use in workflow code, pydantic would look for the later model in the sandbox's
    modules and fail the workflow task."""
    incomplete = []
    for package in ("dispatch", "activities", "workflows"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            module = importlib.import_module(info.name)
            incomplete += [
                f"{module.__name__}.{name}"
                for name, value in vars(module).items()
                if isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
                and not value.__pydantic_complete__
            ]
    assert not incomplete, incomplete
