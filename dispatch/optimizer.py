"""Assign a burst jointly: one CP-SAT model over every (request, role, eligible person).

The greedy rule (``dispatch.decision.decide_batch``) decides a batch earliest-due first, so an
early job can take the only specialist a later job needs and the later job goes to partner
review. ``optimize_batch`` decides the whole batch at once with the same eligibility and the
same capacity rule, so that cannot happen, and keeps the greedy rule as its fallback.

Pure: no Temporal, no I/O. The ``optimize_assignments`` activity runs it for the dispatcher
(CP-SAT is CPU-heavy and never runs in workflow code); the tax-season benchmark calls it as
policy P4. ``apply_plan`` is the cheap half the dispatcher runs in its workflow task: it turns a
plan into explained results, deciding the batch in its order and re-checking every planned
person against the ledger as it is at that point.

The model
---------
* Candidates come from ``dispatch.decision.choose`` (skills, tier range, declines, absences,
  activity, start window and capacity against the current ledger): one boolean per eligible
  (request, role, person). Eligibility is never re-derived here.
* HARD: every role of a request gets exactly one person if the request is assigned and nobody
  otherwise (all roles or none: the rest go to partner review); preparer != reviewer; capacity
  as production defines it, earliest due first: for every person and every checkpoint date D
  among their existing and candidate bookings, the hours due by D fit ``capacity(today, D) x
  ceiling``, where the ceiling is that of every role the person takes with a due date <= D
  (hours are scaled x100 to integers, rounded against the person). The rule is order-free, so it
  is a little stricter than the greedy rule when one person mixes reviewer (lower ceiling) and
  preparer work; the plan is never worse than greedy in hours because greedy is the fallback.
* Objective, lexicographic in two solves: first maximise the hours assigned (preparer + reviewer
  hours of assigned requests; nothing else may cost an assignment), then, with that total held,
  maximise the soft score of ``OptimizerWeights``.
* Lateness: with the earliest-due-first capacity rule every assignment is on time by
  construction (all work due by any date fits before it). What can be "late" is work left for
  partner review, so lateness is the urgency-weighted hours left unassigned: the first solve
  minimises unassigned hours, the second prefers leaving the least urgent work unassigned.
* Deterministic: variables are created in a sorted order, one search worker, a fixed seed,
  and the search is bounded by CP-SAT's *deterministic* work (``WORK_PER_SECOND`` x
  ``time_limit_s``), so the same input gives the same plan on any machine. ``time_limit_s`` is
  also a hard wall-clock cap on the two solves; if that ends a search first (a heavily loaded
  machine), the plan is the best found by then and ``BatchPlan.deterministic`` is False.
* Applied in the batch's order (``apply_plan``): every planned person is re-checked with
  ``dispatch.capacity.fits`` against everything decided before it, and what the plan leaves
  or no longer fits is decided by the greedy rule at its place in that order. So each
  decision of a batch fits against the ones before it, as in ``decide_batch``: never
  violate capacity, whatever the solver returned.
* Fallback to the greedy rule, with ``BatchPlan.fallback`` saying why: a time limit below
  ``MIN_TIME_LIMIT_S``, no solution in time, an invalid model, or a plan that, applied,
  assigns fewer hours than the greedy rule would.

Churn: ``current_plan`` maps (engagement, role) to the person holding it now. When the caller
re-plans work that already has people (the benchmark's nightly re-plan), keeping them is
rewarded. The dispatcher plans only new and parked requests, so it passes none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import pairwise
from typing import Any

from dispatch.capacity import (
    Booking,
    BookingIndex,
    capacity_between,
    fits,
)
from dispatch.config import Weights
from dispatch.decision import (
    Ledger,
    RoleNeed,
    _chosen_reason,
    assigned,
    batch_order,
    calendar_of,
    choose,
    decide,
    decide_batch,
    merged_history,
    person_of,
    role_ceiling,
    role_needs,
)
from dispatch.models import (
    AssignmentRequest,
    AssignmentResult,
    CandidateScore,
    CapacitySnapshot,
    Decision,
    Reservation,
    Role,
    StaffCapacity,
)

SCALE = 100
"""Hours become integer hundredths of an hour in the model."""
MIN_TIME_LIMIT_S = 0.05
"""Below this the solver is not started: building the model alone takes longer."""
WORK_PER_SECOND = 0.03
"""CP-SAT deterministic work units granted per second of ``time_limit_s``. The work budget,
not the clock, is what normally ends a search, so the same input gives the same plan on any
machine. Measured on the 2-core build machine, CP-SAT does 0.055-0.1 units per second on
these models, so the wall clock (``time_limit_s``, a hard cap) is reached only under heavy load
(``BatchPlan.deterministic`` then says so)."""
PHASE_ONE_SHARE = 0.5
"""Share of the work budget of the first solve (most hours); the second gets the rest."""
UTILISATION_BREAKS = tuple(range(0, 1501, 100))
"""Per-mille utilisations where the fairness penalty meets u^2 (linear in between)."""
URGENCY_DAYS = 5
"""Urgency of a request = URGENCY_DAYS / (URGENCY_DAYS + working days left), in (0, 1]."""


@dataclass(frozen=True)
class OptimizerWeights:
    """Weights of the soft objective, second to the hours assigned (which always dominate).

    Every criterion is scored in [0, 100] and multiplied by its weight. By default the first
    four come from the firm's own ranking weights (``Policy.weights``, see ``from_policy``), so
    the optimiser prefers what the greedy rule prefers, in the same order: client history, then
    specialisation, then available hours (here: an even spread), then the lowest tier.

    * ``continuity``: the client's history score of the person (100 for the most recent
      person, halving further back), per role.
    * ``specialization``: share of the preferred skills the person has, per role.
    * ``fairness``: a penalty per person on their utilisation from today to the batch's latest
      due date: u^2 / 1000 with u in per mille, interpolated linearly between every 10%, so an
      hour moved from a 90% person to a 50% person gains more than one moved from 60% to 50%.
      Four hours moved from 90% to 50% of an 80-hour horizon gain ~40 x the weight.
    * ``lowest_tier``: 100 for the role's own tier, 67 one tier above, and so on, per role.
    * ``urgency``: per assigned request, its hours x urgency (100 when due today, 50 five
      working days out, ...). Phase two holds the hours, so this only decides which work of
      equal hours is left for partner review: the least urgent.
    * ``churn``: per role left with its current holder (``current_plan``).
    """

    continuity: float = 1000.0
    specialization: float = 100.0
    fairness: float = 10.0
    lowest_tier: float = 1.0
    urgency: float = 1000.0
    churn: float = 2000.0

    @classmethod
    def from_policy(cls, weights: Weights) -> OptimizerWeights:
        return cls(
            continuity=weights.client_history,
            specialization=weights.specialization,
            fairness=weights.available_hours,
            lowest_tier=weights.lowest_tier,
        )


@dataclass
class BatchPlan:
    """The decision for a batch: results in earliest-due order, explained like ``decide``."""

    results: list[AssignmentResult]
    reservations: list[Reservation]
    """To add to the ledger (``optimize_batch`` does not modify the ledger it is given)."""
    solver_status: str
    """CP-SAT's status (OPTIMAL / FEASIBLE), or why it did not run (SKIPPED, TRIVIAL)."""
    objective: float | None
    """The soft score of the plan (second solve); None when the solver gave no plan."""
    fallback: str | None
    """Why the greedy rule's plan was used instead of the solver's, when it was."""
    assigned_hours: float
    greedy_assigned_hours: float
    """What the greedy rule would have assigned from the same input (the baseline)."""
    solve_seconds: float = 0.0
    """Wall time of the whole call, model and re-check included."""
    deterministic: bool = True
    """False when the wall clock, not the work budget, ended a search."""
    assignments: dict[str, dict[Role, str]] = field(default_factory=dict)
    """request id -> role -> staff id, for every assigned request."""
    replanned: list[str] = field(default_factory=list)
    """Planned requests whose people no longer fitted when the plan was applied in the
    batch's order (decided by the greedy rule there instead)."""


