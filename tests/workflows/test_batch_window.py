"""The batching window on the dev server: a burst is assigned jointly by the optimiser activity.

With ``Policy.batch_window_seconds`` set, the dispatcher collects a burst, sends it to the
``optimize_assignments`` activity and applies the plan; when that activity fails or has no
time, the greedy rule decides; with the window at 0 nothing of this runs.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

import activities.optimizer
from dispatch.capacity import Booking, is_overbooked
from dispatch.config import FirmConfig
from dispatch.decision import calendar_of, person_of
from dispatch.ids import request_id
from dispatch.models import AssignmentRequest, DispatchStatus, EngagementState
from tests.harness import RunningWorker, details, eventually, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from tests.workflows.test_burst import settled, small_firm
from workflows.dispatcher import OPTIMIZE_ACTIVITY, DispatcherWorkflow

BURST = 12
JOINTLY = "assigned jointly with"


def windowed(config: FirmConfig, window: float, time_limit: float = 5.0) -> FirmConfig:
    policy = config.policy.model_copy(
        update={"batch_window_seconds": window, "optimizer_time_limit_seconds": time_limit}
    )
    return relay_firm(small_firm(config)).model_copy(update={"policy": policy})


async def start_burst(worker: RunningWorker) -> list[str]:
    """Engagement ids are per firm: engagements of earlier tests are still running, and an id
    they hold would be reused (``USE_EXISTING``), answered by no worker."""
    rng_hours = [2, 3, 4, 6, 8, 12]
    jobs = [
        details(
            f"{worker.config.firm.id}-W{n:02d}",
            service_type="s_corp_return" if n % 3 == 0 else "individual_tax",
            hours=rng_hours[n % len(rng_hours)],
            due=workdays_ahead(worker.config, 3 + n % 6),
            client_id=f"cl-w{n % 4}",
        )
        for n in range(BURST)
    ]
    handles = await asyncio.gather(*(worker.start(job) for job in jobs))
    return [h.id for h in handles]


async def settle(worker: RunningWorker, ids: list[str]) -> list[EngagementState]:
    async def all_settled() -> list[EngagementState] | None:
        try:
            states = await asyncio.gather(*(worker.state(i) for i in ids))
        except RPCError:  # the worker's pollers not seen yet, right after it started
            return None
        return states if all(settled(s) for s in states) else None

    return await eventually(all_settled, timeout=120, interval=0.5, what="every engagement settled")


async def optimizer_calls(worker: RunningWorker) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """From the dispatcher's history: the request ids of every optimiser call, and the plans
    (or failures) it returned."""
    history = await worker.dispatcher.fetch_history()
    codec = worker.client.data_converter.payload_codec

    async def plain(payload: Payload) -> Any:
        # Payloads are stored encrypted: open them as the worker does.
        opened = (await codec.decode([payload]))[0] if codec else payload
        return json.loads(opened.data)

    scheduled: dict[int, list[str]] = {}
    calls: list[list[str]] = []
    outcomes: list[dict[str, Any]] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == OPTIMIZE_ACTIVITY:
                payload = await plain(attrs.input.payloads[0])
                scheduled[event.event_id] = [r["request_id"] for r in payload["requests"]]
                calls.append(scheduled[event.event_id])
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in scheduled:
                outcomes.append(await plain(done.result.payloads[0]))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = event.activity_task_failed_event_attributes
            if failed.scheduled_event_id in scheduled:
                outcomes.append({"failed": failed.failure.message})
    return calls, outcomes


async def timers(worker: RunningWorker) -> int:
    """Batching-window timers (seconds long); the dispatcher's hourly housekeeping is not one."""
    history = await worker.dispatcher.fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
        and e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        < timedelta(minutes=1)
    )


async def assert_nobody_double_booked(worker: RunningWorker, states: list[EngagementState]) -> None:
    bookings = await worker.bookings()
    snapshot = await worker.snapshot()
    assert snapshot is not None
    calendar = calendar_of(snapshot)
    capacity = {c.member.id: c for c in snapshot.staff}
    for staff in bookings.staff:
        mine = [Booking(r.hours, r.due) for r in staff.reservations]
        assert not is_overbooked(
            person_of(capacity[staff.staff_id]), mine, snapshot.today, calendar
        ), f"{staff.staff_id} is overbooked"
    reserved = Counter(r.workflow_id for s in bookings.staff for r in s.reservations)
    for state in states:
        if state.status is DispatchStatus.ASSIGNED:
            assert state.preparer is not None
            assert reserved[state.workflow_id] == (2 if state.reviewer else 1)
            assert state.preparer.id != getattr(state.reviewer, "id", None)
        else:
            assert state.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            assert reserved[state.workflow_id] == 0
            assert state.workflow_id in bookings.parked


