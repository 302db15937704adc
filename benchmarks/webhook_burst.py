"""What a firm experiences: signed webhooks into the default stack, until every side effect lands.

    .venv/bin/python -m benchmarks.webhook_burst                   # 500 at once, 25 one at a time
    .venv/bin/python -m benchmarks.webhook_burst --workers 1 --pragmas off --runs 3

The stack is started exactly as ``dispatch up`` starts it (the same ``Stack``: the dev server
file-backed under a fresh data folder, with its SQLite pragmas; the sandbox, ``--workers``
worker processes and the webhook server, each its own process), on free ports, with the demo
firm's twin against the sandbox. Then, in the same run and on the same server:

1. one at a time: ``--single`` engagements in a row, each sent when the previous one is done;
2. the burst: ``--burst`` signed webhooks at once (Karbon ``Inserted`` notifications for work
   items already in Karbon, or ``--via relay`` engagement events).

An engagement is done when it is Assigned or NeedsPartnerReview with all its side effects
recorded by the sandbox (``GET /_sandbox/requests``): PM write-back, a DM and a calendar block
per role, the client email and the CRM record (or the partner's DM and the CRM record). The
reference is a bare workflow of five sequential no-op activities started through an equally
thin HTTP endpoint (``benchmarks/reference.py``, ``benchmarks/reference_web.py``), as many
worker processes, same server, same run, same counts. Printed: figures against the targets,
over-capacity and duplicate checks, CPU per process, and where the time goes (histories;
``--py-spy DIR`` samples the workers, the webhook server and the sandbox; ``--server-metrics``
counts the server's database requests in each burst).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from temporalio.client import Client
from temporalio.service import RPCError

from activities.firm import FirmActivities
from activities.karbon import KarbonClient
from activities.registry import tracker_for
from activities.signing import dispatch_signature_header, hmac_sha256_hex
from app.demo import in_sandbox
from app.stack import SQLITE_PRAGMAS, Ports, Process, Stack, default_workers
from app.temporal import connect
from benchmarks import reference, server_metrics, where_time_goes
from benchmarks.side_effects import SideEffects
from dispatch.capacity import Booking, WorkCalendar, is_overbooked
from dispatch.config import FirmConfig, KarbonConnector, RelayConnector, load_firm_config
from dispatch.decision import calendar_of, person_of
from dispatch.ids import dispatcher_workflow_id
from dispatch.models import BookingsView, CapacitySnapshot, EngagementState, SnapshotInput
from sandbox.karbon import client_type_for
from tests.sandbox_server import free_port
from workflows.dispatcher import DispatcherWorkflow
from workflows.engagement import EngagementWorkflow

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "burst_wall": 30.0,
    "burst_ratio": 1.5,
    "webhook_p95_ms": 100.0,
    "single_p50": 0.3,
    "single_p95": 1.0,
}
SERVICES = [
    # (Karbon WorkType, service type, hours a relay event states)
    ("Month-End Close", "monthly_bookkeeping", 1.0),
    ("Tax Return - Individual", "individual_tax", 2.0),
    ("Payroll", "payroll", 3.0),
    ("Tax Return - S Corp", "s_corp_return", 4.0),
]
Sent = tuple[str, bytes, dict[str, str]]
T = TypeVar("T")
QUERY_TIMEOUT = timedelta(seconds=60)
SETTLE_SECONDS = 30.0
"""How long a side effect may stay ``pending`` in an engagement's state after the sandbox saw it
done: the vendor call returns, then the workflow records it at its next task."""


# --- statistics ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds per group of processes (by role) over a phase."""

    processes: list[Process]
    start: dict[int, float] = field(default_factory=dict)
    began: float = 0.0
    mine: float = 0.0

    def __enter__(self) -> CpuMeter:
        self.start = {p.pid: cpu_seconds(p.pid) for p in self.processes}
        self.began, self.mine = time.monotonic(), self_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.began
        self.used: dict[str, float] = defaultdict(float)
        for p in self.processes:
            self.used[p.role] += cpu_seconds(p.pid) - self.start.get(p.pid, 0.0)
        self.used["benchmark"] += self_cpu() - self.mine


# --- the firm and its engagements ------------------------------------------------------------


