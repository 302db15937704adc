"""Run the real worker (real workflows, real activities) against the sandbox, per test.

Each test gets its own task queue and firm id, so dispatchers and engagements of different
tests never meet on the shared dev server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.firm import FirmActivities
from activities.registry import tracker_for
from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig
from dispatch.ids import dispatcher_workflow_id, engagement_workflow_id
from dispatch.models import (
    BookingsView,
    CapacitySnapshot,
    EngagementDetails,
    EngagementHoldings,
    EngagementInput,
    EngagementState,
    LedgerEntryView,
    LedgerQuery,
    LedgerView,
    SnapshotInput,
)
from tests.sandbox_server import RunningSandbox
from worker import build_worker, ensure_dispatcher
from workflows.dispatcher import DispatcherWorkflow
from workflows.engagement import EngagementWorkflow

T = TypeVar("T")


def isolated(config: FirmConfig, tag: str | None = None) -> FirmConfig:
    firm_id = f"{config.firm.id}-{tag or uuid.uuid4().hex[:8]}"
    return config.model_copy(update={"firm": config.firm.model_copy(update={"id": firm_id})})


@dataclass
class RunningWorker:
    client: Client
    config: FirmConfig
    task_queue: str

    @property
    def dispatcher(self) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(dispatcher_workflow_id(self.config.firm.id))

    async def bookings(self) -> BookingsView:
        return await self.dispatcher.query(DispatcherWorkflow.bookings)

    async def snapshot(self) -> CapacitySnapshot | None:
        return await self.dispatcher.query(DispatcherWorkflow.snapshot)

    async def capacity(self) -> CapacitySnapshot:
        """What the dispatcher decides against: its snapshot, or, when it holds none, a fresh
        read made the same way (a run that has just continued as new reads capacity only when
        it next has something to decide, so a quiet dispatcher may hold no snapshot at all)."""
        held = await self.snapshot()
        if held is not None:
            return held
        firm = FirmActivities(self.config, tracker_for(self.config))
        fresh: CapacitySnapshot = await ActivityEnvironment().run(
            firm.capacity_snapshot, SnapshotInput(firm_id=self.config.firm.id)
        )
        return fresh

    async def ledger(self) -> tuple[LedgerView, list[LedgerEntryView]]:
        """The dispatcher's ledger, every page of it."""
        first: LedgerView = await self.dispatcher.query(DispatcherWorkflow.ledger, LedgerQuery())
        entries = list(first.entries)
        while len(entries) < first.total:
            page: LedgerView = await self.dispatcher.query(
                DispatcherWorkflow.ledger, LedgerQuery(offset=len(entries))
            )
            if not page.entries:
                break
            entries += page.entries
        return first, entries

    async def holdings(self, workflow_id: str) -> EngagementHoldings:
        return await self.client.get_workflow_handle(workflow_id).query(EngagementWorkflow.holdings)

    async def start(
        self,
        details: EngagementDetails | None = None,
        *,
        source: str = "relay",
        external_id: str | None = None,
        indexed: bool = True,
    ) -> WorkflowHandle[Any, Any]:
        ext = external_id or (details.external_id if details else uuid.uuid4().hex[:10])
        src = details.source if details else source
        return await self.client.start_workflow(
            EngagementWorkflow.run,
            EngagementInput(
                firm_id=self.config.firm.id,
                source=src,
                external_id=ext,
                details=details,
                index_search_attributes=indexed,
            ),
            id=engagement_workflow_id(src, ext),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    async def state(self, workflow_id: str) -> EngagementState:
        return await self.client.get_workflow_handle(workflow_id).query(EngagementWorkflow.state)

    async def wait_state(
        self, workflow_id: str, done: Callable[[EngagementState], bool], timeout: float = 30.0
    ) -> EngagementState:
        async def probe() -> EngagementState | None:
            try:
                current = await self.state(workflow_id)
            except Exception:  # not started yet or no worker answer yet
                return None
            return current if done(current) else None

        return await eventually(probe, timeout=timeout, what=f"state condition for {workflow_id}")


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_worker(client: Client, config: FirmConfig) -> AsyncIterator[RunningWorker]:
    config = isolated(config)
    task_queue = f"dispatch-test-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, config, task_queue=task_queue):
        await ensure_dispatcher(client, config, task_queue=task_queue)
        running = RunningWorker(client, config, task_queue)
        try:
            yield running
        finally:
            try:
                await running.dispatcher.terminate("test finished")
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise


def details(
    n: int | str,
    *,
    service_type: str = "individual_tax",
    hours: float = 4.0,
    due: date,
    client_id: str = "cl-new",
    client_email: str | None = "c@example.com",
    source: str = "relay",
) -> EngagementDetails:
    return EngagementDetails(
        source=source,
        external_id=f"E{n}",
        title=f"Engagement {n}",
        client_id=client_id,
        client_name=f"Client {client_id}",
        client_email=client_email,
        service_type=service_type,
        due_date=due,
        estimated_hours=hours,
        documents_needed=["Bank statements"],
        scope_summary="Year-end work",
    )


def firm_today(config: FirmConfig) -> date:
    return datetime.now(ZoneInfo(config.firm.time_zone)).date()


def workdays_ahead(config: FirmConfig, n: int) -> date:
    calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
    return calendar.add_working_days(firm_today(config), n)


def chat_posts(sandbox: RunningSandbox, since: int = 0) -> list[dict[str, Any]]:
    return [
        json.loads(str(r["body"]))
        for r in sandbox.requests(prefix="/slack/api/chat.postMessage")
        if int(r["seq"]) > since and r["status"] == 200
    ]
