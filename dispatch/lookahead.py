"""Hold room for work the firm knows is coming: recurring engagements before they arrive.

Recurring work runs on Schedules, so the firm knows its monthly closes, quarterly payroll and
annual returns (client, service, due date, usual hours) weeks before each engagement is
created. The dispatcher books a *hold* for each one: a reservation in the ledger, under the
key ``hold:{expected key}``, on the people production would choose for it now (the client's
usual preparer first, then the rule as always). A hold counts like any reservation, so work
arriving meanwhile is placed around it: early work does not take the hours the known later
work needs, nor the prior preparer of a returning client, nor the reviews only managers can
do. When the engagement arrives, its hold is released just before it is decided
(``take_holds``), so it finds the room kept for it.

Pure functions, no Temporal, no I/O: the dispatcher calls them in its workflow task (holds
are re-planned from scratch each time, a few hundred decisions at most), the simulator calls
the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from dispatch.config import FirmConfig
from dispatch.decision import Ledger, decide
from dispatch.models import AssignmentRequest, CapacitySnapshot, Reservation, Role
from dispatch.recurrence import Recurrence

HOLD_PREFIX = "hold:"
MATCH_DAYS = 7
"""An engagement takes the hold of its client and service due within this many days of its
own due date (a PM system may move the date a little)."""


@dataclass(frozen=True)
class ExpectedWork:
    """One engagement the firm expects: from a recurring template, or a returning client."""

    key: str
    """Unique and stable, e.g. ``{template id}:{period key}``."""
    client_id: str
    service_type: str
    due: date
    estimated_hours: float | None = None
    """None: the service type's default estimate."""
    start: date | None = None
    """When the work can begin (the engagement's creation date), if known."""


def hold_id(key: str) -> str:
    return f"{HOLD_PREFIX}{key}"


def is_hold(reservation: Reservation) -> bool:
    return reservation.workflow_id.startswith(HOLD_PREFIX)


def expected_from_templates(
    config: FirmConfig, first: date, last: date, *, arrived: Iterable[str] = ()
) -> list[ExpectedWork]:
    """Every active template's occurrence due in [first, last], less the keys in
    ``arrived`` (engagements already created for them). Key: ``{template}:{period}``."""
    done = set(arrived)
    expected: list[ExpectedWork] = []
    for template in config.recurring:
        if not template.active:
            continue
        rules = Recurrence.of(template, config)
        for period in rules.periods_between(first - timedelta(days=400), last):
            occurrence = rules.occurrence(period)
            key = f"{template.id}:{period.key}"
            if not first <= occurrence.due <= last or key in done:
                continue
            expected.append(
                ExpectedWork(
                    key=key,
                    client_id=template.client,
                    service_type=template.service_type,
                    due=occurrence.due,
                    estimated_hours=template.estimated_hours,
                    start=occurrence.trigger,
                )
            )
    return expected


def release_holds(ledger: Ledger) -> list[Reservation]:
    """Take every hold out of the ledger (before they are planned again)."""
    holds = [r for r in ledger.reservations if is_hold(r)]
    for hold in holds:
        ledger.remove(hold.workflow_id, hold.role)
    return holds


def place_holds(
    expected: Sequence[ExpectedWork],
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    *,
    day_left: float = 1.0,
) -> list[Reservation]:
    """Book a hold for each expected engagement, earliest due first, on the people the rule
    would choose for it now; adds them to ``ledger`` and returns them. Work nobody has room
    for gets no hold (it would go to partner review today, and may not when it arrives)."""
    placed: list[Reservation] = []
    for item in sorted(expected, key=lambda e: (e.due, e.key)):
        service = snapshot.service_type(item.service_type)
        if service is None or item.due < snapshot.today:
            continue
        workflow_id = hold_id(item.key)
        request = AssignmentRequest(
            request_id=workflow_id,
            workflow_id=workflow_id,
            client_id=item.client_id,
            service_type=item.service_type,
            due_date=item.due,
            start_date=item.start,
            estimated_hours=item.estimated_hours or service.default_estimated_hours,
        )
        result, reservations = decide(request, snapshot, ledger, learned_history, day_left=day_left)
        if result.outcome != "assigned":
            continue
        for reservation in reservations:
            ledger.add(reservation)
            placed.append(reservation)
    return placed


def take_holds(
    ledger: Ledger, request: AssignmentRequest, expected: Sequence[ExpectedWork]
) -> ExpectedWork | None:
    """The expected work this request is (same client and service, due within
    ``MATCH_DAYS``), its holds released from ``ledger``; None if it was not expected."""
    window = timedelta(days=MATCH_DAYS)
    candidates = [
        e
        for e in expected
        if e.client_id == request.client_id
        and e.service_type == request.service_type
        and abs(e.due - request.due_date) <= window
    ]
    if not candidates:
        return None
    item = min(candidates, key=lambda e: (abs(e.due - request.due_date), e.key))
    for role in Role:
        ledger.remove(hold_id(item.key), role)
    return item


__all__ = [
    "HOLD_PREFIX",
    "ExpectedWork",
    "expected_from_templates",
    "hold_id",
    "is_hold",
    "place_holds",
    "release_holds",
    "take_holds",
]
