"""``dispatch simulate --json``, in-process: every metric for every policy, charts on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import build_parser
from simulation.cli import run
from simulation.metrics import METRICS
from simulation.policies import POLICY_IDS


def test_json_has_every_metric_for_every_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    # Through the real ``dispatch`` parser, so the mounting is what is tested too.
    args = build_parser().parse_args(
        [
            *("simulate", "--profile", "S5", "--seeds", "1", "--load", "0.8", "--json"),
            *("--jobs", "1", "--out", str(out)),
        ]
    )
    assert run(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    objects = [json.loads(line) for line in lines]
    assert [o["policy"] for o in objects] == list(POLICY_IDS)
    for obj in objects:
        assert obj["profile"] == "S5" and obj["load"] == 0.8 and obj["seeds"] == 1
        for metric in METRICS:
            assert metric in obj, (obj["policy"], metric)
            assert f"{metric}_ci95" in obj
        # Every policy dispatched something: the core figures are numbers, not nulls.
        for metric in ("utilisation_mean", "on_time_rate", "auto_assigned_pct"):
            assert isinstance(obj[metric], float), (obj["policy"], metric)
    assert (out / "utilisation.png").stat().st_size > 1000
    assert (out / "lateness.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(saved["runs"]) == len(POLICY_IDS)


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["simulate", "--profile", "S5", "--seeds", "1", "--policies", "P9", "--out", str(tmp_path)]
    )
    assert run(args) == 2
