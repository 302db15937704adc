"""``dispatch simulate``: the tax-season benchmark from the command line.

    dispatch simulate --profile M15 --seeds 10 --load 0.95 \\
        --policies P0,P1,P2,P3,P4 [--json] [--out DIR]

P3 is production's decision logic with its default levers, P4 the batch optimizer; P3base
(opt-in) production before the levers, P3w the seed's weekly-only rule, for reference. Lever
variants measure one lever at a time: ``P3-open``, ``P3+ahead``, ``P3base+day`` (see
``simulation.policies.Levers``).

Runs every (load, seed, policy) cell in parallel processes with a progress bar, prints a
comparison table (mean and 95 % confidence interval across seeds, per metric and policy) and
writes PNG charts and the per-seed results to a folder it names. ``--json`` prints one JSON
object per policy (and load) on stdout instead of the table.

Mounted by ``app.cli`` through ``add_parser`` / ``run``; ``python -m simulation`` runs it
on its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulation.metrics import LOWER_IS_BETTER, METRICS, PERCENT
from simulation.policies import EXTRA_POLICY_IDS, POLICY_IDS, make_policy
from simulation.profiles import PROFILES, profile
from simulation.runner import CellResult, cells_for, run_cells
from simulation.stats import Summary, paired, summarise

DEFAULT_WORKERS = 2
"""The pool is capped at two processes unless ``--jobs`` says otherwise: the documented
figures come from two shared cores, and more processes than cores only adds contention."""


def workers_for(requested: int | None) -> int:
    return max(1, requested or min(DEFAULT_WORKERS, os.cpu_count() or 1))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``simulate`` to a ``dispatch`` sub-command parser (``add_subparsers()`` result)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run the tax-season benchmark: compare dispatch policies on a simulated season",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile", default="M15", help=f"firm profile: {', '.join(PROFILES)} (default M15)"
    )
    p.add_argument("--seeds", type=int, default=10, help="seasons per policy (default 10)")
    p.add_argument("--first-seed", type=int, default=1, help="seeds run from here (default 1)")
    p.add_argument(
        "--load",
        default="0.95",
        help="target peak load, or several comma-separated (default 0.95)",
    )
    p.add_argument(
        "--policies",
        default=",".join(POLICY_IDS),
        help=f"comma-separated policy ids (default {','.join(POLICY_IDS)})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per policy on stdout")
    p.add_argument("--out", help="folder for charts and results (default: a new one, named)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"worker processes (default {DEFAULT_WORKERS}: the benchmark machines' two cores)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="P4's solver limit per batch, CP-SAT deterministic seconds "
        "(default: the firm policy's optimizer_time_limit_seconds)",
    )
    p.add_argument("--save-logs", action="store_true", help="also write every run's event log")
    p.set_defaults(func=run)
    return p


def _loads(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _policies(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    aliases = {"P3'": "P3", "P3prime": "P3", "P3p": "P3"}
    out = [aliases.get(n, n) for n in names]
    for name in out:
        try:
            make_policy(name)
        except KeyError as exc:
            known = ", ".join(POLICY_IDS + EXTRA_POLICY_IDS)
            hint = f"policies: {known}, or lever variants of P3 and P4"
            raise ValueError(f"{exc.args[0]} ({hint})") from None
    return out


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    try:
        firm = profile(args.profile)
        loads = _loads(args.load)
        policies = _policies(args.policies)
    except (KeyError, ValueError) as exc:
        err.print(f"[red]{exc.args[0] if exc.args else exc}[/]")
        return 2
    if args.seeds < 1 or not loads or not policies:
        err.print("[red]need at least one seed, one load and one policy[/]")
        return 2
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    loads_tag = "-".join(f"{x:.2f}" for x in loads)
    out = Path(args.out or f"simulation-output/{firm.name}-load{loads_tag}-seeds{args.seeds}")
    out.mkdir(parents=True, exist_ok=True)
    log_dir = None
    if args.save_logs:
        (out / "logs").mkdir(exist_ok=True)
        log_dir = str(out / "logs")
    cells = cells_for(
        firm.name, loads, seeds, policies, time_limit_s=args.time_limit, log_dir=log_dir
    )
    workers = workers_for(args.jobs)
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=args.json,
    ) as progress:
        task = progress.add_task(f"{firm.name} seasons", total=len(cells))

        finished = 0

        def done(result: CellResult) -> None:
            nonlocal finished
            finished += 1
            c = result.cell
            progress.update(
                task,
                advance=1,
                description=f"{firm.name} {c.policy} load {c.load:.2f} seed {c.seed}",
            )
            if not err.is_terminal:
                # No live bar in a log file: one line per season instead.
                err.print(
                    f"{finished}/{len(cells)} {firm.name} {c.policy} load {c.load:.2f} "
                    f"seed {c.seed}: {result.seconds:.1f} s "
                    f"({time.perf_counter() - started:.0f} s elapsed)",
                    highlight=False,
                )

        results = run_cells(cells, workers=workers, on_done=done)
    wall = time.perf_counter() - started
    cpu = sum(r.seconds for r in results)

    _save(out, results, args, wall)
    from simulation import charts

    for load in loads:
        subset = [r for r in results if r.cell.load == load]
        title = f"{firm.name}, load {load:.2f}, {len(seeds)} seeds"
        suffix = f"-{load:.2f}" if len(loads) > 1 else ""
        charts.utilisation_chart(subset, out / f"utilisation{suffix}.png", title)
        charts.lateness_chart(subset, out / f"lateness{suffix}.png", title)

    if args.json:
        for load in loads:
            for policy in policies:
                print(json.dumps(_policy_json(firm.name, load, policy, seeds, results)))
        sys.stdout.flush()
    else:
        console = Console() if sys.stdout.isatty() else Console(width=160)
        for load in loads:
            subset = [r for r in results if r.cell.load == load]
            console.print(_table(firm.name, load, policies, seeds, subset))
            verdicts = _targets(load, policies, subset)
            if verdicts is not None:
                console.print(verdicts)
        console.print(
            f"{len(cells)} seasons in {wall:.1f} s on {workers} processes "
            f"({cpu:.1f} s of simulation)."
        )
    err.print(f"charts and results: {out}")
    return 0


def _values(results: Sequence[CellResult], policy: str, metric: str) -> list[float]:
    ordered = sorted((r for r in results if r.cell.policy == policy), key=lambda r: r.cell.seed)
    return [r.values.get(metric, math.nan) for r in ordered]


def _policy_json(
    firm: str, load: float, policy: str, seeds: list[int], results: Sequence[CellResult]
) -> dict[str, Any]:
    subset = [r for r in results if r.cell.load == load]
    metrics: dict[str, Any] = {}
    for metric in METRICS:
        s = summarise(_values(subset, policy, metric))
        metrics[metric] = _finite(s.mean)
        metrics[f"{metric}_ci95"] = [_finite(s.low), _finite(s.high)]
    return {
        "profile": firm,
        "load": load,
        "policy": policy,
        "seeds": len(seeds),
        **metrics,
    }


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def cell_text(s: Summary, metric: str) -> str:
    if math.isnan(s.mean):
        return "-"
    if metric in PERCENT:
        text = f"{100 * s.mean:.1f}"
        hw = f"{100 * s.half_width:.1f}"
    else:
        digits = 0 if abs(s.mean) >= 100 else 1 if abs(s.mean) >= 10 else 2
        text = f"{s.mean:.{digits}f}"
        hw = f"{s.half_width:.{digits}f}"
    return text if math.isnan(s.half_width) else f"{text} ±{hw}"


def _table(
    firm: str, load: float, policies: list[str], seeds: list[int], results: Sequence[CellResult]
) -> Table:
    table = Table(
        title=f"{firm} at load {load:.2f}: mean ± 95 % CI over {len(seeds)} seeds "
        "(percentages for shares)",
        title_justify="left",
    )
    table.add_column("metric")
    for policy in policies:
        table.add_column(policy, justify="right")
    for metric in METRICS:
        stats = {p: summarise(_values(results, p, metric)) for p in policies}
        means = [s.mean for s in stats.values() if not math.isnan(s.mean)]
        best = (min(means) if metric in LOWER_IS_BETTER else max(means)) if means else None
        cells = []
        for p in policies:
            text = cell_text(stats[p], metric)
            cells.append(f"[bold]{text}[/]" if stats[p].mean == best else text)
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        table.add_row(f"{metric} {arrow}", *cells)
    return table


def _targets(load: float, policies: list[str], results: Sequence[CellResult]) -> Table | None:
    """The issue's targets at this load, when P2 and P3 both ran (``simulation.targets``)."""
    from simulation.targets import verdicts

    values = {p: {m: _values(results, p, m) for m in METRICS} for p in policies}
    found = verdicts(values)
    if not found:
        return None
    table = Table(title=f"Against the targets at load {load:.2f}", title_justify="left")
    for column in ("target", "figure", "met"):
        table.add_column(column)
    for v in found:
        table.add_row(v.target, v.figure, "[green]yes[/]" if v.met else "[red]no[/]")
    return table


