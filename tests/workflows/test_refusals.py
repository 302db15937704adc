"""Refusals explain without internals: what Temporal says is never shown word for word unless
it is one of the engagement's own refusals, written for the person who clicked."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from app.responses import (
    NOT_RECORDED,
    Refused,
    UnknownEngagement,
    deliver_decision,
    deliver_due_move,
    deliver_link,
    deliver_response,
)
from dispatch.links import LinkClaims
from dispatch.models import AssignmentResponse, DueDateMove, PartnerDecision
from tests.harness import RunningWorker, details, workdays_ahead
from tests.workflows.test_webhook_server import relay as relay


def answer(staff_id: str, event_id: str) -> AssignmentResponse:
    return AssignmentResponse(action="accept", staff_id=staff_id, channel="api", event_id=event_id)


async def test_a_missing_update_handler_is_a_plain_sentence(relay: RunningWorker) -> None:
    """The dispatcher has no ``respond`` Update: Temporal's "Update handler for 'respond'
    expected but not found" must not reach the person."""
    with pytest.raises(Refused) as caught:
        await deliver_response(relay.client, relay.dispatcher.id, answer("ava", "api:r-1"))
    assert str(caught.value) == NOT_RECORDED
    with pytest.raises(Refused) as decided:
        await deliver_decision(
            relay.client,
            relay.dispatcher.id,
            PartnerDecision(partner_id="ava", staff_id="ben", channel="api", event_id="api:d-1"),
        )
    assert "handler" not in str(decided.value).lower()
    claims = LinkClaims(
        workflow_id=relay.dispatcher.id,
        staff_id="ava",
        action="accept",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        nonce="nonce-0001",
    )
    outcome = await deliver_link(relay.client, claims)
    assert outcome.result == "refused" and "handler" not in outcome.message.lower()


async def test_the_engagements_own_refusals_pass_through(relay: RunningWorker) -> None:
    handle = await relay.start(details("refusal", due=workdays_ahead(relay.config, 8)))
    state = await relay.wait_state(handle.id, lambda s: s.preparer is not None)
    assert state.preparer is not None
    other = next(s.id for s in relay.config.staff if s.id != state.preparer.id)
    if state.reviewer is not None and other == state.reviewer.id:
        other = next(
            s.id for s in relay.config.staff if s.id not in (state.preparer.id, state.reviewer.id)
        )
    with pytest.raises(Refused) as caught:
        await deliver_response(relay.client, handle.id, answer(other, "api:r-2"))
    assert f"Only {state.preparer.name}" in str(caught.value)
    with pytest.raises(UnknownEngagement):
        await deliver_response(relay.client, "engagement-relay-nope", answer(other, "api:r-3"))


async def test_a_due_date_move_is_checked_by_the_engagement_itself(relay: RunningWorker) -> None:
    """The surfaces check dates first, but an API caller reaches the Update directly: the
    engagement refuses a non-partner, a date nobody could meet or one in 9999, and a date
    before the work starts, and records nothing for any of them."""
    start = workdays_ahead(relay.config, 3)
    handle = await relay.start(
        details("movedue", due=workdays_ahead(relay.config, 8)).model_copy(
            update={"start_date": start}
        )
    )
    state = await relay.wait_state(handle.id, lambda s: s.preparer is not None)

    def move(partner: str, due: date, event: str) -> DueDateMove:
        return DueDateMove(partner_id=partner, due_date=due, channel="api", event_id=event)

    later = workdays_ahead(relay.config, 12)
    for made, why in (
        (move("noah", later, "api:m-1"), "deciding partners"),
        (move("ava", date(2020, 1, 31), "api:m-2"), "in the past"),
        (move("ava", date(9999, 12, 31), "api:m-3"), "years ahead"),
        (move("ava", start - timedelta(days=1), "api:m-4"), "before the start date"),
    ):
        with pytest.raises(Refused) as caught:
            await deliver_due_move(relay.client, handle.id, made)
        assert why in str(caught.value), (made, caught.value)
    after = await relay.state(handle.id)
    assert after.due_date == state.due_date and after.seen_events == state.seen_events
    assert state.due_date is not None
    same = await deliver_due_move(relay.client, handle.id, move("ava", state.due_date, "api:m-5"))
    assert not same.changed and "already due" in same.message
    moved = await deliver_due_move(relay.client, handle.id, move("ava", later, "api:m-6"))
    assert moved.changed
    done = await relay.wait_state(handle.id, lambda s: s.due_date == later)
    assert done.preparer is not None and done.preparer == state.preparer
