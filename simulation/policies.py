"""Dispatch policies behind one interface, from a random baseline to the production logic.

| id  | policy | capacity check |
|-----|--------|----------------|
| P0  | random eligible (skill and tier only) | none |
| P1  | round robin over the eligible, skipping people absent today; resets every 30 days | none |
| P2  | most hours free this week | none (the ranking only) |
| P3  | production: ``dispatch.decision.decide``, imported as it is | production's EDF test |
| P3p | P3 with due-date feasibility on the hours still to do (see below) | EDF, open hours |
| P4  | production's batch optimizer ``dispatch.optimizer.optimize_batch`` | the optimizer's |
| P3w | opt-in reference: the seed's rule with a weekly-only check (re-implemented) | weekly |

**Naming.** The anchors' P3 is "the seed rule" and P3' is "the seed rule plus an
earliest-due-first feasibility test". Production's rule is the seed rule and *already* carries
that test (``dispatch.capacity.available_hours``: everything due by D, plus the new job, must
fit the capacity until D), so P3 - the policy the issue's targets are about - is production's
``decide`` unchanged. The anchors' P3' wording asks for the test on the *remaining* hours of
each job ("remaining hours of jobs due <= D"); production instead keeps each reservation's
estimate whole until the engagement closes (hours logged on it are not taken off, and the
preparer's hours stay booked while the job is in review). P3p is therefore the same
production ``decide`` fed a ledger of open hours (estimate - logged, nothing once the role's
work is handed over): a what-if for production's ledger, with not one line of the rule
re-implemented. ``P3w`` keeps the literal seed rule with a weekly check for reference only;
it is the one policy here that re-implements ranking (production has no weekly-only mode),
so it is not in the default set.

P3, P3p and P4 call production functions as they are; nothing of theirs is re-implemented
here. What the simulator supplies is what production's dispatcher workflow would hold: the
snapshot (weekly capacity, hours logged this week and last, known absences, configured client
history), the reservations ledger and the history the dispatcher learned.

P0-P2 (and P3w) share one notion of "free this week" (the seed's, also what a firm's
spreadsheet shows): weekly chargeable hours - hours logged this week - estimated hours still
open on the person's assignments. A partner handles what a policy leaves unassigned (see
``partner_assign``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from dispatch.config import ServiceType, StaffMember
from dispatch.decision import (
    Ledger,
    RoleNeed,
    decide,
    merged_history,
    partner_assignment,
    role_needs,
)
from dispatch.models import (
    AssignmentRequest,
    AssignmentResult,
    CapacitySnapshot,
    ForceAssignRequest,
    Reservation,
    Role,
)


@dataclass(frozen=True)
class Pending:
    """A request waiting for a decision; ``parked`` ones already went to partner review once."""

    request: AssignmentRequest
    parked: bool
    order: int


@dataclass
class Outcome:
    request_id: str
    preparer: str | None = None
    reviewer: str | None = None
    preparer_hours: float = 0.0
    reviewer_hours: float = 0.0
    reason: str = ""
    forced: bool = False
    explanation: Any = None
    """The policy's account: production's ``AssignmentResult`` or a small dict."""
    reservations: list[Reservation] = field(default_factory=list)
    """Production policies hand back production's reservations; others get them built."""

    @property
    def assigned(self) -> bool:
        return self.preparer is not None


class DispatchView(Protocol):
    """What a dispatcher can know: estimates, bookings, logged hours, absences. No truths."""

    @property
    def now(self) -> float: ...

    @property
    def today(self) -> date: ...

    def members(self) -> Sequence[StaffMember]: ...

    def weekly_capacity(self, staff_id: str) -> float: ...

    def logged_this_week(self, staff_id: str) -> float: ...

    def booked_remaining(self, staff_id: str) -> float:
        """Estimated hours still open on the person's assignments (estimate - logged, >= 0)."""
        ...

    def absent_today(self, staff_id: str) -> bool: ...

    def snapshot(self) -> CapacitySnapshot: ...

    def reservations(self) -> list[Reservation]: ...

    def ledger(self) -> Ledger:
        """Production's ledger of the current reservations (a policy may add to it as it
        decides a batch, as the dispatcher does; the simulator applies the same reservations
        afterwards)."""
        ...

    def learned_history(self) -> dict[str, list[str]]: ...

    def service(self, type_id: str) -> ServiceType: ...

    def rng(self, key: str) -> random.Random: ...


