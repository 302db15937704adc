"""Checkpoints on durable timers, on the time-skipping server (one engagement at a time).

Each checkpoint must fire at its simulated moment and not before, once, never after the work
is done, and follow the due date when the PM system moves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from app.temporal import data_converter
from dispatch.models import DispatchStatus, EngagementState, PmUpdate
from tests.conftest import temporal_test_server
from tests.harness import RunningWorker, details, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from workflows.engagement import EngagementWorkflow


@pytest_asyncio.fixture(loop_scope="session")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh server per test: simulated time only moves forward, and each test's due dates
    are computed from today's real date."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=data_converter(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def worker(
    skipping: WorkflowEnvironment, sandbox: RunningSandbox
) -> AsyncIterator[RunningWorker]:
    sandbox.reset()
    async with running_worker(skipping.client, relay_firm(sandbox.config)) as running:
        yield running


def fired(state: EngagementState) -> dict[str, str]:
    return {k.split(":")[0]: v for k, v in state.checkpoints.items() if v == "fired"}


async def advance(
    env: WorkflowEnvironment,
    worker: RunningWorker,
    workflow_id: str,
    to: timedelta,
    since_assignment: EngagementState,
) -> EngagementState:
    """Move simulated time to ``assigned_at + to`` and let the workflow catch up."""
    assert since_assignment.assigned_at is not None
    now = await env.get_current_time()
    target = since_assignment.assigned_at + to
    if target > now:
        await env.sleep(target - now)
    # A query runs after any timer the sleep released has been handled.
    await worker.wait_state(workflow_id, lambda s: True)
    return await worker.state(workflow_id)


async def test_every_checkpoint_fires_once_at_its_moment(
    skipping: WorkflowEnvironment, worker: RunningWorker, sandbox: RunningSandbox
) -> None:
    due = workdays_ahead(worker.config, 10)
    handle = await worker.start(details("timers", due=due), indexed=False)
    assigned = await worker.wait_state(
        handle.id,
        lambda s: (
            s.status is DispatchStatus.ASSIGNED
            and not any(e.state == "pending" for e in s.side_effects)
        ),
    )
    assert assigned.due_at is not None and assigned.assigned_at is not None
    minute = timedelta(minutes=1)

    state = await advance(skipping, worker, handle.id, timedelta(hours=24) - minute, assigned)
    assert "response_reminder" not in fired(state)
    state = await advance(skipping, worker, handle.id, timedelta(hours=24) + minute, assigned)
    assert "response_reminder" in fired(state)
    assert "no_response" not in fired(state) and "not_started" not in fired(state)

    state = await advance(skipping, worker, handle.id, timedelta(hours=48) + minute, assigned)
    assert {"no_response", "not_started"} <= set(fired(state))

    midpoint = (assigned.due_at - assigned.assigned_at) / 2
    state = await advance(skipping, worker, handle.id, midpoint - minute, assigned)
    assert "midpoint" not in fired(state)
    state = await advance(skipping, worker, handle.id, midpoint + minute, assigned)
    assert "midpoint" in fired(state)
    assert state.hours_logged is not None

    three_days = assigned.due_at - timedelta(days=3) - assigned.assigned_at
    state = await advance(skipping, worker, handle.id, three_days - minute, assigned)
    assert "status_check" not in fired(state)
    state = await advance(skipping, worker, handle.id, three_days + minute, assigned)
    assert "status_check" in fired(state)

    due_in = assigned.due_at - assigned.assigned_at
    state = await advance(skipping, worker, handle.id, due_in - minute, assigned)
    assert "past_due" not in fired(state)
    state = await advance(skipping, worker, handle.id, due_in + minute, assigned)
    assert "past_due" in fired(state)

    # Once each, whatever happens next; each a real message to the right person.
    state = await advance(skipping, worker, handle.id, due_in + timedelta(days=5), assigned)
    kinds = [t.kind for t in state.timeline if t.kind.startswith("checkpoint ")]
    assert sorted(kinds) == sorted(set(kinds))
    notices = [e for e in state.side_effects if e.name.startswith("notice:")]
    assert notices and all(e.state == "done" for e in notices)
    partner_dm = sandbox.ctx.stores["slack"].messages["D01AVA"]
    assert any("Past due" in m["text"] for m in partner_dm)


async def test_nothing_fires_after_completion(
    skipping: WorkflowEnvironment, worker: RunningWorker
) -> None:
    due = workdays_ahead(worker.config, 10)
    eng = details("done-early", due=due)
    handle = await worker.start(eng, indexed=False)
    assigned = await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.ASSIGNED)
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(event_key="started", details=eng.model_copy(update={"work_state": "in_progress"})),
    )
    started = await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.IN_PROGRESS)
    assert started.started_at is not None
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(event_key="done", details=eng.model_copy(update={"work_state": "completed"})),
    )
    result = await handle.result()
    assert result.status is DispatchStatus.COMPLETED
    assert "past_due" not in fired(result) and "status_check" not in fired(result)
    # In progress within 48 h: no manager alert, no reminder.
    assert "not_started" not in fired(result)
    assert assigned.assigned_at is not None
    bookings = await worker.bookings()
    assert not any(r.workflow_id == handle.id for s in bookings.staff for r in s.reservations)


async def test_a_moved_due_date_moves_the_checkpoints(
    skipping: WorkflowEnvironment, worker: RunningWorker
) -> None:
    due = workdays_ahead(worker.config, 10)
    eng = details("moved", due=due)
    handle = await worker.start(eng, indexed=False)
    assigned = await worker.wait_state(
        handle.id,
        lambda s: (
            s.status is DispatchStatus.ASSIGNED
            and not any(e.state == "pending" for e in s.side_effects)
        ),
    )
    later = workdays_ahead(worker.config, 20)
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(event_key="moved", details=eng.model_copy(update={"due_date": later})),
    )
    moved = await worker.wait_state(
        handle.id,
        lambda s: (
            s.due_at != assigned.due_at
            and s.awaiting is None
            and any(t.kind == "reservation adjusted" for t in s.timeline)
        ),
    )
    assert moved.due_at is not None and assigned.due_at is not None
    assert moved.due_at > assigned.due_at
    assert any(t.kind == "due date moved" for t in moved.timeline)

    # The old "three days before" passes quietly; the new one fires.
    old_check = assigned.due_at - timedelta(days=3) - assigned.assigned_at  # type: ignore[operator]
    state = await advance(skipping, worker, handle.id, old_check + timedelta(hours=1), assigned)
    assert f"status_check:{due.isoformat()}" not in state.checkpoints
    new_check = moved.due_at - timedelta(days=3) - assigned.assigned_at  # type: ignore[operator]
    state = await advance(skipping, worker, handle.id, new_check + timedelta(minutes=1), assigned)
    assert state.checkpoints.get(f"status_check:{later.isoformat()}") == "fired"
    state = await advance(
        skipping,
        worker,
        handle.id,
        assigned.due_at - assigned.assigned_at + timedelta(hours=1),  # type: ignore[operator]
        assigned,
    )
    assert f"past_due:{due.isoformat()}" not in state.checkpoints
    # The reservation followed the new due date.
    bookings = await worker.bookings()
    mine = [r for s in bookings.staff for r in s.reservations if r.workflow_id == handle.id]
    assert mine and all(r.due == later for r in mine)
