"""An engagement's life after dispatch, as plain functions: statuses and checkpoints.

The workflow asks these "what should happen next?" and acts; tests ask them directly.

Checkpoints (the seed's table, plus answering the assignment):

- ``response_reminder``: assigned + ``response_reminder_hours`` without an answer -> the
  assignee.
- ``no_response``: assigned + ``response_escalation_hours`` without an answer -> their manager.
- ``not_started``: assigned + ``not_started_hours`` (48 h), not started -> the preparer's
  manager.
- ``midpoint``: halfway between start and due date -> the preparer, with hours logged so far.
- ``status_check``: ``status_check_days_before_due`` days before the due date -> the preparer.
- ``past_due``: the due date (end of its working day), not done -> the managing partner.

Each fires once: its key names the assignment round or the due date it belongs to, so a new
assignee gets fresh response checkpoints and a moved due date gets fresh date checkpoints.
A checkpoint whose moment had already passed when it came into being (a job assigned two days
before its due date has no "three days before" check) is skipped, not fired late.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from dispatch.models import DispatchStatus, WorkState

CheckpointKind = Literal[
    "response_reminder", "no_response", "not_started", "midpoint", "status_check", "past_due"
]

_ORDER = [
    DispatchStatus.RECEIVED,
    DispatchStatus.ASSIGNED,
    DispatchStatus.ACCEPTED,
    DispatchStatus.IN_PROGRESS,
    DispatchStatus.READY_FOR_REVIEW,
    DispatchStatus.IN_REVIEW,
    DispatchStatus.COMPLETED,
]

_FROM_WORK_STATE: dict[WorkState, DispatchStatus] = {
    "in_progress": DispatchStatus.IN_PROGRESS,
    "ready_for_review": DispatchStatus.READY_FOR_REVIEW,
    "in_review": DispatchStatus.IN_REVIEW,
    "completed": DispatchStatus.COMPLETED,
    "cancelled": DispatchStatus.CANCELLED,
}


def next_status(current: DispatchStatus, work_state: WorkState | None) -> DispatchStatus | None:
    """The status a PM change moves us to, or None when it changes nothing.

    Only forward moves count. Our own write-backs ("Assigned", "Ready to start") echo back from
    the PM system as changes; they map to no work state and so can never loop.
    Cancellation and completion are accepted from any open status, partner review included.
    """
    if work_state is None or current.is_closed:
        return None
    target = _FROM_WORK_STATE[work_state]
    if target in (DispatchStatus.CANCELLED, DispatchStatus.COMPLETED):
        return target
    if current in (DispatchStatus.NEEDS_PARTNER_REVIEW, DispatchStatus.RECEIVED):
        return None
    return target if _ORDER.index(target) > _ORDER.index(current) else None


@dataclass(frozen=True)
class CheckpointTimes:
    """The moments the checkpoints hang on (all UTC)."""

    status: DispatchStatus
    round: int
    """The assignment round (a reassignment starts a new one)."""
    assigned_at: datetime | None
    """When the current preparer was assigned; None while nobody is."""
    responded: bool
    """The preparer answered Accept."""
    work_started_at: datetime
    """Start of the job window: the start date or the assignment, whichever is later."""
    due: date
    due_at: datetime
    due_set_at: datetime
    """When the current due date came into being (received, or moved by the PM system)."""


@dataclass(frozen=True)
class Checkpoint:
    kind: CheckpointKind
    key: str
    at: datetime
    skip: bool
    """Its moment had passed before it existed: record it as skipped, tell nobody."""


@dataclass(frozen=True)
class CheckpointPolicy:
    response_reminder_hours: float
    response_escalation_hours: float
    not_started_hours: float
    status_check_days: int


_NOT_STARTED = (DispatchStatus.ASSIGNED, DispatchStatus.ACCEPTED)
_WORKING = (DispatchStatus.ASSIGNED, DispatchStatus.ACCEPTED, DispatchStatus.IN_PROGRESS)


def checkpoints(times: CheckpointTimes, policy: CheckpointPolicy) -> list[Checkpoint]:
    """Every checkpoint that applies now, in time order (fired ones are the caller's to drop)."""
    found: list[Checkpoint] = []
    if times.status.is_closed:
        return found

    def add(kind: CheckpointKind, key: str, at: datetime, since: datetime) -> None:
        found.append(Checkpoint(kind, key, at, skip=at < since))

    assigned = times.assigned_at
    if assigned is not None:
        r = times.round
        if times.status is DispatchStatus.ASSIGNED and not times.responded:
            add(
                "response_reminder",
                f"response_reminder:{r}",
                assigned + timedelta(hours=policy.response_reminder_hours),
                assigned,
            )
            add(
                "no_response",
                f"no_response:{r}",
                assigned + timedelta(hours=policy.response_escalation_hours),
                assigned,
            )
        if times.status in _NOT_STARTED:
            add(
                "not_started",
                f"not_started:{r}",
                assigned + timedelta(hours=policy.not_started_hours),
                assigned,
            )
        if times.status in _WORKING:
            start = max(times.work_started_at, assigned)
            if times.due_at > start:
                add(
                    "midpoint",
                    f"midpoint:{times.due.isoformat()}:{r}",
                    start + (times.due_at - start) / 2,
                    max(assigned, times.due_set_at),
                )
            add(
                "status_check",
                f"status_check:{times.due.isoformat()}",
                times.due_at - timedelta(days=policy.status_check_days),
                max(assigned, times.due_set_at),
            )
    add("past_due", f"past_due:{times.due.isoformat()}", times.due_at, times.due_set_at)
    found.sort(key=lambda c: c.at)
    return found


def review_sequence(preparer: str | None, reviewer: str | None) -> str | None:
    """How the notifications and the state describe who does what, in order."""
    if preparer is None:
        return None
    if reviewer is None:
        return f"{preparer} prepares; no separate review for this service"
    return f"{preparer} prepares, then {reviewer} reviews"
