"""Markdown tables from a saved ``dispatch simulate`` run (``results.json``).

    python -m simulation.report simulation-output/M15-.../results.json [--against P2]

Prints, per load, the mean ± 95 % half-width of every metric for every policy, then the paired
differences of each policy against ``--against`` (default P2) on the issue's headline figures.
The documented tables in docs/benchmarks.md are this script's output, so anyone can check them
against the run's own per-seed figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulation.cli import cell_text
from simulation.metrics import METRICS
from simulation.stats import Summary, paired, summarise

HEADLINE = (
    "on_time_rate",
    "late_without_extension_rate",
    "partner_review_pct",
    "utilisation_std",
    "client_continuity",
    "overbooked_hours_auto",
)


def _values(runs: Sequence[dict[str, Any]], policy: str, metric: str) -> list[float]:
    ordered = sorted((r for r in runs if r["policy"] == policy), key=lambda r: r["seed"])
    return [
        math.nan if r["metrics"].get(metric) is None else float(r["metrics"][metric])
        for r in ordered
    ]


def _fmt(s: Summary, metric: str, signed: bool = False) -> str:
    text = cell_text(s, metric)
    return "+" + text if signed and s.mean > 0 else text


def tables(summary: dict[str, Any], against: str = "P2") -> str:
    runs: list[dict[str, Any]] = summary["runs"]
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    lines = [f"`{summary.get('command', '?')}` ({summary.get('wall_seconds', '?')} s wall)", ""]
    for load in sorted({r["load"] for r in runs}):
        subset = [r for r in runs if r["load"] == load]
        profile = subset[0]["profile"]
        seeds = len({r["seed"] for r in subset})
        lines += [f"**{profile}, load {load:.2f}** ({seeds} seeds)", ""]
        lines.append("| metric | " + " | ".join(policies) + " |")
        lines.append("|---|" + "---:|" * len(policies))
        for metric in METRICS:
            cells = [_fmt(summarise(_values(subset, p, metric)), metric) for p in policies]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        if against in policies:
            others = [p for p in policies if p != against]
            lines += ["", f"Paired differences against {against} (policy - {against}):", ""]
            lines.append("| metric | " + " | ".join(others) + " |")
            lines.append("|---|" + "---:|" * len(others))
            base = {m: _values(subset, against, m) for m in HEADLINE}
            for metric in HEADLINE:
                cells = [
                    _fmt(paired(_values(subset, p, metric), base[metric]), metric, signed=True)
                    for p in others
                ]
                lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.json written by dispatch simulate")
    parser.add_argument("--against", default="P2", help="baseline policy for paired differences")
    args = parser.parse_args(argv)
    try:
        summary = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    print(tables(summary, args.against))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
