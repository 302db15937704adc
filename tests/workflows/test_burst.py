"""Invariant 1 under a burst: 200 engagements posted at once to a small firm.

Nobody ends up booked past capacity, every engagement is either assigned or waiting for a
partner, and no side effect happens twice.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

from temporalio.client import Client

from dispatch.capacity import Booking, is_overbooked
from dispatch.config import FirmConfig
from dispatch.decision import calendar_of, person_of
from dispatch.models import DispatchStatus, EngagementState
from tests.harness import eventually, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from tests.workflows.test_webhook_server import http_for, post_signed, relay_event

BURST = 200
SMALL_FIRM = {"ava", "mia", "priya", "grace", "noah", "zoe"}


def small_firm(config: FirmConfig) -> FirmConfig:
    staff = [s.model_copy(update={"manager": None}) for s in config.staff if s.id in SMALL_FIRM]
    escalation = config.escalation.model_copy(update={"partners": [], "team_managers": {}})
    return config.model_copy(update={"staff": staff, "escalation": escalation, "clients": []})


def settled(state: EngagementState) -> bool:
    if any(e.state == "pending" for e in state.side_effects):
        return False
    if state.status is DispatchStatus.ASSIGNED:
        return any(e.kind == "crm_log" for e in state.side_effects)
    if state.status is DispatchStatus.NEEDS_PARTNER_REVIEW:
        return any(e.kind == "chat_partner" for e in state.side_effects)
    return False


async def test_burst_never_overbooks_and_duplicates_nothing(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(small_firm(sandbox.config))
    rng = random.Random(7)
    events = []
    for n in range(BURST):
        service = rng.choice(["individual_tax", "individual_tax", "s_corp_return"])
        events.append(
            relay_event(
                f"B{n:03d}",
                workdays_ahead(config, rng.randint(3, 15)),
                service_type=service,
                estimated_hours=rng.choice([2, 3, 4, 6, 8, 12]),
            )
        )
    async with running_worker(client, config) as worker, http_for(worker) as http:
        responses = await asyncio.gather(*(post_signed(http, e) for e in events))
        assert Counter(r.status_code for r in responses) == {202: BURST}
        ids = [r.json()["workflow_id"] for r in responses]

        async def all_settled() -> list[EngagementState] | None:
            # A query can time out while a busy worker catches up: that is "not yet".
            answers = await asyncio.gather(*(worker.state(i) for i in ids), return_exceptions=True)
            states = [a for a in answers if isinstance(a, EngagementState)]
            return states if len(states) == len(ids) and all(settled(s) for s in states) else None

        states = await eventually(
            all_settled,
            timeout=240,
            interval=1.0,
            what="every engagement assigned or in partner review",
        )
        bookings = await worker.bookings()
        snapshot = await worker.snapshot()
    assert snapshot is not None

    assigned = [s for s in states if s.status is DispatchStatus.ASSIGNED]
    waiting = [s for s in states if s.status is DispatchStatus.NEEDS_PARTNER_REVIEW]
    assert len(assigned) + len(waiting) == BURST
    assert assigned and waiting, "the burst should overflow a six-person firm"

    # Invariant 1: per person, everything reserved fits the capacity before each due date.
    calendar = calendar_of(snapshot)
    capacity = {c.member.id: c for c in snapshot.staff}
    for staff in bookings.staff:
        mine = [Booking(r.hours, r.due) for r in staff.reservations]
        assert not is_overbooked(
            person_of(capacity[staff.staff_id]), mine, snapshot.today, calendar
        ), f"{staff.staff_id} is overbooked"
    reserved = Counter(r.workflow_id for s in bookings.staff for r in s.reservations)
    for state in assigned:
        roles = 2 if state.reviewer else 1
        assert reserved[state.workflow_id] == roles
        assert state.preparer is not None and state.preparer.id != getattr(
            state.reviewer, "id", None
        )
    for state in waiting:
        assert reserved[state.workflow_id] == 0
        assert state.workflow_id in bookings.parked

    # No duplicate side effects: one message per role, one calendar block per role, one email.
    posts = [
        json.loads(str(r["body"]))
        for r in sandbox.requests(prefix="/slack/api/chat.postMessage")
        if r["status"] == 200
    ]
    per_engagement = Counter(
        (
            p["metadata"]["event_payload"]["workflow_id"],
            p["metadata"]["event_type"],
            p["metadata"]["event_payload"].get("role"),
        )
        for p in posts
    )
    assert all(n == 1 for n in per_engagement.values()), per_engagement.most_common(3)
    expected_posts = sum(2 if s.reviewer else 1 for s in assigned) + len(waiting)
    assert len(posts) == expected_posts
    events_made = sandbox.requests(prefix="/google/calendar/v3", method="POST")
    assert len(events_made) == sum(2 if s.reviewer else 1 for s in assigned)
    assert len(sandbox.requests(prefix="/sendgrid/v3/mail/send")) == len(assigned)
