"""Every policy keeps the hard constraints; the simulation is deterministic and paired."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatch.capacity import fits
from dispatch.config import Tier
from dispatch.decision import Ledger, calendar_of, person_of
from dispatch.lookahead import take_holds
from dispatch.models import AssignmentRequest, Reservation, Role
from simulation import calendar as cal
from simulation.catalogue import BY_ID
from simulation.engine import simulate
from simulation.events import Record
from simulation.generator import Scenario, generate
from simulation.optimizer_policy import BatchOptimizer
from simulation.policies import (
    EXTRA_POLICY_IDS,
    POLICY_IDS,
    DispatchPolicy,
    DispatchView,
    Outcome,
    Pending,
    Production,
    batch_order,
    make_policy,
)
from simulation.profiles import PROFILES

UNTIL = cal.closing(cal.day_of_date(cal.SEASON.march_15) - 10)
"""Five weeks: the warm-up, the business-return peak and the March 1 month-start burst."""


def check_skills_and_tiers(season: Scenario, records: list[Record]) -> list[str]:
    staff = {s.id: s for s in season.staff}
    plans = {j.id: j for j in season.jobs}
    plans.update({j.id: j for j in season.extensions.values()})
    holders: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for r in records:
        if r.type == "released" and r.job is not None and r.role is not None:
            holders.pop((r.job, r.role), None)
        if r.type != "assigned" or r.job is None or r.person is None or r.role is None:
            continue
        plan = plans[r.job]
        job_type = BY_ID[plan.type_id]
        person = staff[r.person]
        needed = {job_type.skill, *plan.required_skills}
        if not needed <= set(person.skills):
            problems.append(f"{r.job}: {r.person} lacks {needed - set(person.skills)}")
        if r.role == "preparer":
            top = Tier.PARTNER if job_type.preparer_tier is Tier.PARTNER else Tier.MANAGER
            if not job_type.preparer_tier.rank <= person.tier.rank <= top.rank:
                problems.append(f"{r.job}: {person.tier} may not prepare {job_type.id}")
        else:
            assert job_type.reviewer_tier is not None
            if person.tier.rank < job_type.reviewer_tier.rank:
                problems.append(f"{r.job}: {person.tier} may not review {job_type.id}")
        holders[(r.job, r.role)] = r.person
        other = "reviewer" if r.role == "preparer" else "preparer"
        if holders.get((r.job, other)) == r.person:
            problems.append(f"{r.job}: {r.person} would prepare and review it")
    return problems


class CapacityAudit:
    """Re-checks each automatic decision with production's own capacity rule, in order."""

    def __init__(self) -> None:
        self.checked = 0
        self.problems: list[str] = []

    def __call__(
        self,
        policy: DispatchPolicy,
        view: DispatchView,
        before: list[Reservation],
        batch: Sequence[Pending],
        outcomes: list[Outcome],
    ) -> None:
        # A production policy is judged by its own rules: its policy knobs, and whether it
        # counts only what is left of today (P3base, production before that, does not).
        own = policy if isinstance(policy, Production | BatchOptimizer) else None
        snapshot = own.snapshot(view) if own is not None else view.snapshot()
        day_left = own.day_left(view) if own is not None else view.day_left
        calendar = calendar_of(snapshot)
        caps = {c.member.id: c for c in snapshot.staff}
        ledger = Ledger(before)
        order = {p.request.request_id: i for i, p in enumerate(batch_order(batch))}
        kept = {p.request.request_id: p.request.keep_reviewer for p in batch}
        requests = {p.request.request_id: p.request for p in batch}
        expected = view.expected_work()
        for outcome in sorted(outcomes, key=lambda o: order[o.request_id]):
            # Production lets go of the room it held for expected work as it arrives.
            take_holds(ledger, requests[outcome.request_id], expected)
            for res in outcome.reservations or _booked(outcome, requests, snapshot.today):
                if res.role is Role.REVIEWER and res.staff_id == kept[outcome.request_id]:
                    ledger.add(res)  # kept from an earlier decision, not decided now
                    continue
                ceiling = (
                    snapshot.policy.reviewer_utilization_ceiling
                    if res.role is Role.REVIEWER
                    else snapshot.policy.preparer_utilization_ceiling
                )
                bookings = ledger.bookings(res.staff_id, skip_workflow=res.workflow_id)
                person = person_of(caps[res.staff_id], day_left)
                self.checked += 1
                if not fits(person, bookings, res.hours, res.due, snapshot.today, calendar,
                            ceiling, start=res.start):  # fmt: skip
                    self.problems.append(f"{res.workflow_id} {res.role.value} on {res.staff_id}")
                ledger.add(res)


