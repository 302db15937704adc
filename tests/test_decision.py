"""The assignment rule: eligibility, ranking, explanations, batches (no Temporal involved)."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch.capacity import Booking, WorkCalendar, available_hours, is_overbooked
from dispatch.config import CONTINUITY_YIELDS_DEFAULT, Absence, FirmConfig, Tier
from dispatch.decision import (
    Ledger,
    calendar_of,
    decide,
    decide_batch,
    open_hours,
    partner_options,
    person_of,
    replan,
    role_ceiling,
    role_needs,
)
from dispatch.models import AssignmentRequest, BlockReason, CapacitySnapshot, Reservation, Role
from tests.factories import MONDAY, demo_config, request, snapshot

FRIDAY = MONDAY + timedelta(days=4)


def test_prior_preparer_wins_when_they_have_room() -> None:
    result, reservations = decide(
        request(client_id="cl-okafor-family", hours=4), snapshot(), Ledger(), {}
    )
    assert result.outcome == "assigned"
    assert result.preparer is not None and result.preparer.id == "noah"
    assert "prepared this client's last engagement" in result.reason
    assert {r.role for r in reservations} == {Role.PREPARER, Role.REVIEWER}


def test_without_history_the_most_available_person_wins() -> None:
    # Seed order: available hours before tier. Grace (senior) has 40 h free, Zoe (staff) 30 h,
    # Noah (staff) only 10 h after logging 30 h already this week.
    snap = snapshot(logged_this_week={"noah": 30.0, "mia": 20.0, "priya": 20.0, "hannah": 20.0})
    in_hours = snap.model_copy(
        update={"policy": snap.policy.model_copy(update={"available_hours_as_share": False})}
    )
    result, _ = decide(request(hours=4, due=FRIDAY), in_hours, Ledger(), {})
    assert result.preparer is not None and result.preparer.id == "grace"
    scores = {c.staff_id: c for c in result.decisions[0].candidates}
    assert scores["grace"].scores["available_hours"] == 1.0
    assert scores["zoe"].scores["available_hours"] == 0.75
    assert scores["grace"].total is not None and scores["noah"].total is not None
    assert scores["grace"].total > scores["zoe"].total > scores["noah"].total  # type: ignore[operator]

    # A firm's default ranks by the share of each person's own hours free: Zoe (30 of her
    # 30 h) is as free as Grace (40 of 40), and the lower tier takes the tie; Noah has a
    # quarter of his week left.
    assert snap.policy.available_hours_as_share
    result, _ = decide(request(hours=4, due=FRIDAY), snap, Ledger(), {})
    assert result.preparer is not None and result.preparer.id == "zoe"
    scores = {c.staff_id: c for c in result.decisions[0].candidates}
    assert scores["zoe"].scores["available_hours"] == scores["grace"].scores["available_hours"]
    assert scores["noah"].scores["available_hours"] == 0.25
    # The hours themselves are still what the candidate list shows.
    assert scores["zoe"].available_hours == 30.0


def test_lowest_sufficient_tier_breaks_ties_on_hours() -> None:
    # Grace (senior) and Noah (staff) both have 40 h free: the staff member takes the 1040.
    snap = snapshot(logged_this_week={"zoe": 25.0, "mia": 20.0, "priya": 20.0, "hannah": 20.0})
    result, _ = decide(request(hours=4, due=FRIDAY), snap, Ledger(), {})
    assert result.preparer is not None and result.preparer.id == "noah"
    assert "lowest sufficient tier (staff)" in result.reason


def test_weights_are_configurable() -> None:
    config = demo_config()
    heavy_tier = config.policy.model_copy(
        update={"weights": config.policy.weights.model_copy(update={"lowest_tier": 50.0})}
    )
    snap = snapshot(config, logged_this_week={"noah": 30.0}).model_copy(
        update={"policy": heavy_tier}
    )
    result, _ = decide(request(hours=4, due=FRIDAY), snap, Ledger(), {})
    assert result.preparer is not None and result.preparer.tier is Tier.STAFF


def test_every_candidate_is_explained() -> None:
    result, _ = decide(request(service_type="audit_prep", hours=20), snapshot(), Ledger(), {})
    decision = result.decisions[0]
    assert len(decision.candidates) == len(demo_config().staff)
    by_id = {c.staff_id: c for c in decision.candidates}
    assert BlockReason.SKILL in by_id["noah"].blocked
    assert "missing skill audit_prep" in (by_id["noah"].why_blocked or "")
    # Ava is a partner: she does not prepare senior-level audit work.
    assert BlockReason.TIER in by_id["ava"].blocked
    assert set(by_id["lucas"].scores) == {
        "client_history",
        "specialization",
        "available_hours",
        "lowest_tier",
    }


def test_nobody_with_room_means_partner_review_never_overload() -> None:
    # 45 h of audit prep due in four working days: nobody has that much room.
    result, reservations = decide(
        request(service_type="audit_prep", hours=45, due=MONDAY + timedelta(days=3)),
        snapshot(),
        Ledger(),
        {},
    )
    assert result.outcome == "needs_partner_review"
    assert reservations == []
    assert result.preparer is None
    blocked = result.decisions[0].candidates
    assert all(not c.eligible for c in blocked)
    assert "No preparer fits 45.0 h" in result.reason
    capacity_blocked = [c for c in blocked if c.blocked == [BlockReason.CAPACITY]]
    assert capacity_blocked and all(
        "needs 45.0 h" in (c.why_blocked or "") for c in capacity_blocked
    )


def test_reviewer_comes_from_reviewer_tier_and_is_never_the_preparer() -> None:
    result, reservations = decide(
        request(service_type="s_corp_return", hours=12), snapshot(), Ledger(), {}
    )
    assert result.preparer is not None and result.reviewer is not None
    assert result.preparer.id != result.reviewer.id
    assert result.reviewer.tier.rank >= Tier.MANAGER.rank
    reviewer_hours = next(r.hours for r in reservations if r.role is Role.REVIEWER)
    assert reviewer_hours == round(12 * 0.35, 2)
    review = result.decisions[1]
    assert review.role is Role.REVIEWER
    preparer_row = next(c for c in review.candidates if c.staff_id == result.preparer.id)
    assert BlockReason.OTHER_ROLE in preparer_row.blocked


def test_reviewer_ceiling_is_lower_than_preparers() -> None:
    # Mia (manager, 40 h) is the only s_corp manager: 0.8 x 40 = 32 h of review room a week.
    config = demo_config()
    snap = snapshot(config)
    ledger = Ledger(
        [
            Reservation(
                workflow_id="other",
                role=Role.PREPARER,
                staff_id="mia",
                hours=30,
                start=MONDAY,
                due=FRIDAY,
                client_id="x",
            )
        ]
    )
    result, _ = decide(
        request(service_type="s_corp_return", hours=12, due=FRIDAY), snap, ledger, {}
    )
    # 40 h - 30 h = 10 h as a preparer, but only 32 - 30 = 2 h under the reviewer ceiling.
    assert result.outcome == "needs_partner_review" or (
        result.reviewer is not None and result.reviewer.id != "mia"
    )


def test_declined_people_are_not_offered_the_engagement_again() -> None:
    result, _ = decide(
        request(client_id="cl-okafor-family", exclude=["noah"]), snapshot(), Ledger(), {}
    )
    assert result.preparer is not None and result.preparer.id != "noah"
    noah = next(c for c in result.decisions[0].candidates if c.staff_id == "noah")
    assert BlockReason.DECLINED in noah.blocked


def test_past_due_date_goes_to_partner_review() -> None:
    result, _ = decide(request(due=MONDAY - timedelta(days=1)), snapshot(), Ledger(), {})
    assert result.outcome == "needs_partner_review"
    assert "already passed" in result.reason


def test_unknown_service_type_goes_to_partner_review() -> None:
    result, _ = decide(request(service_type="crypto_audit"), snapshot(), Ledger(), {})
    assert result.outcome == "needs_partner_review"
    assert "crypto_audit" in result.reason


def test_learned_history_outranks_configured_history() -> None:
    learned = {"cl-okafor-family": ["zoe"]}
    result, _ = decide(request(client_id="cl-okafor-family"), snapshot(), Ledger(), learned)
    assert result.preparer is not None and result.preparer.id == "zoe"


def test_batch_shares_one_person_without_double_booking() -> None:
    # Only Lucas, Omar and Ben do audit prep; Ben is a partner (reviewer only).
    requests = [
        request(i, service_type="audit_prep", hours=45, due=FRIDAY + timedelta(days=7))
        for i in range(4)
    ]
    ledger = Ledger()
    results = decide_batch(requests, snapshot(), ledger, {})
    assigned = [r for r in results if r.outcome == "assigned"]
    assert len(assigned) == 2
    assert {r.preparer.id for r in assigned if r.preparer} == {"lucas", "omar"}
    assert [r.outcome for r in results].count("needs_partner_review") == 2


def test_batch_is_decided_earliest_due_first() -> None:
    late = request(1, service_type="audit_prep", hours=30, due=FRIDAY + timedelta(days=14))
    urgent = request(2, service_type="audit_prep", hours=30, due=FRIDAY + timedelta(days=7))
    results = decide_batch([late, urgent], snapshot(), Ledger(), {})
    assert [r.workflow_id for r in results] == [urgent.workflow_id, late.workflow_id]


service_types = st.sampled_from(
    [
        "individual_tax",
        "s_corp_return",
        "partnership_return",
        "monthly_bookkeeping",
        "payroll",
        "audit_prep",
    ]
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
@given(
    jobs=st.lists(
        st.tuples(
            service_types,
            st.floats(min_value=0.5, max_value=60),
            st.integers(min_value=0, max_value=25),
            st.sampled_from(["cl-a", "cl-b", "cl-okafor-family", "cl-bayside-dental"]),
        ),
        min_size=1,
        max_size=30,
    ),
    logged=st.dictionaries(
        st.sampled_from([m.id for m in demo_config().staff]),
        st.floats(min_value=0, max_value=45),
        max_size=8,
    ),
    weekday=st.integers(min_value=0, max_value=6),
)
def test_never_overbooks_and_is_deterministic(
    jobs: list[tuple[str, float, int, str]], logged: dict[str, float], weekday: int
) -> None:
    today = MONDAY + timedelta(days=weekday)
    snap = snapshot(today=today, logged_this_week=logged)
    reqs = [
        request(i, service_type=st_, hours=round(h, 2), due=today + timedelta(days=d), client_id=c)
        for i, (st_, h, d, c) in enumerate(jobs)
    ]
    first = decide_batch(reqs, snap, ledger := Ledger(), {})
    again = decide_batch(reqs, snap, Ledger(), {})
    assert [r.model_dump() for r in first] == [r.model_dump() for r in again]

    calendar: WorkCalendar = calendar_of(snap)
    by_id = {c.member.id: c for c in snap.staff}
    ceilings = {
        Role.PREPARER: snap.policy.preparer_utilization_ceiling,
        Role.REVIEWER: snap.policy.reviewer_utilization_ceiling,
    }
    for result in first:
        if result.outcome != "assigned":
            continue
        # The chosen people had room for exactly these hours when chosen.
        for decision in result.decisions:
            chosen = next(c for c in decision.candidates if c.staff_id == decision.chosen)
            assert chosen.eligible and chosen.available_hours >= decision.required_hours - 0.01
    for staff_id, cap in by_id.items():
        mine = [r for r in ledger.reservations if r.staff_id == staff_id]
        assert not is_overbooked(
            person_of(cap),
            [Booking(r.hours, r.due) for r in mine],
            today,
            calendar,
            ceiling=max(ceilings.values()),
        )
        for reservation in mine:
            service = snap.service_type(_service_of(reqs, reservation.workflow_id))
            assert service is not None
            assert all(s in cap.member.skills for s in service.required_skills)


def _service_of(reqs: list[AssignmentRequest], workflow_id: str) -> str:
    return next(r.service_type for r in reqs if r.workflow_id == workflow_id)


def test_reassigning_one_role_keeps_the_other() -> None:
    base = request(1, service_type="s_corp_return", hours=12)
    first, reservations = decide(base, snapshot(), Ledger(), {})
    assert first.preparer is not None and first.reviewer is not None
    ledger = Ledger(reservations)
    again = base.model_copy(
        update={
            "request_id": "r2",
            "exclude": [first.preparer.id],
            "keep_reviewer": first.reviewer.id,
        }
    )
    second, _ = decide(again, snapshot(), ledger, {})
    assert second.reviewer is not None and second.reviewer.id == first.reviewer.id
    assert second.preparer is not None and second.preparer.id != first.preparer.id
    assert [d.role for d in second.decisions] == [Role.PREPARER]


def test_kept_people_stay_but_a_change_that_no_longer_fits_is_flagged() -> None:
    base = request(1, service_type="monthly_bookkeeping", hours=6, due=FRIDAY)
    first, reservations = decide(base, snapshot(), Ledger(), {})
    assert first.preparer is not None
    bigger = base.model_copy(
        update={"request_id": "r2", "estimated_hours": 200.0, "keep_preparer": first.preparer.id}
    )
    result, kept = decide(bigger, snapshot(), Ledger(reservations), {})
    assert result.outcome == "assigned" and result.preparer == first.preparer
    assert result.warnings and "over capacity" in result.warnings[0]
    assert kept[0].hours == 200.0


def test_a_due_date_in_the_year_9999_is_decided_like_any_other() -> None:
    """A date typed into a PM system costs no more to decide than next Friday does."""
    far = date(9999, 12, 31)
    absent = [
        m.model_copy(update={"absences": [Absence(start=MONDAY, end=MONDAY)]})
        for m in demo_config().staff
    ]
    result, reservations = decide(request(hours=4, due=far), snapshot(staff=absent), Ledger(), {})
    assert result.outcome == "assigned"
    assert {r.due for r in reservations} == {far}
    # Everyone is away on Monday; four hours are done on Tuesday, not in the year 9999.
    assert result.estimated_completion == MONDAY + timedelta(days=1)


# --- the ledger of open hours ------------------------------------------------------------------


def test_open_hours_are_the_estimate_less_logged_and_nothing_once_handed_over() -> None:
    assert open_hours(10.0, 3.5, handed_over=False) == 6.5
    assert open_hours(10.0, 12.0, handed_over=False) == 0.0  # ran over: nothing more held
    assert open_hours(10.0, 3.5, handed_over=True) == 0.0  # ready for review
    # A review sent back re-opens the preparer's role with what is left of the estimate.
    assert open_hours(10.0, 9.0, handed_over=False) == 1.0


def test_open_hours_in_the_ledger_free_the_preparer_for_new_work() -> None:
    first, reservations = decide(
        request(1, service_type="monthly_bookkeeping", hours=36, due=FRIDAY),
        snapshot(),
        Ledger(),
        {},
    )
    assert first.preparer is not None
    ledger = Ledger(reservations)
    second = request(2, service_type="monthly_bookkeeping", hours=30, due=FRIDAY)
    busy, _ = decide(second, snapshot(), ledger, {})
    assert busy.preparer is None or busy.preparer.id != first.preparer.id
    # The first job is handed over: its preparer holds nothing for it any more.
    held = ledger.set_open_hours(
        "engagement-test-1", Role.PREPARER, open_hours(36, 20, handed_over=True)
    )
    assert held is not None and held.hours == 0.0
    assert sum(b.hours for b in ledger.bookings(first.preparer.id)) == 0.0
    assert ledger.remove("engagement-test-1", Role.PREPARER) is not None
    assert ledger.remove("engagement-test-1", Role.PREPARER) is None


# --- tier, reserve, the hours left today ----------------------------------------------------


def test_a_manager_keeps_the_review_reserve_when_preparing_a_seniors_work() -> None:
    config = demo_config()
    reserve = config.policy.model_copy(update={"review_reserve": {Tier.MANAGER: 0.75}})
    snap = snapshot(config).model_copy(update={"policy": reserve})
    need = next(
        n
        for n in role_needs(request(service_type="s_corp_return"), snap.service_types[1], snap)
        if n.role is Role.PREPARER
    )
    assert role_ceiling(need, Tier.MANAGER, reserve.review_reserve) == 0.25
    assert role_ceiling(need, Tier.SENIOR, reserve.review_reserve) == 1.0
    # 12 h of S-corp work due Friday: Mia (manager) may now take only 10 h of her 40 h.
    result, _ = decide(
        request(service_type="s_corp_return", hours=12, due=FRIDAY), snap, Ledger(), {}
    )
    mia = next(c for c in result.decisions[0].candidates if c.staff_id == "mia")
    assert mia.available_hours == 10.0 and BlockReason.CAPACITY in mia.blocked


def test_late_in_the_day_the_rule_counts_only_what_is_left_of_today() -> None:
    # 8 h of payroll due today: at the start of the day Ethan (40 h) can; at 16:00 nobody can.
    job = request(service_type="payroll", hours=7.5, due=MONDAY)
    morning, _ = decide(job, snapshot(), Ledger(), {})
    assert morning.outcome == "assigned"
    late, _ = decide(job, snapshot(), Ledger(), {}, day_left=0.125)
    assert late.outcome == "needs_partner_review"
    assert "has 1.0 h free" in (late.decisions[0].candidates[0].why_blocked or "")


# --- the partner's options ---------------------------------------------------------------------


def test_the_partner_gets_options_with_overtime_dates_and_consequences() -> None:
    # Everyone who prepares S-corp work is booked to their capacity by Friday.
    config = demo_config()
    full = [
        Reservation(
            workflow_id=f"busy-{m.id}",
            role=Role.PREPARER,
            staff_id=m.id,
            hours=(m.weekly_capacity_hours or 40.0) - (2.0 if m.id == "priya" else 0.0),
            start=MONDAY,
            due=FRIDAY,
            client_id="x",
        )
        for m in config.staff
    ]
    ledger = Ledger(full)
    job = request(service_type="s_corp_return", hours=6, due=FRIDAY)
    result, _ = decide(job, snapshot(), ledger, {})
    assert result.outcome == "needs_partner_review"
    options = partner_options(job, snapshot(), ledger)
    assert [o.staff_id for o in options][:1] == ["priya"]  # 2 h free: the least overtime
    first = options[0]
    assert first.overtime_hours == 4.0
    assert first.commitments_at_risk == 1  # her Friday job slips if this is booked anyway
    # Without overtime she could do it with Monday's hours: 2 h free + 8 h Monday >= 6 h.
    assert first.finish_by == FRIDAY + timedelta(days=3)
    assert "4.0 h overtime" in first.summary
    assert {o.tier for o in options} <= {Tier.SENIOR, Tier.MANAGER}  # who may prepare it
    assert all(o.overtime_hours >= first.overtime_hours for o in options)
    assert len(partner_options(job, snapshot(), ledger, limit=2)) == 2


def test_the_earliest_date_without_overtime_is_the_first_that_fits() -> None:
    config = demo_config()
    snap = snapshot(config)
    ledger = Ledger(
        [
            Reservation(
                workflow_id=f"busy-{k}",
                role=Role.PREPARER,
                staff_id="priya",
                hours=hours,
                start=MONDAY,
                due=due,
                client_id="x",
            )
            for k, (hours, due) in enumerate(
                [(40.0, FRIDAY), (30.0, FRIDAY + timedelta(days=7)), (8.0, FRIDAY + timedelta(3))]
            )
        ]
    )
    job = request(service_type="s_corp_return", hours=12, due=FRIDAY)
    option = next(o for o in partner_options(job, snap, ledger) if o.staff_id == "priya")
    assert option.finish_by is not None
    person = person_of(next(c for c in snap.staff if c.member.id == "priya"))
    index = ledger.index("priya")
    calendar = calendar_of(snap)

    def fits_on(day: date) -> bool:
        return available_hours(person, index, day, MONDAY, calendar) >= 12 - 1e-9

    # Brute force over the days: the first date that fits, and none before it.
    days = [FRIDAY + timedelta(days=k) for k in range(0, 60)]
    assert option.finish_by == next(d for d in days if fits_on(d))


# --- re-planning work not started ---------------------------------------------------------------


def test_replan_moves_only_work_whose_preparer_can_no_longer_do_it() -> None:
    snap = snapshot()
    ledger = Ledger()
    jobs = [request(n, service_type="payroll", hours=6, due=FRIDAY) for n in (1, 2)]
    holders = {}
    for job in jobs:
        result, booked = decide(job, snap, ledger, {})
        for reservation in booked:
            ledger.add(reservation)
        assert result.preparer is not None
        holders[job.workflow_id] = result.preparer.id
    # The first preparer is forced 40 h more by a partner: their payroll job is now at risk.
    at_risk = holders["engagement-test-1"]
    ledger.add(
        Reservation(
            workflow_id="forced",
            role=Role.PREPARER,
            staff_id=at_risk,
            hours=40,
            start=MONDAY,
            due=FRIDAY,
            client_id="x",
            forced=True,
        )
    )
    asked = [j.model_copy(update={"keep_preparer": holders[j.workflow_id]}) for j in jobs]
    moves = replan(asked, snap, ledger, {})
    moved = {request.workflow_id: result for request, result, _ in moves}
    if holders["engagement-test-2"] != at_risk:
        assert "engagement-test-2" not in moved  # still fits: left alone
    assert moved["engagement-test-1"].preparer is not None
    assert moved["engagement-test-1"].preparer.id != at_risk
    assert "moved from" in moved["engagement-test-1"].reason
    # The ledger follows: the job's hours now sit with the new preparer.
    new = moved["engagement-test-1"].preparer.id
    assert any(
        r.workflow_id == "engagement-test-1" and r.staff_id == new for r in ledger.reservations
    )
    assert not any(
        r.workflow_id == "engagement-test-1" and r.staff_id == at_risk for r in ledger.reservations
    )


# --- continuity that yields to a free junior ---------------------------------------------------


def _yielding(snap: CapacitySnapshot, share: float) -> CapacitySnapshot:
    policy = snap.policy.model_copy(update={"continuity_yields_to_free_share": share})
    return snap.model_copy(update={"policy": policy})


def test_a_senior_keeps_the_client_unless_a_free_junior_could_do_the_work() -> None:
    # Bayside Dental's last preparer is Priya (senior); an individual return is staff-level work.
    job = request(client_id="cl-bayside-dental", hours=4, due=FRIDAY)
    kept, _ = decide(job, _yielding(snapshot(), 0.0), Ledger(), {})
    assert kept.preparer is not None and kept.preparer.id == "priya"

    # With the knob on, Noah and Zoe (staff, nothing booked) are nearly idle this week: the
    # client moves down a tier, and Priya's client history no longer counts.
    moved, _ = decide(job, _yielding(snapshot(), 0.9), Ledger(), {})
    assert moved.preparer is not None and moved.preparer.tier is Tier.STAFF
    priya = next(c for c in moved.decisions[0].candidates if c.staff_id == "priya")
    assert priya.eligible and priya.scores["client_history"] == 0.0

    # Staff with work booked are not free, nor are staff who logged most of their week
    # already (logged hours are work done): Priya keeps the client.
    booked = Ledger(
        [
            Reservation(
                workflow_id=f"other-{who}", role=Role.PREPARER, staff_id=who, hours=8.0,
                start=MONDAY, due=FRIDAY, client_id="cl-other",
            )
            for who in ("noah", "zoe")
        ]
    )  # fmt: skip
    stays, _ = decide(job, _yielding(snapshot(), 0.9), booked, {})
    assert stays.preparer is not None and stays.preparer.id == "priya"
    tired = _yielding(snapshot(logged_this_week={"noah": 30.0, "zoe": 20.0}), 0.5)
    stays, _ = decide(job, tired, Ledger(), {})
    assert stays.preparer is not None and stays.preparer.id == "priya"


def test_continuity_at_the_lowest_sufficient_tier_is_never_given_up() -> None:
    # The Okafor family's last preparer is Noah (staff, the return's own tier): the knob only
    # moves clients down a tier, so Noah keeps them even with Zoe free too.
    yielding = _yielding(snapshot(), 0.9)
    result, _ = decide(request(client_id="cl-okafor-family", hours=4), yielding, Ledger(), {})
    assert result.preparer is not None and result.preparer.id == "noah"


def test_a_firm_file_gets_the_benchmarks_default_and_an_old_snapshot_keeps_its_own() -> None:
    # A firm that says nothing gets the measured default; one that sets 0 keeps 0.
    assert demo_config().policy.continuity_yields_to_free_share == CONTINUITY_YIELDS_DEFAULT
    raw = demo_config().model_dump(mode="json", by_alias=True)
    raw["policy"]["continuity_yields_to_free_share"] = 0
    assert FirmConfig.model_validate(raw).policy.continuity_yields_to_free_share == 0
    # A snapshot recorded before the knob existed (no such field) decodes to "off", so a
    # running dispatcher's history replays the decisions it made.
    recorded = snapshot().model_dump(mode="json")
    del recorded["policy"]["continuity_yields_to_free_share"]
    assert CapacitySnapshot.model_validate(recorded).policy.continuity_yields_to_free_share == 0