class DispatchPolicy(Protocol):
    name: str
    batch_window_hours: float
    """How long arrivals are collected before a batch is decided (0: as they come)."""

    def decide(self, view: DispatchView, batch: Sequence[Pending]) -> list[Outcome]: ...

    def partner_assign(self, view: DispatchView, pending: Pending) -> Outcome: ...


def batch_order(batch: Sequence[Pending]) -> list[Pending]:
    """Production's dispatcher order: earliest due first, parked before new on the same date."""
    return sorted(batch, key=lambda p: (p.request.due_date, not p.parked, p.order))


# --- shared pieces for the baselines -----------------------------------------------------------


def needs_of(view: DispatchView, request: AssignmentRequest) -> list[RoleNeed]:
    """Production's own reading of a request: hours, tiers and skills per role."""
    return role_needs(request, view.service(request.service_type), view.snapshot())


def qualified(member: StaffMember, need: RoleNeed, other: str | None) -> bool:
    """Skill and tier (and the request's exclusions): the constraints no policy may break."""
    return (
        member.active
        and all(skill in member.skills for skill in need.required_skills)
        and need.min_tier.rank <= member.tier.rank <= need.max_tier.rank
        and member.id not in need.exclude
        and member.id != other
    )


def free_this_week(view: DispatchView, staff_id: str, extra: dict[str, float]) -> float:
    return (
        view.weekly_capacity(staff_id)
        - view.logged_this_week(staff_id)
        - view.booked_remaining(staff_id)
        - extra.get(staff_id, 0.0)
    )


def load_of(view: DispatchView, staff_id: str, extra: dict[str, float]) -> float:
    """Booked open hours as a share of a week: the partner's "least loaded"."""
    cap = max(view.weekly_capacity(staff_id), 1e-9)
    return (view.booked_remaining(staff_id) + extra.get(staff_id, 0.0)) / cap


Chooser = Callable[[RoleNeed, list[StaffMember], dict[str, float], AssignmentRequest], str | None]


class _Baseline:
    """Decide each role in production's order with a policy-specific chooser."""

    name = "baseline"
    batch_window_hours = 0.0
    skip_absent = True

    def _choose(
        self,
        view: DispatchView,
        need: RoleNeed,
        eligible: list[StaffMember],
        extra: dict[str, float],
        request: AssignmentRequest,
    ) -> tuple[str | None, dict[str, Any]]:
        raise NotImplementedError

    def decide(self, view: DispatchView, batch: Sequence[Pending]) -> list[Outcome]:
        extra: dict[str, float] = {}
        out: list[Outcome] = []
        members = view.members()
        for pending in batch_order(batch):
            request = pending.request
            chosen: dict[Role, str] = {}
            hours: dict[Role, float] = {}
            why: dict[str, Any] = {}
            blocked = ""
            for need in needs_of(view, request):
                other = chosen.get(Role.PREPARER) if need.role is Role.REVIEWER else None
                kept = request.keep_reviewer if need.role is Role.REVIEWER else None
                if kept is not None and kept != other:
                    chosen[need.role], hours[need.role] = kept, need.hours
                    continue
                eligible = [
                    m
                    for m in members
                    if qualified(m, need, other)
                    and not (self.skip_absent and view.absent_today(m.id))
                ]
                pick, detail = self._choose(view, need, eligible, extra, request)
                why[need.role.value] = detail
                if pick is None:
                    blocked = f"no {need.role.value} fits ({detail.get('why', 'nobody eligible')})"
                    break
                chosen[need.role], hours[need.role] = pick, need.hours
            if blocked:
                out.append(Outcome(request.request_id, reason=blocked, explanation=why))
                continue
            for role, staff_id in chosen.items():
                extra[staff_id] = extra.get(staff_id, 0.0) + hours[role]
            out.append(
                Outcome(
                    request.request_id,
                    preparer=chosen[Role.PREPARER],
                    reviewer=chosen.get(Role.REVIEWER),
                    preparer_hours=hours[Role.PREPARER],
                    reviewer_hours=hours.get(Role.REVIEWER, 0.0),
                    reason=self.name,
                    explanation=why,
                )
            )
        return out

    def partner_assign(self, view: DispatchView, pending: Pending) -> Outcome:
        return least_loaded_assignment(view, pending)


