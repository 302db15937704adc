"""Run (profile, load, seed, policy) cells, in parallel processes, and collect their metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

from simulation.engine import simulate
from simulation.events import save_jsonl
from simulation.generator import Scenario, generate
from simulation.metrics import compute
from simulation.policies import make_policy
from simulation.profiles import profile


@dataclass(frozen=True)
class Cell:
    profile: str
    load: float
    seed: int
    policy: str
    time_limit_s: float | None = None
    log_dir: str | None = None
    """Write the run's event log here as JSONL (``{profile}-{load}-{seed}-{policy}.jsonl``)."""


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    values: dict[str, float]
    utilisation: dict[str, list[float | None]]
    late_by_week: list[int]
    due_by_week: list[int]
    seconds: float
    jobs: int
    load_realised: float
    """Expected hours ready in the peak weeks / capacity, as generated."""


@lru_cache(maxsize=8)
def scenario(profile_name: str, seed: int, load: float) -> Scenario:
    return generate(profile(profile_name), seed, load)


def run_cell(cell: Cell) -> CellResult:
    season = scenario(cell.profile, cell.seed, cell.load)
    policy = make_policy(cell.policy, seed=cell.seed, time_limit_s=cell.time_limit_s)
    started = time.perf_counter()
    records = simulate(season, policy)
    seconds = time.perf_counter() - started
    if cell.log_dir is not None:
        name = f"{cell.profile}-{cell.load:.2f}-{cell.seed}-{cell.policy}.jsonl"
        save_jsonl(records, Path(cell.log_dir) / name)
    metrics = compute(records)
    return CellResult(
        cell=cell,
        values=metrics.values,
        utilisation=metrics.utilisation,
        late_by_week=metrics.late_by_week,
        due_by_week=metrics.due_by_week,
        seconds=seconds,
        jobs=len(season.jobs),
        load_realised=season.demand_hours / season.capacity_hours,
    )


_COST = {"P4": 4.0, "P3": 3.0, "P3w": 1.5}


def _cost(policy: str) -> float:
    return next((c for prefix, c in _COST.items() if policy.startswith(prefix)), 1.0)


def run_cells(
    cells: Sequence[Cell],
    *,
    workers: int | None = None,
    on_done: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run every cell; ``workers`` processes (default: two, or fewer cores). Input order."""
    count = max(1, workers or min(2, os.cpu_count() or 1))
    # The slow policies first, so the pool does not end waiting on one long run.
    order = sorted(range(len(cells)), key=lambda i: -_cost(cells[i].policy))
    results: dict[int, CellResult] = {}
    if count == 1:
        for i in order:
            results[i] = run_cell(cells[i])
            if on_done is not None:
                on_done(results[i])
    else:
        # "spawn": a clean interpreter per worker, whatever threads the caller runs.
        with ProcessPoolExecutor(max_workers=count, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, cells[i]): i for i in order}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_done is not None:
                    on_done(results[i])
    return [results[i] for i in range(len(cells))]


def cells_for(
    profile_name: str,
    loads: Iterable[float],
    seeds: Iterable[int],
    policies: Iterable[str],
    *,
    time_limit_s: float | None = None,
    log_dir: str | None = None,
) -> list[Cell]:
    return [
        Cell(profile_name, load, seed, policy, time_limit_s, log_dir)
        for load in loads
        for seed in seeds
        for policy in policies
    ]
