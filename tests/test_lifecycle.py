"""Statuses and checkpoints as plain functions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from dispatch.lifecycle import (
    CheckpointPolicy,
    CheckpointTimes,
    checkpoints,
    next_status,
    review_sequence,
)
from dispatch.models import DispatchStatus as S

POLICY = CheckpointPolicy(
    response_reminder_hours=24,
    response_escalation_hours=48,
    not_started_hours=48,
    status_check_days=3,
)
T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
DUE = date(2026, 12, 14)
DUE_AT = datetime(2026, 12, 14, 22, 0, tzinfo=UTC)


def times(**changes: object) -> CheckpointTimes:
    base = {
        "status": S.ASSIGNED,
        "round": 1,
        "assigned_at": T0,
        "responded": False,
        "work_started_at": T0,
        "due": DUE,
        "due_at": DUE_AT,
        "due_set_at": T0,
    }
    base.update(changes)
    return CheckpointTimes(**base)  # type: ignore[arg-type]


def test_pm_changes_only_move_forward_and_our_echoes_do_nothing() -> None:
    assert next_status(S.ASSIGNED, "in_progress") is S.IN_PROGRESS
    assert next_status(S.IN_REVIEW, "in_progress") is None  # never backwards
    assert next_status(S.ACCEPTED, None) is None  # "Assigned"/"Ready to start" echoes
    assert next_status(S.NEEDS_PARTNER_REVIEW, "in_progress") is None
    assert next_status(S.NEEDS_PARTNER_REVIEW, "cancelled") is S.CANCELLED
    assert next_status(S.COMPLETED, "in_progress") is None
    assert next_status(S.READY_FOR_REVIEW, "completed") is S.COMPLETED


def test_the_seed_checkpoints_and_their_moments() -> None:
    found = {c.kind: c for c in checkpoints(times(), POLICY)}
    assert found["response_reminder"].at == T0 + timedelta(hours=24)
    assert found["not_started"].at == T0 + timedelta(hours=48)
    assert found["midpoint"].at == T0 + (DUE_AT - T0) / 2
    assert found["status_check"].at == DUE_AT - timedelta(days=3)
    assert found["past_due"].at == DUE_AT
    assert not any(c.skip for c in found.values())


def test_answering_and_starting_retire_their_checkpoints() -> None:
    accepted = {c.kind for c in checkpoints(times(status=S.ACCEPTED, responded=True), POLICY)}
    assert "response_reminder" not in accepted and "not_started" in accepted
    started = {c.kind for c in checkpoints(times(status=S.IN_PROGRESS, responded=True), POLICY)}
    assert "not_started" not in started and {"midpoint", "status_check"} <= started
    in_review = {c.kind for c in checkpoints(times(status=S.IN_REVIEW), POLICY)}
    assert in_review == {"past_due"}
    assert checkpoints(times(status=S.COMPLETED), POLICY) == []


def test_a_checkpoint_already_past_when_it_appears_is_skipped_not_fired_late() -> None:
    late = T0 + timedelta(days=12)  # assigned two days before the due date
    found = {
        c.kind: c
        for c in checkpoints(times(assigned_at=late, work_started_at=late, due_set_at=late), POLICY)
    }
    assert found["status_check"].skip
    assert not found["past_due"].skip


def test_keys_follow_the_round_and_the_due_date() -> None:
    first = {c.kind: c.key for c in checkpoints(times(), POLICY)}
    again = {c.kind: c.key for c in checkpoints(times(round=2), POLICY)}
    moved = {
        c.kind: c.key
        for c in checkpoints(
            times(due=date(2026, 12, 21), due_at=DUE_AT + timedelta(days=7)), POLICY
        )
    }
    assert first["not_started"] != again["not_started"]
    assert first["past_due"] == again["past_due"]
    assert first["status_check"] != moved["status_check"]


def test_partner_review_only_watches_the_due_date() -> None:
    found = checkpoints(times(status=S.NEEDS_PARTNER_REVIEW, assigned_at=None), POLICY)
    assert [c.kind for c in found] == ["past_due"]


def test_review_sequence_reads_in_order() -> None:
    assert review_sequence("Priya Nair", "Mia Chen") == "Priya Nair prepares, then Mia Chen reviews"
    assert review_sequence(None, None) is None