def least_loaded_assignment(view: DispatchView, pending: Pending) -> Outcome:
    """The partner's review (anchors §4.6): the least-loaded qualified person, room or not."""
    request = pending.request
    chosen: dict[Role, str] = {}
    hours: dict[Role, float] = {}
    members = view.members()
    for need in needs_of(view, request):
        other = chosen.get(Role.PREPARER) if need.role is Role.REVIEWER else None
        kept = request.keep_reviewer if need.role is Role.REVIEWER else None
        if kept is not None and kept != other:
            chosen[need.role], hours[need.role] = kept, need.hours
            continue
        pool = [m for m in members if qualified(m, need, other) and not view.absent_today(m.id)]
        pool = pool or [m for m in members if qualified(m, need, other)]
        if not pool:
            # Everyone able has declined it: the partner's word overrides a decline.
            anyone = RoleNeed(**{**need.__dict__, "exclude": frozenset()})
            pool = [m for m in members if qualified(m, anyone, other)]
        if not pool:
            return Outcome(request.request_id, reason=f"nobody can be {need.role.value}")
        best = min(pool, key=lambda m: (load_of(view, m.id, {}), m.id))
        chosen[need.role], hours[need.role] = best.id, need.hours
    return Outcome(
        request.request_id,
        preparer=chosen[Role.PREPARER],
        reviewer=chosen.get(Role.REVIEWER),
        preparer_hours=hours[Role.PREPARER],
        reviewer_hours=hours.get(Role.REVIEWER, 0.0),
        reason="assigned by the partner to the least-loaded qualified person",
        forced=True,
    )


class RandomEligible(_Baseline):
    """P0: any qualified person, at random (a lower bound; absences ignored)."""

    name = "P0"
    skip_absent = False

    def _choose(
        self,
        view: DispatchView,
        need: RoleNeed,
        eligible: list[StaffMember],
        extra: dict[str, float],
        request: AssignmentRequest,
    ) -> tuple[str | None, dict[str, Any]]:
        if not eligible:
            return None, {"why": "no qualified person"}
        rng = view.rng(f"P0:{request.request_id}:{need.role.value}")
        return rng.choice(sorted(m.id for m in eligible)), {"eligible": len(eligible)}


