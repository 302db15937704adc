"""The default stack, supervised, for the season soak and the chaos run; and the truth after.

``running_stack`` starts what ``dispatch up`` starts (the same ``Stack``: the dev server
file-backed under a fresh data folder with its SQLite pragmas, the sandbox, the workers and the
webhook server, each its own process), on free ports, with the demo firm's twin against the
sandbox, and supervises it as ``dispatch up`` does (a child that exits is restarted). Extra dev
server flags (dynamic config) may be given.

``truth`` reads what the running engagements hold (their ``holdings`` and ``state`` queries, not
the dispatcher's own view) and checks the product's promises against it: nobody is booked past
capacity, the dispatcher's ledger equals the sum of the engagements' reservations, and no
engagement is left ``Received``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.firm import FirmActivities
from activities.registry import tracker_for
from activities.signing import dispatch_signature_header
from app.stack import SQLITE_PRAGMAS, Ports, RestartPolicy, Stack, default_workers
from app.temporal import connect
from benchmarks.webhook_burst import (
    Delivery,
    Engagement,
    Sent,
    benchmark_firm,
    patiently,
    post,
    relay_webhook,
)
from dispatch.capacity import Booking, is_overbooked
from dispatch.config import FirmConfig, load_firm_config
from dispatch.decision import calendar_of, person_of
from dispatch.ids import dispatcher_workflow_id
from dispatch.models import (
    CapacitySnapshot,
    EngagementHoldings,
    EngagementState,
    LedgerEntryView,
    LedgerQuery,
    LedgerView,
    SnapshotInput,
)
from tests.sandbox_server import free_port
from workflows.dispatcher import DispatcherWorkflow
from workflows.engagement import EngagementWorkflow

ROOT = Path(__file__).resolve().parents[1]
QUERY_TIMEOUT = timedelta(seconds=30)
VENDOR_ROUTES = "^/(karbon|harvest|slack|google|graph|sendgrid|crm)/"
"""Every vendor the demo firm's engagements and dispatcher call through the sandbox."""
TRACKER_ROUTE = "/harvest/"


@dataclass
class TunedStack(Stack):
    """``dispatch up``'s stack with extra dev server flags (e.g. lowered dynamic config)."""

    server_flags: tuple[str, ...] = ()

    def dev_server_argv(self) -> list[str]:
        return [*super().dev_server_argv(), *self.server_flags]


@dataclass
class Running:
    stack: TunedStack
    config: FirmConfig
    client: Client
    reports: list[str] = field(default_factory=list)
    """What the supervisor said (exits, restarts)."""
    faults_applied: int = 0
    """Vendor calls the sandbox turned away under rules since replaced."""

    @property
    def dispatcher_id(self) -> str:
        return dispatcher_workflow_id(self.config.firm.id)


@asynccontextmanager
async def running_stack(
    *,
    via: str = "relay",
    workers: int = 0,
    server_flags: tuple[str, ...] = (),
    policy: RestartPolicy | None = None,
    data: Path | None = None,
    keep: bool = False,
) -> AsyncIterator[Running]:
    """The default stack on free ports, supervised; ``via``: the firm's PM, ``karbon`` (work
    items fetched and written back) or ``relay`` (engagements arrive whole)."""
    folder = data or Path(tempfile.mkdtemp(prefix="season-"))
    folder.mkdir(parents=True, exist_ok=True)
    ports = Ports(temporal=free_port(), ui=free_port(), starter=free_port(), sandbox=free_port())
    firm_file = folder / "firm.yaml"
    config = benchmark_firm(via, Stack(load_firm_config(), firm_file, ports=ports))
    firm_file.write_text(
        yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
    )
    stack = TunedStack(
        config,
        firm_file,
        root=ROOT,
        ports=ports,
        data=folder,
        workers=workers or default_workers(),
        sqlite_pragmas=SQLITE_PRAGMAS,
        policy=policy or RestartPolicy(),
        server_flags=server_flags,
    )
    stop = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    try:
        await stack.start()
        running = Running(stack, config, await connect(stack.temporal_address))
        supervisor = asyncio.create_task(stack.supervise(running.reports.append, stop))
        yield running
    finally:
        stop.set()
        if supervisor is not None:
            await supervisor
        await stack.stop()
        if not keep and data is None:
            shutil.rmtree(folder, ignore_errors=True)


# --- webhooks --------------------------------------------------------------------------------


def relay_event(running: Running, e: Engagement, kind: str) -> Sent:
    """A signed relay event about ``e``: ``created``, ``completed`` or ``cancelled``."""
    url, body, _ = relay_webhook(running.stack, running.config, e)
    event = json.loads(body)
    event["event"] = f"engagement.{kind}"
    event["event_id"] = f"{event['event_id']}-{kind}"
    signed = json.dumps(event).encode()
    signature = dispatch_signature_header(os.environ["DISPATCH_WEBHOOK_SECRET"], signed)
    return url, signed, {"X-Dispatch-Signature": signature, "Content-Type": "application/json"}


