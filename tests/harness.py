"""Run the real worker (real workflows, real activities) against the sandbox, per test.

Each test gets its own task queue and firm id, so dispatchers and engagements of different
tests never meet on the shared dev server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Interceptor

from activities.firm import FirmActivities
from activities.karbon import KarbonClient
from activities.registry import tracker_for
from dispatch.capacity import WorkCalendar, available_hours
from dispatch.config import FirmConfig, KarbonConnector
from dispatch.decision import person_of
from dispatch.ids import dispatcher_workflow_id, engagement_workflow_id
from dispatch.models import (
    BlockReason,
    BookingsView,
    CapacitySnapshot,
    DispatchStatus,
    EngagementDetails,
    EngagementHoldings,
    EngagementInput,
    EngagementState,
    LedgerEntryView,
    LedgerQuery,
    LedgerView,
    PartnerDecision,
    SnapshotInput,
)
from sandbox.karbon import client_type_for
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

    async def jobs_past_capacity(self, hours: float, due: date) -> int:
        """How many jobs of ``hours`` due ``due`` are sure to leave some waiting: more than the
        whole firm's free hours hold. A fixed count overflows on some days and not others (on a
        Monday morning the whole week is free; on a Thursday evening little of it is)."""
        snap = await self.capacity()
        calendar = WorkCalendar.of(snap.workdays, snap.holidays)
        free = sum(available_hours(person_of(c), [], due, snap.today, calendar) for c in snap.staff)
        return int(free // hours) + 1

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

    async def bookkeeping(
        self,
        tag: str,
        n: int,
        *,
        hours: float,
        due: date,
        until: Callable[[EngagementState], bool],
        timeout: float = 30.0,
    ) -> list[WorkflowHandle[Any, Any]]:
        """``n`` monthly bookkeeping jobs (``{tag}-{i}``, each its own client) started together,
        then each waited for ``until``."""
        handles = await asyncio.gather(
            *(
                self.start(
                    details(
                        f"{tag}-{i}",
                        service_type="monthly_bookkeeping",
                        hours=hours,
                        due=due,
                        client_id=f"cl-{tag}-{i}",
                    )
                )
                for i in range(n)
            )
        )
        for handle in handles:
            await self.wait_state(handle.id, until, timeout=timeout)
        return list(handles)

    async def wait_state(
        self, workflow_id: str, done: Callable[[EngagementState], bool], timeout: float = 30.0
    ) -> EngagementState:
        seen: list[EngagementState] = []

        async def probe() -> EngagementState | None:
            try:
                current = await self.state(workflow_id)
            except Exception:  # not started yet or no worker answer yet
                return None
            seen[:] = [current]
            return current if done(current) else None

        return await eventually(
            probe,
            timeout=timeout,
            what=f"state condition for {workflow_id}",
            last=lambda: story(seen[0]) if seen else "no state yet",
        )


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
    last: Callable[[], object] | None = None,
) -> T:
    """``probe`` until it returns a value; on timeout the error shows ``last()`` (what the probe
    saw last), so a failure in CI says where things stood, not only that they did not arrive."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            seen = f"; last seen: {last()}" if last is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        await asyncio.sleep(interval)


def patches_in(history: WorkflowHistory) -> set[str]:
    """The ids of the ``workflow.patched`` markers a history recorded."""
    found = set()
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if (
            event.HasField("marker_recorded_event_attributes")
            and marker.marker_name == "core_patch"
        ):
            for payload in marker.details["patch-data"].payloads:
                found.add(json.loads(payload.data)["id"])
    return found


def memo_fields_written(history: WorkflowHistory) -> Counter[str]:
    """How many times each memo field was upserted in a history (counted, not compared: the
    payloads may be encrypted)."""
    return Counter(
        key
        for e in history.events
        if e.HasField("workflow_properties_modified_event_attributes")
        for key in e.workflow_properties_modified_event_attributes.upserted_memo.fields
    )


def story(state: EngagementState) -> str:
    """Where an engagement stands, for a failure message (the test's own data only)."""
    timeline = "; ".join(f"{t.kind}: {t.detail}" for t in state.timeline)
    return (
        f"status={state.status.value} awaiting={state.awaiting} "
        f"preparer={state.preparer and state.preparer.id} "
        f"reviewer={state.reviewer and state.reviewer.id} "
        f"reason={state.needs_partner_review_reason!r} timeline=[{timeline}]"
    )


@asynccontextmanager
async def running_worker(
    client: Client, config: FirmConfig, interceptors: Sequence[Interceptor] = ()
) -> AsyncIterator[RunningWorker]:
    config = isolated(config)
    task_queue = f"dispatch-test-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, config, task_queue=task_queue, interceptors=interceptors):
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
    return config.firm.today_at(datetime.now(UTC))


def workdays_ahead(config: FirmConfig, n: int) -> date:
    calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
    return calendar.add_working_days(firm_today(config), n)


async def partner_picks_over_capacity(
    worker: RunningWorker, tag: str
) -> tuple[WorkflowHandle[Any, Any], str]:
    """50 h of audit work due in four working days: nobody has room, so it waits for a partner,
    who assigns the first person only capacity blocks anyway (as on the board). Returns the
    engagement's handle and the person picked."""
    handle = await worker.start(
        details(tag, service_type="audit_prep", hours=50, due=workdays_ahead(worker.config, 4))
    )
    waiting = await worker.wait_state(
        handle.id,
        lambda s: s.status is DispatchStatus.NEEDS_PARTNER_REVIEW and s.awaiting is not None,
    )
    pick = next(
        c.staff_id for c in waiting.decisions[-1].candidates if c.blocked == [BlockReason.CAPACITY]
    )
    await handle.execute_update(
        EngagementWorkflow.decide,
        PartnerDecision(
            partner_id="ava",
            staff_id=pick,
            override_capacity=True,
            channel="api",
            event_id=f"{tag}-pick",
        ),
    )
    return handle, pick


async def karbon_work_item(
    config: FirmConfig, title: str, client_id: str, work_type: str, due_in: int
) -> str:
    """A work item in the firm's Karbon (the emulator), starting today, due in ``due_in``
    working days, assigned to the managing partner as a new job is; returns its key."""
    pm = config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    karbon = KarbonClient(pm)
    try:
        item = await karbon.create_work_item(
            {
                "Title": title,
                "ClientKey": client_id,
                "ClientType": client_type_for(client_id),
                "AssigneeEmailAddress": config.managing_partner.email,
                "StartDate": f"{firm_today(config).isoformat()}T00:00:00Z",
                "DueDate": f"{workdays_ahead(config, due_in).isoformat()}T00:00:00Z",
                "WorkType": work_type,
            }
        )
    finally:
        await karbon.aclose()
    return str(item["WorkItemKey"])


def chat_posts(sandbox: RunningSandbox, since: int = 0) -> list[dict[str, Any]]:
    return [
        json.loads(str(r["body"]))
        for r in sandbox.requests(prefix="/slack/api/chat.postMessage")
        if int(r["seq"]) > since and r["status"] == 200
    ]


def chat_texts(sandbox: RunningSandbox, containing: str, since: int = 0) -> list[str]:
    """Texts of the Slack messages posted after request ``since`` that contain ``containing``."""
    texts = (str(p.get("text", "")) for p in chat_posts(sandbox, since))
    return [t for t in texts if containing in t]