@dataclass
class AppliedPlan:
    outcomes: list[tuple[AssignmentResult, list[Reservation]]]
    """One per request, in the order given."""
    replanned: list[str]
    """Request ids whose planned people no longer fit: decided by the greedy rule instead."""


def assigned_hours(results: Sequence[AssignmentResult]) -> float:
    return round(
        sum(r.preparer_hours + r.reviewer_hours for r in results if r.outcome == "assigned"), 2
    )


def assignments_of(results: Sequence[AssignmentResult]) -> dict[str, dict[Role, str]]:
    plan: dict[str, dict[Role, str]] = {}
    for result in results:
        if result.outcome != "assigned" or result.preparer is None:
            continue
        roles = {Role.PREPARER: result.preparer.id}
        if result.reviewer is not None:
            roles[Role.REVIEWER] = result.reviewer.id
        plan[result.request_id] = roles
    return plan


# --- applying a plan -------------------------------------------------------------------------


def apply_plan(
    requests: Sequence[AssignmentRequest],
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    planned: Mapping[str, Mapping[Role, str]],
    *,
    day_left: float = 1.0,
) -> AppliedPlan:
    """Turn a plan into results, deciding the requests one by one in the order given (which
    must be earliest due first), exactly as the greedy rule walks a batch:

    * a request that keeps someone already booked (``keep_preparer`` / ``keep_reviewer``: a
      one-role reassignment, a changed estimate) is decided by ``decide``: the kept people
      stay, whatever the plan says;
    * a planned request has each planned person re-checked with ``choose`` (eligibility) and
      ``fits`` (capacity) against the ledger as it is at that point; if they no longer fit it
      is decided by ``decide`` instead and reported in ``replanned``;
    * any other request (the plan leaves it for partner review, or the solver did not run) is
      decided by ``decide``.

    One order for every decision matters because a reviewer's hours are checked at a lower
    ceiling than a preparer's: taken in another order, a preparer booked after a review could
    leave that review past the reviewer ceiling it was checked against. So every decision of
    the batch fits against all the decisions before it, in the batch's order, which is what the
    dispatcher documents and what an audit re-checks.

    Adds every reservation to ``ledger`` as it goes, like ``decide_batch``.
    """
    staff = {c.member.id for c in snapshot.staff}
    outcomes: list[tuple[AssignmentResult, list[Reservation]]] = []
    replanned: list[str] = []
    joint = sum(1 for r in requests if planned.get(r.request_id))
    for request in requests:
        want = planned.get(request.request_id)
        applied = None
        if want and not keeps_someone(request, staff):
            applied = _apply_one(request, snapshot, ledger, learned_history, want, joint, day_left)
            if applied is None:
                replanned.append(request.request_id)
        if applied is None:
            applied = decide(request, snapshot, ledger, learned_history, day_left=day_left)
        for reservation in applied[1]:
            ledger.add(reservation)
        outcomes.append(applied)
    return AppliedPlan(outcomes, replanned)


