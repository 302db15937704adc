"""Chaos on the default stack: is anything lost, anybody double-booked, anything done twice?

    .venv/bin/python -m benchmarks.chaos                            # 300 engagements, full chaos
    .venv/bin/python -m benchmarks.chaos --engagements 300 --rate 0.5 --kill-every 0 \\
        --restart-server-at 0 --fault-rate 0 --tracker-outage 600   # a 10-minute tracker outage

The stack is started and supervised as ``dispatch up`` does (``benchmarks/season_stack.py``),
with the demo firm on Karbon: the work items exist first, then signed Karbon ``Inserted``
webhooks arrive at ``--rate`` per second while:

- a worker process is SIGKILLed every ``--kill-every`` seconds (the workers in turn) for the
  first ``--kill-for`` seconds, and restarted by the stack's supervisor (its backoff capped at
  2 s here, so a worker is killed every few seconds rather than left down);
- the Temporal server is SIGKILLed once at ``--restart-server-at`` seconds and restarted by the
  supervisor on the same database file;
- the sandbox answers ``--fault-rate`` of every vendor call (Karbon, Harvest, Slack, Google,
  Graph, SendGrid, CRM) with 429 (Retry-After 1 s), 500 or 503, a third each;
- optionally the time tracker (Harvest) answers 503 to everything for ``--tracker-outage``
  seconds from ``--outage-at``.

Then, once every engagement's side effects are in the sandbox (or ``--drain-timeout``), the
faults are cleared and it prints: engagements lost, people over capacity and ledger mismatches
(from what the engagements hold), duplicates per side effect (PM write-back, calendar events,
Slack DMs, client emails, CRM records) and their rate, the time to drain, and for an outage the
decisions that carried the capacity note, whether the dispatcher showed it, and how long after
the heal the managing partner heard the tracker is back (waited for ``--back-wait`` seconds,
whether or not work arrives after the heal: an outage outlasting the arrivals shows whether the
dispatcher finds the end on its own). Exits 1 when a
promise fails (lost, over capacity, ledger, duplicate PM writes or calendar events, a failed
workflow).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from app.stack import Process, RestartPolicy
from benchmarks.season_stack import (
    TRACKER_ROUTE,
    Running,
    Truth,
    faults,
    faults_applied,
    interruptible,
    parser_for,
    partner_notices,
    print_truth,
    relay_event,
    running_stack,
    truth,
    vendor_faults,
)
from benchmarks.side_effects import SideEffects
from benchmarks.webhook_burst import (
    Delivery,
    Sent,
    create_work_items,
    karbon_webhook,
    plan,
    post,
    say,
    until_done,
)
from dispatch.config import KarbonConnector
from dispatch.models import LedgerQuery
from workflows.dispatcher import SNAPSHOT_RETRY, DispatcherWorkflow

CHAOS_RESTARTS = RestartPolicy(first_delay=1.0, max_delay=2.0)
KINDS = ("pm", "calendar", "chat", "email", "crm")
PROMISED_ONCE = ("pm", "calendar")
"""Side effects that must never land twice; the others are measured as a rate."""


@dataclass
class Plan:
    engagements: int = 300
    rate: float = 5.0
    kill_every: float = 5.0
    kill_for: float = 120.0
    restart_server_at: float = 40.0
    fault_rate: float = 0.10
    tracker_outage: float = 0.0
    outage_at: float = 20.0
    drain_timeout: float = 1800.0
    back_wait: float = 180.0
    """After the tracker heals, how long the partner's "back" is waited for (0: not waited)."""


