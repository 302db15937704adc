"""Memory with a season's open engagements: worker RSS, the server's database, the workflow cache.

    .venv/bin/python -m benchmarks.open_engagements_memory                 # 5,000, cache 2000
    .venv/bin/python -m benchmarks.open_engagements_memory --count 1000 --cache 500

The stack is started as ``dispatch up`` starts it (the same ``Stack``: the dev server
file-backed in SQLite with its pragmas under a fresh data folder, the sandbox, one worker
process, the webhook server), on free ports, with the demo firm's twin against the sandbox and a
relay PM (TaxDome-style). ``--count`` engagements arrive through the webhook server, as a PM
system sends them (signed ``engagement.created`` events), in waves of ``--wave`` (each wave
assigned before the next is sent), small enough and due far enough ahead that each is assigned;
each then waits on its checkpoint timers (the assignee's reminder, the
"not started" check, the midpoint...). Printed:

1. worker RSS after start (nothing open), after the engagements are open and the worker idle,
   and after a sweep that asks every engagement its ``state`` (a query is a workflow task: an
   engagement not in the cache is replayed from its history and evicts another);
2. the server's database files (``temporal.db`` with its write-ahead log);
3. the SDK's sticky-cache counters from the worker's Prometheus endpoint (hits, misses, forced
   evictions, size), before and after the sweep, and the sweep's time: whether the cache thrashes.

The cache is the worker's ``DISPATCH_WORKFLOW_CACHE`` (default 2000, ``worker.py``); ``--cache``
sets it for this run. The figures are in docs/benchmarks.md ("Memory with a season's open
engagements").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from app.stack import Ports, Stack
from app.temporal import connect
from benchmarks import webhook_burst
from benchmarks.webhook_burst import (
    ROOT,
    Engagement,
    benchmark_firm,
    cpu_seconds,
    pct,
    post,
    relay_webhook,
    rss_mb,
    say,
)
from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig, load_firm_config
from tests.sandbox_server import free_port
from worker import CACHE_ENV, DEFAULT_CACHE
from workflows.engagement import EngagementWorkflow

SERVICES = [
    # (work type, service, hours): no reviewer, small, so a season's worth fits the firm
    ("Bookkeeping - Monthly", "monthly_bookkeeping", 1.0),
    ("Bookkeeping - Monthly", "monthly_bookkeeping", 1.0),
    ("Payroll", "payroll", 0.5),
]
OPEN = ("Assigned", "NeedsPartnerReview")
CACHE_METRICS = (
    "temporal_sticky_cache_hit_total",
    "temporal_sticky_cache_miss_total",
    "temporal_sticky_cache_total_forced_eviction_total",
    "temporal_sticky_cache_size",
)


def plan(config: FirmConfig, count: int, tag: str) -> list[Engagement]:
    """The burst benchmark's engagements, made small and due over the next year's working days,
    so the firm has capacity for them all."""
    today = config.firm.today_at(datetime.now(UTC))
    calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
    found = webhook_burst.plan(config, count, f"mem-{tag}")
    for e in found:
        e.work_type, e.service_type, e.hours = SERVICES[e.n % len(SERVICES)]
        e.due = calendar.add_working_days(today, 30 + e.n * 220 // max(count, 1)).isoformat()
    return found


async def cache_counters(port: int) -> dict[str, float]:
    """The worker's sticky-cache series, summed over their labels."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    found = dict.fromkeys(CACHE_METRICS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in found:
            found[name] += float(line.rsplit(" ", 1)[1])
    return found


def database_mb(stack: Stack) -> float:
    return sum(f.stat().st_size for f in stack.data_dir.glob("temporal.db*")) / 2**20


async def count_open(client: Client) -> int:
    statuses = " OR ".join(f'DispatchStatus="{s}"' for s in OPEN)
    query = f'WorkflowType="EngagementWorkflow" AND ExecutionStatus="Running" AND ({statuses})'
    return (await client.count_workflows(query)).count


