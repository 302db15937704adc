"""Metrics computed from a hand-built event log, checked against figures worked out by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from simulation import calendar as cal
from simulation import why_idle
from simulation.events import Record
from simulation.metrics import compute, late_jobs

MON = cal.SEASON_START_DAY  # Monday of week 1
FRI = MON + 4
FRI_DATE = cal.date_of_day(FRI).isoformat()


def rec(t: float, type_: str, job: str | None = None, person: str | None = None,
        role: str | None = None, hours: float | None = None, **data: Any) -> Record:  # fmt: skip
    return Record(t, type_, job, person, role, hours, data or None)


def forty_hour_week(people: dict[str, tuple[str, list[str]]]) -> list[Record]:
    """Staff records (tier, skills) and one week of 8-hour working days for each person."""
    out = [
        rec(0.0, "staff", person=p, hours=40.0, tier=tier, skills=skills)
        for p, (tier, skills) in people.items()
    ]
    for day in range(MON, MON + 7):
        hours = 8.0 if cal.is_working_day(day) else 0.0
        out += [rec(cal.opening(day), "capacity", person=p, hours=hours, day=day) for p in people]
    return out


CLOSE_C1: dict[str, Any] = {
    "due": FRI_DATE, "skills": ["bookkeeping"], "preparer_tier": "staff",
    "prior_eligible": False, "exogenous": False, "is_return": False,
}  # fmt: skip
"""A staff-level monthly close due Friday, with no prior preparer."""


def log() -> list[Record]:
    """Two people, a week; j1 late after a decline, j3 on time, j4 extended, j5 exogenous."""
    before = cal.opening(MON) - 1.0  # Monday 07:00
    out = [
        rec(0.0, "staff", person="a", hours=40.0),
        rec(0.0, "staff", person="b", hours=40.0),
    ]
    for day in range(MON, MON + 7):
        hours = 8.0 if cal.is_working_day(day) else 0.0
        out += [
            rec(cal.opening(day), "capacity", person="a", hours=hours, day=day),
            rec(cal.opening(day), "capacity", person="b", hours=hours, day=day),
        ]
    created: dict[str, Any] = {
        "due": FRI_DATE,
        "exogenous": False,
        "prior_eligible": True,
        "prior_preparer": "a",
    }
    out += [
        rec(before, "job_created", "j1", **created, is_return=False),
        rec(before, "job_created", "j3", **created, is_return=True),
        rec(before, "job_created", "j4", **{**created, "prior_eligible": False}, is_return=True),
        rec(before, "job_created", "j5", **{**created, "exogenous": True}, is_return=False),
        rec(before, "dispatch_requested", "j1", request="r1"),
        rec(before, "dispatch_requested", "j3", request="r2"),
        rec(before, "dispatch_requested", "j4", request="r3"),
        rec(before, "dispatch_requested", "j5", request="r5"),
        # j1: 50 h due Friday, offered to a, declined, then booked on b (no work logged on it).
        rec(before, "assigned", "j1", "a", "preparer", 50.0, request="r1", auto=True, due=FRI_DATE),
        rec(before + 0.1, "reassign_requested", "j1", "a", "preparer"),
        rec(before + 0.1, "released", "j1", "a", "preparer"),
        rec(before + 0.1, "dispatch_requested", "j1", request="r4"),
        rec(
            before + 0.2,
            "assigned",
            "j1",
            "b",
            "preparer",
            50.0,
            request="r4",
            auto=True,
            due=FRI_DATE,
        ),
        # j3: a return, 1 h on a, ready Monday 08:00, reviewed by b, done Tuesday 13:00.
        rec(before, "assigned", "j3", "a", "preparer", 1.0, request="r2", auto=True, due=FRI_DATE),
        rec(cal.opening(MON), "job_ready", "j3"),
        rec(cal.opening(MON) + 2, "submitted_for_review", "j3", "a", "preparer"),
        rec(cal.opening(MON) + 6, "review_started", "j3", "b", "reviewer"),
        rec(cal.opening(MON + 1) + 5, "completed", "j3"),
        # j4: to the partner, then forced onto a after 5 h; extended on Friday morning.
        rec(before, "npr_raised", "j4", request="r3"),
        rec(before + 5, "npr_resolved", "j4", request="r3", dwell=5.0),
        rec(
            before + 5,
            "assigned",
            "j4",
            "a",
            "preparer",
            2.0,
            request="r3",
            auto=False,
            forced=True,
            due=FRI_DATE,
        ),
        rec(cal.opening(FRI), "extended", "j4", new_due="2027-10-15"),
        # j5: done on time, never assigned in this log.
        rec(cal.opening(MON + 2), "completed", "j5"),
        # j1 completed the Monday after (late, no extension).
        rec(cal.opening(MON + 7) - 1, "completed", "j1"),
        rec(cal.closing(FRI), "escalation_fired", "j1", kind="past_due"),
        rec(cal.opening(MON) + 48, "escalation_fired", "j1", "b", kind="not_started"),
    ]
    # Week 1: a works 32 h, b 40 h (on other work the log does not assign: utilisation only).
    for day in range(MON, MON + 5):
        out.append(rec(cal.closing(day), "work_logged", "x", "a", "preparer", 6.4, day=day))
        out.append(rec(cal.closing(day), "work_logged", "y", "b", "preparer", 8.0, day=day))
    return out


def test_metrics_match_hand_figures() -> None:
    m = compute(log())
    v = m.values
    # Week 1: a 32/40 = 0.8, b 40/40 = 1.0. Later weeks have no capacity record (excluded).
    assert v["utilisation_mean"] == pytest.approx(0.9)
    assert v["utilisation_std"] == pytest.approx(0.1)
    assert v["utilisation_p90_p10"] == pytest.approx(0.98 - 0.82)
    assert v["utilisation_jain"] == pytest.approx(1.8**2 / (2 * (0.64 + 1.0)))
    assert m.utilisation["a"][0] == pytest.approx(0.8)
    # b holds j1: 50 h due Friday. Monday 08:00: 50 - 40 = 10; Tuesday 50 - 32 = 18; ...
    # Friday 50 - 8 = 42, the week's worst. Week 2 mornings it is overdue (due "today"):
    # Monday 08:00 of week 2 it is already completed (07:00). a's j4 (2 h) always fits.
    assert v["overload_hours"] == pytest.approx(42.0)
    assert v["overloaded_person_weeks"] == 1
    # j1 (50 h into a 40-h week) was booked twice, on a then on b: 10 h past capacity each
    # time; j3's 1 h went onto a while a still held j1 (same moment, before the decline): +1 h.
    assert v["overbooked_hours"] == pytest.approx(21.0)
    assert v["overbooked_hours_auto"] == pytest.approx(21.0)
    # Due this week: j1 (late), j3 (on time), j4 (extended), j5 (on time).
    assert v["on_time_rate"] == pytest.approx(2 / 4)
    assert late_jobs(log()) == {"j1", "j4"}  # the same judgement, job by job
    assert v["late_without_extension_rate"] == pytest.approx(1 / 4)
    # Returns j3 and j4 plus one return that never got documents (j5's exogenous extension).
    assert v["extension_rate"] == pytest.approx((1 + 1) / (2 + 1))
    # Requests r1..r5: auto-resolved r1, r2, r4; r3 went to the partner, r5 never decided.
    assert v["auto_assigned_pct"] == pytest.approx(3 / 5)
    assert v["partner_review_pct"] == pytest.approx(1 / 5)
    assert v["partner_review_dwell_hours"] == pytest.approx(5.0)
    # j1's preparer was assigned twice: one reassignment over three dispatched jobs.
    assert v["reassignment_rate"] == pytest.approx(1 / 3)
    # Prior preparer a (eligible) for j1 and j3: j3 kept a, j1 ended with b; j4 not counted.
    assert v["client_continuity"] == pytest.approx(1 / 2)
    # j3: ready Monday 08:00, done Tuesday 13:00 = 10 + 5 open hours = 1.5 business days.
    assert v["turnaround_days_mean"] == pytest.approx(1.5)
    assert v["reviewer_queue_p95_hours"] == pytest.approx(4.0)
    assert v["reviewer_queue_max"] == 0  # j3's reviewer was never assigned in this log
    assert v["escalations_fired"] == 2
    assert v["escalations_past_due"] == 1
    assert v["escalations_not_started"] == 1
    assert m.late_by_week[0] == 2  # j1 and j4 missed a week-1 date


def test_overbooking_counts_what_a_decision_adds() -> None:
    # Inside week 2, b (40 h/week) already has 30 h due Friday; a 20 h job due the same Friday,
    # booked Monday 08:00, pushes b 10 h past capacity; a partner's override is not "auto".
    mon = MON + 7
    fri = cal.date_of_day(mon + 4).isoformat()
    records = [rec(0.0, "staff", person="b", hours=40.0)]
    records += [
        rec(
            cal.opening(d),
            "capacity",
            person="b",
            hours=8.0 if cal.is_working_day(d) else 0.0,
            day=d,
        )
        for d in range(mon, mon + 7)
    ]
    records += [
        rec(cal.opening(mon), "assigned", "k1", "b", "preparer", 30.0, auto=True, due=fri),
        rec(cal.opening(mon), "assigned", "k2", "b", "preparer", 20.0, auto=True, due=fri),
        rec(
            cal.opening(mon),
            "assigned",
            "k3",
            "b",
            "preparer",
            5.0,
            auto=False,
            forced=True,
            due=fri,
        ),
    ]
    v = compute(records).values
    assert v["overbooked_hours"] == pytest.approx(15.0)
    assert v["overbooked_hours_auto"] == pytest.approx(10.0)


def test_empty_log_gives_no_numbers_not_errors() -> None:
    v = compute([]).values
    assert math.isnan(v["utilisation_mean"])
    assert v["overload_hours"] == 0


def test_overload_counts_only_the_hours_still_to_do() -> None:
    # b (8 h a day) takes a 40-h job due Wednesday before Monday opens and logs 8 h on it on
    # Monday and Tuesday; it is done Thursday 07:00. Mornings: Monday 40 - 24 = 16 over,
    # Tuesday (40 - 8) - 16 = 16, Wednesday (40 - 16) - 8 = 16. Counting whole estimates
    # instead would say 32 on Wednesday.
    wed = cal.date_of_day(MON + 2).isoformat()
    records = [rec(0.0, "staff", person="b", hours=40.0)]
    records += [
        rec(
            cal.opening(d),
            "capacity",
            person="b",
            hours=8.0 if cal.is_working_day(d) else 0.0,
            day=d,
        )
        for d in range(MON, MON + 7)
    ]
    records += [
        rec(cal.opening(MON) - 1, "assigned", "k1", "b", "preparer", 40.0, auto=True, due=wed),
        rec(cal.closing(MON), "work_logged", "k1", "b", "preparer", 8.0, day=MON),
        rec(cal.closing(MON + 1), "work_logged", "k1", "b", "preparer", 8.0, day=MON + 1),
        rec(cal.opening(MON + 3) - 1, "completed", "k1"),
    ]
    v = compute(records).values
    assert v["overload_hours"] == pytest.approx(16.0)
    assert v["overloaded_person_weeks"] == 1
    assert v["overbooked_hours"] == pytest.approx(16.0)
    assert v["utilisation_mean"] == pytest.approx(16.0 / 40.0)


@pytest.mark.parametrize(
    ("preparer", "worked", "expected"),
    [
        ("m", 2.0, 1.0),  # s had room and the skill; the manager got the close: counted
        ("s", 2.0, 0.0),  # given to s itself
        ("m", 6.0, 0.0),  # s worked 30 of 40 h that week: not idle
    ],
)
def test_idle_while_up_tier_counts_qualified_people_left_idle(
    preparer: str, worked: float, expected: float
) -> None:
    """A staff member who could do a monthly close works a quarter of their week while the
    close goes to a manager: one idle person-week; not when it is theirs or they were busy."""
    before = cal.opening(MON) - 1.0
    out = forty_hour_week(
        {
            "s": ("staff", ["bookkeeping"]),
            "m": ("manager", ["bookkeeping", "tax"]),
            "t": ("staff", ["tax"]),
        }
    )
    out += [
        rec(before, "job_created", "c1", **CLOSE_C1),
        rec(before, "dispatch_requested", "c1", request="r1"),
        rec(before, "assigned", "c1", preparer, "preparer", 4.0, request="r1", auto=True,
            due=FRI_DATE),
    ]  # fmt: skip
    for day in range(MON, MON + 5):
        out.append(rec(cal.closing(day), "work_logged", "x", "s", "preparer", worked, day=day))
    # t is idle too, but has not the skill: never counted.
    assert compute(out).values["idle_while_up_tier"] == expected
    # And why: no prior preparer and no decision record here, so s was not a candidate.
    why = why_idle.causes(out)
    assert sum(why.values()) == expected
    if expected:
        assert list(why) == ["the idle person was not among the candidates"]
        prior = {"prior_preparer": "m"}
        kept = [
            rec(r.t, r.type, r.job, r.person, r.role, r.hours, **{**(r.data or {}), **prior})
            if r.type == "job_created"
            else r
            for r in out
        ]
        assert list(why_idle.causes(kept)) == [
            "continuity: the client's prior preparer kept the client"
        ]


def test_why_idle_reads_the_preparer_decision_not_the_reviewers() -> None:
    """A staff member eligible to prepare but below the reviewer tier was ranked lower as
    preparer; the reviewer's decision (where their tier blocks them) must not be the cause."""
    from datetime import date

    from dispatch.config import Tier
    from dispatch.models import AssignmentResult, BlockReason, CandidateScore, Decision, Role

    def candidate(staff_id: str, tier: Tier, blocked: list[BlockReason]) -> CandidateScore:
        return CandidateScore(
            staff_id=staff_id, name=staff_id, tier=tier, eligible=not blocked,
            blocked=blocked, available_hours=20.0,
        )  # fmt: skip

    def decision(role: Role, s_blocked: list[BlockReason]) -> Decision:
        return Decision(
            role=role, outcome="assigned", chosen="m", reason="", required_hours=4.0,
            window_start=date(2027, 1, 4), window_end=date(2027, 1, 8),
            candidates=[candidate("s", Tier.STAFF, s_blocked), candidate("m", Tier.MANAGER, [])],
        )  # fmt: skip

    result = AssignmentResult(
        request_id="r1", workflow_id="c1", outcome="assigned",
        decisions=[decision(Role.PREPARER, []), decision(Role.REVIEWER, [BlockReason.TIER])],
    )  # fmt: skip
    before = cal.opening(MON) - 1.0
    out = forty_hour_week({"s": ("staff", ["bookkeeping"]), "m": ("manager", ["bookkeeping"])})
    out += [
        rec(before, "job_created", "c1", **CLOSE_C1),
        rec(before, "dispatch_requested", "c1", request="r1"),
        rec(before, "assigned", "c1", "m", "preparer", 4.0, request="r1", auto=True,
            due=FRI_DATE, explanation=result),
    ]  # fmt: skip
    assert list(why_idle.causes(out)) == ["the idle person was eligible and ranked lower"]


