"""The levers as the ledger, the firm activities and the chat messages carry them (pure).

Open hours: a progress report sets one role's open hours on the ledger entry and its working
copy, only for the reservation the ledger already holds (never a newer decision, never a
released one), and survives packing and rebuilds. Policy knobs the dispatcher does not act on
are refused by name. The partner's message shows each option's consequence.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from activities.firm import FirmActivities
from activities.slack import partner_blocks
from activities.teams import partner_card
from dispatch.config import FirmConfigError, Tier
from dispatch.decision import Ledger, partner_options
from dispatch.ledger import FirmLedger, progress_hours
from dispatch.models import (
    AssignmentRequest,
    EngagementHoldings,
    EngagementSummary,
    HoldingsSync,
    PartnerReviewNotice,
    ReservationProgress,
    Role,
    SnapshotInput,
    StaffRef,
)
from tests.factories import MONDAY, demo_config, snapshot
from tests.test_ledger import booked_hours, held, request


def progress(
    seq: int,
    *,
    staff_id: str = "ann",
    logged: float = 0.0,
    handed_over: bool = False,
    role: Role = Role.PREPARER,
) -> ReservationProgress:
    return ReservationProgress(
        workflow_id="E1",
        seq=seq,
        role=role,
        staff_id=staff_id,
        estimate=10,
        logged=logged,
        handed_over=handed_over,
    )


def booked_entry(book: FirmLedger) -> FirmLedger:
    book.book(
        request("E1", 1), [held("E1", "ann", 10), held("E1", "bo", 2, Role.REVIEWER)], partial=False
    )
    return book


def test_progress_holds_the_estimate_less_what_is_logged_then_nothing_at_hand_over() -> None:
    book = booked_entry(FirmLedger(epoch="e1"))
    assert book.progress(progress(1, logged=3.5))  # capacity released
    assert booked_hours(book, "ann") == 6.5
    assert [(r.role, r.hours) for r in book.holdings("E1")] == [
        (Role.PREPARER, 6.5),
        (Role.REVIEWER, 2),
    ]
    assert book.progress(progress(1, logged=3.5, handed_over=True))
    assert booked_hours(book, "ann") == 0.0
    assert booked_hours(book, "bo") == 2  # the reviewer's hours are untouched
    # A review sent back re-opens the preparer's work: held again, but nothing released.
    assert not book.progress(progress(1, logged=3.5))
    assert booked_hours(book, "ann") == 6.5


def test_a_report_about_an_older_decision_never_changes_a_newer_one() -> None:
    book = booked_entry(FirmLedger(epoch="e1"))
    book.book(request("E1", 2), [held("E1", "ann", 10)], partial=False)  # answer still in flight
    assert not book.progress(progress(1, handed_over=True))
    assert booked_hours(book, "ann") == 10
    assert book.progress(progress(2, handed_over=True))  # once the engagement took it
    assert booked_hours(book, "ann") == 0


def test_a_report_never_brings_back_a_released_reservation_or_moves_someone_else() -> None:
    book = booked_entry(FirmLedger(epoch="e1"))
    assert not book.progress(progress(1, staff_id="cy", handed_over=True))
    assert booked_hours(book, "ann") == 10 and booked_hours(book, "cy") == 0
    # Closed: everything withdrawn. A late report changes nothing and books nobody.
    book.sync(HoldingsSync(workflow_id="E1", seq=1, holdings=[], withdraw=True))
    assert not book.progress(progress(1, logged=2))
    assert not book.progress(progress(5, logged=2))
    assert "E1" not in book.entries
    assert booked_hours(book, "ann") == 0


def test_open_hours_survive_continue_as_new_and_a_rebuild() -> None:
    book = booked_entry(FirmLedger(epoch="e1"))
    book.progress(progress(1, logged=4))
    carried = FirmLedger.unpack(book.pack())
    assert carried.holdings("E1") == book.holdings("E1")
    assert booked_hours(carried, "ann") == 6
    # A rebuilt ledger takes the engagement's holdings, which carry the same open hours.
    rebuilt = FirmLedger(epoch="e2")
    facts = EngagementHoldings(workflow_id="E1", firm_id="f", seq=1, holdings=book.holdings("E1"))
    rebuilt.rebuild([facts], keep_newer=False)
    assert booked_hours(rebuilt, "ann") == 6


def test_the_engagement_and_the_ledger_compute_the_same_hours() -> None:
    assert progress_hours(progress(1, logged=3.333)) == 6.67
    assert progress_hours(progress(1, logged=12)) == 0.0  # over the estimate holds nothing more
    assert progress_hours(progress(1, logged=1, handed_over=True)) == 0.0


@pytest.mark.parametrize("knob", ["hold_recurring_days", "replan_moves_per_engagement"])
def test_a_policy_knob_the_dispatcher_does_not_act_on_is_refused_by_name(knob: str) -> None:
    config = demo_config()
    config = config.model_copy(update={"policy": config.policy.model_copy(update={knob: 1})})
    with pytest.raises(FirmConfigError, match=f"policy.{knob}"):
        FirmActivities(config, None)


async def test_the_snapshot_carries_the_firms_clock() -> None:
    config = demo_config()  # the demo firm leaves the unwired knobs off: accepted
    snap = await FirmActivities(config, None).capacity_snapshot(SnapshotInput(firm_id="f"))
    assert snap.time_zone == config.firm.time_zone
    assert snap.workday_start_hour == config.firm.workday_start_hour


def notice_with_options() -> PartnerReviewNotice:
    snap = snapshot(today=MONDAY)
    req = AssignmentRequest(
        request_id="E9:req-1",
        workflow_id="E9",
        client_id="cl-new",
        service_type="monthly_bookkeeping",
        due_date=MONDAY + timedelta(days=2),
        estimated_hours=200,
    )
    options = partner_options(req, snap, Ledger(), limit=3)
    assert options, "someone qualified should be offered"
    return PartnerReviewNotice(
        summary=EngagementSummary(
            workflow_id="E9",
            title="Close",
            client_id="cl-new",
            client_name="Client",
            service_type="monthly_bookkeeping",
            service_name="Monthly bookkeeping close",
            due_date=req.due_date,
            estimated_hours=200,
        ),
        partner=StaffRef(id="ava", name="Ava", email="ava@example.com", tier=Tier.PARTNER),
        reason="nobody has 200 h",
        candidates=[],
        options=options,
    )


def test_the_partner_sees_each_options_cost_in_slack_and_teams() -> None:
    notice = notice_with_options()
    slack = str(partner_blocks(notice, limit=5))
    teams = str(partner_card(notice, []))
    for option in notice.options:
        assert option.summary in slack and option.summary in teams
    assert "h overtime to finish by" in slack
