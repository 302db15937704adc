"""A tax season through the real webhook path: does the ledger still tell the truth at the end?

    .venv/bin/python -m benchmarks.season_soak                      # 5,000 engagements
    .venv/bin/python -m benchmarks.season_soak --engagements 1500 --wave 150 --live 300

The stack is started as ``dispatch up`` starts it (``benchmarks/season_stack.py``: file-backed
dev server, sandbox, a worker per CPU, webhook server, supervised), except that the server
suggests continue-as-new after ``--suggest-after`` history events (dynamic config
``limit.historyCount.suggestContinueAsNew``), so the dispatcher continues as new many times in
one run instead of once in a season.

Signed relay events (``engagement.created``) arrive in waves of ``--wave``; each wave is
followed until every engagement's side effects are in the sandbox; then the oldest open
engagements are completed or cancelled in the PM system (signed ``engagement.completed`` /
``engagement.cancelled``) so the firm keeps about ``--live`` open at once, as a firm does.

At the end it prints and checks, against what the running engagements hold (their queries, not
the dispatcher's view): the ledger equals the sum of the live engagements' reservations, nobody
is over capacity, no engagement is left ``Received``, nothing was lost; and it prints the
dispatcher's continue-as-news, the carried state's size and how long one new engagement takes to
be assigned afterwards (target < 1 s). Exits 1 when a promise fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from benchmarks.season_stack import (
    Running,
    dispatcher_runs,
    interruptible,
    parser_for,
    print_truth,
    relay_event,
    running_engagements,
    running_stack,
    send_all,
    truth,
)
from benchmarks.side_effects import SideEffects
from benchmarks.webhook_burst import Engagement, pct, plan, post, say, until_done
from dispatch.models import DispatchStatus
from workflows.engagement import EngagementWorkflow

NEW_ENGAGEMENT_TARGET = 1.0


@dataclass
class Season:
    sent: int = 0
    refused: int = 0
    unfinished: int = 0
    closed: int = 0
    wave_walls: list[float] | None = None


async def run_season(running: Running, args: argparse.Namespace) -> Season:
    """Every wave in, followed to its side effects; the oldest closed to keep ``--live`` open."""
    tag = uuid.uuid4().hex[:6]
    season = Season(wave_walls=[])
    engagements = plan(running.config, args.engagements, tag)
    effects = SideEffects(running.stack.sandbox_base, pm_write_back=False)
    open_: list[Engagement] = []
    async with httpx.AsyncClient(timeout=60) as sandbox:
        await effects.start(sandbox)
        for start in range(0, len(engagements), args.wave):
            wave = engagements[start : start + args.wave]
            began = time.monotonic()
            deliveries = await send_all([relay_event(running, e, "created") for e in wave])
            ids = [d.workflow_id for d in deliveries if d.workflow_id]
            season.sent += len(wave)
            season.refused += len(wave) - len(ids)
            effects.follow.update(ids)
            done = await until_done(effects, sandbox, ids, every=1.0, timeout=args.wave_timeout)
            season.unfinished += len(ids) - len(done)
            assert season.wave_walls is not None
            season.wave_walls.append(time.monotonic() - began)
            open_ += [e for e, d in zip(wave, deliveries, strict=True) if d.workflow_id]
            closing, open_ = open_[: max(0, len(open_) - args.live)], open_[-args.live :]
            kinds = ["completed" if e.n % 3 else "cancelled" for e in closing]
            closed = await send_all(
                [relay_event(running, e, k) for e, k in zip(closing, kinds, strict=True)]
            )
            season.refused += sum(1 for d in closed if d.status != 202)
            season.closed += len(closing)
            say(
                f"{season.sent}/{args.engagements} sent; wave of {len(wave)} settled in "
                f"{season.wave_walls[-1]:.0f}s ({len(ids) - len(done)} unfinished); "
                f"{len(closing)} closed, {len(open_)} open"
            )
    await until_open(running, len(open_), timeout=300)
    return season


async def until_open(running: Running, expected: int, timeout: float) -> None:
    """Wait for the closed engagements to finish (their releases reach the dispatcher)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(await running_engagements(running.client)) <= expected:
            return
        await asyncio.sleep(2)
    say(f"more than {expected} engagements still running after {timeout:.0f}s")