def _save(out: Path, results: Sequence[CellResult], args: argparse.Namespace, wall: float) -> None:
    runs = [
        {
            "profile": r.cell.profile,
            "load": r.cell.load,
            "seed": r.cell.seed,
            "policy": r.cell.policy,
            "seconds": round(r.seconds, 3),
            "jobs": r.jobs,
            "load_realised": round(r.load_realised, 4),
            "metrics": {k: _finite(v) for k, v in r.values.items()},
        }
        for r in results
    ]
    summary = {
        "command": "dispatch simulate " + " ".join(_argv(args)),
        "wall_seconds": round(wall, 1),
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


def _argv(args: argparse.Namespace) -> list[str]:
    parts = [f"--profile {args.profile}", f"--seeds {args.seeds}", f"--load {args.load}"]
    parts.append(f"--policies {args.policies}")
    if args.first_seed != 1:
        parts.append(f"--first-seed {args.first_seed}")
    if args.time_limit is not None:
        parts.append(f"--time-limit {args.time_limit:g}")
    return parts


def compare(
    results: Sequence[CellResult], metric: str, a: str, b: str, load: float | None = None
) -> Summary:
    """Paired difference a - b of one metric across seeds (for reports and the docs)."""
    subset = [r for r in results if load is None or r.cell.load == load]
    return paired(_values(subset, a, metric), _values(subset, b, metric))
