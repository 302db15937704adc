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