def benchmark_firm(via: str, stack: Stack) -> FirmConfig:
    """The demo firm's twin on this stack's sandbox (``dispatch demo`` writes the same)."""
    config = load_firm_config()
    if via == "relay":
        connectors = config.connectors.model_copy(
            update={"pm": RelayConnector(kind="relay", system_name="TaxDome")}
        )
        config = config.model_copy(update={"connectors": connectors})
    return in_sandbox(config, stack.sandbox_base, stack.starter_url)


@dataclass
class Engagement:
    n: int
    client_id: str
    work_type: str
    service_type: str
    hours: float
    due: str
    key: str = ""
    """The Karbon work item's key, or the relay's external id."""


def plan(config: FirmConfig, count: int, tag: str) -> list[Engagement]:
    today = config.firm.today_at(datetime.now(UTC))
    calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
    clients = [c.id for c in config.clients if c.email]
    found = []
    for n in range(count):
        work_type, service, hours = SERVICES[n % len(SERVICES)]
        due = calendar.add_working_days(today, 5 + n % 20).isoformat()
        engagement = Engagement(n, clients[n % len(clients)], work_type, service, hours, due)
        engagement.key = f"tx-{tag}-{n}"
        found.append(engagement)
    return found


async def create_work_items(
    pm: KarbonConnector, engagements: list[Engagement], partner_email: str, sandbox: str
) -> None:
    """The work items exist in Karbon before their webhooks come (not timed).

    Karbon would notify our subscription as each is created; the subscription is set aside
    meanwhile and put back as it was, so the webhooks come only when the benchmark sends them.
    """
    async with httpx.AsyncClient(timeout=30) as http:
        headers = _karbon_headers()
        sub = await http.get(f"{sandbox}/karbon/v3/WebhookSubscriptions/Work", headers=headers)
        sub.raise_for_status()
        subscription = sub.json()
        await http.delete(f"{sandbox}/karbon/v3/WebhookSubscriptions/Work", headers=headers)
        karbon = KarbonClient(pm)
        limit = asyncio.Semaphore(20)

        async def create(e: Engagement) -> None:
            async with limit:
                item = await karbon.create_work_item(
                    {
                        "Title": f"Benchmark {e.n} - {e.work_type}",
                        "ClientKey": e.client_id,
                        "ClientType": client_type_for(e.client_id),
                        "AssigneeEmailAddress": partner_email,
                        "StartDate": f"{datetime.now(UTC).date().isoformat()}T00:00:00Z",
                        "DueDate": f"{e.due}T00:00:00Z",
                        "WorkType": e.work_type,
                        "PrimaryStatus": "Planned",
                    }
                )
            e.key = str(item["WorkItemKey"])

        try:
            await asyncio.gather(*(create(e) for e in engagements))
        finally:
            await karbon.aclose()
            restored = await http.post(
                f"{sandbox}/karbon/v3/WebhookSubscriptions",
                headers=headers,
                json={
                    "TargetUrl": subscription["TargetUrl"],
                    "WebhookType": "Work",
                    "SigningKey": os.environ[pm.webhook_signing_key_env],
                },
            )
            restored.raise_for_status()


def _karbon_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {os.environ['KARBON_BEARER_TOKEN']}",
        "AccessKey": os.environ["KARBON_ACCESS_KEY"],
    }


