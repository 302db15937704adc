"""The docs' simulation tables come from ``simulation.report``: its paired differences must be
the per-seed differences of the saved run, not a difference of means."""

import json
from pathlib import Path

from simulation.report import main, tables


def _run(policy: str, seed: int, on_time: float) -> dict[str, object]:
    return {
        "profile": "S5",
        "load": 0.95,
        "seed": seed,
        "policy": policy,
        "metrics": {"on_time_rate": on_time, "client_continuity": None},
    }


def test_paired_difference_is_per_seed(tmp_path: Path) -> None:
    # P3 beats P2 by exactly 2 points on every seed, while the seeds themselves vary widely:
    # a paired interval is 0 wide, an unpaired one would not be.
    runs = [_run("P2", s, base) for s, base in enumerate((0.5, 0.7, 0.9), 1)]
    runs += [_run("P3", s, base + 0.02) for s, base in enumerate((0.5, 0.7, 0.9), 1)]
    text = tables({"command": "dispatch simulate", "wall_seconds": 1.0, "runs": runs})
    assert "| on_time_rate | +2.0 ±0.0 |" in text
    assert "| client_continuity | - |" in text  # missing figures are shown as such, not as 0

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": runs}))
    assert main([str(path)]) == 0
    assert main([str(tmp_path / "missing.json")]) == 2
