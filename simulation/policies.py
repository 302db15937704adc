"""Dispatch policies behind one interface, from a random baseline to the production logic.

| id     | policy | capacity check |
|--------|--------|----------------|
| P0     | random eligible (skill and tier only) | none |
| P1     | round robin over the eligible, skipping those absent today; resets every 30 days | none |
| P2     | most hours free this week | none (the ranking only) |
| P3     | production: ``dispatch.decision.decide`` with its default levers (``Levers``) | EDF |
| P4     | production's batch optimizer ``dispatch.optimizer.optimize_batch`` | the optimizer's |
| P3base | production before the levers: whole estimates, whole days, 80 % reviewer ceiling | EDF |
| P3w    | opt-in reference: the seed's rule with a weekly-only check (re-implemented) | weekly |

Lever variants measure one lever at a time, paired on the same seasons: ``P3-open`` (without
the open-hours ledger), ``P3+ahead`` (with holds for recurring work), ``P3base+day`` (the old
rule with one lever), and the same for P4. ``Levers`` lists them.

**Naming.** The anchors' P3 is "the seed rule" and P3' is "the seed rule plus an
earliest-due-first feasibility test on the remaining hours of each job". Production's rule is
the seed rule with that test (``dispatch.capacity.available_hours``: everything due by D, plus
the new job, must fit the capacity until D), and its ledger holds the hours still to do
(``dispatch.decision.open_hours``), so the anchors' P3' *is* production's P3 (``P3p`` and
``P3'`` are accepted as names for it). ``P3w`` keeps the literal seed rule with a weekly check
for reference only; it is the one policy here that re-implements ranking (production has no
weekly-only mode), so it is not in the default set.

P3 and P4 (and their variants) call production functions as they are; nothing of theirs is
re-implemented here. What the simulator supplies is what production's dispatcher workflow
would hold: the snapshot (weekly capacity, hours logged this week and last, known absences,
configured client history), the reservations ledger, the history the dispatcher learned, the
time of day, and the recurring work its Schedules will create.

P0-P2 (and P3w) share one notion of "free this week" (the seed's, also what a firm's
spreadsheet shows): weekly chargeable hours - hours logged this week - estimated hours still
open on the person's assignments. A partner handles what a policy leaves unassigned (see
``partner_assign``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date
from typing import Any, Protocol

from dispatch.config import CONTINUITY_YIELDS_DEFAULT, Policy, ServiceType, StaffMember, Tier
from dispatch.decision import (
    Ledger,
    RoleNeed,
    decide,
    merged_history,
    partner_assignment,
    partner_options,
    replan,
    role_needs,
)
from dispatch.lookahead import ExpectedWork, place_holds, release_holds, take_holds
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

    @property
    def day_left(self) -> float:
        """Share of today's working hours still ahead (production's ``day_left``)."""
        ...

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

    def expected_work(self) -> list[ExpectedWork]: ...

    def expected_ahead(self, days: int) -> list[ExpectedWork]: ...

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


PartnerPick = Callable[[RoleNeed, str | None], str | None]
"""The partner's choice for one role, given the other role's holder (None: nobody)."""


def partner_decision(view: DispatchView, pending: Pending, pick: PartnerPick, why: str) -> Outcome:
    """The partner fills every role with ``pick`` (a kept reviewer stays); nobody for a role
    means no decision."""
    request = pending.request
    chosen: dict[Role, str] = {}
    hours: dict[Role, float] = {}
    for need in needs_of(view, request):
        other = chosen.get(Role.PREPARER) if need.role is Role.REVIEWER else None
        kept = request.keep_reviewer if need.role is Role.REVIEWER else None
        person = kept if kept is not None and kept != other else pick(need, other)
        if person is None:
            return Outcome(request.request_id, reason=f"nobody can be {need.role.value}")
        chosen[need.role], hours[need.role] = person, need.hours
    return Outcome(
        request.request_id,
        preparer=chosen[Role.PREPARER],
        reviewer=chosen.get(Role.REVIEWER),
        preparer_hours=hours[Role.PREPARER],
        reviewer_hours=hours.get(Role.REVIEWER, 0.0),
        reason=why,
        forced=True,
    )


def least_loaded_assignment(view: DispatchView, pending: Pending) -> Outcome:
    """The partner's review (anchors §4.6): the least-loaded qualified person, room or not."""
    members = view.members()

    def least_loaded(need: RoleNeed, other: str | None) -> str | None:
        pool = [m for m in members if qualified(m, need, other) and not view.absent_today(m.id)]
        pool = pool or [m for m in members if qualified(m, need, other)]
        if not pool:
            # Everyone able has declined it: the partner's word overrides a decline.
            anyone = RoleNeed(**{**need.__dict__, "exclude": frozenset()})
            pool = [m for m in members if qualified(m, anyone, other)]
        if not pool:
            return None
        return min(pool, key=lambda m: (load_of(view, m.id, {}), m.id)).id

    return partner_decision(
        view, pending, least_loaded, "assigned by the partner to the least-loaded qualified person"
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


@dataclass(frozen=True)
class Levers:
    """What production does beyond the seed rule, each one switchable to measure it.

    ``P3`` runs with the levers production keeps by default; ``P3-open`` without the
    open-hours ledger, ``P3+ahead`` with holds as well, ``P3base`` with none (production as it
    was before them: whole estimates, whole days, the 80 % reviewer ceiling), ``P3base+day``
    with one. Levers that are policy knobs set the knob (on: the value below, off: none).
    """

    open: bool = True
    """The ledger holds open hours (``dispatch.decision.open_hours``), not whole estimates."""
    day: bool = True
    """A decision counts only the hours left today (``decide(day_left=...)``)."""
    reviewer: bool = True
    """Reviews are booked to the reviewer's whole capacity (``Policy`` default), not 80 %."""
    ahead: bool = False
    """Holds for known recurring work due within ``HOLD_DAYS`` (``dispatch.lookahead``),
    re-planned every Monday; an arriving engagement takes its hold back before it is decided."""
    replan: bool = False
    """Each morning, work not started whose preparer can no longer do it by its date moves to
    someone who can (``dispatch.decision.replan``), once per engagement."""
    options: bool = False
    """The partner takes production's first ``partner_options`` (the least overtime, the fewest
    commitments at risk) and places at once what needs no overtime; off: the least-loaded
    qualified person, urgent items only (the anchors' partner)."""
    tier: bool = False
    """Lowest sufficient tier weighs ``TIER_WEIGHT`` in the ranking, above available hours."""
    reserve: bool = False
    """Managers keep ``MANAGER_RESERVE`` of their hours for reviews when preparing lower-tier
    work (``Policy.review_reserve``)."""

    free: bool = True
    """A more senior prior preparer keeps the client only while no eligible person of a lower
    sufficient tier has ``FREE_SHARE`` of their hours to the due date free
    (``Policy.continuity_yields_to_free_share``, a firm's default)."""

    share: bool = True
    """Hours free rank as a share of each person's own hours
    (``Policy.available_hours_as_share``, a firm's default)."""

    @classmethod
    def parse(cls, spec: str) -> Levers:
        """``""`` (the defaults), ``"base"`` (none), then ``+name`` / ``-name`` in turn."""
        names = [f.name for f in fields(cls)]
        levers = cls(**dict.fromkeys(names, False)) if spec.startswith("base") else cls()
        rest = spec.removeprefix("base")
        for token in re.findall(r"[+-][a-z]+", rest):
            name = token[1:]
            if name not in names:
                raise KeyError(f"unknown lever {name!r}; choose from {', '.join(names)}")
            levers = replace(levers, **{name: token[0] == "+"})
        if re.sub(r"[+-][a-z]+", "", rest):
            raise KeyError(f"cannot read the levers {spec!r} (e.g. P3-open, P3base+day)")
        return levers

    def policy(self, base: Policy) -> Policy:
        """The firm policy with the knob levers applied."""
        update: dict[str, Any] = {
            "hold_recurring_days": HOLD_DAYS if self.ahead else 0,
            "replan_moves_per_engagement": 1 if self.replan else 0,
        }
        if not self.reviewer:
            update["reviewer_utilization_ceiling"] = SEED_REVIEWER_CEILING
        if self.tier:
            update["weights"] = base.weights.model_copy(update={"lowest_tier": TIER_WEIGHT})
        if self.reserve:
            update["review_reserve"] = {Tier.MANAGER: MANAGER_RESERVE}
        update["continuity_yields_to_free_share"] = FREE_SHARE if self.free else 0.0
        update["available_hours_as_share"] = self.share
        return base.model_copy(update=update)


HOLD_DAYS = 42
"""Holds for next month's closes and this quarter's payroll (six weeks ahead)."""
SEED_REVIEWER_CEILING = 0.8
TIER_WEIGHT = 50.0
MANAGER_RESERVE = 0.5
FREE_SHARE = CONTINUITY_YIELDS_DEFAULT


class Production:
    """P3: production's ``decide``, in the dispatcher workflow's batch order."""

    batch_window_hours = 0.0

    def __init__(self, levers: Levers | None = None, name: str = "P3") -> None:
        self.levers = levers or Levers()
        self.name = name
        self.ledger = "open-hours" if self.levers.open else "whole"
        """What the simulator's reservations hold for this policy (see ``engine.Behaviour``)."""
        self._snapshot: tuple[CapacitySnapshot, CapacitySnapshot] | None = None

    def snapshot(self, view: DispatchView) -> CapacitySnapshot:
        """The dispatcher's snapshot, under the policy the levers make."""
        seen = view.snapshot()
        if self._snapshot is None or self._snapshot[0] is not seen:
            policy = self.levers.policy(seen.policy)
            self._snapshot = (seen, seen.model_copy(update={"policy": policy}))
        return self._snapshot[1]

    @property
    def replan_budget(self) -> int:
        return 1 if self.levers.replan else 0

    def day_left(self, view: DispatchView) -> float:
        return view.day_left if self.levers.day else 1.0

    def plan_ahead(self, view: DispatchView) -> None:
        """Every Monday morning: the holds for known work, planned again from scratch."""
        days = self.snapshot(view).policy.hold_recurring_days
        if days <= 0:
            return
        ledger = view.ledger()
        release_holds(ledger)
        place_holds(
            view.expected_ahead(days),
            self.snapshot(view),
            ledger,
            view.learned_history(),
            day_left=self.day_left(view),
        )

    def replan(
        self, view: DispatchView, requests: Sequence[AssignmentRequest]
    ) -> list[tuple[AssignmentRequest, Outcome]]:
        if not self.levers.replan:
            return []
        moves = replan(
            requests,
            self.snapshot(view),
            view.ledger(),
            view.learned_history(),
            day_left=self.day_left(view),
        )
        return [(request, outcome_of(result, booked)) for request, result, booked in moves]

    def take_holds(self, view: DispatchView, batch: Sequence[Pending]) -> None:
        if self.levers.ahead:
            expected = view.expected_work()
            for pending in batch:
                take_holds(view.ledger(), pending.request, expected)

    def decide(self, view: DispatchView, batch: Sequence[Pending]) -> list[Outcome]:
        snapshot = self.snapshot(view)
        ledger = view.ledger()
        # The dispatcher remembers each batch's preparers as it goes (``_remember_client``).
        history = view.learned_history()
        day_left = self.day_left(view)
        out: list[Outcome] = []
        expected = view.expected_work() if self.levers.ahead else []
        for pending in batch_order(batch):
            if expected:
                take_holds(ledger, pending.request, expected)
            result, reservations = decide(
                pending.request, snapshot, ledger, history, day_left=day_left
            )
            if result.outcome == "assigned":
                for reservation in reservations:
                    ledger.add(reservation)
                remember(history, pending.request.client_id, result)
            out.append(outcome_of(result, reservations))
        return out

    def partner_assign(self, view: DispatchView, pending: Pending) -> Outcome:
        return production_partner_assign(
            view, pending, self.day_left(view), options=self.levers.options
        )

    def free_option(self, view: DispatchView, pending: Pending) -> bool:
        """Production's first option for every role needs no overtime: only a ceiling (the
        reviewer's, a review reserve) stood in the way, and the partner can say yes now."""
        if not self.levers.options:
            return False
        request = pending.request
        snapshot, ledger = view.snapshot(), view.ledger()
        other: str | None = None
        for need in needs_of(view, request):
            if need.role is Role.REVIEWER and request.keep_reviewer not in (None, other):
                continue
            first = partner_options(
                request,
                snapshot,
                ledger,
                role=need.role,
                other_role_holder=other,
                day_left=self.day_left(view),
                limit=1,
            )
            if not first or first[0].overtime_hours > 0:
                return False
            other = first[0].staff_id
        return True


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


def production_partner_assign(
    view: DispatchView, pending: Pending, day_left: float = 1.0, *, options: bool = True
) -> Outcome:
    """The partner decides, and production books what they decide.

    With ``options`` the partner takes the first of production's ``partner_options`` for
    each role (the least overtime, the fewest commitments put at risk); without, the
    least-loaded qualified person (the anchors' partner). ``partner_assignment`` (with "assign
    anyway") is the production path for a partner's decision; it books the preparer only, so
    the reviewer the partner names is booked here, marked forced like the preparer.
    """
    choice = options_choice(view, pending, day_left) if options else None
    if choice is None:
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
    result, reservation = partner_assignment(
        forced, view.snapshot(), view.ledger(), day_left=day_left
    )
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


def options_choice(view: DispatchView, pending: Pending, day_left: float) -> Outcome | None:
    """The partner's pick from production's options: the first one for each role."""
    request = pending.request
    snapshot, ledger = view.snapshot(), view.ledger()
    history = merged_history(request.client_id, view.learned_history(), snapshot.client_history)

    def first_option(need: RoleNeed, other: str | None) -> str | None:
        ranked = partner_options(
            request,
            snapshot,
            ledger,
            role=need.role,
            other_role_holder=other,
            day_left=day_left,
            limit=1,
            history=history,
        )
        return ranked[0].staff_id if ranked else None

    outcome = partner_decision(
        view, pending, first_option, "the partner took production's first option"
    )
    return outcome if outcome.assigned else None


POLICY_IDS = ("P0", "P1", "P2", "P3", "P4")
"""The default set. Also runnable: ``P3w`` (the weekly seed rule), ``P3base`` (production's
rule without the levers) and lever variants of P3 and P4 (``P3-open``, ``P3base+day``, ...)."""
EXTRA_POLICY_IDS = ("P3w", "P3base")


def make_policy(name: str, *, seed: int = 0, time_limit_s: float | None = None) -> DispatchPolicy:
    key = name.strip()
    if key in ("P3'", "P3prime", "P3p"):
        # The anchors' P3' (the seed rule with the due-date test on open hours) is production.
        key = "P3"
    if key == "P0":
        return RandomEligible()
    if key == "P1":
        return RoundRobin()
    if key == "P2":
        return MostAvailable()
    if key == "P3w":
        return SeedRule()
    if key.startswith("P3"):
        return Production(Levers.parse(key[2:]), name=key)
    if key.startswith("P4"):
        from simulation.optimizer_policy import BatchOptimizer

        return BatchOptimizer(
            seed=seed, time_limit_s=time_limit_s, levers=Levers.parse(key[2:]), name=key
        )
    raise KeyError(
        f"unknown policy {name!r}; choose from {', '.join(POLICY_IDS + EXTRA_POLICY_IDS)}"
    )