async def send_all(sents: list[Sent], *, at_once: int = 50) -> list[Delivery]:
    """Post every webhook as a PM system would (503s sent again), ``at_once`` in flight."""
    gate = asyncio.Semaphore(at_once)
    limits = httpx.Limits(max_connections=at_once, max_keepalive_connections=at_once)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def one(sent: Sent) -> Delivery:
            async with gate:
                return await post(http, sent, attempts=30)

        return list(await asyncio.gather(*(one(s) for s in sents)))


async def faults(running: Running, rules: list[dict[str, Any]]) -> None:
    """Replace the sandbox's fault rules (an empty list clears them), counting what the old
    ones applied."""
    running.faults_applied = await faults_applied(running)
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{running.stack.sandbox_base}/_sandbox/faults"
        answer = await (http.post(url, json={"rules": rules}) if rules else http.delete(url))
        answer.raise_for_status()


def vendor_faults(rate: float) -> list[dict[str, Any]]:
    """About ``rate`` of every vendor call turned away: a third each 429, 500 and 503."""
    if rate <= 0:
        return []
    third = rate / 3
    return [
        {"route": VENDOR_ROUTES, "status": 429, "retry_after": 1, "rate": third},
        {"route": VENDOR_ROUTES, "status": 500, "rate": third},
        {"route": VENDOR_ROUTES, "status": 503, "rate": third},
    ]


async def faults_applied(running: Running) -> int:
    """Vendor calls turned away so far, under the current rules and those before."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"{running.stack.sandbox_base}/_sandbox/faults")
        now = sum(int(r["applied"]) for r in answer.json()["rules"])
    return running.faults_applied + now


# --- the truth -------------------------------------------------------------------------------


async def ledger(running: Running) -> tuple[LedgerView, list[LedgerEntryView]]:
    """The dispatcher's ledger, every page of it."""
    handle = running.client.get_workflow_handle(running.dispatcher_id)

    async def page(offset: int) -> LedgerView:
        return await patiently(
            "dispatcher ledger",
            lambda: handle.query(
                DispatcherWorkflow.ledger, LedgerQuery(offset=offset), rpc_timeout=QUERY_TIMEOUT
            ),
            tries=6,
        )

    first = await page(0)
    entries = list(first.entries)
    while len(entries) < first.total:
        more = (await page(len(entries))).entries
        if not more:
            break
        entries += more
    return first, entries


async def running_engagements(client: Client) -> list[str]:
    query = 'WorkflowType="EngagementWorkflow" AND ExecutionStatus="Running"'
    return [e.id async for e in client.list_workflows(query)]


async def dispatcher_runs(running: Running) -> Counter[str]:
    """The dispatcher's runs by how they ended (ContinuedAsNew, Running, Failed, ...)."""
    query = f'WorkflowId="{running.dispatcher_id}"'
    return Counter(
        [
            (e.status or WorkflowExecutionStatus.RUNNING).name
            async for e in running.client.list_workflows(query)
        ]
    )


@dataclass
class Truth:
    live: int
    statuses: Counter[str]
    received: list[str]
    over_capacity: list[str]
    ledger_mismatches: list[str]
    unanswered: list[str]
    reserved_hours: float
    ledger: LedgerView
    capacity_notes: int
    """Live engagements whose last decision says it used older capacity figures."""

    @property
    def holds(self) -> bool:
        return not (self.received or self.over_capacity or self.ledger_mismatches)