@dataclass
class Outcome:
    sent: int
    refused: int
    unfinished: list[str]
    drained: float
    kills: int
    server_restarts: int
    faults: int
    duplicates: dict[str, int]
    repeats: int
    truth: Truth
    failed_workflows: int
    outage_seen: float | None
    """Seconds into the outage when the dispatcher first showed the capacity note."""
    partner_told: tuple[int, int]
    """Messages to the managing partner: the tracker is down, the tracker is back."""
    back_after: float | None = None
    """Seconds from the tracker healing to the partner's "back" (None: not within
    ``Plan.back_wait``), whether or not any engagement arrived after the heal."""
    supervisor: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.refused + len(self.unfinished)

    @property
    def holds(self) -> bool:
        return (
            self.lost == 0
            and self.truth.holds
            and not self.truth.unanswered
            and self.failed_workflows == 0
            and all(self.duplicates[k] == 0 for k in PROMISED_ONCE)
        )


# --- the disturbances ------------------------------------------------------------------------


def kill(process: Process) -> bool:
    if process.popen.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    return True


async def kill_workers(running: Running, every: float, until: float, stop: asyncio.Event) -> int:
    """SIGKILL a running worker every ``every`` seconds (in turn) until ``until`` (monotonic)."""
    kills, turn = 0, 0
    while every > 0 and not stop.is_set() and time.monotonic() < until:
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            workers = [p for p in running.stack.processes if p.role == "worker"]
            alive = [p for p in workers if p.popen.poll() is None]
            if alive and time.monotonic() < until:
                turn += 1
                kills += kill(alive[turn % len(alive)])
    return kills


async def restart_server(running: Running, at: float) -> int:
    """SIGKILL the dev server once; the supervisor starts it again on the same database."""
    if at <= 0:
        return 0
    await asyncio.sleep(at)
    server = next(p for p in running.stack.processes if p.role == "temporal")
    say("SIGKILL to the Temporal server")
    return int(kill(server))


async def tracker_outage(
    running: Running, plan: Plan, down: asyncio.Event
) -> tuple[float | None, float | None]:
    """The time tracker down for ``plan.tracker_outage`` seconds (``down`` is set once it is);
    how far into the outage the dispatcher first said so, and when (monotonic) it healed."""
    if plan.tracker_outage <= 0:
        down.set()
        return None, None
    await asyncio.sleep(plan.outage_at)
    rule = {"route": TRACKER_ROUTE, "status": 503, "rate": 1.0}
    await faults(running, [rule, *vendor_faults(plan.fault_rate)])
    down.set()
    say(f"time tracker down for {plan.tracker_outage:.0f}s")
    began, seen = time.monotonic(), None
    dispatcher = running.client.get_workflow_handle(running.dispatcher_id)
    while (left := plan.tracker_outage - (time.monotonic() - began)) > 0:
        if seen is None:
            try:
                view = await dispatcher.query(
                    DispatcherWorkflow.ledger,
                    LedgerQuery(limit=1),
                    rpc_timeout=timedelta(seconds=min(5.0, left)),
                )
            except RPCError as err:  # asked again; the outage's length does not wait for it
                say(f"ledger query during the outage: {err.message[:80]}")
            else:
                seen = time.monotonic() - began if view.capacity_note else None
        await asyncio.sleep(min(5.0, max(left, 0.0)))
    await faults(running, vendor_faults(plan.fault_rate))
    say("time tracker back")
    return seen, time.monotonic()


async def told_back_after(running: Running, healed: float | None, wait: float) -> float | None:
    """Seconds from the heal until the managing partner was told the tracker is back (the
    dispatcher reads a failing tracker again every minute at the default time to live)."""
    if healed is None:
        return None
    while (waited := time.monotonic() - healed) < wait:
        if (await partner_notices(running))[1] > 0:
            return waited
        await asyncio.sleep(1.0)
    return None


# --- the run ---------------------------------------------------------------------------------