def _booked(
    outcome: Outcome, requests: dict[str, AssignmentRequest], today: date
) -> list[Reservation]:
    """What the simulator books for a policy that hands back people, not reservations."""
    request = requests[outcome.request_id]
    roles = [(Role.PREPARER, outcome.preparer, outcome.preparer_hours)]
    roles.append((Role.REVIEWER, outcome.reviewer, outcome.reviewer_hours))
    return [
        Reservation(
            workflow_id=request.workflow_id,
            role=role,
            staff_id=staff_id,
            hours=hours,
            start=today,
            due=request.due_date,
            client_id=request.client_id,
        )
        for role, staff_id, hours in roles
        if staff_id is not None
    ]


@pytest.mark.parametrize("policy_id", POLICY_IDS + EXTRA_POLICY_IDS)
@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # The same seasons on every run: a failure in CI is a failure on every machine.
    derandomize=True,
    database=None,
)
@given(seed=st.integers(1, 10_000), load=st.sampled_from([0.8, 1.1]))
# The optimizer once applied a plan's leftovers after the planned engagements, so a preparer
# booked late in a batch left reviews decided earlier in it past the reviewer ceiling.
@example(seed=511, load=1.1)
def test_every_policy_respects_hard_constraints(policy_id: str, seed: int, load: float) -> None:
    season = generate(PROFILES["S5"], seed, load)
    audit = CapacityAudit()
    policy = make_policy(policy_id, seed=seed, time_limit_s=0.5)
    records = simulate(season, policy, observer=audit, until=UNTIL)
    assigned = [r for r in records if r.type == "assigned"]
    assert len(assigned) > 50
    assert check_skills_and_tiers(season, records) == []
    if policy_id.startswith(("P3", "P4")) and policy_id != "P3w":
        # Production never books anyone past capacity on its own, judged on the ledger it was
        # given (a partner's override is explicit and recorded as forced; it is not a
        # decision of the policy).
        assert audit.checked > 50
        assert audit.problems == []


def test_the_audit_catches_overbooking() -> None:
    """P2 books the most-free person whatever the job's size: the audit must notice."""
    season = generate(PROFILES["S5"], 5, 1.1)
    audit = CapacityAudit()
    simulate(season, make_policy("P2"), observer=audit, until=UNTIL)
    assert audit.problems


def test_same_season_same_log() -> None:
    season = generate(PROFILES["S5"], 3, 0.95)
    first = [r.to_json() for r in simulate(season, make_policy("P3"), until=UNTIL)]
    second = [r.to_json() for r in simulate(season, make_policy("P3"), until=UNTIL)]
    assert first == second


def test_policies_meet_the_same_season() -> None:
    """Paired design: the same jobs arrive at the same moments whoever dispatches them."""
    season = generate(PROFILES["S5"], 4, 0.95)

    def arrivals(policy_id: str) -> list[tuple[float, str | None, object]]:
        records = simulate(season, make_policy(policy_id), until=UNTIL)
        return [
            (r.t, r.job, r.get("due"))
            for r in records
            if r.type == "job_created" and not str(r.job).endswith("-ext")
        ]

    assert arrivals("P0") == arrivals("P3")