def test_why_partner_names_the_blocked_role_its_window_and_the_gap() -> None:
    from datetime import date, timedelta

    from dispatch.config import Tier
    from dispatch.models import AssignmentResult, BlockReason, CandidateScore, Decision, Role
    from simulation import why_partner

    def blocked(role: Role, days: int, hours_free: float) -> AssignmentResult:
        start = date(2027, 3, 1)
        candidates = [
            CandidateScore(
                staff_id="m", name="m", tier=Tier.MANAGER, eligible=False,
                blocked=[BlockReason.CAPACITY], available_hours=hours_free,
            ),
            CandidateScore(
                staff_id="s", name="s", tier=Tier.STAFF, eligible=False,
                blocked=[BlockReason.TIER], available_hours=40.0,
            ),
        ]  # fmt: skip
        decision = Decision(
            role=role, outcome="blocked", reason="", required_hours=6.0,
            window_start=start, window_end=start + timedelta(days=days), candidates=candidates,
        )  # fmt: skip
        return AssignmentResult(
            request_id="r", workflow_id="j", outcome="needs_partner_review", decisions=[decision]
        )

    out = [
        rec(1.0, "npr_raised", "j1", explanation=blocked(Role.REVIEWER, 2, 5.0)),
        rec(2.0, "npr_raised", "j2", explanation=blocked(Role.PREPARER, 9, 1.0)),
        rec(3.0, "npr_raised", "j3", reason="declined twice", explanation=None),
    ]
    assert why_partner.causes(out) == {
        "reviewer: no room, due within 3 days, short by ≤ 2 h": 1,
        "preparer: no room, longer, short by more": 1,
        "no role blocked: declined twice": 1,
    }


