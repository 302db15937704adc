"""The side-effects chaos benchmark runs end to end: its worker process reads what its driver
sends (the same data converter, codec included) and every effect lands once.

No kill and no figure asserted here (``python -m benchmarks.effects_chaos`` is the measurement);
only that the machinery the measurement depends on works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_every_effect_lands_once_through_the_benchmark_worker(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    argv = [sys.executable, "-m", "benchmarks.effects_chaos", "--engagements", "3"]
    argv += ["--kill-for", "0", "--json", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    effects = json.loads(out.read_text())["effects"]
    assert set(effects) == {"confirmation", "notice", "crm", "google", "slack", "outlook"}
    for kind, figures in effects.items():
        assert figures["landed"] == figures["asked"] == 3, kind
        assert figures["duplicates"] == figures["missing"] == figures["failed"] == 0, kind