async def truth(running: Running, live: list[str] | None = None, *, settle: float = 60.0) -> Truth:
    """The promises, checked against what the running engagements hold.

    ``live``: the engagements to ask (default: every running one, from visibility). The ledger
    comparison is asked again for up to ``settle`` seconds, as the dispatcher may still be
    applying the last releases.
    """
    client = running.client
    ids = live if live is not None else await running_engagements(client)
    gate = asyncio.Semaphore(16)

    async def ask(workflow_id: str) -> tuple[EngagementHoldings, EngagementState] | None:
        handle = client.get_workflow_handle(workflow_id)
        async with gate:
            try:
                held = await patiently(
                    workflow_id,
                    lambda: handle.query(EngagementWorkflow.holdings, rpc_timeout=QUERY_TIMEOUT),
                    tries=6,
                )
                state = await patiently(
                    workflow_id,
                    lambda: handle.query(EngagementWorkflow.state, rpc_timeout=QUERY_TIMEOUT),
                    tries=6,
                )
            except RPCError:
                return None
        return held, state

    answers = await asyncio.gather(*(ask(w) for w in ids))
    known = {w: a for w, a in zip(ids, answers, strict=True) if a is not None}
    unanswered = [w for w, a in zip(ids, answers, strict=True) if a is None]
    handle = client.get_workflow_handle(running.dispatcher_id)
    snapshot: CapacitySnapshot | None = await patiently(
        "dispatcher snapshot",
        lambda: handle.query(DispatcherWorkflow.snapshot, rpc_timeout=QUERY_TIMEOUT),
        tries=6,
    )
    if snapshot is None:  # none read since the last continue-as-new: read it as it would
        firm = FirmActivities(running.config, tracker_for(running.config))
        snapshot = await firm.capacity_snapshot(SnapshotInput(firm_id=running.config.firm.id))
    deadline = time.monotonic() + settle
    while True:
        held = {w: h for w, (h, _) in known.items() if not h.closed}
        view, entries = await ledger(running)
        mismatches = ledger_mismatches(entries, held)
        if not mismatches or time.monotonic() > deadline:
            break
        # Both sides are asked again: a parked engagement may be booked (or a closed one
        # released) between reading the engagements and reading the ledger.
        await asyncio.sleep(2)
        differing = [w for w in mismatches if w in known]
        again = await asyncio.gather(*(ask(w) for w in differing))
        for w, a in zip(differing, again, strict=True):
            if a is not None:
                known[w] = a
    statuses = Counter(state.status.value for _, state in known.values())
    received = [w for w, (_, state) in known.items() if state.status.value == "Received"]
    over = over_capacity(snapshot, held.values())
    return Truth(
        live=len(ids),
        statuses=statuses,
        received=received,
        over_capacity=over,
        ledger_mismatches=[f"{w}: {why}" for w, why in mismatches.items()],
        unanswered=unanswered,
        reserved_hours=sum(r.hours for h in held.values() for r in h.holdings),
        ledger=view,
        capacity_notes=sum(1 for _, s in known.values() if s.capacity_note),
    )


def over_capacity(snapshot: CapacitySnapshot, held: Any) -> list[str]:
    """People booked past capacity by what the engagements hold, by their due dates."""
    booked: dict[str, list[Booking]] = {}
    for facts in held:
        for r in facts.holdings:
            booked.setdefault(r.staff_id, []).append(Booking(r.hours, r.due))
    capacity = {c.member.id: c for c in snapshot.staff}
    calendar = calendar_of(snapshot)
    return [
        f"{staff_id} ({sum(b.hours for b in bookings):.1f} h)"
        for staff_id, bookings in sorted(booked.items())
        if is_overbooked(person_of(capacity[staff_id]), bookings, snapshot.today, calendar)
    ]


def ledger_mismatches(
    entries: list[LedgerEntryView], held: dict[str, EngagementHoldings]
) -> dict[str, str]:
    """Where the dispatcher's ledger and the engagements' own reservations differ, by engagement."""
    booked = {e.workflow_id: sorted(map(str, e.holdings)) for e in entries if e.holdings}
    truth = {w: sorted(map(str, h.holdings)) for w, h in held.items() if h.holdings}
    return {
        w: f"ledger {len(booked.get(w, []))} reservation(s), engagement {len(truth.get(w, []))}"
        for w in sorted(set(booked) | set(truth))
        if booked.get(w) != truth.get(w)
    }


def print_truth(found: Truth) -> None:
    rows = [
        ("live engagements", f"{found.live}", ""),
        ("  by status", ", ".join(f"{k} {v}" for k, v in sorted(found.statuses.items())), ""),
        ("left Received", f"{len(found.received)}", "0"),
        ("people over capacity", f"{len(found.over_capacity)}", "0"),
        ("ledger ≠ engagements' reservations", f"{len(found.ledger_mismatches)}", "0"),
        ("hours reserved by the live engagements", f"{found.reserved_hours:.1f}", ""),
        ("engagements that did not answer a query", f"{len(found.unanswered)}", "0"),
    ]
    for name, value, target in rows:
        print(f"  {name:44} {value:>28}  {target}")
    for name, items in (
        ("left Received", found.received),
        ("over capacity", found.over_capacity),
        ("ledger mismatches", found.ledger_mismatches),
        ("unanswered", found.unanswered),
    ):
        if items:
            print(f"  {name}: {'; '.join(items[:5])}{' ...' if len(items) > 5 else ''}")


def parser_for(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every run on this stack takes; each script adds its own."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{prog}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="worker processes (one per CPU)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    return parser


async def partner_notices(running: Running) -> tuple[int, int]:
    """Messages to the managing partner that the time tracker is down, and that it is back."""
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.get(
            f"{running.stack.sandbox_base}/_sandbox/requests",
            params={"prefix": "/slack/api/chat.postMessage", "method": "POST"},
        )
    bodies = [r["body"] for r in answer.json()["requests"] if 200 <= int(r["status"]) < 300]
    down = sum("Time tracker unavailable" in b for b in bodies)
    return down, sum("Time tracker back" in b for b in bodies)


async def interruptible(run: Coroutine[Any, Any, int]) -> int:
    """Ctrl-C / SIGTERM end the run cleanly: the stack's children are stopped, not orphaned."""
    task = asyncio.ensure_future(run)
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print("interrupted", file=sys.stderr)
        return 130