def explained(state: EngagementState) -> str:
    """The reason the engagement was given: every decision's, or why it needs a partner."""
    if state.status is DispatchStatus.ASSIGNED:
        assert state.decisions and all(d.reason and d.candidates for d in state.decisions)
        return " ".join(d.reason for d in state.decisions)
    assert state.needs_partner_review_reason
    return state.needs_partner_review_reason


async def test_a_burst_in_the_window_is_assigned_jointly(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = windowed(sandbox.config, 2.0)
    async with running_worker(client, config) as worker:
        ids = await start_burst(worker)
        # The first engagement sends its request again within the window (an engagement does
        # after RESULT_WAIT): one engagement, one decision, and the batch stays joint.
        await worker.wait_state(ids[0], lambda s: s.awaiting == "dispatch", timeout=10)
        resend = AssignmentRequest(
            request_id=request_id(ids[0], 1),
            workflow_id=ids[0],
            client_id="cl-w0",
            service_type="s_corp_return",
            due_date=workdays_ahead(worker.config, 3),
            estimated_hours=2,
        )
        await worker.dispatcher.signal(DispatcherWorkflow.request_assignment, resend)
        states = await settle(worker, ids)
        calls, outcomes = await optimizer_calls(worker)
        await assert_nobody_double_booked(worker, states)
        bookings = await worker.bookings()

    # Jointly: every engagement went through the optimiser, the burst in few batches (the
    # starts spread over a second or so on a loaded machine), each request once.
    assert sorted(r for call in calls for r in call) == sorted(request_id(i, 1) for i in ids)
    assert max(len(call) for call in calls) >= BURST // 2, calls
    assert len(calls) <= 3, calls
    assert all(o.get("fallback") is None and "failed" not in o for o in outcomes), outcomes
    assert bookings.decided == BURST
    assigned = [s for s in states if s.status is DispatchStatus.ASSIGNED]
    assert assigned
    for state in states:
        reason = explained(state)
        if state.status is DispatchStatus.ASSIGNED:
            assert JOINTLY in reason, reason
    # One answer each: the resend did not make a second assignment message.
    chat = [e for s in states for e in s.side_effects if e.kind == "chat_preparer"]
    assert len(chat) == len(assigned)


@pytest.mark.parametrize("failure", ["activity fails", "no time"])
async def test_without_the_optimiser_the_greedy_rule_decides(
    client: Client, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    sandbox.reset()
    if failure == "activity fails":

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("solver crashed")

        # The activity's solver, in this process (the worker runs here): both attempts fail.
        monkeypatch.setattr(activities.optimizer, "optimize_batch", broken)
        config = windowed(sandbox.config, 2.0)
    else:
        # Below what a solve needs: the activity answers at once with the greedy fallback.
        config = windowed(sandbox.config, 2.0, time_limit=0.01)
    async with running_worker(client, config) as worker:
        ids = await start_burst(worker)
        states = await settle(worker, ids)
        calls, outcomes = await optimizer_calls(worker)
        await assert_nobody_double_booked(worker, states)

    assert calls, "the window should have called the optimiser"
    if failure == "activity fails":
        assert outcomes and all("failed" in o for o in outcomes), outcomes
    else:
        assert outcomes and all(o["fallback"] and "time limit" in o["fallback"] for o in outcomes)
    for state in states:
        # The greedy rule's own explanation, not the joint plan's.
        assert JOINTLY not in explained(state)
    assert any(s.status is DispatchStatus.ASSIGNED for s in states)


async def test_window_zero_decides_as_requests_come(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = windowed(sandbox.config, 0.0)
    async with running_worker(client, config) as worker:
        ids = await start_burst(worker)
        states = await settle(worker, ids)
        calls, _ = await optimizer_calls(worker)
        await assert_nobody_double_booked(worker, states)
        assert await timers(worker) == 0
    assert calls == []
    for state in states:
        assert JOINTLY not in explained(state)