def karbon_webhook(stack: Stack, e: Engagement) -> Sent:
    body = json.dumps(
        {
            "ResourcePermaKey": e.key,
            "ResourceType": "Work",
            "ActionType": "Inserted",
            "TimeStamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ).encode()
    signature = hmac_sha256_hex(os.environ["KARBON_WEBHOOK_SIGNING_KEY"], body)
    headers = {"Signature": signature, "Content-Type": "application/json"}
    return f"{stack.starter_url}/webhooks/karbon", body, headers


def relay_webhook(stack: Stack, config: FirmConfig, e: Engagement) -> Sent:
    client = config.client(e.client_id)
    assert client is not None
    body = json.dumps(
        {
            "event": "engagement.created",
            "event_id": f"bench-{uuid.uuid4().hex}",
            "source": "taxdome",
            "engagement": {
                "external_id": e.key,
                "title": f"Benchmark {e.n} - {e.work_type}",
                "client": {"id": client.id, "name": client.name, "email": client.email},
                "service_type": e.service_type,
                "due_date": e.due,
                "estimated_hours": e.hours,
            },
        }
    ).encode()
    signature = dispatch_signature_header(os.environ["DISPATCH_WEBHOOK_SECRET"], body)
    headers = {"X-Dispatch-Signature": signature, "Content-Type": "application/json"}
    return f"{stack.starter_url}/webhooks/engagements", body, headers


def reference_request(port: int, n: int, tag: str) -> Sent:
    body = json.dumps({"id": f"{tag}-{n}", "n": n}).encode()
    signature = hmac_sha256_hex(os.environ[reference.SECRET_ENV], body)
    headers = {"Signature": signature, "Content-Type": "application/json"}
    return f"http://127.0.0.1:{port}/start", body, headers


# --- sending and waiting ---------------------------------------------------------------------


@dataclass
class Delivery:
    workflow_id: str
    sent_at: float
    answered_in: float
    """The first answer's time (a 503 included: it is what the sender waited for)."""
    status: int
    """The last answer's status (202 once a retry got through)."""
    retries: int = 0


async def post(http: httpx.AsyncClient, sent: Sent, attempts: int = 10) -> Delivery:
    """POST as a PM system does: a 503 (or 5xx, or no answer) is sent again after Retry-After."""
    url, body, headers = sent
    began = time.monotonic()
    first: float | None = None
    for attempt in range(attempts):
        try:
            response = await http.post(url, content=body, headers=headers)
        except httpx.TransportError as err:
            status, wait, text = 0, 5.0, type(err).__name__
        else:
            status, text = response.status_code, response.text[:200]
            wait = float(response.headers.get("Retry-After") or 5)
        first = time.monotonic() - began if first is None else first
        if status == 202:
            workflow_id = str(response.json()["workflow_id"])
            return Delivery(workflow_id, began, first, status, retries=attempt)
        if status and status < 500:
            break
        await asyncio.sleep(min(wait, 30.0))
    say(f"{url} answered {status or 'nothing'}: {text}")
    return Delivery("", began, first or 0.0, status, retries=attempts)


@dataclass
class Phase:
    """One measured phase: per-engagement latencies and the webhook answers."""

    wall: float
    latencies: list[float]
    answers_ms: list[float]
    refused: int
    """Webhooks that never got a 202, even retried."""
    retried: int
    """Webhooks answered 503 (or not at all) at first and sent again, as a PM system would."""
    unfinished: int
    cpu: dict[str, float] = field(default_factory=dict)


async def until_done(
    effects: SideEffects, http: httpx.AsyncClient, ids: list[str], every: float, timeout: float
) -> dict[str, float]:
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids) and time.monotonic() < deadline:
        await effects.poll(http)
        for workflow_id in ids:
            if workflow_id not in done:
                at = effects.done_at(workflow_id)
                if at is not None:
                    done[workflow_id] = at
        if len(done) < len(ids):
            await asyncio.sleep(every)
    return done


async def dispatch_phase(
    requests: list[Sent], effects: SideEffects, burst: bool, processes: list[Process]
) -> Phase:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits) as http,
        httpx.AsyncClient(timeout=30) as sandbox,
    ):
        await effects.start(sandbox)
        with CpuMeter(processes) as cpu:
            began = time.monotonic()
            if burst:
                deliveries = list(await asyncio.gather(*(post(http, r) for r in requests)))
                ids = [d.workflow_id for d in deliveries if d.workflow_id]
                effects.follow.update(ids)
                done = await until_done(effects, sandbox, ids, every=0.2, timeout=900)
            else:
                deliveries, done = [], {}
                for request in requests:
                    delivery = await post(http, request)
                    deliveries.append(delivery)
                    one = [delivery.workflow_id] if delivery.workflow_id else []
                    effects.follow.update(one)
                    done.update(await until_done(effects, sandbox, one, every=0.02, timeout=120))
            wall = max(done.values(), default=time.monotonic()) - began
    sent = {d.workflow_id: d.sent_at for d in deliveries if d.workflow_id}
    return Phase(
        wall=wall,
        latencies=[done[i] - sent[i] for i in done],
        answers_ms=[1000 * d.answered_in for d in deliveries],
        refused=sum(1 for d in deliveries if d.status != 202),
        retried=sum(1 for d in deliveries if d.retries),
        unfinished=len(sent) - len(done),
        cpu=cpu.used,
    )