async def until_idle(pid: int, every: float = 5.0, busy: float = 0.05) -> None:
    """Until the process used under ``busy`` of a core over ``every`` seconds."""
    while True:
        before = cpu_seconds(pid)
        await asyncio.sleep(every)
        if (cpu_seconds(pid) - before) / every < busy:
            return


@dataclass
class Figures:
    count: int
    cache: int
    rss_start: float = 0.0
    rss_open: float = 0.0
    rss_swept: float = 0.0
    server_rss: float = 0.0
    database: float = 0.0
    arrive_wall: float = 0.0
    settle_wall: float = 0.0
    sweep_wall: float = 0.0
    sweep_p50_ms: float = 0.0
    sweep_p95_ms: float = 0.0
    refused: int = 0
    opened: int = 0
    failed_queries: int = 0
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None


async def run(args: argparse.Namespace) -> Figures:
    data = Path(tempfile.mkdtemp(prefix="open-memory-"))
    ports = Ports(temporal=free_port(), ui=free_port(), starter=free_port(), sandbox=free_port())
    metrics_port = free_port()
    draft = Stack(load_firm_config(), data / "firm.yaml", ports=ports, metrics=None)
    config = benchmark_firm("relay", draft)
    firm_file = data / "firm.yaml"
    firm_file.write_text(
        yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
    )
    os.environ[CACHE_ENV] = str(args.cache)
    stack = Stack(
        config,
        firm_file,
        root=ROOT,
        ports=ports,
        data=data,
        workers=1,
        metrics=("127.0.0.1", metrics_port),
    )
    figures = Figures(args.count, args.cache)
    try:
        await stack.start()
        client = await connect(stack.temporal_address)
        worker = next(p for p in stack.processes if p.role == "worker")
        server = next((p for p in stack.processes if p.role == "temporal"), None)
        await until_idle(worker.pid)
        figures.rss_start = rss_mb(worker.pid)
        say(f"stack up, worker RSS {figures.rss_start:.0f} MB (data in {data})")

        engagements = plan(config, args.count, uuid.uuid4().hex[:6])
        began = time.monotonic()
        ids: list[str] = []
        sent_count = 0
        async with httpx.AsyncClient(timeout=30.0) as http:
            for first in range(0, len(engagements), args.wave):
                wave = engagements[first : first + args.wave]
                sent = await asyncio.gather(
                    *(post(http, relay_webhook(stack, config, e)) for e in wave)
                )
                ids += [d.workflow_id for d in sent if d.workflow_id]
                sent_count += len(wave)
                # A wave at a time, each assigned before the next: a season fills the firm
                # over weeks, and this measures memory, not a burst.
                while (opened := await count_open(client)) < len(ids):
                    if time.monotonic() - began > args.timeout:
                        break
                    await asyncio.sleep(1.0)
                say(f"{opened} open after {time.monotonic() - began:.0f}s")
                if time.monotonic() - began > args.timeout:
                    say(f"stopped arrivals after {args.timeout:.0f}s")
                    break
        figures.arrive_wall = time.monotonic() - began
        figures.refused = sent_count - len(ids)
        await until_idle(worker.pid)
        figures.opened = await count_open(client)
        figures.settle_wall = time.monotonic() - began
        figures.rss_open = rss_mb(worker.pid)
        figures.server_rss = rss_mb(server.pid) if server else 0.0
        figures.database = database_mb(stack)
        figures.before = await cache_counters(metrics_port)
        say(
            f"{figures.opened} open after {figures.settle_wall:.0f}s, "
            f"worker RSS {figures.rss_open:.0f} MB, server RSS {figures.server_rss:.0f} MB, "
            f"database {figures.database:.0f} MB, cache {figures.before}"
        )

        latencies: list[float] = []
        sweep_gate = asyncio.Semaphore(8)

        async def ask(workflow_id: str) -> None:
            async with sweep_gate:
                asked = time.monotonic()
                try:
                    await client.get_workflow_handle(workflow_id).query(EngagementWorkflow.state)
                except (WorkflowQueryFailedError, RPCError) as err:
                    # A replay that overran the SDK's 2 s deadlock detector on a busy machine
                    # is what a thrashing cache costs: counted, not fatal.
                    figures.failed_queries += 1
                    if figures.failed_queries <= 3:
                        say(f"query failed: {str(err)[:120]}")
                    return
                latencies.append(time.monotonic() - asked)

        began = time.monotonic()
        await asyncio.gather(*(ask(w) for w in ids))
        figures.sweep_wall = time.monotonic() - began
        figures.sweep_p50_ms = pct(latencies, 50) * 1000
        figures.sweep_p95_ms = pct(latencies, 95) * 1000
        figures.after = await cache_counters(metrics_port)
        figures.rss_swept = rss_mb(worker.pid)
        figures.database = database_mb(stack)
        return figures
    finally:
        await stack.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


