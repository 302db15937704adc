"""PNG charts for ``dispatch simulate`` (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # the backend must be chosen first

from simulation.runner import CellResult
from simulation.stats import summarise

_TIER_ORDER = {"pa": 0, "ma": 1, "se": 2, "st": 3}


def _by_policy(results: Sequence[CellResult]) -> dict[str, list[CellResult]]:
    out: dict[str, list[CellResult]] = {}
    for result in results:
        out.setdefault(result.cell.policy, []).append(result)
    return out


def utilisation_chart(results: Sequence[CellResult], path: Path, title: str) -> Path:
    """One heat map per policy: people (by tier) x peak weeks, utilisation averaged over seeds."""
    groups = _by_policy(results)
    people = sorted(
        {p for r in results for p in r.utilisation}, key=lambda p: (_TIER_ORDER.get(p[:2], 9), p)
    )
    weeks = max((len(row) for r in results for row in r.utilisation.values()), default=0)
    cols = min(3, len(groups)) or 1
    rows = math.ceil(len(groups) / cols) or 1
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(4.2 * cols, 0.22 * len(people) * rows + 1.8 * rows),
        squeeze=False,
        layout="constrained",  # keeps the titles clear of the row above's axis labels
    )
    image = None
    for ax, (policy, runs) in zip(axes.flat, groups.items(), strict=False):
        grid: list[list[float]] = []
        for person in people:
            row = []
            for week in range(weeks):
                vals = [
                    v
                    for r in runs
                    if (v := r.utilisation.get(person, [None] * weeks)[week]) is not None
                ]
                row.append(sum(vals) / len(vals) if vals else math.nan)
            grid.append(row)
        image = ax.imshow(grid, aspect="auto", cmap="RdYlGn_r", vmin=0.0, vmax=1.2)
        mean = summarise([r.values["utilisation_mean"] for r in runs]).mean
        std = summarise([r.values["utilisation_std"] for r in runs]).mean
        ax.set_title(f"{policy}: mean {mean:.0%}, std {std:.2f}", fontsize=9)
        ax.set_xticks(range(weeks), [str(w + 1) for w in range(weeks)], fontsize=7)
        ax.set_yticks(range(len(people)), people, fontsize=6)
        ax.set_xlabel("peak week", fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="hours worked / hours available")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lateness_chart(results: Sequence[CellResult], path: Path, title: str) -> Path:
    """Left: on-time and late-without-extension rates with 95 % intervals.
    Right: jobs missing their original date, by the week they were due (mean over seeds)."""
    groups = _by_policy(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(groups)
    for offset, metric, label in (
        (-0.2, "on_time_rate", "on time"),
        (0.2, "late_without_extension_rate", "late, no extension"),
    ):
        stats = [summarise([r.values[metric] for r in groups[p]]) for p in names]
        left.bar(
            [i + offset for i in range(len(names))],
            [s.mean for s in stats],
            width=0.4,
            yerr=[0 if math.isnan(s.half_width) else s.half_width for s in stats],
            capsize=3,
            label=label,
        )
    left.set_xticks(range(len(names)), names)
    left.set_ylim(0, 1)
    left.set_ylabel("share of jobs due")
    left.legend(fontsize=8)
    left.set_title("deadlines (95 % CI across seeds)", fontsize=9)
    for policy in names:
        runs = groups[policy]
        weeks = max(len(r.late_by_week) for r in runs)
        mean = [
            sum(r.late_by_week[w] for r in runs if w < len(r.late_by_week)) / len(runs)
            for w in range(weeks)
        ]
        right.plot(range(1, weeks + 1), mean, marker="o", markersize=3, label=policy)
    right.set_xlabel("week of the original due date (10 = April 15)")
    right.set_ylabel("jobs late or extended")
    right.legend(fontsize=8)
    right.set_title("which weeks slip", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