async def reference_phase(
    client: Client, requests: list[Sent], burst: bool, processes: list[Process]
) -> Phase:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        with CpuMeter(processes) as cpu:
            began = time.monotonic()

            async def one(request: Sent) -> tuple[Delivery, float]:
                delivery = await post(http, request)
                if delivery.status != 202:
                    raise RuntimeError("the reference endpoint refused a request")
                await client.get_workflow_handle(delivery.workflow_id).result()
                return delivery, time.monotonic() - delivery.sent_at

            if burst:
                results = list(await asyncio.gather(*(one(r) for r in requests)))
            else:
                results = [await one(r) for r in requests]
            wall = time.monotonic() - began
    return Phase(
        wall=wall,
        latencies=[took for _, took in results],
        answers_ms=[1000 * d.answered_in for d, _ in results],
        refused=sum(1 for d, _ in results if d.status != 202),
        retried=sum(1 for d, _ in results if d.retries),
        unfinished=0,
        cpu=cpu.used,
    )


# --- checks ----------------------------------------------------------------------------------


@dataclass
class Checks:
    assigned: int = 0
    partner_review: int = 0
    over_capacity: list[str] = field(default_factory=list)
    duplicate_effects: list[str] = field(default_factory=list)
    ledger_mismatches: list[str] = field(default_factory=list)
    state_mismatches: list[str] = field(default_factory=list)
    failed_calls: Counter[str] = field(default_factory=Counter)
    unchecked: list[str] = field(default_factory=list)
    """What could not be checked (a query that kept timing out), and why."""
    ledger_checked: bool = False


async def patiently(what: str, call: Callable[[], Awaitable[T]], tries: int = 3) -> T:
    """A query, retried: after a burst the dispatcher's worker may take a while to answer."""
    for attempt in range(1, tries + 1):
        try:
            return await call()
        except RPCError as err:
            if attempt == tries:
                raise
            say(f"{what}: {err} (attempt {attempt}); retrying")
            await asyncio.sleep(5)
    raise AssertionError("unreachable")


async def check(client: Client, config: FirmConfig, effects: SideEffects) -> Checks:
    """Over capacity from what the engagements say they booked (and from the dispatcher's
    ledger when it answers); duplicates from the sandbox; each state against the sandbox."""
    found = Checks(failed_calls=effects.failed_calls)
    endings = effects.endings
    found.assigned = sum(1 for e in endings.values() if e.status == "assigned")
    found.partner_review = sum(1 for e in endings.values() if e.status == "needs_partner_review")
    found.duplicate_effects = [f"{wf} {key} x{n}" for wf, key, n in effects.duplicates()]
    limit = asyncio.Semaphore(16)

    async def state_of(workflow_id: str) -> EngagementState:
        handle = client.get_workflow_handle(workflow_id)
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            async with limit:
                state = await patiently(
                    workflow_id,
                    lambda: handle.query(EngagementWorkflow.state, rpc_timeout=QUERY_TIMEOUT),
                )
            settled = all(e.state != "pending" for e in state.side_effects)
            if settled or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.5)

    ids = sorted(effects.follow)
    states = await asyncio.gather(*(state_of(i) for i in ids), return_exceptions=True)
    known = []
    for workflow_id, state in zip(ids, states, strict=True):
        said = endings.get(workflow_id)
        if isinstance(state, BaseException):
            found.unchecked.append(f"{workflow_id}: state query failed ({state})")
            continue
        known.append(state)
        if said is None:
            found.state_mismatches.append(f"{workflow_id}: no CRM record")
            continue
        status = state.status.value
        unsettled = [e for e in state.side_effects if e.state in ("failed", "pending")]
        bad = [f"{e.name} {e.state}" for e in unsettled]
        if {"assigned": "Assigned"}.get(said.status, "NeedsPartnerReview") != status or bad:
            found.state_mismatches.append(f"{workflow_id}: {status} {bad}")
    found.over_capacity = await over_capacity(config, known)
    try:
        await check_ledger(client, config, effects, found)
    except RPCError as err:
        found.unchecked.append(f"the dispatcher's ledger (bookings query failed: {err})")
    return found