class RoundRobin(_Baseline):
    """P1: the next qualified person in a fixed rotation; restarts every 30 days."""

    name = "P1"
    RESET_HOURS = 30 * 24.0

    def __init__(self) -> None:
        self._next: dict[Role, int] = {}
        self._epoch = 0

    def _choose(
        self,
        view: DispatchView,
        need: RoleNeed,
        eligible: list[StaffMember],
        extra: dict[str, float],
        request: AssignmentRequest,
    ) -> tuple[str | None, dict[str, Any]]:
        epoch = int(view.now // self.RESET_HOURS)
        if epoch != self._epoch:
            self._epoch, self._next = epoch, {}
        if not eligible:
            return None, {"why": "no qualified person present"}
        ring = sorted(m.id for m in view.members())
        ids = {m.id for m in eligible}
        start = self._next.get(need.role, 0)
        for step in range(len(ring)):
            idx = (start + step) % len(ring)
            if ring[idx] in ids:
                self._next[need.role] = idx + 1
                return ring[idx], {"position": idx}
        return None, {"why": "no qualified person present"}


class MostAvailable(_Baseline):
    """P2: the qualified person with the most hours free this week (no threshold)."""

    name = "P2"

    def _choose(
        self,
        view: DispatchView,
        need: RoleNeed,
        eligible: list[StaffMember],
        extra: dict[str, float],
        request: AssignmentRequest,
    ) -> tuple[str | None, dict[str, Any]]:
        if not eligible:
            return None, {"why": "no qualified person present"}
        best = max(eligible, key=lambda m: (free_this_week(view, m.id, extra), _neg(m.id)))
        return best.id, {"free": round(free_this_week(view, best.id, extra), 2)}


def _neg(staff_id: str) -> tuple[int, ...]:
    """Ties go to the lowest id under ``max``."""
    return tuple(-ord(c) for c in staff_id)


class SeedRule(_Baseline):
    """P3w: the seed's rule with a weekly capacity check, ranked with production's weights."""

    name = "P3w"

    def _choose(
        self,
        view: DispatchView,
        need: RoleNeed,
        eligible: list[StaffMember],
        extra: dict[str, float],
        request: AssignmentRequest,
    ) -> tuple[str | None, dict[str, Any]]:
        free = {m.id: free_this_week(view, m.id, extra) for m in eligible}
        fitting = [m for m in eligible if free[m.id] >= need.hours - 1e-9]
        if not fitting:
            return None, {
                "why": f"nobody has {need.hours:.1f} h free this week",
                "qualified": len(eligible),
            }
        snapshot = view.snapshot()
        weights = snapshot.policy.weights
        history = merged_history(request.client_id, view.learned_history(), snapshot.client_history)
        best_free = max(free[m.id] for m in fitting)
        scored: list[tuple[float, str]] = []
        for m in fitting:
            hist = 0.5 ** history.index(m.id) if m.id in history else 0.0
            spec = (
                sum(1 for s in need.preferred_skills if s in m.skills) / len(need.preferred_skills)
                if need.preferred_skills
                else 0.0
            )
            avail = free[m.id] / best_free if best_free > 0 else 0.0
            tier = max(0.0, 1.0 - (m.tier.rank - need.min_tier.rank) / 3.0)
            total = (
                weights.client_history * hist
                + weights.specialization * spec
                + weights.available_hours * avail
                + weights.lowest_tier * tier
            )
            scored.append((total, m.id))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return scored[0][1], {
            "score": round(scored[0][0], 3),
            "free": round(free[scored[0][1]], 2),
            "fitting": len(fitting),
        }


class Production:
    """P3: production's ``decide``, in the dispatcher workflow's batch order."""

    name = "P3"
    batch_window_hours = 0.0
    ledger = "production"
    """What the simulator's reservations hold for this policy (see ``engine.Behaviour``)."""

    def decide(self, view: DispatchView, batch: Sequence[Pending]) -> list[Outcome]:
        snapshot = view.snapshot()
        ledger = view.ledger()
        # The dispatcher remembers each batch's preparers as it goes (``_remember_client``).
        history = view.learned_history()
        out: list[Outcome] = []
        for pending in batch_order(batch):
            result, reservations = decide(pending.request, snapshot, ledger, history)
            if result.outcome == "assigned":
                for reservation in reservations:
                    ledger.add(reservation)
                remember(history, pending.request.client_id, result)
            out.append(outcome_of(result, reservations))
        return out

    def partner_assign(self, view: DispatchView, pending: Pending) -> Outcome:
        return production_partner_assign(view, pending)


class ProductionOpenHours(Production):
    """P3p: production's ``decide`` over a ledger of open hours (the anchors' P3' wording)."""

    name = "P3p"
    ledger = "open-hours"


HISTORY_PER_CLIENT = 5
"""``workflows.dispatcher.HISTORY_PER_CLIENT``: the dispatcher keeps five names per client."""


def remember(history: dict[str, list[str]], client_id: str, result: AssignmentResult) -> None:
    if result.preparer is None:
        return
    known = history.get(client_id, [])
    history[client_id] = list(dict.fromkeys([result.preparer.id, *known]))[:HISTORY_PER_CLIENT]


def outcome_of(result: AssignmentResult, reservations: list[Reservation]) -> Outcome:
    if result.outcome != "assigned" or result.preparer is None:
        return Outcome(result.request_id, reason=result.reason, explanation=result)
    return Outcome(
        result.request_id,
        preparer=result.preparer.id,
        reviewer=result.reviewer.id if result.reviewer else None,
        preparer_hours=result.preparer_hours,
        reviewer_hours=result.reviewer_hours,
        reason=result.reason,
        explanation=result,
        reservations=list(reservations),
    )


def production_partner_assign(view: DispatchView, pending: Pending) -> Outcome:
    """The partner picks the least-loaded qualified people; production books the preparer.

    ``partner_assignment`` (with "assign anyway") is the production path for a partner's
    decision; it books the preparer only, so the reviewer the partner names is booked here,
    marked forced like the preparer.
    """
    choice = least_loaded_assignment(view, pending)
    if choice.preparer is None:
        return choice
    request = pending.request
    need = {n.role: n for n in needs_of(view, request)}
    prep = need[Role.PREPARER]
    forced = ForceAssignRequest(
        request_id=f"{request.request_id}:partner",
        workflow_id=request.workflow_id,
        partner_id="partner",
        staff_id=choice.preparer,
        client_id=request.client_id,
        start=prep.start,
        due=prep.due,
        hours=prep.hours,
        override_capacity=True,
    )
    result, reservation = partner_assignment(forced, view.snapshot(), view.ledger())
    if reservation is None:
        return Outcome(request.request_id, reason=result.reason, explanation=result)
    reservations = [reservation]
    if choice.reviewer is not None:
        rev = need[Role.REVIEWER]
        reservations.append(
            Reservation(
                workflow_id=request.workflow_id,
                role=Role.REVIEWER,
                staff_id=choice.reviewer,
                hours=rev.hours,
                start=rev.start,
                due=rev.due,
                client_id=request.client_id,
                forced=True,
            )
        )
    return Outcome(
        request.request_id,
        preparer=choice.preparer,
        reviewer=choice.reviewer,
        preparer_hours=prep.hours,
        reviewer_hours=choice.reviewer_hours,
        reason=result.reason,
        forced=True,
        explanation=result,
        reservations=reservations,
    )


POLICY_IDS = ("P0", "P1", "P2", "P3", "P3p", "P4")
"""The default set; ``P3w`` (the weekly seed rule) runs only when asked for."""
EXTRA_POLICY_IDS = ("P3w",)


def make_policy(name: str, *, seed: int = 0, time_limit_s: float | None = None) -> DispatchPolicy:
    key = name.strip()
    if key in ("P3'", "P3prime"):
        key = "P3p"
    if key == "P0":
        return RandomEligible()
    if key == "P1":
        return RoundRobin()
    if key == "P2":
        return MostAvailable()
    if key == "P3":
        return Production()
    if key == "P3p":
        return ProductionOpenHours()
    if key == "P3w":
        return SeedRule()
    if key == "P4":
        from simulation.optimizer_policy import BatchOptimizer

        return BatchOptimizer(seed=seed, time_limit_s=time_limit_s)
    raise KeyError(
        f"unknown policy {name!r}; choose from {', '.join(POLICY_IDS + EXTRA_POLICY_IDS)}"
    )