def keeps_someone(request: AssignmentRequest, staff: Collection[str]) -> bool:
    """The request keeps a person already booked: decided by the greedy rule, never planned."""
    return request.keep_preparer in staff or request.keep_reviewer in staff


def _apply_one(
    request: AssignmentRequest,
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    want: Mapping[Role, str],
    joint: int,
    day_left: float,
) -> tuple[AssignmentResult, list[Reservation]] | None:
    """``decide`` with the planned people instead of the top-ranked ones; None if they don't fit."""
    service = snapshot.service_type(request.service_type)
    if service is None or request.due_date < snapshot.today:
        return None
    history = merged_history(request.client_id, learned_history, snapshot.client_history)
    staff = {c.member.id: c for c in snapshot.staff}
    if keeps_someone(request, staff):
        return None
    calendar = calendar_of(snapshot)
    needs = role_needs(request, service, snapshot)
    decisions: list[Decision] = []
    chosen: dict[Role, StaffCapacity] = {}
    for need in needs:
        other = chosen[Role.PREPARER].member.id if need.role is Role.REVIEWER else None
        target = want.get(need.role)
        if target is None or target not in staff:
            return None
        decision = choose(
            need, snapshot, ledger, history, request.workflow_id, other, day_left=day_left
        )
        row = next((c for c in decision.candidates if c.staff_id == target), None)
        if row is None or not row.eligible:
            return None
        bookings = ledger.index(target, skip_workflow=request.workflow_id)
        if not fits(
            person_of(staff[target], day_left),
            bookings,
            need.hours,
            need.due,
            snapshot.today,
            calendar,
            role_ceiling(need, staff[target].member.tier, snapshot.policy.review_reserve),
            start=need.start,
        ):
            return None
        reason = _joint_reason(need, row, decision.candidates, joint)
        decisions.append(
            decision.model_copy(update={"outcome": "assigned", "chosen": target, "reason": reason})
        )
        chosen[need.role] = staff[target]

    return assigned(
        request,
        chosen,
        needs,
        decisions,
        snapshot,
        ledger,
        reason=decisions[0].reason,
        day_left=day_left,
    )