async def over_capacity(config: FirmConfig, states: list[EngagementState]) -> list[str]:
    """People booked past capacity by the engagements' own assignments.

    Capacity is read as the dispatcher reads it (the same activity, against the sandbox's
    time tracker); each assignment books its hours by the engagement's due date.
    """
    firm = FirmActivities(config, tracker_for(config))
    snapshot = await firm.capacity_snapshot(SnapshotInput(firm_id=config.firm.id))
    calendar, capacity = calendar_of(snapshot), {c.member.id: c for c in snapshot.staff}
    booked: dict[str, list[Booking]] = defaultdict(list)
    for state in states:
        if state.due_date is None or state.status.value == "NeedsPartnerReview":
            continue
        if state.preparer is not None:
            booked[state.preparer.id].append(Booking(state.preparer_hours, state.due_date))
        if state.reviewer is not None:
            booked[state.reviewer.id].append(Booking(state.reviewer_hours, state.due_date))
    return [
        f"{staff_id} ({sum(b.hours for b in bookings):.1f} h booked)"
        for staff_id, bookings in sorted(booked.items())
        if is_overbooked(person_of(capacity[staff_id]), bookings, snapshot.today, calendar)
    ]


async def check_ledger(
    client: Client, config: FirmConfig, effects: SideEffects, found: Checks
) -> None:
    dispatcher = client.get_workflow_handle(dispatcher_workflow_id(config.firm.id))
    bookings: BookingsView = await patiently(
        "dispatcher bookings",
        lambda: dispatcher.query(DispatcherWorkflow.bookings, rpc_timeout=QUERY_TIMEOUT),
    )
    snapshot: CapacitySnapshot | None = await patiently(
        "dispatcher snapshot",
        lambda: dispatcher.query(DispatcherWorkflow.snapshot, rpc_timeout=QUERY_TIMEOUT),
    )
    if snapshot is not None:
        calendar, capacity = calendar_of(snapshot), {c.member.id: c for c in snapshot.staff}
        for staff in bookings.staff:
            mine = [Booking(r.hours, r.due) for r in staff.reservations]
            person = person_of(capacity[staff.staff_id])
            if is_overbooked(person, mine, snapshot.today, calendar):
                found.ledger_mismatches.append(f"the ledger books {staff.staff_id} past capacity")
    reserved = Counter(r.workflow_id for s in bookings.staff for r in s.reservations)
    for workflow_id, ending in effects.endings.items():
        want = 0 if ending.status != "assigned" else (2 if ending.reviewer else 1)
        if reserved[workflow_id] != want:
            found.ledger_mismatches.append(f"{workflow_id}: {reserved[workflow_id]} of {want}")
    found.ledger_checked = True


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    single: Phase
    reference_single: Phase
    burst: Phase
    reference_burst: Phase
    checks: Checks
    breakdown: list[str]
    memory: dict[str, float]


