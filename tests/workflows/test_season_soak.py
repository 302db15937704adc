"""A small season through the real webhook path, on a server that asks for continue-as-new early.

The CI-sized version of ``python -m benchmarks.season_soak``: signed relay events in waves
(created, then some completed and cancelled), the dispatcher and long-lived engagements
continuing as new several times, and then the truth: every engagement left ``Received``, nobody
is booked past capacity, the ledger equals what the live engagements hold, the carried state is
small, and a new engagement is still assigned.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from dispatch.models import DispatchStatus
from tests.conftest import start_dev_server
from tests.harness import RunningWorker, eventually, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from tests.workflows.test_ledger_survives import assert_truth
from tests.workflows.test_webhook_server import http_for, post_signed

WAVES = 4
PER_WAVE = 30
SERVICES = [
    ("individual_tax", 4),
    ("monthly_bookkeeping", 6),
    ("payroll", 3),
    ("s_corp_return", 10),
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def early_env() -> AsyncIterator[WorkflowEnvironment]:
    """Continue-as-new suggested after 120 events: the dispatcher does it every few dozen
    decisions, an engagement after a few dozen messages."""
    env = await start_dev_server(
        "--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=120"
    )
    try:
        yield env
    finally:
        await env.shutdown()


def event(kind: str, n: int, due: date, service: str, hours: float) -> dict[str, Any]:
    return {
        "event": f"engagement.{kind}",
        "event_id": f"evt-{kind}-{n}",
        "source": "taxdome",
        "engagement": {
            "external_id": f"S-{n}",
            "title": f"Season job {n}",
            "client": {"id": f"cl-season-{n % 40}", "name": f"Client {n % 40}"},
            "service_type": service,
            "due_date": due.isoformat(),
            "estimated_hours": hours,
        },
    }


async def test_a_small_season_through_the_webhooks(
    early_env: WorkflowEnvironment, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    client = early_env.client
    config = relay_firm(sandbox.config)
    rng = random.Random(20270115)
    async with running_worker(client, config) as worker, http_for(worker) as http:
        sent: dict[int, dict[str, Any]] = {}
        closed: set[int] = set()
        for w in range(WAVES):
            bodies = []
            for i in range(PER_WAVE):
                n = w * PER_WAVE + i
                service, hours = rng.choice(SERVICES)
                due = workdays_ahead(config, rng.randint(4, 30))
                sent[n] = event("created", n, due, service, hours)
                bodies.append(sent[n])
            answers = await asyncio.gather(*(post_signed(http, b) for b in bodies))
            assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
            await settle(worker, [a.json()["workflow_id"] for a in answers])
            # Some of last wave's work finishes, some is cancelled in the PM system.
            finishing = rng.sample(sorted(set(sent) - closed), PER_WAVE // 3)
            for n in finishing:
                kind = "completed" if n % 2 else "cancelled"
                body = {**sent[n], "event": f"engagement.{kind}", "event_id": f"evt-{kind}-{n}"}
                assert (await post_signed(http, body)).status_code == 202
                closed.add(n)

        live = [f"engagement-taxdome-S-{n}" for n in sent if n not in closed]
        await wait_closed(worker, [f"engagement-taxdome-S-{n}" for n in closed])

        # A new engagement is still assigned promptly after all that.
        due = workdays_ahead(config, 12)
        answer = await post_signed(http, event("created", 9999, due, "payroll", 1))
        newest = answer.json()["workflow_id"]
        state = await worker.wait_state(
            newest, lambda s: s.status is DispatchStatus.ASSIGNED, timeout=30
        )
        assert state.preparer is not None

        booked = await assert_truth(worker, [*live, newest])
        assert booked, "the season booked somebody"
        view, _ = await worker.ledger()
        runs = [
            r.status async for r in client.list_workflows(f'WorkflowId="{worker.dispatcher.id}"')
        ]
        assert runs.count(WorkflowExecutionStatus.CONTINUED_AS_NEW) >= 2, runs
        assert 0 < view.carried_bytes < 512 * 1024


async def settle(worker: RunningWorker, ids: list[str]) -> None:
    async def all_settled() -> bool | None:
        states = await asyncio.gather(*(worker.state(w) for w in ids), return_exceptions=True)
        left = [
            s for s in states if isinstance(s, BaseException) or s.status is DispatchStatus.RECEIVED
        ]
        return True if not left else None

    await eventually(all_settled, timeout=120, interval=0.5, what="every engagement decided")


async def wait_closed(worker: RunningWorker, ids: list[str]) -> None:
    async def all_closed() -> bool | None:
        for w in ids:
            described = await worker.client.get_workflow_handle(w).describe()
            if described.status is WorkflowExecutionStatus.RUNNING:
                return None
        return True

    await eventually(all_closed, timeout=60, interval=0.5, what="closed engagements to finish")