def _joint_reason(
    need: RoleNeed, winner: CandidateScore, candidates: list[CandidateScore], joint: int
) -> str:
    text = _chosen_reason(need, winner, candidates)
    top = next(c for c in candidates if c.eligible)
    if top.staff_id != winner.staff_id:
        text += (
            f"; {top.name} ranked first for this engagement alone, and the plan for the whole "
            f"batch gave it to {winner.name}"
        )
    if joint > 1:
        others = joint - 1
        text += f"; assigned jointly with {others} other engagement{'s' if others > 1 else ''}"
    return text


# --- the optimiser ---------------------------------------------------------------------------


def optimize_batch(
    requests: Sequence[AssignmentRequest],
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    *,
    time_limit_s: float,
    seed: int = 0,
    weights: OptimizerWeights | None = None,
    current_plan: Mapping[tuple[str, Role], str] | None = None,
    day_left: float = 1.0,
) -> BatchPlan:
    """Decide a batch jointly. Does not modify ``ledger``: add ``BatchPlan.reservations``.

    ``day_left``: the share of today's working hours still ahead (as for ``decide``)."""
    started = time.perf_counter()
    ordered = batch_order(requests)
    greedy_ledger = Ledger(ledger.reservations)
    greedy = decide_batch(ordered, snapshot, greedy_ledger, learned_history, day_left=day_left)
    greedy_hours = assigned_hours(greedy)

    def fallback(
        status: str, why: str, objective: float | None = None, deterministic: bool = True
    ) -> BatchPlan:
        assigned = {r.workflow_id for r in greedy if r.outcome == "assigned"}
        return BatchPlan(
            results=greedy,
            reservations=[r for r in greedy_ledger.reservations if r.workflow_id in assigned],
            solver_status=status,
            objective=objective,
            fallback=why,
            assigned_hours=greedy_hours,
            greedy_assigned_hours=greedy_hours,
            solve_seconds=round(time.perf_counter() - started, 4),
            deterministic=deterministic,
            assignments=assignments_of(greedy),
        )

    if time_limit_s < MIN_TIME_LIMIT_S:
        return fallback(
            "SKIPPED",
            f"time limit {time_limit_s:g} s is below the {MIN_TIME_LIMIT_S:g} s a solve needs",
        )
    if len({r.workflow_id for r in ordered}) != len(ordered):
        return fallback("SKIPPED", "several requests of one engagement in the batch")

    # Requests keeping someone are decided first by the greedy rule (``apply_plan`` step 1);
    # the model plans the rest around them.
    staff = {c.member.id for c in snapshot.staff}
    around = Ledger(ledger.reservations)
    for request in ordered:
        if keeps_someone(request, staff):
            decided = decide(request, snapshot, around, learned_history, day_left=day_left)
            for reservation in decided[1]:
                around.add(reservation)
    free = [r for r in ordered if not keeps_someone(r, staff)]
    planned: dict[str, dict[Role, str]] = {}
    status, objective = "TRIVIAL", None  # nobody to choose between: ``decide`` explains each
    deterministic = True
    try:
        model = _BatchModel.build(
            free, snapshot, around, learned_history, weights, current_plan, day_left
        )
        solved = None if model.empty else model.solve(assignments_of(greedy), time_limit_s, seed)
    except Exception as err:  # any solver failure: the greedy rule decides
        # ortools missing or broken, a model it rejects: dispatch must still answer, and the
        # greedy plan is always valid. The type only: a message could quote client data.
        return fallback("ERROR", f"the solver failed ({type(err).__name__})")
    if not model.empty:
        if solved is None:
            return fallback(
                model.status,
                f"the solver found no plan in time ({model.status})",
                deterministic=model.deterministic,
            )
        status, objective, planned = model.status, model.objective, solved
        deterministic = model.deterministic

    plan_ledger = Ledger(ledger.reservations)
    applied = apply_plan(
        ordered, snapshot, plan_ledger, learned_history, planned, day_left=day_left
    )
    results = [result for result, _ in applied.outcomes]
    hours = assigned_hours(results)
    # Applied in the batch's order, every decision fits against the ones before it, including
    # those of a planned engagement the greedy rule had to decide after all (``replanned``); the
    # plan stands when it still places at least the greedy rule's hours.
    if hours < greedy_hours - 1e-6:
        replans = (
            f" ({len(applied.replanned)} planned engagement(s) no longer fit when applied in order)"
            if applied.replanned
            else ""
        )
        return fallback(
            status,
            f"the greedy rule assigns more hours ({greedy_hours:g} h against {hours:g} h)"
            + replans,
            objective,
            deterministic,
        )
    return BatchPlan(
        results=results,
        reservations=[r for _, reservations in applied.outcomes for r in reservations],
        solver_status=status,
        objective=objective,
        fallback=None,
        replanned=applied.replanned,
        assigned_hours=hours,
        greedy_assigned_hours=greedy_hours,
        solve_seconds=round(time.perf_counter() - started, 4),
        deterministic=deterministic,
        assignments=assignments_of(results),
    )