async def run_once(args: argparse.Namespace, tag: str) -> Run:
    data = Path(tempfile.mkdtemp(prefix="webhook-burst-"))
    ports = Ports(temporal=free_port(), ui=free_port(), starter=free_port(), sandbox=free_port())
    draft = Stack(load_firm_config(), data / "firm.yaml", ports=ports)
    config = benchmark_firm(args.via, draft)
    firm_file = data / "firm.yaml"
    firm_file.write_text(
        yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
    )
    stack = Stack(
        config,
        firm_file,
        root=ROOT,
        ports=ports,
        data=data,
        workers=args.workers,
        sqlite_pragmas=SQLITE_PRAGMAS if args.pragmas == "on" else (),
        persist=args.server == "file",
        server_metrics_port=free_port() if args.server_metrics else None,
    )
    os.environ.setdefault(reference.SECRET_ENV, uuid.uuid4().hex)
    try:
        await stack.start()
        client = await connect(stack.temporal_address)
        reference_port = free_port()
        await start_reference(stack, args.workers, reference_port)
        say(f"stack up ({len(stack.processes)} processes, data in {data})")
        ours = [p for p in stack.processes if not p.role.startswith("reference")]
        theirs = [p for p in stack.processes if p.role.startswith("reference")] + [
            p for p in stack.processes if p.role == "temporal"
        ]

        pm = config.connectors.pm
        effects = SideEffects(stack.sandbox_base, pm_write_back=isinstance(pm, KarbonConnector))
        single_plan = plan(config, args.single, f"{tag}s")
        burst_plan = plan(config, args.burst, f"{tag}b")
        if isinstance(pm, KarbonConnector):
            partner = config.managing_partner.email
            await create_work_items(pm, single_plan + burst_plan, partner, stack.sandbox_base)

        def sent(e: Engagement) -> Sent:
            if isinstance(pm, KarbonConnector):
                return karbon_webhook(stack, e)
            return relay_webhook(stack, config, e)

        ref_single = [reference_request(reference_port, n, f"{tag}s") for n in range(args.single)]
        ref_burst = [reference_request(reference_port, n, f"{tag}b") for n in range(args.burst)]
        reference_single = await reference_phase(client, ref_single, False, theirs)
        say(f"reference, one at a time: p50 {pct(reference_single.latencies, 50):.3f}s")
        single = await dispatch_phase([sent(e) for e in single_plan], effects, False, ours)
        say(f"dispatch, one at a time: p50 {pct(single.latencies, 50):.3f}s")
        single_ids = set(effects.follow)
        database = [await _database_requests(stack)]
        reference_burst = await reference_phase(client, ref_burst, True, theirs)
        say(f"reference burst: {reference_burst.wall:.1f}s")
        database.append(await _database_requests(stack))
        await stack.stop_role("reference-worker")
        await stack.stop_role("reference-web")
        ours = list(stack.processes)
        profilers = start_profilers(args.py_spy, ours, tag)
        began = datetime.now(UTC)
        try:
            burst = await dispatch_phase([sent(e) for e in burst_plan], effects, True, ours)
        finally:
            profiled = stop_profilers(profilers)
        say(f"dispatch burst: {burst.wall:.1f}s ({burst.unfinished} unfinished)")
        database.append(await _database_requests(stack))
        memory = memory_after(stack)
        checks = await check(client, config, effects)
        sample = sorted(effects.follow - single_ids)[: args.sample]
        found = await where_time_goes.breakdown(
            client, sample, dispatcher_workflow_id(config.firm.id), began
        )
        lines = where_time_goes.render(found)
        for raw in profiled:
            lines += where_time_goes.summarize_py_spy(raw)
        if stack.server_metrics_port:
            reference_cost = database[1] - database[0]
            ours_cost = database[2] - database[1]
            lines += server_metrics.render(
                {"reference": (reference_cost, args.burst), "ours": (ours_cost, args.burst)}
            )
        return Run(single, reference_single, burst, reference_burst, checks, lines, memory)
    finally:
        await stack.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


async def _database_requests(stack: Stack) -> Counter[str]:
    if not stack.server_metrics_port:
        return Counter()
    return await server_metrics.read(stack.server_metrics_port)


def memory_after(stack: Stack) -> dict[str, float]:
    """Resident memory of the biggest worker and the server's database files, in MB."""
    workers = [rss_mb(p.pid) for p in stack.processes if p.role == "worker"]
    database = sum(f.stat().st_size for f in stack.data_dir.glob("temporal.db*")) / 2**20
    return {"worker_rss_mb": max(workers, default=0.0), "database_mb": database}


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = next((line for line in status.splitlines() if line.startswith("VmRSS:")), "")
    return int(found.split()[1]) / 1024 if found else 0.0


