"""The dispatcher's ledger as a plain object: ordering by request number, rebuilds, packing."""

from __future__ import annotations

import base64
import json
import random
import zlib
from datetime import UTC, date, datetime, timedelta

from dispatch.ledger import FirmLedger
from dispatch.models import (
    AssignmentRequest,
    EngagementHoldings,
    ForceAssignRequest,
    HoldingsSync,
    Reservation,
    Role,
    TrackerFigures,
)

TODAY = date(2027, 2, 1)


def request(
    workflow_id: str, seq: int, due: date = TODAY + timedelta(days=20)
) -> AssignmentRequest:
    return AssignmentRequest(
        request_id=f"{workflow_id}:req-{seq}",
        seq=seq,
        workflow_id=workflow_id,
        client_id="cl-1",
        service_type="individual_tax",
        due_date=due,
        estimated_hours=4,
    )


def held(
    workflow_id: str, staff_id: str, hours: float = 4, role: Role = Role.PREPARER
) -> Reservation:
    return Reservation(
        workflow_id=workflow_id,
        role=role,
        staff_id=staff_id,
        hours=hours,
        start=TODAY,
        due=TODAY + timedelta(days=20),
        client_id="cl-1",
    )


def booked_hours(book: FirmLedger, staff_id: str) -> float:
    return sum(b.hours for b in book.working.bookings(staff_id))


def test_a_sync_that_overtakes_a_decision_in_flight_does_not_erase_it() -> None:
    book = FirmLedger(epoch="e1")
    assert book.offer(request("E1", 1)) == "new"
    book.book(request("E1", 1), [held("E1", "ann")], partial=False)
    # The engagement gave hours back as of request 0 (before it heard of request 1's answer).
    assert not book.sync(HoldingsSync(workflow_id="E1", seq=0, holdings=[]))
    assert booked_hours(book, "ann") == 4


def test_an_engagement_that_refuses_an_answer_is_believed() -> None:
    book = FirmLedger(epoch="e1")
    book.book(request("E1", 2), [held("E1", "ann")], partial=False)
    # It had moved on (request 3 is waiting) and holds bob's 4 h from request 1.
    assert book.sync(HoldingsSync(workflow_id="E1", seq=2, holdings=[held("E1", "bob")]))
    assert booked_hours(book, "ann") == 0
    assert booked_hours(book, "bob") == 4


def test_requests_at_or_below_what_is_booked_are_never_decided_again() -> None:
    book = FirmLedger(epoch="e1")
    book.book(request("E1", 3), [held("E1", "ann")], partial=False)
    assert book.offer(request("E1", 3)) == "booked"  # a resend: answered from the entry
    assert book.offer(request("E1", 2)) == "stale"
    assert book.offer(request("E1", 4)) == "new"
    assert not book.live or list(book.live) == ["E1"]


def test_a_newer_request_supersedes_the_parked_one() -> None:
    book = FirmLedger(epoch="e1")
    assert book.offer(request("E1", 1)) == "new"
    book.take_live(10)
    book.park(request("E1", 1), "nobody fits")
    assert book.offer(request("E1", 1)) == "parked"
    force = ForceAssignRequest(
        request_id="E1:req-2",
        seq=2,
        workflow_id="E1",
        partner_id="pat",
        staff_id="ann",
        client_id="cl-1",
        start=TODAY,
        due=TODAY + timedelta(days=5),
        hours=4,
    )
    assert book.offer(force) == "new"
    assert "E1" not in book.parked  # the partner's pick replaced the waiting request
    assert book.offer(request("E1", 1)) == "stale"


def test_closing_withdraws_everything_up_to_its_last_request() -> None:
    book = FirmLedger(epoch="e1")
    book.book(request("E1", 1), [held("E1", "ann")], partial=False)
    book.offer(request("E1", 2))
    assert book.sync(HoldingsSync(workflow_id="E1", seq=2, withdraw=True))
    assert "E1" not in book.entries and "E1" not in book.live
    assert booked_hours(book, "ann") == 0
    # A request that was still on its way when the engagement closed is ignored.
    assert book.offer(request("E1", 2)) == "stale"


