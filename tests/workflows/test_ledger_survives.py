"""The ledger cannot be lost (DESIGN §3.7): terminate, reset, tracker outage, leaks.

Each test fills the bookkeepers of the demo firm close to capacity, loses or disturbs the
dispatcher, sends more work, and then checks the truth the engagements hold (not the
dispatcher's own view): nobody is booked past capacity, and the dispatcher's ledger equals the
sum of what the live engagements hold.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import date
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from dispatch.capacity import Booking, is_overbooked
from dispatch.decision import calendar_of, person_of
from dispatch.models import (
    AssignmentResult,
    DispatchStatus,
    EngagementState,
    ForceAssignRequest,
    LedgerQuery,
    PartnerDecision,
    PmUpdate,
    Role,
    StaffRef,
)
from tests.harness import (
    RunningWorker,
    chat_texts,
    details,
    eventually,
    isolated,
    running_worker,
    workdays_ahead,
)
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import quick_snapshots, relay_firm
from worker import build_worker, ensure_dispatcher
from workflows.dispatcher import RESULT_SIGNAL, DispatcherWorkflow
from workflows.engagement import EngagementWorkflow

HOURS = 16.0
"""Monthly bookkeeping jobs of 16 h due in five working days: about two fill a person."""


def settled(state: EngagementState) -> bool:
    return state.status in (DispatchStatus.ASSIGNED, DispatchStatus.NEEDS_PARTNER_REVIEW)


async def wave(worker: RunningWorker, tag: str, n: int, due: date) -> list[str]:
    handles = await worker.bookkeeping(tag, n, hours=HOURS, due=due, until=settled, timeout=60)
    return [h.id for h in handles]


async def assert_truth(worker: RunningWorker, live: list[str]) -> dict[str, float]:
    """Nobody over capacity by what the engagements hold; the ledger agrees with them."""
    snapshot = await worker.capacity()
    held = {w: await worker.holdings(w) for w in live}
    by_staff: dict[str, list[Booking]] = {}
    for facts in held.values():
        for r in facts.holdings:
            by_staff.setdefault(r.staff_id, []).append(Booking(r.hours, r.due))
    capacity = {c.member.id: c for c in snapshot.staff}
    calendar = calendar_of(snapshot)
    for staff_id, bookings in by_staff.items():
        assert not is_overbooked(
            person_of(capacity[staff_id]), bookings, snapshot.today, calendar
        ), f"{staff_id} is booked past capacity: {sum(b.hours for b in bookings)} h"

    truth = {w: sorted(f.holdings, key=str) for w, f in held.items() if f.holdings and not f.closed}
    differs: list[str] = []

    async def agrees() -> bool | None:
        _, entries = await worker.ledger()
        ledger = {e.workflow_id: sorted(e.holdings, key=str) for e in entries if e.holdings}
        differs[:] = [
            f"{w}: ledger {ledger.get(w)} != held {truth.get(w)}"
            for w in sorted(set(ledger) | set(truth))
            if ledger.get(w) != truth.get(w)
        ]
        return True if not differs else None

    await eventually(
        agrees,
        timeout=30,
        what="the ledger to equal the engagements' holdings",
        last=lambda: "; ".join(differs[:3]),
    )
    return {s: sum(b.hours for b in bookings) for s, bookings in by_staff.items()}


async def test_terminating_the_dispatcher_mid_season_books_nobody_twice(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        due = workdays_ahead(config, 5)
        first = await wave(worker, "t1", 10, due)
        before, _ = await worker.ledger()
        await worker.dispatcher.terminate("operator stopped it mid-season")
        second = await wave(worker, "t2", 10, due)
        after, _ = await worker.ledger()
        assert after.epoch != before.epoch  # a fresh ledger, rebuilt from the engagements
        assert after.rebuilt_at is not None
        await assert_truth(worker, first + second)
        states = [await worker.state(w) for w in second]
        # Without the rebuild every one of these would have been booked onto full people.
        assert any(s.status is DispatchStatus.NEEDS_PARTNER_REVIEW for s in states)


async def reset_to_before_the_decisions(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
    """Reset the dispatcher to the workflow task before its first answer was sent."""
    events = [e async for e in handle.fetch_history_events()]
    first_answer = next(
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    )
    completed = max(
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        and e.event_id < first_answer
    )
    await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id),
            reason="operator reset",
            workflow_task_finish_event_id=completed,
            request_id=str(uuid.uuid4()),
        )
    )


async def test_a_reset_dispatcher_rebuilds_before_deciding(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = isolated(relay_firm(sandbox.config))
    queue = f"dispatch-test-{uuid.uuid4().hex[:8]}"
    due = workdays_ahead(config, 5)
    async with build_worker(client, config, task_queue=queue):
        await ensure_dispatcher(client, config, task_queue=queue)
        worker = RunningWorker(client, config, queue)
        first = await wave(worker, "r1", 10, due)
        await reset_to_before_the_decisions(client, worker.dispatcher)
        second = await wave(worker, "r2", 8, due)
        view, _ = await worker.ledger()
        assert view.rebuilt_at is not None
        await assert_truth(worker, first + second)
    # A new worker replays the reset run from its history (nothing cached): the reset check
    # must take the same path on replay, or the dispatcher would stop on non-determinism.
    async with build_worker(client, config, task_queue=queue):
        third = await wave(worker, "r3", 2, due)
        await assert_truth(worker, first + second + third)
        await worker.dispatcher.terminate("test finished")


async def test_a_time_tracker_outage_degrades_and_heals(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = quick_snapshots(sandbox.config)
    async with running_worker(client, config) as worker:
        due = workdays_ahead(config, 8)
        # A revoked token: every time-tracker call answers 401 from then on.
        first, second, since = await tracker_fails(
            worker, sandbox, [{"route": "/harvest", "status": 401}], "o", (3, 4)
        )
        states = [await worker.state(w) for w in second]
        assert all(s.status is DispatchStatus.ASSIGNED for s in states)
        assert all(s.capacity_note and "time tracker" in s.capacity_note for s in states)
        description = await worker.dispatcher.describe()
        assert description.status is not None and description.status.name == "RUNNING"
        told = chat_texts(sandbox, "Time tracker unavailable", since)
        assert len(told) == 1, "the managing partner hears of an outage once"
        await assert_truth(worker, first + second)
        # The tracker is back. Nothing is waiting to be decided, yet the dispatcher reads it
        # again during the outage (every few seconds at this TTL): the partner hears it healed.
        sandbox.faults([])
        await told_back_once(sandbox, since)
        third = await wave(worker, "o3", 1, due)
        state = await worker.state(third[0])
        assert state.capacity_note is None


async def test_a_tracker_that_asks_to_wait_is_not_read_sooner(
    client: Client, sandbox: RunningSandbox
) -> None:
    """Harvest answers 503 with Retry-After: 12 (its "ask me later"): during the outage the
    dispatcher reads it no more often than that, not every 5 s as this 1 s snapshot TTL would
    have it, and still finds it back once it heals."""
    sandbox.reset()
    config = quick_snapshots(sandbox.config)
    async with running_worker(client, config) as worker:
        asks = [{"route": "/harvest", "status": 503, "retry_after": 12}]
        first, second, since = await tracker_fails(worker, sandbox, asks, "w", (1, 2))
        assert all([(await worker.state(w)).capacity_note for w in second])
        # The reads while idle, each when it was first seen (a read is one call: the first
        # one fails), watched from now, so each is timed as it happens; until two are seen (a
        # loaded machine only spaces them further apart).
        after = max(int(r["seq"]) for r in sandbox.requests())
        seen: dict[int, float] = {}
        loop = asyncio.get_running_loop()
        watch_until = loop.time() + 60
        while loop.time() < watch_until and len(seen) < 2:
            for r in sandbox.requests(prefix="/harvest"):
                if r["status"] == 503 and int(r["seq"]) > after:
                    seen.setdefault(int(r["seq"]), loop.time())
            await asyncio.sleep(0.25)
        moments = sorted(seen.values())
        gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
        assert len(moments) >= 2, f"the outage was not read again while idle: {moments}"
        assert min(gaps) >= 10, f"read sooner than the tracker asked (12 s): gaps {gaps}"
        sandbox.faults([])
        await told_back_once(sandbox, since)
        await assert_truth(worker, first + second)


async def test_a_chat_outage_beside_a_tracker_outage_does_not_hold_decisions(
    client: Client, sandbox: RunningSandbox
) -> None:
    """The partner's notice of the tracker outage goes out beside the decisions: while Slack
    refuses it (retried for up to five minutes) engagements are still decided, and once Slack
    is back the partner reads "unavailable" once, then "back", in that order."""
    sandbox.reset()
    config = quick_snapshots(sandbox.config)
    slack_down = {"route": "/slack", "status": 503}
    async with running_worker(client, config) as worker:
        due = workdays_ahead(config, 8)
        first = await wave(worker, "n1", 1, due)
        since = max((int(r["seq"]) for r in sandbox.requests()), default=0)
        sandbox.faults([{"route": "/harvest", "status": 401}, slack_down])
        await asyncio.sleep(1.5)  # the snapshot is older than its 1 s time to live

        second = await wave(worker, "n2", 2, due)
        states = [await worker.state(w) for w in second]
        assert all(s.capacity_note and "time tracker" in s.capacity_note for s in states)
        # Decided while the notice is still on its way (before, dispatch waited for it).
        pending = (await worker.dispatcher.describe()).raw_description.pending_activities
        assert "firm_capacity_outage_notice" in {a.activity_type.name for a in pending}

        # The tracker heals while Slack is still down: the "back" notice waits its turn. The
        # dispatcher finds the heal on its own (its reads during an outage go on while idle).
        sandbox.faults([slack_down])

        async def healed() -> bool | None:
            view = await worker.dispatcher.query(DispatcherWorkflow.ledger, LedgerQuery(limit=1))
            return True if view.capacity_note is None else None

        await eventually(healed, what="the dispatcher to read the healed tracker")
        third = await wave(worker, "n3", 1, due)
        assert (await worker.state(third[0])).capacity_note is None
        sandbox.faults([])

        def told() -> list[str]:
            return chat_texts(sandbox, "Time tracker", since)

        async def both() -> list[str] | None:
            return told() if len(told()) >= 2 else None

        texts = await eventually(both, timeout=120, what="both notices", last=told)
        assert len(texts) == 2, texts
        assert "unavailable" in texts[0] and "back" in texts[1], texts
        assert (await worker.dispatcher.describe()).status == WorkflowExecutionStatus.RUNNING
        await assert_truth(worker, first + second + third)


async def test_a_terminated_engagement_gives_its_hours_back(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        ids = await wave(worker, "x", 2, workdays_ahead(config, 6))
        await client.get_workflow_handle(ids[0]).terminate("operator terminated it")
        await worker.dispatcher.signal(DispatcherWorkflow.rebuild_ledger)

        async def released() -> bool | None:
            _, entries = await worker.ledger()
            return True if ids[0] not in {e.workflow_id for e in entries} else None

        await eventually(released, timeout=30, what="the terminated engagement's hours back")
        await assert_truth(worker, ids[1:])


async def test_a_temporal_cancel_gives_the_hours_back(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        ids = await wave(worker, "c", 1, workdays_ahead(config, 6))
        await client.get_workflow_handle(ids[0]).cancel()

        async def released() -> bool | None:
            _, entries = await worker.ledger()
            return True if not entries else None

        await eventually(released, timeout=30, what="the cancelled engagement's hours back")

        async def logged() -> bool | None:
            # The CRM record goes out after the hours are given back, as the workflow closes.
            crm = sandbox.requests(prefix="/crm/records", method="POST")
            return True if any('"cancelled"' in str(r["body"]) for r in crm) else None

        await eventually(logged, timeout=30, what="the cancellation in the CRM")

        async def closed() -> bool | None:
            # The CRM's copy is seen before the activity's answer reaches the workflow, so the
            # run closes a moment later; it must close as cancelled, not carry on.
            described = await client.get_workflow_handle(ids[0]).describe()
            if described.status is WorkflowExecutionStatus.RUNNING:
                return None
            assert described.status is WorkflowExecutionStatus.CANCELED, described.status
            return True

        await eventually(closed, timeout=30, what="the engagement closed as cancelled")


async def test_an_answer_nobody_asked_for_is_given_back(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        ids = await wave(worker, "u", 1, workdays_ahead(config, 6))
        held = await worker.holdings(ids[0])
        other = "liam" if held.holdings[0].staff_id != "liam" else "emma"
        # Something books the engagement onto another person it never asked for.
        await worker.dispatcher.signal(
            DispatcherWorkflow.force_assign,
            ForceAssignRequest(
                request_id=f"{ids[0]}:req-99",
                seq=99,
                workflow_id=ids[0],
                partner_id="ava",
                staff_id=other,
                client_id="cl-u-0",
                start=held.holdings[0].start,
                due=held.holdings[0].due,
                hours=HOURS,
            ),
        )

        async def given_back() -> bool | None:
            _, entries = await worker.ledger()
            mine = [r for e in entries for r in e.holdings if e.workflow_id == ids[0]]
            ok = [(r.staff_id, r.role) for r in mine] == [
                (held.holdings[0].staff_id, Role.PREPARER)
            ]
            return True if ok else None

        await eventually(given_back, timeout=30, what="the unasked booking to be given back")
        state = await worker.state(ids[0])
        assert state.preparer is not None and state.preparer.id == held.holdings[0].staff_id


async def test_answers_from_a_lost_ledger_are_refused(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        ids = await wave(worker, "epoch", 1, workdays_ahead(config, 6))
        before = await worker.state(ids[0])
        await worker.dispatcher.terminate("lost")
        await wave(worker, "epoch-b", 1, workdays_ahead(config, 6))  # a fresh ledger now
        after = await worker.state(ids[0])
        assert (
            after.ledger_epoch and before.ledger_epoch and after.ledger_epoch > before.ledger_epoch
        )
        # A late answer of the old ledger (its epoch) to a new request is refused.
        handle = client.get_workflow_handle(ids[0])
        await handle.signal(
            RESULT_SIGNAL,
            AssignmentResult(
                request_id=f"{ids[0]}:req-{after.request_seq}",
                workflow_id=ids[0],
                outcome="assigned",
                preparer=StaffRef(id="liam", name="Liam", email="l@x.example", tier="staff"),
                preparer_hours=HOURS,
                epoch=before.ledger_epoch,
            ),
        )
        await asyncio.sleep(1)
        assert (await worker.state(ids[0])).preparer == after.preparer


async def test_a_partner_pick_that_does_not_fit_leaves_no_phantom_booking(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        due = workdays_ahead(config, 3)
        # More than the firm's free hours hold: the last ones wait for a partner.
        ids = await wave(worker, "p", await worker.jobs_past_capacity(HOURS, due), due)
        states = {w: await worker.state(w) for w in ids}
        waiting = [w for w, s in states.items() if s.status is DispatchStatus.NEEDS_PARTNER_REVIEW]
        assert waiting, "the firm should have run out of bookkeeping hours"
        target = waiting[0]
        # Only the target waits: how many others do depends on the hours left today (the time
        # of day the test runs), and a freed preparer goes to the waiting request first in line.
        for other in waiting[1:]:
            await client.get_workflow_handle(other).signal(
                EngagementWorkflow.pm_updated, PmUpdate(event_key="not-needed", action="Deleted")
            )
        for other in waiting[1:]:
            await worker.wait_state(other, lambda s: s.status is DispatchStatus.CANCELLED)
        full = next(s.preparer.id for s in states.values() if s.preparer is not None)
        handle = client.get_workflow_handle(target)
        await handle.execute_update(
            EngagementWorkflow.decide,
            PartnerDecision(
                partner_id="ava", staff_id=full, channel="api", event_id=f"pick-{uuid.uuid4()}"
            ),
        )
        state = await worker.wait_state(
            target,
            lambda s: (
                any(t.kind == "partner decision" for t in s.timeline)
                and s.pending is not None
                and s.pending.purpose == "dispatch"
                and s.pending.parked
            ),
        )
        assert state.status is DispatchStatus.NEEDS_PARTNER_REVIEW
        _, entries = await worker.ledger()
        assert target not in {e.workflow_id for e in entries if e.holdings}
        # When someone's work is cancelled, the waiting engagement assigns itself once.
        freed = next(w for w, s in states.items() if s.preparer is not None)
        await client.get_workflow_handle(freed).signal(
            EngagementWorkflow.pm_updated, PmUpdate(event_key="gone", action="Deleted")
        )
        await worker.wait_state(target, lambda s: s.status is DispatchStatus.ASSIGNED, timeout=60)
        await assert_truth(worker, [w for w in ids if w != freed])


async def test_a_cancel_racing_its_request_books_nothing(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        eng = details(
            "race", service_type="monthly_bookkeeping", hours=4, due=workdays_ahead(config, 6)
        )
        handle = await worker.start(eng)
        await handle.signal(
            EngagementWorkflow.pm_updated, PmUpdate(event_key="gone", action="Deleted")
        )
        await handle.result()
        await asyncio.sleep(2)
        view, entries = await worker.ledger()
        assert handle.id not in {e.workflow_id for e in entries}
        assert handle.id not in view.live_requests and handle.id not in view.parked


async def test_an_absurd_due_date_does_not_stop_dispatching(
    client: Client, sandbox: RunningSandbox
) -> None:
    """The webhook refuses it (422); one that reaches the dispatcher anyway (a PM record, an
    operator's start) costs a decision like any other, and the next engagement is assigned."""
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        far = await worker.start(details("far", due=date(9999, 12, 30)))
        near = await worker.start(details("near", due=workdays_ahead(config, 6)))
        await worker.wait_state(far.id, settled, timeout=60)
        state = await worker.wait_state(near.id, settled, timeout=60)
        assert state.status is DispatchStatus.ASSIGNED


async def tracker_fails(
    worker: RunningWorker,
    sandbox: RunningSandbox,
    faults: list[dict[str, Any]],
    tag: str,
    sizes: tuple[int, int],
) -> tuple[list[str], list[str], int]:
    """A wave decided on live figures; then the tracker fails (``faults``) and a second wave is
    decided on the last ones. Returns both waves and the sandbox's last request before."""
    due = workdays_ahead(worker.config, 8)
    first = await wave(worker, f"{tag}1", sizes[0], due)
    since = max((int(r["seq"]) for r in sandbox.requests()), default=0)
    sandbox.faults(faults)
    await asyncio.sleep(1.5)  # the snapshot is older than its 1 s time to live
    second = await wave(worker, f"{tag}2", sizes[1], due)
    return first, second, since


async def told_back_once(sandbox: RunningSandbox, since: int) -> None:
    """The managing partner hears the tracker is back, with no work arriving, and once."""

    async def back() -> list[str] | None:
        return chat_texts(sandbox, "Time tracker back", since) or None

    told = await eventually(back, timeout=30, what="the partner told the tracker is back")
    assert len(told) == 1, told
