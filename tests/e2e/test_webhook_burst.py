"""The webhook benchmark measures what it says: a small run sees every engagement's side effects.

No figure is asserted (timings belong to the benchmark's own report): only that every
engagement was followed to its last side effect, nothing twice, nobody over capacity, and the
dispatcher's ledger and each engagement's state agree with what the sandbox recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("via", ["karbon", "relay"])
def test_a_small_burst_is_followed_to_every_side_effect(tmp_path: Path, via: str) -> None:
    out = tmp_path / "figures.json"
    argv = [sys.executable, "-m", "benchmarks.webhook_burst", "--via", via]
    argv += ["--burst", "6", "--single", "2", "--workers", "1", "--sample", "4"]
    result = subprocess.run(
        [*argv, "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())["medians"]
    assert figures["assigned"] + figures["partner_review"] == 8
    for name in ("unfinished", "refused", "duplicates", "over_capacity", "unchecked"):
        assert figures[name] == 0, (name, result.stdout)
    assert figures["ledger_mismatches"] == 0 and figures["state_mismatches"] == 0, result.stdout
    assert figures["reference_wall"] > 0 and figures["burst_ratio"] > 0
    assert "where the time goes" in result.stdout
