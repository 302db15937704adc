"""An engagement from start to assignment, on the dev server, with every side effect real."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment

from activities.firm import FirmActivities
from activities.harvest import HarvestActivities
from activities.karbon import KarbonClient
from dispatch.capacity import WorkCalendar, available_hours
from dispatch.config import HarvestConnector, KarbonConnector
from dispatch.decision import person_of
from dispatch.models import DispatchStatus, PmUpdate, Role, SnapshotInput
from tests.harness import (
    chat_posts,
    details,
    eventually,
    karbon_work_item,
    memo_fields_written,
    patches_in,
    running_worker,
    workdays_ahead,
)
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from workflows.engagement import EngagementWorkflow
from workflows.engagement.base import ENGAGEMENT_PATCHES_2


async def test_assignment_fires_every_side_effect_once(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        eng = details(
            "side-effects", due=workdays_ahead(config, 8), client_email="owner@client.example"
        )
        handle = await worker.start(eng)
        state = await worker.wait_state(
            handle.id,
            lambda s: (
                s.status is DispatchStatus.ASSIGNED
                and all(e.state != "pending" for e in s.side_effects)
            ),
        )

        assert state.preparer is not None and state.reviewer is not None
        assert state.preparer.id != state.reviewer.id
        assert [d.role for d in state.decisions] == [Role.PREPARER, Role.REVIEWER]
        assert all(len(d.candidates) == len(config.staff) for d in state.decisions)
        effects = {e.kind: e.state for e in state.side_effects}
        assert effects == {
            "pm_write_back": "skipped",  # a relay PM has no write API: the DM says so
            "chat_preparer": "done",
            "chat_reviewer": "done",
            "calendar_preparer": "done",
            "calendar_reviewer": "done",
            "client_email": "done",
            "crm_log": "done",
        }
        assert state.pm_manual_update_required

        posts = chat_posts(sandbox)
        assert len(posts) == 2
        buttons = [
            el
            for post in posts
            for block in post["blocks"]
            if block["type"] == "actions"
            for el in block["elements"]
        ]
        assert {b["action_id"] for b in buttons} == {"assignment_accept", "assignment_reassign"}
        assert all(b["value"] == handle.id for b in buttons)
        assert len(sandbox.requests(prefix="/google/calendar/v3", method="POST")) == 2
        mails = sandbox.requests(prefix="/sendgrid/v3/mail/send")
        assert len(mails) == 1
        mail = json.loads(str(mails[0]["body"]))
        assert mail["personalizations"][0]["to"][0]["email"] == "owner@client.example"
        assert state.preparer.email in json.dumps(mail)
        assert len(sandbox.requests(prefix="/crm/records", method="POST")) == 1

        # The partner's questions are answerable from visibility.
        async def listed() -> bool | None:
            found = [
                w
                async for w in client.list_workflows(
                    f'DispatchStatus="Assigned" AND WorkflowId="{handle.id}"'
                )
            ]
            return True if found else None

        await eventually(listed, what="visibility to show the assignment")


async def test_starting_twice_is_one_engagement(client: Client, sandbox: RunningSandbox) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        eng = details("twice", due=workdays_ahead(config, 8))
        first, second = await asyncio.gather(worker.start(eng), worker.start(eng))
        assert first.id == second.id
        await worker.wait_state(
            first.id,
            lambda s: (
                s.status is DispatchStatus.ASSIGNED
                and all(e.state != "pending" for e in s.side_effects)
            ),
        )
        third = await worker.start(eng)
        assert third.result_run_id == first.result_run_id
        await asyncio.sleep(0.5)
        assert len(chat_posts(sandbox)) == 2  # preparer and reviewer, once each
        bookings = await worker.bookings()
        mine = [r for s in bookings.staff for r in s.reservations if r.workflow_id == first.id]
        assert sorted(r.role for r in mine) == [Role.PREPARER, Role.REVIEWER]


async def test_karbon_engagement_is_loaded_and_written_back(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = sandbox.config
    pm = config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    karbon = KarbonClient(pm)
    try:
        key = await karbon_work_item(
            config, "2026 1120-S - Bayside Dental", "cl-bayside-dental", "Tax Return - S Corp", 15
        )
        async with running_worker(client, config) as worker:
            handle = await worker.start(source="karbon", external_id=key)
            state = await worker.wait_state(
                handle.id,
                lambda s: (
                    s.status is DispatchStatus.ASSIGNED
                    and all(e.state != "pending" for e in s.side_effects)
                ),
            )
            # Priya prepared Bayside Dental's last return and has the S-Corp skill.
            assert state.preparer is not None and state.preparer.id == "priya"
            assert "prepared this client's last engagement" in state.decisions[0].reason
            assert state.service_type == "s_corp_return"
            written = await karbon.get_work_item(key)
            assert written is not None
            assert written["AssigneeEmailAddress"] == "priya@harborfinch.example"
            assert written["PrimaryStatus"] == "ReadyToStart"
            assert written["SecondaryStatus"] == "Assigned"
            assert {e.kind: e.state for e in state.side_effects}["pm_write_back"] == "done"
            # The read from Karbon is a local activity: no activity task on the queue for it.
            history = await handle.fetch_history()
            scheduled = [
                e.activity_task_scheduled_event_attributes.activity_type.name
                for e in history.events
                if e.HasField("activity_task_scheduled_event_attributes")
            ]
            assert "pm_write_back" in scheduled and "pm_load_engagement" not in scheduled
            # One patch marker and one TemporalChangeVersion upsert for the engagement's seven
            # patches (each marker and upsert is a history event, the upsert a visibility write).
            assert patches_in(history) == {ENGAGEMENT_PATCHES_2}
            upserts = [
                e.upsert_workflow_search_attributes_event_attributes.search_attributes
                for e in history.events
            ]
            assert sum("TemporalChangeVersion" in a.indexed_fields for a in upserts) == 1

            # Karbon's Updated echo of our own write-back: read again, nothing changed, so
            # nothing is upserted again (before, three search attributes and seven memo fields
            # were written again with the same values).
            await handle.signal(EngagementWorkflow.pm_updated, PmUpdate(event_key=f"{key}:echo"))
            after = await eventually(
                lambda: _echo_handled(handle), what="the echo read and its workflow task"
            )
            assert not [e for e in after if _is_upsert(e)], [e.event_type for e in after]

            # What does not change is written once, and what the list shows is whole.
            fields = memo_fields_written(await handle.fetch_history())
            assert [fields[k] for k in ("client_id", "service_type", "due_date")] == [1, 1, 1]
            assert fields["preparer_id"] == 2  # none yet, then Priya
            memo = await (await handle.describe()).memo()
            assert memo["client_id"] == "cl-bayside-dental"
            assert memo["service_type"] == "s_corp_return"
            assert memo["preparer_id"] == "priya"
            assert state.due_date is not None and memo["due_date"] == state.due_date.isoformat()
            assert memo["why"] == state.decisions[0].reason
    finally:
        await karbon.aclose()


def _is_upsert(event: HistoryEvent) -> bool:
    return event.HasField("workflow_properties_modified_event_attributes") or event.HasField(
        "upsert_workflow_search_attributes_event_attributes"
    )


async def _echo_handled(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent] | None:
    """The events after the ``pm_updated`` signal, once the read it caused is recorded (its
    local activity's marker comes with the workflow task that handled the signal)."""
    events = list((await handle.fetch_history()).events)
    signalled = [
        i
        for i, e in enumerate(events)
        if e.workflow_execution_signaled_event_attributes.signal_name == "pm_updated"
    ]
    if not signalled:
        return None
    after = events[signalled[0] + 1 :]
    read = any(
        e.marker_recorded_event_attributes.marker_name == "core_local_activity" for e in after
    )
    return after if read else None


async def test_no_room_goes_to_partner_then_assigns_itself_when_hours_free_up(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    due = workdays_ahead(config, 4)
    tracker = config.connectors.time_tracker
    assert isinstance(tracker, HarvestConnector)
    snap = await ActivityEnvironment().run(
        FirmActivities(config, HarvestActivities(tracker)).capacity_snapshot,
        SnapshotInput(firm_id=config.firm.id),
    )
    calendar = WorkCalendar.of(snap.workdays, snap.holidays)
    # Only Lucas and Omar prepare audits: size three jobs so each of them can take one.
    room = min(
        available_hours(person_of(c), [], due, snap.today, calendar)
        for c in snap.staff
        if c.member.id in ("lucas", "omar")
    )
    hours = round(room * 0.6, 1)
    assert hours > 0

    async with running_worker(client, config) as worker:
        first = await worker.start(
            details("audit-1", service_type="audit_prep", hours=hours, due=due)
        )
        second = await worker.start(
            details("audit-2", service_type="audit_prep", hours=hours, due=due)
        )
        for handle in (first, second):
            await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.ASSIGNED)
        third = await worker.start(
            details("audit-3", service_type="audit_prep", hours=hours, due=due)
        )
        waiting = await worker.wait_state(
            third.id,
            lambda s: (
                s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
                and any(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects)
            ),
        )
        assert waiting.preparer is None
        assert "No preparer fits" in (waiting.needs_partner_review_reason or "")
        partner_dm = chat_posts(sandbox)[-1]
        assert "audit" in json.dumps(partner_dm).lower()
        bookings = await worker.bookings()
        assert third.id in bookings.parked

        # The first engagement is cancelled in the PM: its hours go back, the third takes them.
        freed = (await worker.state(first.id)).preparer
        await first.signal(
            EngagementWorkflow.pm_updated, PmUpdate(event_key="cancel-audit-1", action="Deleted")
        )
        done = await worker.wait_state(third.id, lambda s: s.status is DispatchStatus.ASSIGNED)
        assert freed is not None and done.preparer is not None
        assert done.preparer.id == freed.id
        assert any(t.kind == "capacity freed" for t in done.timeline)
        assert (await worker.state(first.id)).status is DispatchStatus.CANCELLED