@dataclass(frozen=True)
class _Choice:
    """One boolean of the model: this person takes this role of this request."""

    request: int
    role: Role
    staff_id: str
    hours: int
    due: date
    ceiling: float
    soft: int


@dataclass
class _Request:
    index: int
    """Position in the batch (earliest due first)."""
    request: AssignmentRequest
    hours: int
    """All roles' hours, scaled: what assigning it adds to the first objective."""
    urgency: int
    choices: dict[Role, list[_Choice]]


def _cents(hours: float) -> int:
    """Hours to integer hundredths, rounded up (work is never under-counted)."""
    return math.ceil(round(hours * SCALE, 6))


def _cents_down(hours: float) -> int:
    """Capacity to integer hundredths, rounded down (capacity is never over-counted)."""
    return math.floor(round(hours * SCALE, 6))


class _BatchModel:
    """The CP-SAT model of one batch. Variables are created in batch order, roles in order,
    people by id, so the same input builds the same model."""

    def __init__(self, snapshot: CapacitySnapshot, day_left: float = 1.0) -> None:
        from ortools.sat.python import cp_model  # heavy (~2 s): only where a solve happens

        self._cp: Any = cp_model
        self.model: Any = cp_model.CpModel()
        self.snapshot = snapshot
        self.day_left = day_left
        self.requests: list[_Request] = []
        self.assigned: dict[int, Any] = {}
        """Batch position -> "this request is assigned"."""
        self.x: dict[tuple[int, Role, str], Any] = {}
        self.hours_terms: list[tuple[Any, int]] = []
        self.soft_terms: list[tuple[Any, int]] = []
        self.penalties: list[tuple[Any, int]] = []
        self.people: list[tuple[StaffCapacity, list[_Choice], BookingIndex]] = []
        """Everyone with a candidate role: their roles and their fixed bookings."""
        self.weights = OptimizerWeights()
        self.status = "UNKNOWN"
        self.objective: float | None = None
        self.deterministic = True

    @property
    def empty(self) -> bool:
        return not self.assigned

    @classmethod
    def build(
        cls,
        ordered: Sequence[AssignmentRequest],
        snapshot: CapacitySnapshot,
        ledger: Ledger,
        learned_history: dict[str, list[str]],
        weights: OptimizerWeights | None,
        current_plan: Mapping[tuple[str, Role], str] | None,
        day_left: float = 1.0,
    ) -> _BatchModel:
        self = cls(snapshot, day_left)
        w = self.weights = weights or OptimizerWeights.from_policy(snapshot.policy.weights)
        current = current_plan or {}
        staff = {c.member.id: c for c in snapshot.staff}
        calendar = calendar_of(snapshot)
        today = snapshot.today

        # The roles this batch decides again; every other reservation stays booked whatever the
        # plan.
        redecided: set[tuple[str, Role]] = set()
        for i, request in enumerate(ordered):
            service = snapshot.service_type(request.service_type)
            if service is None or request.due_date < today:
                continue  # ``decide`` sends it to partner review, with the reason
            history = merged_history(request.client_id, learned_history, snapshot.client_history)
            choices: dict[Role, list[_Choice]] = {}
            total = 0
            for need in role_needs(request, service, snapshot):
                total += _cents(need.hours)
                redecided.add((request.workflow_id, need.role))
                # The production rule's own candidate rows: eligibility is never re-derived.
                decision = choose(
                    need, snapshot, ledger, history, request.workflow_id, None, day_left=day_left
                )
                rows = sorted(
                    (c for c in decision.candidates if c.eligible), key=lambda c: c.staff_id
                )
                held = current.get((request.workflow_id, need.role))
                choices[need.role] = [
                    _Choice(
                        request=i,
                        role=need.role,
                        staff_id=c.staff_id,
                        hours=_cents(need.hours),
                        due=need.due,
                        ceiling=role_ceiling(need, c.tier, snapshot.policy.review_reserve),
                        soft=round(
                            100 * w.continuity * c.scores["client_history"]
                            + 100 * w.specialization * c.scores["specialization"]
                            + 100 * w.lowest_tier * c.scores["lowest_tier"]
                            + (100 * w.churn if held == c.staff_id else 0)
                        ),
                    )
                    for c in rows
                ]
            if any(not c for c in choices.values()):
                continue  # some role has nobody: partner review, explained by ``decide``
            days = calendar.count_working_days(today, request.due_date)
            urgency = round(100 * URGENCY_DAYS / (URGENCY_DAYS + days))
            self._add_request(_Request(i, request, total, urgency, choices), w)

        if self.empty:
            return self
        by_person: dict[str, list[_Choice]] = {}
        for req in self.requests:
            for role_choices in req.choices.values():
                for choice in role_choices:
                    by_person.setdefault(choice.staff_id, []).append(choice)
        for member_id in sorted(by_person):
            base = BookingIndex.of(
                Booking(r.hours, r.due)
                for r in ledger.reservations
                if r.staff_id == member_id and (r.workflow_id, r.role) not in redecided
            )
            # The order the greedy rule (and ``apply_plan``) adds them: due date, batch
            # position, preparer before reviewer.
            mine = sorted(
                by_person[member_id], key=lambda c: (c.due, c.request, c.role is Role.REVIEWER)
            )
            self._capacity(staff[member_id], mine, base)
            self.people.append((staff[member_id], mine, base))
        return self

    def _var(self, choice: _Choice) -> Any:
        return self.x[(choice.request, choice.role, choice.staff_id)]

    def _add_request(self, req: _Request, w: OptimizerWeights) -> None:
        m = self.model
        i = req.index
        a = m.new_bool_var(f"assign_{i}")
        self.assigned[i] = a
        self.requests.append(req)
        self.hours_terms.append((a, req.hours))
        self.soft_terms.append((a, round(w.urgency * req.urgency * req.hours / SCALE)))
        for role, role_choices in req.choices.items():
            xs = []
            for choice in role_choices:
                x = m.new_bool_var(f"x_{i}_{role.value}_{choice.staff_id}")
                self.x[(i, role, choice.staff_id)] = x
                xs.append(x)
                self.soft_terms.append((x, choice.soft))
            m.add(sum(xs) == a)  # every role or none
        if Role.REVIEWER in req.choices:
            for choice in req.choices[Role.PREPARER]:
                reviewer = self.x.get((i, Role.REVIEWER, choice.staff_id))
                if reviewer is not None:
                    # preparer != reviewer: ``choose`` enforces it given the preparer, but the
                    # model picks both roles at once, so the same person must be ruled out here.
                    m.add_at_most_one([self._var(choice), reviewer])

    def _capacity(self, cap: StaffCapacity, mine: list[_Choice], base: BookingIndex) -> None:
        """The greedy rule's capacity test, for every role this person could take.

        ``fits`` adds jobs earliest due first; a job due ``d`` with ceiling ``c`` fits when, at
        ``d`` and at every later due date D of what is already booked, all work due by D fits
        ``capacity(today, D) x c``. Added in that order, what is booked when it is added is the
        fixed bookings plus the batch's roles due by ``d`` (its prefix). So, per person:

        * at every checkpoint D, all work due by D fits ``capacity(today, D) x`` the highest
          ceiling among this person's candidate roles (holds in any plan the greedy rule could
          build, stated unconditionally so the LP bound stays tight);
        * a role with a lower ceiling (a reviewer's), once taken, also bounds its prefix by the
          least slack at that lower ceiling over ``d`` and the later fixed due dates.

        So a plan passes ``fits`` when re-checked in that order, and every plan the greedy rule
        could build is a solution (its plan is the solver's starting point).
        """
        m = self.model
        person = person_of(cap, self.day_left)
        calendar = calendar_of(self.snapshot)
        today = self.snapshot.today
        top = max(c.ceiling for c in mine)
        dues = sorted({c.due for c in mine})

        def room(day: date, ceiling: float) -> int:
            """Capacity to ``day`` at ``ceiling`` minus the fixed work due by then, scaled."""
            limit = _cents_down(capacity_between(person, today, day, calendar, ceiling))
            return limit - _cents(base.demand_by(day))

        def prefix(day: date) -> tuple[list[_Choice], Any]:
            due_by = [c for c in mine if c.due <= day]
            expr = self._cp.LinearExpr.weighted_sum(
                [self._var(c) for c in due_by], [c.hours for c in due_by]
            )
            return due_by, expr

        for day in sorted({d for d in base.dues if d >= dues[0]} | set(dues)):
            due_by, expr = prefix(day)
            slack = room(day, top)
            if sum(c.hours for c in due_by) <= slack:
                continue  # can never bind
            if slack < 0:
                # Already full by ``day`` (``choose`` blocks these too); keep the model feasible.
                for c in due_by:
                    m.add(self._var(c) == 0)
                continue
            m.add(expr <= slack)

        # A role with a lower ceiling sees, when the greedy rule adds it, only what was added
        # before it: earlier due dates, and on its own date earlier requests (a request's
        # preparer before its reviewer). ``mine`` is sorted in exactly that order.
        later = sorted(set(base.dues))
        for k, choice in enumerate(mine):
            if choice.ceiling >= top:
                continue
            slack = min(
                room(d, choice.ceiling) for d in [choice.due, *(d for d in later if d > choice.due)]
            )
            before = mine[: k + 1]
            if sum(c.hours for c in before) <= slack:
                continue
            expr = self._cp.LinearExpr.weighted_sum(
                [self._var(c) for c in before], [c.hours for c in before]
            )
            m.add(expr <= slack).only_enforce_if(self._var(choice))

    def _fairness(
        self,
        cap: StaffCapacity,
        mine: list[_Choice],
        base: BookingIndex,
        horizon: date,
        solution: Mapping[int, int],
    ) -> None:
        """Utilisation to the horizon, penalised convexly (u^2, u in per mille, piecewise).

        Hinted from ``solution`` so the second solve starts from a complete, feasible plan.
        """
        m = self.model
        calendar = calendar_of(self.snapshot)
        capacity = _cents_down(
            capacity_between(
                person_of(cap, self.day_left), self.snapshot.today, horizon, calendar, 1.0
            )
        )
        if capacity <= 0:
            return
        fixed = _cents(base.demand_by(horizon))
        most = fixed + sum(c.hours for c in mine)
        u_max = -(-1000 * most // capacity)
        u = m.new_int_var(0, u_max, f"util_{cap.member.id}")
        load = self._cp.LinearExpr.weighted_sum(
            [self._var(c) for c in mine], [c.hours for c in mine]
        )
        m.add(capacity * u >= 1000 * load + 1000 * fixed)
        chords = list(pairwise(UTILISATION_BREAKS))
        top = max(-(-((lo + hi) * u_max - lo * hi) // 1000) for lo, hi in chords)
        penalty = m.new_int_var(0, max(top, 0), f"unfair_{cap.member.id}")
        for lo, hi in chords:
            # The chord of u^2 / 1000 between two breaks: the penalty is the interpolation of
            # u^2 through the breaks (exact at them, convex, never below the curve).
            m.add(1000 * penalty >= (lo + hi) * u - lo * hi)
        self.penalties.append((penalty, round(self.weights.fairness)))

        now = fixed + sum(c.hours * solution[self._var(c).index] for c in mine)
        u_now = -(-1000 * now // capacity)
        m.add_hint(u, u_now)
        m.add_hint(
            penalty, max(0, *(-(-((lo + hi) * u_now - lo * hi) // 1000) for lo, hi in chords))
        )

    def solve(
        self, hint: Mapping[str, Mapping[Role, str]], time_limit_s: float, seed: int
    ) -> dict[str, dict[Role, str]] | None:
        """Most hours first, then the best soft score with those hours held. None: no plan."""
        cp = self._cp
        m = self.model
        deadline = time.perf_counter() + time_limit_s
        work = time_limit_s * WORK_PER_SECOND
        # Start from the greedy rule's plan: every plan the greedy rule builds is a solution.
        for req in self.requests:
            want = hint.get(req.request.request_id, {})
            m.add_hint(self.assigned[req.index], 1 if want else 0)
            for role, role_choices in req.choices.items():
                for choice in role_choices:
                    m.add_hint(self._var(choice), 1 if want.get(role) == choice.staff_id else 0)

        hours = cp.LinearExpr.weighted_sum(
            [v for v, _ in self.hours_terms], [h for _, h in self.hours_terms]
        )
        m.maximize(hours)
        # Without the LP relaxation the search finds more hours per unit of work (measured on
        # month-end bursts of 60-150 requests); the hours bound is weak either way.
        first = self._solver(work * PHASE_ONE_SHARE, deadline, seed, linearization_level=0)
        status = first.solve(m)
        self._note_stop(first, status)
        if status not in (cp.OPTIMAL, cp.FEASIBLE):
            self.status = first.status_name(status)
            return None
        first_optimal = status == cp.OPTIMAL
        solution = self._read(first)

        # Second solve: hold the hours, maximise the soft score, starting from the first plan.
        m.clear_hints()
        for var in self._decision_vars():
            m.add_hint(var, solution[var.index])
        m.add(hours >= round(first.objective_value))
        if self.weights.fairness > 0:
            # Only now: the first solve does not care who is busy, only how much is placed.
            horizon = max(req.request.due_date for req in self.requests)
            for cap, mine, base in self.people:
                self._fairness(cap, mine, base, horizon, solution)
        terms = self.soft_terms + [(v, -c) for v, c in self.penalties]
        m.maximize(cp.LinearExpr.weighted_sum([v for v, _ in terms], [c for _, c in terms]))
        remaining = work - first.response_proto.deterministic_time
        second = self._solver(max(remaining, work * (1 - PHASE_ONE_SHARE)), deadline, seed)
        status = second.solve(m)
        self._note_stop(second, status)
        if status in (cp.OPTIMAL, cp.FEASIBLE):
            solution = self._read(second)
            self.objective = float(second.objective_value)
            self.status = "OPTIMAL" if first_optimal and status == cp.OPTIMAL else "FEASIBLE"
        else:
            self.status = "OPTIMAL" if first_optimal else "FEASIBLE"

        planned: dict[str, dict[Role, str]] = {}
        for req in self.requests:
            if not solution[self.assigned[req.index].index]:
                continue
            planned[req.request.request_id] = {
                role: choice.staff_id
                for role, role_choices in req.choices.items()
                for choice in role_choices
                if solution[self._var(choice).index]
            }
        return planned

    def _note_stop(self, solver: Any, status: Any) -> None:
        """Whether the wall clock, not the work budget, ended this search."""
        if status in (self._cp.OPTIMAL, self._cp.INFEASIBLE):
            return
        limit = solver.parameters.max_deterministic_time
        if solver.response_proto.deterministic_time < limit * 0.999:
            self.deterministic = False

    def _decision_vars(self) -> list[Any]:
        return [*self.assigned.values(), *self.x.values()]

    def _solver(self, work: float, deadline: float, seed: int, **extra: Any) -> Any:
        solver = self._cp.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = seed
        solver.parameters.max_deterministic_time = work
        solver.parameters.max_time_in_seconds = max(deadline - time.perf_counter(), 0.01)
        for name, value in extra.items():
            setattr(solver.parameters, name, value)
        return solver

    def _read(self, solver: Any) -> dict[int, int]:
        """Values of the decision variables, by variable index (variables are not hashable)."""
        return {var.index: int(solver.value(var)) for var in self._decision_vars()}


__all__ = [
    "AppliedPlan",
    "BatchPlan",
    "OptimizerWeights",
    "apply_plan",
    "assigned_hours",
    "assignments_of",
    "keeps_someone",
    "optimize_batch",
]