async def run_chaos(running: Running, plan: Plan) -> Outcome:
    config = running.config
    pm = config.connectors.pm
    karbon = isinstance(pm, KarbonConnector)
    engagements = plan_of(running, plan.engagements)
    if isinstance(pm, KarbonConnector):
        partner = config.managing_partner.email
        await create_work_items(pm, engagements, partner, running.stack.sandbox_base)
    effects = SideEffects(running.stack.sandbox_base, pm_write_back=karbon)

    def sent(e: Any) -> Sent:
        return karbon_webhook(running.stack, e) if karbon else relay_event(running, e, "created")

    async with httpx.AsyncClient(timeout=60) as sandbox:
        await effects.start(sandbox)
        await faults(running, vendor_faults(plan.fault_rate))
        stop = asyncio.Event()
        began = time.monotonic()
        killer = asyncio.create_task(
            kill_workers(running, plan.kill_every, began + plan.kill_for, stop)
        )
        restarter = asyncio.create_task(restart_server(running, plan.restart_server_at))
        down = asyncio.Event()
        outage = asyncio.create_task(tracker_outage(running, plan, down))
        if plan.outage_at <= 0:
            await down.wait()  # the first decision reads capacity during the outage
        deliveries = await arrive(running, [sent(e) for e in engagements], plan.rate)
        ids = [d.workflow_id for d in deliveries if d.workflow_id]
        effects.follow.update(ids)
        done = await until_done(effects, sandbox, ids, every=2.0, timeout=plan.drain_timeout)
        drained = max(done.values(), default=time.monotonic()) - began
        stop.set()
        kills, restarts, (seen, healed) = await asyncio.gather(killer, restarter, outage)
        back_after = await told_back_after(running, healed, plan.back_wait)
        applied = await faults_applied(running)
        await faults(running, [])
        await effects.poll(sandbox)
    return Outcome(
        sent=len(engagements),
        refused=len(engagements) - len(ids),
        unfinished=sorted(set(ids) - set(done)),
        drained=drained,
        kills=kills,
        server_restarts=restarts,
        faults=applied,
        duplicates=duplicates(effects),
        repeats=sum(effects.repeats.values()),
        truth=await truth(running, ids),
        failed_workflows=await failed_workflows(running),
        outage_seen=seen,
        partner_told=await partner_notices(running),
        back_after=back_after,
        supervisor=list(running.reports),
    )


def plan_of(running: Running, count: int) -> list[Any]:
    return plan(running.config, count, f"c{uuid.uuid4().hex[:6]}")