def test_a_partner_pick_keeps_the_other_role() -> None:
    book = FirmLedger(epoch="e1")
    book.book(request("E1", 1), [held("E1", "rev", 1.2, Role.REVIEWER)], partial=False)
    book.book(request("E1", 2), [held("E1", "ann")], partial=True)
    assert {(r.role, r.staff_id) for r in book.holdings("E1")} == {
        (Role.PREPARER, "ann"),
        (Role.REVIEWER, "rev"),
    }


def test_a_rebuild_takes_the_engagements_word_and_their_waiting_requests() -> None:
    book = FirmLedger(epoch="old")
    book.book(request("GONE", 1), [held("GONE", "ann", 30)], partial=False)
    facts = [
        EngagementHoldings(workflow_id="E1", firm_id="f", seq=1, holdings=[held("E1", "bob")]),
        EngagementHoldings(
            workflow_id="E2", firm_id="f", seq=0, request=request("E2", 1), client_id="cl-9"
        ),
    ]
    requests = book.rebuild(facts, keep_newer=False)
    assert [r.request_id for r in requests] == ["E2:req-1"]
    assert booked_hours(book, "ann") == 0  # not running any more: nothing held
    assert booked_hours(book, "bob") == 4


def test_a_reconciliation_keeps_what_was_decided_after_the_engagement_answered() -> None:
    book = FirmLedger(epoch="e1")
    book.book(request("E1", 2), [held("E1", "ann")], partial=False)
    stale_fact = EngagementHoldings(
        workflow_id="E1", firm_id="f", seq=1, request=request("E1", 2), holdings=[]
    )
    assert book.rebuild([stale_fact], keep_newer=True) == []
    assert booked_hours(book, "ann") == 4


def season(engagements: int, staff: int, parked: int, seed: int = 7) -> FirmLedger:
    rng = random.Random(seed)
    people = [f"staff-{i:02d}" for i in range(staff)]
    book = FirmLedger(epoch="20270201T080000.000000-abcdef12")
    for n in range(engagements):
        workflow_id = f"engagement-karbon-K{rng.getrandbits(48):012x}"
        due = TODAY + timedelta(days=rng.randint(1, 120))
        roles: list[tuple[Role, str, float]] = [
            (Role.PREPARER, rng.choice(people), rng.choice([2.0, 4.0, 6.0, 8.0, 12.0, 20.0]))
        ]
        if rng.random() < 0.7:
            roles.append((Role.REVIEWER, rng.choice(people), round(roles[0][2] * 0.3, 2)))
        client = f"cl-{rng.randint(1, engagements // 2):05d}"
        reservations = [
            Reservation(
                workflow_id=workflow_id,
                role=role,
                staff_id=who,
                hours=hours,
                start=TODAY,
                due=due,
                client_id=client,
            )
            for role, who, hours in roles
        ]
        book.book(request(workflow_id, rng.randint(1, 4), due), reservations, partial=False)
        book.remember(reservations[0].client_id, [reservations[0].staff_id])
        if n < parked:
            waiting = f"engagement-relay-W{n:05d}"
            book.park(request(waiting, 1, due), "No preparer fits 12.0 h by 2027-04-15")
    book.tracker = [TrackerFigures(staff_id=p, weekly_capacity_hours=40) for p in people]
    return book


def test_the_carried_ledger_round_trips() -> None:
    book = season(300, 15, 20)
    again = FirmLedger.unpack(book.pack())
    assert again.entries == book.entries
    assert {w: p.request for w, p in again.parked.items()} == {
        w: p.request for w, p in book.parked.items()
    }
    assert again.client_history == book.client_history
    assert again.tracker == book.tracker
    assert sorted(again.working.reservations, key=str) == sorted(book.working.reservations, key=str)


def test_an_outage_start_is_carried_and_a_pack_without_one_is_as_before() -> None:
    book = season(20, 5, 2)
    quiet = book.pack()
    assert "os" not in json.loads(zlib.decompress(base64.b64decode(quiet.packed)))
    assert FirmLedger.unpack(quiet).outage_since is None  # and packs from before it read so
    book.outage_since = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
    assert FirmLedger.unpack(book.pack()).outage_since == book.outage_since


def test_the_carried_ledger_stays_small_at_5000_engagements_and_50_staff() -> None:
    """DESIGN §3.7: continue-as-new input far below the 2 MB payload limit (target 512 KB)."""
    carried = season(5000, 50, 500).pack()
    size = len(carried.model_dump_json())
    assert size < 512 * 1024, f"{size} bytes carried"