async def one_new_engagement(running: Running, n: int) -> float:
    """Seconds from a new engagement's webhook to its assignment (Assigned or partner review)."""
    newest = plan(running.config, n + 1, f"new{uuid.uuid4().hex[:4]}")[n]
    async with httpx.AsyncClient(timeout=60) as http:
        began = time.monotonic()
        delivery = await post(http, relay_event(running, newest, "created"))
    if not delivery.workflow_id:
        return float("inf")
    handle = running.client.get_workflow_handle(delivery.workflow_id)
    deadline = began + 120
    while time.monotonic() < deadline:
        state = await handle.query(EngagementWorkflow.state)
        if state.status is not DispatchStatus.RECEIVED:
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    return float("inf")


async def main(args: argparse.Namespace) -> int:
    flags = (
        "--dynamic-config-value",
        f"limit.historyCount.suggestContinueAsNew={args.suggest_after}",
    )
    began = time.monotonic()
    async with running_stack(workers=args.workers, server_flags=flags, keep=args.keep) as running:
        say(f"stack up ({len(running.stack.processes)} processes, data in {running.stack.data})")
        season = await run_season(running, args)
        wall = time.monotonic() - began
        found = await truth(running)
        runs = await dispatcher_runs(running)
        latencies = [await one_new_engagement(running, n) for n in range(args.new)]
        database = sum(f.stat().st_size for f in running.stack.data_dir.glob("temporal.db*"))
        restarts = [r for r in running.reports if "exited" in r]

    print(
        f"\nseason soak: {season.sent} engagements in waves of {args.wave}, about {args.live} "
        f"open at once; {args.workers} worker process(es), file-backed dev server suggesting "
        f"continue-as-new after {args.suggest_after} events; {os.cpu_count()} CPUs; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    walls = season.wave_walls or []
    view = found.ledger
    rows = [
        ("wall (all waves, closures drained)", f"{wall:.0f} s", ""),
        ("wave settled p50 / max", f"{pct(walls, 50):.0f} / {max(walls, default=0):.0f} s", ""),
        ("closed along the way (completed/cancelled)", f"{season.closed}", ""),
        ("refused webhooks / unfinished engagements", f"{season.refused} / {season.unfinished}",
         "0 / 0"),
        ("dispatcher runs continued as new", f"{runs.get('CONTINUED_AS_NEW', 0)}", "≥ 2"),
        ("  its other runs", ", ".join(f"{k} {v}" for k, v in runs.items()
                                      if k != "CONTINUED_AS_NEW"), ""),
        ("carried state at the last continue-as-new", f"{view.carried_bytes:,} bytes",
         "< 512 KB"),
        ("ledger entries / epoch", f"{view.total} / {view.epoch}", ""),
        ("new engagement assigned after the season",
         " / ".join(f"{t:.2f}" for t in latencies) + " s", "< 1 s"),
        ("server database", f"{database / 2**20:.0f} MB", ""),
        ("children that exited (restarted)", f"{len(restarts)}", ""),
    ]  # fmt: skip
    for name, value, target in rows:
        print(f"  {name:44} {value:>28}  {target}")
    print_truth(found)
    for line in restarts[:5]:
        print(f"  supervisor: {line}")
    broken = (
        not found.holds
        or found.unanswered
        or season.refused
        or season.unfinished
        or runs.get("FAILED", 0)
        or runs.get("TERMINATED", 0)
    )
    slow = max(latencies, default=0) >= NEW_ENGAGEMENT_TARGET
    few = runs.get("CONTINUED_AS_NEW", 0) < 2 or view.carried_bytes >= 512 * 1024
    print(
        "  verdict: "
        + ("PROMISE BROKEN" if broken else "promises kept")
        + ("; new engagement slower than 1 s" if slow else "")
        + ("; fewer than 2 continue-as-news or carried state ≥ 512 KB" if few else "")
    )
    return 1 if broken else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_for("season_soak", __doc__)
    parser.add_argument("--engagements", type=int, default=5000)
    parser.add_argument("--wave", type=int, default=200, help="engagements per wave (200)")
    parser.add_argument("--live", type=int, default=300, help="open engagements kept (300)")
    parser.add_argument(
        "--suggest-after",
        type=int,
        default=1000,
        help="history events before the server suggests continue-as-new (1000; Temporal's "
        "default is 4096 events or 4 MB)",
    )
    parser.add_argument("--new", type=int, default=3, help="new engagements timed at the end")
    parser.add_argument(
        "--wave-timeout", type=float, default=900, help="seconds a wave may take to settle"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    code = asyncio.run(interruptible(main(parse())))
    sys.stdout.flush()
    sys.exit(code)
