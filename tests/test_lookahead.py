"""Holds for known recurring work: placed like decisions, taken back when the work arrives."""

from __future__ import annotations

from datetime import date, timedelta

from dispatch.decision import Ledger, decide
from dispatch.lookahead import (
    ExpectedWork,
    expected_from_templates,
    hold_id,
    is_hold,
    place_holds,
    release_holds,
    take_holds,
)
from dispatch.models import Role
from tests.factories import MONDAY, demo_config, request, snapshot

FRIDAY = MONDAY + timedelta(days=4)


def test_the_firms_schedules_say_what_is_coming_and_when() -> None:
    config = demo_config()
    expected = expected_from_templates(config, date(2027, 1, 1), date(2027, 3, 31))
    closes = [e for e in expected if e.service_type == "monthly_bookkeeping"]
    # Greenleaf's close of each month is due on the 10th of the next (rolled to a weekday).
    assert [e.due for e in closes] == [date(2027, 1, 8), date(2027, 2, 10), date(2027, 3, 10)]
    assert {e.client_id for e in closes} == {"cl-greenleaf"}
    assert all(e.start is not None and e.start < e.due for e in closes)
    # An engagement already created for a period is not expected again.
    arrived = expected_from_templates(
        config, date(2027, 1, 1), date(2027, 3, 31), arrived=[closes[0].key]
    )
    assert closes[0].key not in {e.key for e in arrived}


def test_a_hold_keeps_room_for_the_work_it_was_placed_for() -> None:
    snap = snapshot()
    ledger = Ledger()
    close = ExpectedWork(
        key="greenleaf-close:2026-12",
        client_id="cl-greenleaf",
        service_type="monthly_bookkeeping",
        due=FRIDAY,
        estimated_hours=30,
    )
    holds = place_holds([close], snap, ledger, {})
    assert [h.workflow_id for h in holds] == [hold_id(close.key)]
    assert all(is_hold(h) for h in holds)
    holder = holds[0].staff_id
    # Other bookkeeping arriving first goes around the hold...
    other, _ = decide(
        request(7, service_type="monthly_bookkeeping", hours=30, due=FRIDAY), snap, ledger, {}
    )
    assert other.preparer is None or other.preparer.id != holder
    # ...and the close itself, when its engagement arrives, takes the hold back and fits there.
    arriving = request(8, service_type="monthly_bookkeeping", hours=30, due=FRIDAY)
    arriving = arriving.model_copy(update={"client_id": "cl-greenleaf"})
    assert take_holds(ledger, arriving, [close]) == close
    assert not any(is_hold(r) for r in ledger.reservations)
    result, _ = decide(arriving, snap, ledger, {})
    assert result.preparer is not None and result.preparer.id == holder


def test_holds_are_planned_again_from_scratch() -> None:
    snap = snapshot()
    ledger = Ledger()
    expected = [
        ExpectedWork(
            key=f"payroll:{k}",
            client_id="cl-copper-kettle",
            service_type="payroll",
            due=FRIDAY + timedelta(days=7 * k),
        )
        for k in range(3)
    ]
    first = place_holds(expected, snap, ledger, {})
    assert len(first) == 3 and all(h.role is Role.PREPARER for h in first)
    assert len(release_holds(ledger)) == 3
    assert ledger.reservations == []
    # Work the rule would send to partner review today gets no hold.
    huge = ExpectedWork("audit:1", "cl-northwind", "audit_prep", FRIDAY, estimated_hours=500)
    assert place_holds([huge], snap, ledger, {}) == []
    # Work that is not the expected one (another client) takes no hold.
    assert take_holds(ledger, request(9, service_type="payroll", due=FRIDAY), expected) is None