def test_why_continuity_reads_the_prior_preparers_own_candidate_row() -> None:
    from datetime import date

    from dispatch.config import Tier
    from dispatch.models import AssignmentResult, BlockReason, CandidateScore, Decision, Role
    from simulation import why_continuity

    def result(prior_blocked: list[BlockReason], history: float) -> AssignmentResult:
        prior = CandidateScore(
            staff_id="p", name="p", tier=Tier.SENIOR, eligible=not prior_blocked,
            blocked=prior_blocked, available_hours=2.0, scores={"client_history": history},
        )  # fmt: skip
        decision = Decision(
            role=Role.PREPARER, outcome="assigned", chosen="s", reason="", required_hours=4.0,
            window_start=date(2027, 3, 1), window_end=date(2027, 3, 5), candidates=[prior],
        )  # fmt: skip
        return AssignmentResult(
            request_id="r", workflow_id="j", outcome="assigned", decisions=[decision]
        )

    created: dict[str, Any] = {"prior_preparer": "p", "prior_eligible": True}
    out = [rec(0.0, "job_created", f"j{n}", **created) for n in range(1, 7)]
    out += [
        rec(1.0, "assigned", "j1", "s", "preparer", explanation=result([BlockReason.CAPACITY], 1)),
        rec(1.0, "assigned", "j2", "s", "preparer", explanation=result([], 0.0)),
        rec(1.0, "assigned", "j3", "s", "preparer", explanation=result([], 0.5)),
        rec(1.0, "assigned", "j4", "p", "preparer", explanation=result([], 1.0)),
        rec(2.0, "assigned", "j4", "s", "preparer", explanation=None),  # p declined
        rec(1.0, "assigned", "j5", "s", "preparer", forced=True),
        rec(1.0, "assigned", "j6", "p", "preparer", explanation=result([], 1.0)),  # kept
    ]
    assert why_continuity.causes(out) == {
        "the prior preparer was blocked: capacity": 1,
        "the prior preparer yielded the client to a nearly idle junior": 1,
        "someone served the client more recently this season": 1,
        "the prior preparer had it, then it moved (they asked to be reassigned)": 1,
        "a partner chose someone else": 1,
    }


def test_spread_groups_each_persons_utilisation_by_tier() -> None:
    from simulation import spread

    out = forty_hour_week({"s": ("staff", []), "m": ("manager", [])})
    for day in range(MON, MON + 5):
        out.append(rec(cal.closing(day), "work_logged", "x", "s", "preparer", 2.0, day=day))
        out.append(rec(cal.closing(day), "work_logged", "y", "m", "preparer", 8.0, day=day))
    tiers = spread.by_tier(out)
    assert tiers["staff"] == [pytest.approx(0.25)] and tiers["manager"] == [pytest.approx(1.0)]
