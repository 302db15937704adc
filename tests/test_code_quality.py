"""The code stays typed and lint-clean: ``ruff`` and ``mypy --strict`` as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    # `make lint` checks formatting too; keeping it here means the suite catches it first.
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run(
        str(BIN / "mypy"),
        "app",
        "dispatch",
        "workflows",
        "activities",
        "sandbox",
        "simulation",
        "benchmarks",
        "worker.py",
        "starter.py",
        "tests",
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_every_property_test_draws_the_same_examples_on_every_run() -> None:
    """A property test CI runs must be reproducible: a failure seen once is seen again."""
    import re
    from pathlib import Path

    unpinned = []
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(
            r"@settings\((.*?)\)\s*\n(?:@example\(.*\)\s*\n)*@given", text, re.S
        ):
            if "derandomize=True" not in match.group(1):
                line = text.count("\n", 0, match.start()) + 1
                unpinned.append(f"{path.name}:{line}")
        if "@given" in text and "@settings" not in text:
            unpinned.append(f"{path.name}: @given without @settings")
    assert not unpinned, "property tests without derandomize=True: " + ", ".join(unpinned)