async def arrive(running: Running, sents: list[Sent], rate: float) -> list[Delivery]:
    """Each webhook at its time, posted as a PM system does (sent again after a 503)."""
    limits = httpx.Limits(max_connections=len(sents) or 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        tasks = []
        for sent in sents:
            tasks.append(asyncio.create_task(post(http, sent, attempts=60)))
            await asyncio.sleep(1 / rate)
        return list(await asyncio.gather(*tasks))


def duplicates(effects: SideEffects) -> dict[str, int]:
    """Side effects that landed more than once per meaning, by kind.

    A calendar block counts by engagement and role: more event ids than roles is a duplicate
    event even when each id is new."""
    found: Counter[str] = Counter()
    for (_, key), n in effects.counts.items():
        if key[0] != "calendar":
            found[key[0]] += n - 1
    for workflow_id, ending in effects.endings.items():
        blocks = sum(1 for key in effects.seen.get(workflow_id, {}) if key[0] == "calendar")
        roles = 0 if ending.status != "assigned" else (2 if ending.reviewer else 1)
        found["calendar"] += max(0, blocks - roles)
    return {kind: found[kind] for kind in KINDS}


async def failed_workflows(running: Running) -> int:
    """Engagements or the dispatcher that failed, timed out or were terminated."""
    bad = (
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TIMED_OUT,
        WorkflowExecutionStatus.TERMINATED,
    )
    count = 0
    async for execution in running.client.list_workflows():
        count += execution.status in bad
    return count


# --- the report ------------------------------------------------------------------------------


def report(plan: Plan, o: Outcome, workers: int) -> None:
    print(
        f"\nchaos: {o.sent} engagements at {plan.rate:g}/s; {workers} worker process(es), "
        f"{o.kills} SIGKILLs (every {plan.kill_every:g} s for {plan.kill_for:g} s); Temporal "
        f"server killed and restarted {o.server_restarts}x; {o.faults} vendor calls answered "
        f"429/500/503 (rate {plan.fault_rate:.0%}); tracker outage {plan.tracker_outage:g} s; "
        f"{os.cpu_count()} CPUs; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    rows = [
        ("engagements lost (refused or never finished)", f"{o.lost}", "0"),
        ("time to drain (first webhook → last effect)", f"{o.drained:.0f} s", ""),
        ("workflows failed / timed out / terminated", f"{o.failed_workflows}", "0"),
    ]
    for kind in KINDS:
        n = o.duplicates[kind]
        target = "0" if kind in PROMISED_ONCE else "≤ 0.5 %"
        rows.append((f"duplicate {kind} effects (rate)", f"{n} ({n / max(o.sent, 1):.2%})", target))
    rows.append(("retries the CRM recognised (no new record)", f"{o.repeats}", ""))
    if plan.tracker_outage:
        shown = "never" if o.outage_seen is None else f"after {o.outage_seen:.0f} s"
        retry = SNAPSHOT_RETRY.total_seconds()
        back = f"not in {plan.back_wait:.0f} s" if o.back_after is None else f"{o.back_after:.0f} s"
        rows += [
            ("engagements whose decision carries the note", f"{o.truth.capacity_notes}", "> 0"),
            ("dispatcher showed the capacity note", shown, ""),
            ("managing partner told: down / back", "{} / {}".format(*o.partner_told), "1 / 1"),
            ("partner told it is back, after the heal", back, f"a read every {retry:.0f} s"),
        ]
    for name, value, target in rows:
        print(f"  {name:44} {value:>28}  {target}")
    print_truth(o.truth)
    if o.unfinished:
        print(f"  unfinished: {'; '.join(o.unfinished[:5])}")
    exits = [r for r in o.supervisor if "exited" in r]
    print(f"  supervisor: {len(exits)} exits reported, e.g. {exits[:2]}")
    print("  verdict: " + ("promises kept" if o.holds else "PROMISE BROKEN"))


async def main(args: argparse.Namespace) -> int:
    plan = Plan(
        engagements=args.engagements,
        rate=args.rate,
        kill_every=args.kill_every,
        kill_for=args.kill_for,
        restart_server_at=args.restart_server_at,
        fault_rate=args.fault_rate,
        tracker_outage=args.tracker_outage,
        outage_at=args.outage_at,
        drain_timeout=args.drain_timeout,
        back_wait=args.back_wait,
    )
    async with running_stack(
        via=args.via, workers=args.workers, policy=CHAOS_RESTARTS, keep=args.keep
    ) as running:
        say(f"stack up ({len(running.stack.processes)} processes, data in {running.stack.data})")
        outcome = await run_chaos(running, plan)
    report(plan, outcome, args.workers)
    return 0 if outcome.holds else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_for("chaos", __doc__)
    parser.add_argument("--engagements", type=int, default=300)
    parser.add_argument("--rate", type=float, default=5.0, help="webhooks per second (5)")
    parser.add_argument("--via", choices=["karbon", "relay"], default="karbon")
    parser.add_argument(
        "--kill-every", type=float, default=5.0, help="seconds between SIGKILLs (0: none)"
    )
    parser.add_argument(
        "--kill-for", type=float, default=120.0, help="seconds of killing, then drain in peace"
    )
    parser.add_argument(
        "--restart-server-at", type=float, default=40.0, help="seconds in (0: never)"
    )
    parser.add_argument("--fault-rate", type=float, default=0.10)
    parser.add_argument(
        "--tracker-outage", type=float, default=0.0, help="seconds the time tracker is down"
    )
    parser.add_argument("--outage-at", type=float, default=20.0, help="seconds in")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--back-wait",
        type=float,
        default=Plan.back_wait,
        help='seconds to wait after the heal for the partner\'s "back" (0: do not wait)',
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    code = asyncio.run(interruptible(main(parse())))
    sys.stdout.flush()
    sys.exit(code)