def report(f: Figures) -> None:
    before, after = f.before or {}, f.after or {}

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    cached = min(f.opened, f.cache) or 1
    per_workflow_kb = (f.rss_open - f.rss_start) * 1024 / cached
    hits, misses = delta(CACHE_METRICS[0]), delta(CACHE_METRICS[1])
    evictions = delta(CACHE_METRICS[2])
    rows = [
        ("open engagements (Assigned or NeedsPartnerReview)", f"{f.opened} of {f.count}"),
        ("webhooks refused", str(f.refused)),
        ("workflow cache (DISPATCH_WORKFLOW_CACHE)", str(f.cache)),
        ("arrivals: all waves sent and assigned", f"{f.arrive_wall:.0f} s"),
        ("arrivals: all open and the worker idle", f"{f.settle_wall:.0f} s"),
        ("worker RSS after start", f"{f.rss_start:.0f} MB"),
        ("worker RSS with the engagements open", f"{f.rss_open:.0f} MB"),
        ("worker RSS after the sweep", f"{f.rss_swept:.0f} MB"),
        ("worker RSS per cached engagement", f"{per_workflow_kb:.0f} KB"),
        ("dev server RSS", f"{f.server_rss:.0f} MB"),
        ("server database (temporal.db*)", f"{f.database:.0f} MB"),
        (
            "database per engagement",
            f"{f.database * 1024 / max(f.opened, 1):.0f} KB",
        ),
        (
            "cache size after arrivals / after sweep",
            f"{before.get(CACHE_METRICS[3], 0):.0f} / {after.get(CACHE_METRICS[3], 0):.0f}",
        ),
        ("sweep: queries", f"{f.opened}"),
        ("sweep: wall", f"{f.sweep_wall:.1f} s"),
        ("sweep: query p50 / p95", f"{f.sweep_p50_ms:.0f} / {f.sweep_p95_ms:.0f} ms"),
        ("sweep: queries failed (replay over the deadlock limit)", str(f.failed_queries)),
        (
            "sweep: cache hits / misses / forced evictions",
            f"{hits:.0f} / {misses:.0f} / {evictions:.0f}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    thrash = misses > 0.1 * max(f.opened, 1)
    print()
    print(
        "the cache thrashes: a sweep replays most engagements"
        if thrash
        else "the cache holds every open engagement: a sweep replays none"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="open engagements (5000)")
    parser.add_argument(
        "--cache",
        type=int,
        default=int(os.environ.get(CACHE_ENV) or DEFAULT_CACHE),
        help=f"the worker's workflow cache (default {CACHE_ENV} or {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--wave", type=int, default=100, help="webhooks sent together, then assigned (100)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for arrivals")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    return parser.parse_args(argv)


async def until_interrupted(args: argparse.Namespace) -> int:
    task = asyncio.ensure_future(run(args))
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        report(await task)
    except asyncio.CancelledError:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(until_interrupted(parse())))