async def start_reference(stack: Stack, workers: int, port: int) -> None:
    argv = [sys.executable, "-m", "benchmarks.reference"]
    spawned = [
        stack.spawn(f"reference-worker-{n}", "reference-worker", argv)
        for n in range(1, workers + 1)
    ]
    web_argv = [sys.executable, "-m", "benchmarks.reference_web", "--port", str(port)]
    web = stack.spawn("reference-web", "reference-web", web_argv)

    async def ready(process: Process, check: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + 60
        while not await check():
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not start: see {process.log}")
            await asyncio.sleep(0.2)

    async def logged(process: Process) -> bool:
        return reference.READY in process.log_since_start()

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await asyncio.gather(
        *(ready(p, lambda p=p: logged(p)) for p in spawned),  # type: ignore[misc]
        ready(web, healthy),
    )


def start_profilers(folder: Path | None, processes: list[Process], tag: str) -> list[Any]:
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for process in processes:
        if process.role in ("worker", "starter", "sandbox"):
            out = folder / f"{tag}-{process.name}.txt"
            found.append((where_time_goes.start_py_spy(process.pid, out), out))
    return found


def stop_profilers(profilers: list[Any]) -> list[Path]:
    for process, _ in profilers:
        where_time_goes.stop_py_spy(process)
    return [path for _, path in profilers]


def say(line: str) -> None:
    print(f"  [{datetime.now().strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --- the report ------------------------------------------------------------------------------


def figures(run: Run) -> dict[str, float]:
    b, rb, s = run.burst, run.reference_burst, run.single
    cpu_wall = max(b.wall, 1e-9)
    return {
        "burst_wall": b.wall,
        "reference_wall": rb.wall,
        "burst_ratio": b.wall / rb.wall,
        "webhook_p50_ms": pct(b.answers_ms, 50),
        "webhook_p95_ms": pct(b.answers_ms, 95),
        "reference_webhook_p95_ms": pct(rb.answers_ms, 95),
        "engagement_p50": pct(b.latencies, 50),
        "engagement_p95": pct(b.latencies, 95),
        "engagement_max": max(b.latencies, default=float("nan")),
        "single_p50": pct(s.latencies, 50),
        "single_p95": pct(s.latencies, 95),
        "single_max": max(s.latencies, default=float("nan")),
        "reference_single_p50": pct(run.reference_single.latencies, 50),
        "reference_single_p95": pct(run.reference_single.latencies, 95),
        "unfinished": float(b.unfinished + s.unfinished),
        "refused": float(b.refused + s.refused),
        "retried": float(b.retried + s.retried),
        "reference_retried": float(rb.retried),
        "assigned": float(run.checks.assigned),
        "partner_review": float(run.checks.partner_review),
        "over_capacity": float(len(run.checks.over_capacity)),
        "unchecked": float(len(run.checks.unchecked)),
        "duplicates": float(len(run.checks.duplicate_effects)),
        "ledger_mismatches": (
            float(len(run.checks.ledger_mismatches)) if run.checks.ledger_checked else float("nan")
        ),
        "state_mismatches": float(len(run.checks.state_mismatches)),
        "failed_vendor_calls": float(sum(run.checks.failed_calls.values())),
        **{f"cpu_{role}_s": used for role, used in b.cpu.items()},
        **{f"cpu_{role}_util": used / cpu_wall for role, used in b.cpu.items()},
        **{f"reference_cpu_{role}_s": used for role, used in rb.cpu.items()},
        **run.memory,
    }


def report(args: argparse.Namespace, runs: list[Run]) -> dict[str, float]:
    every = [figures(r) for r in runs]
    keys = [key for key in every[0] if all(key in f for f in every)]
    m = {key: statistics.median(f[key] for f in every) for key in keys}
    print(
        f"\nwebhook burst: {args.burst} at once + {args.single} one at a time, via {args.via}; "
        f"{args.workers} worker process(es), server state in {args.server}"
        f"{f', SQLite pragmas {args.pragmas}' if args.server == 'file' else ''}; "
        f"{default_workers()} CPUs; {len(runs)} run(s), medians"
    )
    rows: list[tuple[str, str, str, bool | None]] = [
        ("", "figure", "target", None),
        ("burst: all side effects recorded (wall)", f"{m['burst_wall']:.1f} s", "≤ 30 s",
         m["burst_wall"] <= TARGETS["burst_wall"]),
        ("reference: 5 no-op activities (wall)", f"{m['reference_wall']:.1f} s", "", None),
        ("ratio burst / reference", f"{m['burst_ratio']:.2f}", "≤ 1.5",
         m["burst_ratio"] <= TARGETS["burst_ratio"]),
        ("webhook answered p50 / p95", f"{m['webhook_p50_ms']:.0f} / {m['webhook_p95_ms']:.0f} ms",
         "p95 ≤ 100 ms", m["webhook_p95_ms"] <= TARGETS["webhook_p95_ms"]),
        ("  reference endpoint p95", f"{m['reference_webhook_p95_ms']:.0f} ms", "", None),
        ("engagement: webhook → all effects p50/p95/max",
         f"{m['engagement_p50']:.1f} / {m['engagement_p95']:.1f} / {m['engagement_max']:.1f} s",
         "", None),
        ("one at a time: all effects p50", f"{m['single_p50']:.2f} s", "≤ 0.3 s",
         m["single_p50"] <= TARGETS["single_p50"]),
        ("one at a time: all effects p95 (max)",
         f"{m['single_p95']:.2f} ({m['single_max']:.2f}) s", "≤ 1 s",
         m["single_p95"] <= TARGETS["single_p95"]),
        ("  reference one at a time p50 / p95",
         f"{m['reference_single_p50']:.3f} / {m['reference_single_p95']:.3f} s", "", None),
        ("assigned / partner review", f"{m['assigned']:.0f} / {m['partner_review']:.0f}", "",
         None),
        ("unfinished / refused webhooks", f"{m['unfinished']:.0f} / {m['refused']:.0f}", "0 / 0",
         m["unfinished"] == 0 and m["refused"] == 0),
        ("webhooks answered 503 and sent again (reference)",
         f"{m['retried']:.0f} ({m['reference_retried']:.0f})", "", None),
        ("people over capacity", f"{m['over_capacity']:.0f}", "0", m["over_capacity"] == 0),
        ("duplicate side effects", f"{m['duplicates']:.0f}", "0", m["duplicates"] == 0),
        ("ledger ≠ outcomes / state ≠ sandbox",
         f"{m['ledger_mismatches']:.0f} / {m['state_mismatches']:.0f}", "0 / 0",
         m["ledger_mismatches"] == 0 and m["state_mismatches"] == 0),
        ("vendor calls answered non-2xx", f"{m['failed_vendor_calls']:.0f}", "", None),
        ("checks that could not be made", f"{m['unchecked']:.0f}", "0", m["unchecked"] == 0),
    ]  # fmt: skip
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"  {name:46} {value:>20}  {target:>12}  {verdict}")
    roles = sorted(k[4:-2] for k in m if k.startswith("cpu_") and k.endswith("_s"))
    cpu = ", ".join(f"{r} {m[f'cpu_{r}_s']:.1f}s ({100 * m[f'cpu_{r}_util']:.0f}%)" for r in roles)
    print(f"  CPU in the burst, seconds (share of one core over the burst): {cpu}")
    theirs = sorted(k[14:-2] for k in m if k.startswith("reference_cpu_") and k.endswith("_s"))
    print(
        "  CPU in the reference burst, seconds: "
        + ", ".join(f"{r} {m[f'reference_cpu_{r}_s']:.1f}s" for r in theirs)
    )
    print(
        f"  after the burst: largest worker {m['worker_rss_mb']:.0f} MB resident; "
        f"server database {m['database_mb']:.0f} MB (0 in memory)"
    )
    last = runs[-1]
    for name, items in (
        ("over capacity", last.checks.over_capacity),
        ("duplicates", last.checks.duplicate_effects),
        ("ledger mismatches", last.checks.ledger_mismatches),
        ("state mismatches", last.checks.state_mismatches),
        ("not checked", last.checks.unchecked),
    ):
        if items:
            print(f"  {name} (last run): {'; '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
    if last.checks.failed_calls:
        print(f"  non-2xx vendor answers (last run): {dict(last.checks.failed_calls)}")
    print("\n".join(last.breakdown))
    return m


async def main(args: argparse.Namespace) -> int:
    runs = []
    for n in range(args.runs):
        say(f"run {n + 1}/{args.runs}")
        runs.append(await run_once(args, f"r{n}{uuid.uuid4().hex[:4]}"))
    med = report(args, runs)
    if args.json:
        args.json.write_text(json.dumps({"options": vars_of(args), "medians": med}, indent=2))
    return 0


def vars_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.webhook_burst",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--burst", type=int, default=500, help="webhooks at once (500)")
    parser.add_argument("--single", type=int, default=25, help="engagements one at a time (25)")
    parser.add_argument("--via", choices=["karbon", "relay"], default="karbon")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="worker processes (one per CPU)"
    )
    parser.add_argument(
        "--pragmas",
        choices=["on", "off"],
        default="on",
        help="the dev server's SQLite pragmas (WAL, synchronous=normal)",
    )
    parser.add_argument(
        "--server",
        choices=["file", "memory"],
        default="file",
        help="the dev server's state: in SQLite under the data folder, as dispatch up keeps "
        "it (file), or in memory, for comparison",
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--sample", type=int, default=50, help="engagement histories read for the time breakdown"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="sample the workers, the webhook server and the sandbox "
        "with py-spy during the burst; raw output here",
    )
    parser.add_argument(
        "--server-metrics",
        action="store_true",
        help="read the dev server's database requests before and after each burst",
    )
    parser.add_argument("--json", type=Path, help="also write the medians here")
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's data folder (database and logs)"
    )
    return parser.parse_args(argv)


async def until_interrupted(args: argparse.Namespace) -> int:
    """Ctrl-C / SIGTERM end the run cleanly: the stack's children are stopped, not orphaned."""
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        return await main(args)
    except asyncio.CancelledError:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    code = asyncio.run(until_interrupted(parse()))
    sys.stdout.flush()
    os._exit(code)
