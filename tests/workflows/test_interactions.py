"""Slack buttons on the dev server: accept, reassign, refusals, duplicates, replays, partners.

Clicks are real signed Slack payloads posted to the webhook server's ``/slack/events``; Bolt
verifies them and the engagement decides through its Updates.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from temporalio.client import Client

from dispatch.config import FirmConfig
from dispatch.models import DispatchStatus, EngagementState
from tests.harness import RunningWorker, details, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.slack_driver import Click, buttons, click, message_with, replies
from tests.workflows.conftest import relay_firm
from tests.workflows.test_webhook_server import http_for

SECRET = os.environ["SLACK_SIGNING_SECRET"]


@pytest_asyncio.fixture(loop_scope="session")
async def relay(client: Client, sandbox: RunningSandbox) -> AsyncIterator[RunningWorker]:
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as worker:
        yield worker


def slack_id(config: FirmConfig, staff_id: str) -> str:
    found = config.staff_by_id(staff_id).slack_id
    assert found is not None
    return found


def announced(state: EngagementState) -> bool:
    return (
        state.status is DispatchStatus.ASSIGNED
        and not any(e.state == "pending" for e in state.side_effects)
        and any(e.kind == "crm_log" for e in state.side_effects)
    )


async def post(worker: RunningWorker, c: Click) -> httpx.Response:
    async with http_for(worker) as http:
        return await http.post("/slack/events", content=c.body, headers=c.headers)


async def start_assigned(worker: RunningWorker, name: str, **kwargs: object) -> EngagementState:
    handle = await worker.start(details(name, due=workdays_ahead(worker.config, 8), **kwargs))  # type: ignore[arg-type]
    return await worker.wait_state(handle.id, announced)


async def test_assignee_accepts_and_the_message_shows_it(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state = await start_assigned(relay, "accept")
    assert state.preparer is not None
    preparer = slack_id(relay.config, state.preparer.id)
    message = message_with(sandbox, preparer, "assignment_accept", state.workflow_id)
    accepted = click(sandbox, message, "assignment_accept", preparer, signing_secret=SECRET)
    response = await post(relay, accepted)
    assert response.status_code == 200
    after = await relay.state(state.workflow_id)
    assert after.status is DispatchStatus.ACCEPTED and after.accepted_at is not None
    [reply] = replies(sandbox, accepted)
    assert reply["replace_original"] is True and "Accepted" in reply["text"]
    # The original DM lost its buttons and says what happened.
    updated = next(
        m
        for m in sandbox.ctx.stores["slack"].messages[message["channel"]]
        if m["ts"] == message["ts"]
    )
    assert all(b["type"] != "actions" for b in updated["blocks"])

    # The same payload delivered again (Slack retries) changes nothing.
    again = await post(relay, accepted)
    assert again.status_code == 200
    final = await relay.state(state.workflow_id)
    assert [t.kind for t in final.timeline].count("Accepted") == 1


async def test_someone_else_clicking_is_refused_and_nothing_changes(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state = await start_assigned(relay, "intruder")
    assert state.preparer is not None
    preparer = slack_id(relay.config, state.preparer.id)
    message = message_with(sandbox, preparer, "assignment_accept", state.workflow_id)
    other = next(
        s
        for s in relay.config.staff
        if s.id not in (state.preparer.id, getattr(state.reviewer, "id", None))
    )
    intruder = click(
        sandbox,
        message,
        "assignment_reassign",
        slack_id(relay.config, other.id),
        signing_secret=SECRET,
    )
    response = await post(relay, intruder)
    assert response.status_code == 200
    [reply] = replies(sandbox, intruder)
    assert reply["response_type"] == "ephemeral"
    assert f"Only {state.preparer.name}" in reply["text"]
    after = await relay.state(state.workflow_id)
    assert after.status is DispatchStatus.ASSIGNED
    assert after.preparer == state.preparer and after.declined_by == []
    assert after.timeline == state.timeline


async def test_two_declines_go_to_partner_review(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state = await start_assigned(relay, "declines", service_type="monthly_bookkeeping")
    first = state.preparer
    assert first is not None
    c = click(
        sandbox,
        message_with(
            sandbox, slack_id(relay.config, first.id), "assignment_reassign", state.workflow_id
        ),
        "assignment_reassign",
        slack_id(relay.config, first.id),
        signing_secret=SECRET,
    )
    assert (await post(relay, c)).status_code == 200
    # Delivered twice: still one decline.
    assert (await post(relay, c)).status_code == 200
    second_state = await relay.wait_state(
        state.workflow_id,
        lambda s: s.preparer is not None and s.preparer.id != first.id and announced(s),
    )
    assert second_state.declined_by == [first.id]
    second = second_state.preparer
    assert second is not None
    c2 = click(
        sandbox,
        message_with(
            sandbox, slack_id(relay.config, second.id), "assignment_reassign", state.workflow_id
        ),
        "assignment_reassign",
        slack_id(relay.config, second.id),
        signing_secret=SECRET,
    )
    assert (await post(relay, c2)).status_code == 200
    waiting = await relay.wait_state(
        state.workflow_id,
        lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and any(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects)
        ),
    )
    assert waiting.declined_by == [first.id, second.id]
    assert "declined by" in (waiting.needs_partner_review_reason or "")
    bookings = await relay.bookings()
    assert not any(
        r.workflow_id == state.workflow_id for s in bookings.staff for r in s.reservations
    )
    # The first person's calendar block was removed when they declined.
    removed = [r for r in sandbox.requests(prefix="/google/calendar/v3", method="DELETE")]
    assert len(removed) >= 2

    # A partner decides from the DM's buttons; a non-partner cannot.
    partner = slack_id(relay.config, relay.config.escalation.managing_partner)
    dm = message_with(sandbox, partner, "partner_", state.workflow_id)
    choice = next(b for b in dm["blocks"][-1]["elements"])
    staff_slack = slack_id(relay.config, "noah")
    not_partner = click(sandbox, dm, choice["action_id"], staff_slack, signing_secret=SECRET)
    assert (await post(relay, not_partner)).status_code == 200
    assert "partners" in replies(sandbox, not_partner)[0]["text"]
    decided = click(sandbox, dm, choice["action_id"], partner, signing_secret=SECRET)
    assert (await post(relay, decided)).status_code == 200
    done = await relay.wait_state(state.workflow_id, announced)
    assert done.preparer is not None
    assert done.preparer.id == choice["value"].split("|")[1]
    assert any(d.outcome == "forced" for d in done.decisions)


async def test_a_partner_moves_the_due_date_from_slack(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    """The partner's review message carries a date picker: a new date is the engagement's
    ``move_due`` Update, refused for anyone but a partner and for a date nobody can use; a
    good one makes the dispatcher look again, and the work fits by then."""
    due = workdays_ahead(relay.config, 4)
    handle = await relay.start(details("slackdue", service_type="audit_prep", hours=50, due=due))
    await relay.wait_state(
        handle.id,
        lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and any(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects)
        ),
    )
    partner = slack_id(relay.config, relay.config.escalation.managing_partner)
    dm = message_with(sandbox, partner, "partner_due", handle.id)
    picker = next(b for b in buttons(dm) if b["action_id"] == "partner_due")
    assert picker["type"] == "datepicker" and picker["initial_date"] == due.isoformat()
    later = workdays_ahead(relay.config, 30).isoformat()

    staff = click(
        sandbox,
        dm,
        "partner_due",
        slack_id(relay.config, "noah"),
        signing_secret=SECRET,
        selected_date=later,
    )
    assert (await post(relay, staff)).status_code == 200
    assert "partners" in replies(sandbox, staff)[0]["text"]
    past = click(
        sandbox, dm, "partner_due", partner, signing_secret=SECRET, selected_date="2020-02-03"
    )
    assert (await post(relay, past)).status_code == 200
    assert "in the past" in replies(sandbox, past)[0]["text"]
    damaged = click(
        sandbox, dm, "partner_due", partner, signing_secret=SECRET, selected_date="2027-02-30"
    )
    assert (await post(relay, damaged)).status_code == 200
    assert "damaged" in replies(sandbox, damaged)[0]["text"]
    assert (await relay.state(handle.id)).due_date == due

    # One day later is still too soon for 50 hours: the partner hears so in a fresh message
    # (the one they answered lost its buttons), with the new date in its picker.
    sooner = workdays_ahead(relay.config, 5).isoformat()
    first = click(sandbox, dm, "partner_due", partner, signing_secret=SECRET, selected_date=sooner)
    assert (await post(relay, first)).status_code == 200
    [*_, reply] = replies(sandbox, first)
    assert "Moving the due date" in reply["text"]
    still = await relay.wait_state(
        handle.id,
        lambda s: (
            s.due_date is not None
            and s.due_date.isoformat() == sooner
            and s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and sum(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects) == 2
        ),
    )
    assert not still.tell_partner_again
    again = message_with(sandbox, partner, "partner_due", handle.id)
    assert again["ts"] != dm["ts"]
    picker = next(b for b in buttons(again) if b["action_id"] == "partner_due")
    assert picker["initial_date"] == sooner

    moved = click(
        sandbox, again, "partner_due", partner, signing_secret=SECRET, selected_date=later
    )
    assert (await post(relay, moved)).status_code == 200
    assert (await post(relay, moved)).status_code == 200  # redelivered: the same Update
    [*_, reply] = replies(sandbox, moved)
    assert "Moving the due date" in reply["text"]
    done = await relay.wait_state(handle.id, announced)
    assert done.due_date is not None and done.due_date.isoformat() == later and not done.forced
    assert [t.kind for t in done.timeline].count("due date moved") == 2


async def test_replayed_click_older_than_five_minutes_is_refused(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state = await start_assigned(relay, "replay")
    assert state.preparer is not None
    preparer = slack_id(relay.config, state.preparer.id)
    message = message_with(sandbox, preparer, "assignment_accept", state.workflow_id)
    stale = click(
        sandbox,
        message,
        "assignment_accept",
        preparer,
        signing_secret=SECRET,
        timestamp=int(time.time()) - 301,
    )
    assert (await post(relay, stale)).status_code == 401
    forged = click(
        sandbox, message, "assignment_accept", preparer, signing_secret="not-the-signing-secret"
    )
    assert (await post(relay, forged)).status_code == 401
    assert (await relay.state(state.workflow_id)).status is DispatchStatus.ASSIGNED


async def test_click_on_a_closed_engagement_is_explained(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state = await start_assigned(relay, "closed")
    assert state.preparer is not None
    preparer = slack_id(relay.config, state.preparer.id)
    message = message_with(sandbox, preparer, "assignment_accept", state.workflow_id)
    await relay.client.get_workflow_handle(state.workflow_id).terminate("gone")
    late = click(sandbox, message, "assignment_accept", preparer, signing_secret=SECRET)
    assert (await post(relay, late)).status_code == 200
    [reply] = replies(sandbox, late)
    assert reply["response_type"] == "ephemeral"
    assert "closed" in reply["text"]
