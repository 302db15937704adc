"""Who should do this engagement: eligibility, ranking and an explanation for every decision.

Pure functions over a capacity snapshot and the current reservations; the dispatcher workflow
calls them inside one workflow task (so choice and reservation are atomic), the tests call them
directly and the benchmark imports them unchanged.

The rule (the seed's, DESIGN §5):

1. Eligible: active, has every required skill, a tier that fits the role, not absent for the
   whole window, not someone who declined this engagement, not the holder of the other role,
   and ``available hours >= hours needed`` (see ``dispatch.capacity``).
2. Rank the eligible by a weighted sum of per-criterion scores in [0, 1]: client history,
   specialisation match, most available hours, lowest sufficient tier. The default weights
   (1000/100/10/1) keep the seed's order. Ties go to the lowest staff id, so the same input
   always gives the same choice.
3. Nobody eligible: the engagement needs a partner. It is never forced onto someone without
   room.

Preparers come from the service's preparer tier up to manager: partners prepare only work whose
preparer tier is partner, because a partner's hours are the scarcest in the firm and a partner
taking a staff-level return silently is exactly the overload the product exists to prevent.
Reviewers come from the reviewer tier and above, at a lower utilisation ceiling.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from dispatch.capacity import (
    Booking,
    BookingIndex,
    PersonCapacity,
    WorkCalendar,
    absent_throughout,
    available_hours,
    capacity_between,
    estimated_completion,
    fits,
)

# ``choose`` inlines the ``fits`` test; ``partner_assignment`` uses it directly.
from dispatch.config import Absence, ServiceType, StaffMember, Tier
from dispatch.models import (
    AssignmentRequest,
    AssignmentResult,
    BlockReason,
    CandidateScore,
    CapacitySnapshot,
    Decision,
    ForceAssignRequest,
    PartnerOption,
    Reservation,
    Role,
    StaffCapacity,
    StaffRef,
)

CRITERIA = ("client_history", "specialization", "available_hours", "lowest_tier")


@dataclass(frozen=True)
class RoleNeed:
    """One role to fill: who may do it, for how many hours, by when."""

    role: Role
    hours: float
    min_tier: Tier
    max_tier: Tier
    required_skills: tuple[str, ...]
    preferred_skills: tuple[str, ...]
    start: date
    due: date
    ceiling: float
    exclude: frozenset[str] = frozenset()


class Ledger:
    """Reservations, indexed by person (a working copy the batch updates as it goes)."""

    def __init__(self, reservations: Iterable[Reservation] = ()) -> None:
        self._by_key: dict[tuple[str, Role], Reservation] = {}
        self._by_staff: dict[str, dict[tuple[str, Role], Reservation]] = {}
        self._index: dict[str, BookingIndex] = {}
        for reservation in reservations:
            self.add(reservation)

    @property
    def reservations(self) -> list[Reservation]:
        return list(self._by_key.values())

    def bookings(self, staff_id: str, *, skip_workflow: str | None = None) -> list[Booking]:
        """The person's bookings, leaving out the asking engagement's own (a re-dispatch)."""
        return [
            Booking(r.hours, r.due)
            for r in self._by_staff.get(staff_id, {}).values()
            if r.workflow_id != skip_workflow
        ]

    def index(self, staff_id: str, *, skip_workflow: str | None = None) -> BookingIndex:
        """``bookings`` sorted and summed, cached until the person's reservations change."""
        mine = self._by_staff.get(staff_id, {})
        if skip_workflow is not None and (
            (skip_workflow, Role.PREPARER) in mine or (skip_workflow, Role.REVIEWER) in mine
        ):
            return BookingIndex.of_pairs(
                (r.due, r.hours) for r in mine.values() if r.workflow_id != skip_workflow
            )
        cached = self._index.get(staff_id)
        if cached is None:
            pairs = ((r.due, r.hours) for r in mine.values())
            cached = self._index[staff_id] = BookingIndex.of_pairs(pairs)
        return cached

    def add(self, reservation: Reservation) -> None:
        """Add or replace the reservation for this engagement and role."""
        key = (reservation.workflow_id, reservation.role)
        self.remove(*key)
        self._by_key[key] = reservation
        self._by_staff.setdefault(reservation.staff_id, {})[key] = reservation
        self._index.pop(reservation.staff_id, None)

    def remove(self, workflow_id: str, role: Role) -> Reservation | None:
        """Release this engagement's reservation for the role (None if it holds none)."""
        key = (workflow_id, role)
        previous = self._by_key.pop(key, None)
        if previous is not None:
            self._by_staff[previous.staff_id].pop(key, None)
            self._index.pop(previous.staff_id, None)
        return previous

    def set_open_hours(self, workflow_id: str, role: Role, hours: float) -> Reservation | None:
        """Hold ``hours`` for the role from now on (see ``open_hours``); None if not booked."""
        current = self._by_key.get((workflow_id, role))
        if current is None:
            return None
        held = round(max(hours, 0.0), 2)
        if held != current.hours:
            self.add(current.model_copy(update={"hours": held}))
        return self._by_key[(workflow_id, role)]


def open_hours(estimate: float, logged: float, *, handed_over: bool) -> float:
    """What the ledger holds for one role of an engagement: the hours still to do.

    The estimate less the hours the time tracker shows logged on the engagement by that
    person, and nothing once the role's work is handed over (the preparer's once the work is
    ready for review, the reviewer's once the review is done). A review sent back re-opens
    the preparer's role: ``handed_over`` is False again, and the estimate less the hours
    logged is held until the work is handed over again. A new estimate from the PM system is
    simply the next ``estimate``. Never negative: work running over its estimate holds
    nothing more until the estimate is raised.
    """
    if handed_over:
        return 0.0
    return max(estimate - logged, 0.0)


def calendar_of(snapshot: CapacitySnapshot) -> WorkCalendar:
    return WorkCalendar.of(snapshot.workdays, snapshot.holidays)


def person_of(cap: StaffCapacity, day_left: float = 1.0) -> PersonCapacity:
    """The person as the capacity arithmetic sees them; ``day_left``: the share of today's
    working hours still ahead (see ``dispatch.capacity.share_of_day_left``)."""
    return _person(
        cap.weekly_capacity_hours,
        cap.logged_this_week,
        cap.logged_last_week,
        tuple(cap.member.absences),
        day_left,
    )


@lru_cache(maxsize=4096)
def _person(
    weekly: float,
    this_week: float,
    last_week: float,
    absences: tuple[Absence, ...],
    day_left: float,
) -> PersonCapacity:
    return PersonCapacity(
        weekly_hours=weekly,
        logged_this_week=this_week,
        logged_last_week=last_week,
        absences=absences,
        today_share=day_left,
    )


def staff_ref(member: StaffMember) -> StaffRef:
    return StaffRef(
        id=member.id,
        name=member.name,
        email=member.email,
        tier=member.tier,
        slack_id=member.slack_id,
        manager_id=member.manager,
    )


def role_needs(
    request: AssignmentRequest, service: ServiceType, snapshot: CapacitySnapshot
) -> list[RoleNeed]:
    start = max(request.start_date or snapshot.today, snapshot.today)
    required = tuple(dict.fromkeys([*service.required_skills, *request.required_skills]))
    preferred = tuple(dict.fromkeys([*service.preferred_skills, *request.specializations]))
    preparer_max = Tier.PARTNER if service.preparer_tier is Tier.PARTNER else Tier.MANAGER
    needs = [
        RoleNeed(
            role=Role.PREPARER,
            hours=request.estimated_hours,
            min_tier=service.preparer_tier,
            max_tier=preparer_max,
            required_skills=required,
            preferred_skills=preferred,
            start=start,
            due=request.due_date,
            ceiling=snapshot.policy.preparer_utilization_ceiling,
            exclude=frozenset(request.exclude),
        )
    ]
    if service.reviewer_tier is not None:
        needs.append(
            RoleNeed(
                role=Role.REVIEWER,
                hours=round(request.estimated_hours * service.review_fraction, 2),
                min_tier=service.reviewer_tier,
                max_tier=Tier.PARTNER,
                # Reviewers need the same technical skills as the preparer.
                required_skills=required,
                preferred_skills=preferred,
                start=start,
                due=request.due_date,
                ceiling=snapshot.policy.reviewer_utilization_ceiling,
                exclude=frozenset(request.exclude),
            )
        )
    return needs


def role_ceiling(need: RoleNeed, tier: Tier, reserve: Mapping[Tier, float]) -> float:
    """The utilisation ceiling a person of ``tier`` is checked at for this role.

    Someone preparing work a lower tier could do keeps ``reserve[tier]`` of their hours for
    the reviews only their tier can do (``Policy.review_reserve``): a manager who fills up
    with returns a senior could prepare is a manager nobody's business return can be reviewed
    by. Work at their own tier, and every review, uses the role's ceiling.
    """
    if need.role is Role.PREPARER and tier.rank > need.min_tier.rank:
        return min(need.ceiling, max(1.0 - reserve.get(tier, 0.0), 0.0))
    return need.ceiling


def _history_score(staff_id: str, history: Sequence[str]) -> float:
    """1 for the client's most recent person, halving for each step further back."""
    if staff_id not in history:
        return 0.0
    return 0.5 ** history.index(staff_id)


def choose(
    need: RoleNeed,
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    history: Sequence[str],
    workflow_id: str,
    other_role_holder: str | None,
    *,
    day_left: float = 1.0,
) -> Decision:
    """Rank every staff member for one role and pick the best eligible one (or nobody)."""
    calendar = calendar_of(snapshot)
    today = snapshot.today
    rows: list[tuple[CandidateScore, float]] = []
    reserve = snapshot.policy.review_reserve
    for cap in snapshot.staff:
        member = cap.member
        person = person_of(cap, day_left)
        bookings = ledger.index(member.id, skip_workflow=workflow_id)
        ceiling = role_ceiling(need, member.tier, reserve)
        avail = available_hours(person, bookings, need.due, today, calendar, ceiling)
        blocked: list[BlockReason] = []
        why: list[str] = []
        missing = [s for s in need.required_skills if s not in member.skills]
        if not member.active:
            blocked.append(BlockReason.INACTIVE)
            why.append("not active")
        if missing:
            blocked.append(BlockReason.SKILL)
            why.append("missing skill " + ", ".join(missing))
        if member.tier.rank < need.min_tier.rank:
            blocked.append(BlockReason.TIER)
            why.append(f"tier {member.tier} is below {need.min_tier}")
        elif member.tier.rank > need.max_tier.rank:
            blocked.append(BlockReason.TIER)
            why.append(f"tier {member.tier} does not prepare {need.min_tier}-level work")
        if member.id in need.exclude:
            blocked.append(BlockReason.DECLINED)
            why.append("declined this engagement")
        if member.id == other_role_holder:
            blocked.append(BlockReason.OTHER_ROLE)
            why.append("holds the other role on this engagement")
        if person.absences and absent_throughout(person, need.start, need.due, calendar):
            blocked.append(BlockReason.ABSENT)
            why.append("absent for the whole window")
        # Same test as capacity.fits, without computing the available hours twice.
        if need.start > today:
            avail = min(avail, capacity_between(person, need.start, need.due, calendar, ceiling))
        if avail < need.hours - 1e-9:
            blocked.append(BlockReason.CAPACITY)
            why.append(
                f"has {max(avail, 0.0):.1f} h free by {need.due.isoformat()}, "
                f"needs {need.hours:.1f} h"
            )
        scores = {
            "client_history": _history_score(member.id, history),
            "specialization": (
                sum(1 for s in need.preferred_skills if s in member.skills)
                / len(need.preferred_skills)
                if need.preferred_skills
                else 0.0
            ),
            "available_hours": 0.0,  # normalised below, among the eligible
            "lowest_tier": max(0.0, 1.0 - (member.tier.rank - need.min_tier.rank) / 3.0),
        }
        rows.append(
            (
                CandidateScore(
                    staff_id=member.id,
                    name=member.name,
                    tier=member.tier,
                    eligible=not blocked,
                    blocked=blocked,
                    why_blocked="; ".join(why) or None,
                    available_hours=round(avail, 2),
                    scores=scores,
                ),
                avail,
            )
        )

    eligible = [(c, a) for c, a in rows if c.eligible]
    policy = snapshot.policy
    share = policy.continuity_yields_to_free_share if need.role is Role.PREPARER else 0.0
    if share > 0 or policy.available_hours_as_share:
        # Each eligible person's own hours in the window, which both knobs measure "free" by.
        start = max(need.start, today)
        caps = {cap.member.id: cap for cap in snapshot.staff}
        working = {
            c.staff_id: _working_hours(caps[c.staff_id], start, need.due, calendar, day_left)
            for c, _ in eligible
        }
        if share > 0:
            _yield_continuity(need, eligible, working, share)
        if policy.available_hours_as_share:
            # Rank by the share of each person's own hours still free, so a part-timer with
            # half their week free ranks with a full-timer with half of theirs.
            rows = [
                (c, a / max(working[c.staff_id], 1e-9)) if c.eligible else (c, a) for c, a in rows
            ]
            eligible = [(c, a) for c, a in rows if c.eligible]
    best_avail = max((a for _, a in eligible), default=0.0)
    weights = snapshot.policy.weights.model_dump()
    for cand, avail in rows:
        cand.scores["available_hours"] = (
            round(max(avail, 0.0) / best_avail, 4) if best_avail > 0 else 0.0
        )
        if cand.eligible:
            cand.total = round(sum(weights[k] * cand.scores[k] for k in CRITERIA), 4)

    # Best first; ties on total go to the lowest staff id. Blocked candidates follow, closest
    # to fitting first, so the partner reads the most useful names at the top.
    ordered = sorted(
        rows,
        key=lambda r: (
            not r[0].eligible,
            -(r[0].total or 0.0),
            -r[1] if not r[0].eligible else 0.0,
            r[0].staff_id,
        ),
    )
    candidates = [c for c, _ in ordered]
    base = {
        "role": need.role,
        "required_hours": need.hours,
        "window_start": need.start,
        "window_end": need.due,
        "candidates": candidates,
    }
    if not eligible:
        return Decision(
            outcome="blocked", chosen=None, reason=_blocked_reason(need, candidates), **base
        )
    winner = candidates[0]
    return Decision(
        outcome="assigned",
        chosen=winner.staff_id,
        reason=_chosen_reason(need, winner, candidates),
        **base,
    )


def _working_hours(
    cap: StaffCapacity, start: date, due: date, calendar: WorkCalendar, day_left: float
) -> float:
    """The person's hours from ``start`` to ``due`` as if nothing were logged or booked."""
    person = _person(cap.weekly_capacity_hours, 0.0, 0.0, tuple(cap.member.absences), day_left)
    return capacity_between(person, start, due, calendar)


def _yield_continuity(
    need: RoleNeed,
    eligible: Sequence[tuple[CandidateScore, float]],
    working: Mapping[str, float],
    share: float,
) -> None:
    """Drop the client-history score of a more senior prior preparer when someone eligible of
    a lower sufficient tier has at least ``share`` of their ``working`` hours to the due date
    free (``Policy.continuity_yields_to_free_share``): the client moves down a tier rather
    than a senior taking work a qualified junior, sitting idle, could do. Hours logged this
    week are work done, so they count against "free", as bookings do."""
    holders = [c for c, _ in eligible if c.scores["client_history"] > 0]
    if not holders or all(c.tier.rank <= need.min_tier.rank for c in holders):
        return
    free_ranks = [
        c.tier.rank for c, avail in eligible if avail >= share * working[c.staff_id] - 1e-9
    ]
    if not free_ranks:
        return
    lowest_free = min(free_ranks)
    for cand in holders:
        if cand.tier.rank > lowest_free:
            cand.scores["client_history"] = 0.0


def _chosen_reason(need: RoleNeed, winner: CandidateScore, candidates: list[CandidateScore]) -> str:
    parts = []
    if winner.scores["client_history"] >= 1.0:
        parts.append(
            "prepared this client's last engagement"
            if need.role is Role.PREPARER
            else "served this client most recently"
        )
    elif winner.scores["client_history"] > 0:
        parts.append("has served this client before")
    if need.preferred_skills and winner.scores["specialization"] > 0:
        parts.append(f"specialisation match {winner.scores['specialization']:.0%}")
    parts.append(
        f"{winner.available_hours:.1f} h free by {need.due.isoformat()} (needs {need.hours:.1f} h)"
    )
    if winner.scores["lowest_tier"] >= 1.0:
        parts.append(f"lowest sufficient tier ({winner.tier})")
    others = sum(1 for c in candidates if c.eligible) - 1
    tail = f"; {others} other eligible" if others > 0 else "; the only eligible person"
    return f"{winner.name}: " + ", ".join(parts) + tail


def _blocked_reason(need: RoleNeed, candidates: list[CandidateScore]) -> str:
    counts: dict[str, int] = {}
    for cand in candidates:
        for reason in cand.blocked:
            counts[reason.value] = counts.get(reason.value, 0) + 1
    summary = ", ".join(f"{n} by {r}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    closest = next((c for c in candidates if c.blocked == [BlockReason.CAPACITY]), None)
    hint = ""
    if closest is not None:
        hint = (
            f"; closest: {closest.name} with {max(closest.available_hours, 0):.1f} h of "
            f"{need.hours:.1f} h"
        )
    return (
        f"No {need.role.value} fits {need.hours:.1f} h by {need.due.isoformat()} ({summary}){hint}"
    )


def merged_history(
    client_id: str, learned: dict[str, list[str]], configured: dict[str, list[str]]
) -> list[str]:
    """Most recent first: assignments this firm's dispatcher made, then the configured history."""
    return list(dict.fromkeys([*learned.get(client_id, []), *configured.get(client_id, [])]))


def decide(
    request: AssignmentRequest,
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    *,
    day_left: float = 1.0,
) -> tuple[AssignmentResult, list[Reservation]]:
    """Decide one request against the ledger. Returns the result and the reservations to add.

    Does not modify the ledger: the caller adds the reservations (atomically, in the same
    workflow task) so a batch sees each decision before making the next. ``day_left``: the
    share of today's working hours still ahead when deciding (1: the whole day).
    """
    service = snapshot.service_type(request.service_type)
    if service is None:
        return AssignmentResult(
            request_id=request.request_id,
            workflow_id=request.workflow_id,
            outcome="needs_partner_review",
            reason=f"service type {request.service_type!r} is not in the firm configuration",
        ), []
    history = merged_history(request.client_id, learned_history, snapshot.client_history)
    staff = {c.member.id: c for c in snapshot.staff}
    keep = {Role.PREPARER: request.keep_preparer, Role.REVIEWER: request.keep_reviewer}
    all_needs = role_needs(request, service, snapshot)
    choosing = any(keep[n.role] not in staff for n in all_needs)
    if choosing and request.due_date < snapshot.today:
        return AssignmentResult(
            request_id=request.request_id,
            workflow_id=request.workflow_id,
            outcome="needs_partner_review",
            reason=f"the due date {request.due_date.isoformat()} has already passed",
        ), []
    calendar = calendar_of(snapshot)
    decisions: list[Decision] = []
    warnings: list[str] = []
    chosen: dict[Role, StaffCapacity] = {}
    for need in all_needs:
        other = chosen[Role.PREPARER].member.id if need.role is Role.REVIEWER else None
        kept = keep[need.role]
        if kept is not None and kept in staff and kept != other:
            # Reassigning one role keeps the other; a changed due date or estimate keeps both.
            # The PM system decided the change, so it stands even when it no longer fits:
            # the engagement is told, and tells the manager.
            cap = staff[kept]
            bookings = ledger.bookings(kept, skip_workflow=request.workflow_id)
            if not fits(
                person_of(cap, day_left),
                bookings,
                need.hours,
                need.due,
                snapshot.today,
                calendar,
                need.ceiling,
                start=need.start,
            ):
                warnings.append(
                    f"{cap.member.name} ({need.role.value}) is over capacity for "
                    f"{need.hours:.1f} h by {need.due.isoformat()}"
                )
            chosen[need.role] = cap
            continue
        decision = choose(
            need, snapshot, ledger, history, request.workflow_id, other, day_left=day_left
        )
        decisions.append(decision)
        if decision.chosen is None:
            return AssignmentResult(
                request_id=request.request_id,
                workflow_id=request.workflow_id,
                outcome="needs_partner_review",
                decisions=decisions,
                reason=decision.reason,
            ), []
        chosen[need.role] = staff[decision.chosen]

    return assigned(
        request,
        chosen,
        all_needs,
        decisions,
        snapshot,
        ledger,
        reason=decisions[0].reason if decisions else "the people already booked keep it",
        warnings=warnings,
        day_left=day_left,
    )


def assigned(
    request: AssignmentRequest,
    chosen: dict[Role, StaffCapacity],
    all_needs: Sequence[RoleNeed],
    decisions: list[Decision],
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    reason: str,
    warnings: list[str] | None = None,
    *,
    day_left: float = 1.0,
) -> tuple[AssignmentResult, list[Reservation]]:
    """The result and reservations once every role has its person (shared with the optimizer,
    so a jointly planned assignment reads and books exactly like a greedy one)."""
    calendar = calendar_of(snapshot)
    needs = {n.role: n for n in all_needs}
    reservations = [
        Reservation(
            workflow_id=request.workflow_id,
            role=role,
            staff_id=cap.member.id,
            hours=needs[role].hours,
            start=needs[role].start,
            due=needs[role].due,
            client_id=request.client_id,
        )
        for role, cap in chosen.items()
    ]
    completion = max(
        estimated_completion(
            person_of(cap, day_left),
            ledger.index(cap.member.id, skip_workflow=request.workflow_id),
            needs[role].hours,
            needs[role].due,
            snapshot.today,
            calendar,
        )
        for role, cap in chosen.items()
    )
    preparer = chosen[Role.PREPARER]
    reviewer = chosen.get(Role.REVIEWER)
    return AssignmentResult(
        request_id=request.request_id,
        workflow_id=request.workflow_id,
        outcome="assigned",
        preparer=staff_ref(preparer.member),
        reviewer=staff_ref(reviewer.member) if reviewer else None,
        preparer_hours=needs[Role.PREPARER].hours,
        reviewer_hours=needs[Role.REVIEWER].hours if reviewer else 0.0,
        decisions=decisions,
        estimated_completion=completion,
        reason=reason,
        warnings=list(warnings or []),
    ), reservations


def partner_assignment(
    request: ForceAssignRequest,
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    *,
    day_left: float = 1.0,
) -> tuple[AssignmentResult, Reservation | None]:
    """A partner names the preparer. Without ``override_capacity`` the capacity rule still holds."""
    cap = next((c for c in snapshot.staff if c.member.id == request.staff_id), None)
    base = {"request_id": request.request_id, "workflow_id": request.workflow_id}
    if cap is None:
        return AssignmentResult(
            outcome="needs_partner_review",
            reason=f"staff {request.staff_id!r} is not in the firm",
            **base,
        ), None
    calendar = calendar_of(snapshot)
    person = person_of(cap, day_left)
    bookings = ledger.bookings(cap.member.id, skip_workflow=request.workflow_id)
    avail = available_hours(person, bookings, request.due, snapshot.today, calendar)
    fits_now = fits(
        person, bookings, request.hours, request.due, snapshot.today, calendar, start=request.start
    )
    if not fits_now and not request.override_capacity:
        return AssignmentResult(
            outcome="needs_partner_review",
            reason=(
                f"{cap.member.name} has {max(avail, 0):.1f} h free by "
                f"{request.due.isoformat()}, needs {request.hours:.1f} h; "
                "choose 'assign anyway' to override capacity"
            ),
            **base,
        ), None
    over = "" if fits_now else f", over capacity by {request.hours - max(avail, 0):.1f} h"
    reason = f"Assigned by partner {request.partner_id} to {cap.member.name}{over}"
    decision = Decision(
        role=Role.PREPARER,
        outcome="forced",
        chosen=cap.member.id,
        reason=reason,
        required_hours=request.hours,
        window_start=request.start,
        window_end=request.due,
        candidates=[],
    )
    reservation = Reservation(
        workflow_id=request.workflow_id,
        role=Role.PREPARER,
        staff_id=cap.member.id,
        hours=request.hours,
        start=request.start,
        due=request.due,
        client_id=request.client_id,
        forced=not fits_now,
    )
    return AssignmentResult(
        outcome="assigned",
        preparer=staff_ref(cap.member),
        preparer_hours=request.hours,
        decisions=[decision],
        estimated_completion=request.due,
        reason=reason,
        **base,
    ), reservation


OPTION_HORIZON_DAYS = 183


def partner_options(
    request: AssignmentRequest,
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    *,
    role: Role = Role.PREPARER,
    other_role_holder: str | None = None,
    day_left: float = 1.0,
    limit: int | None = None,
    history: Sequence[str] = (),
) -> list[PartnerOption]:
    """The partner's choices for a role the rule could not fill, best first.

    Everyone qualified (skills, tier, active, not away the whole window, not the holder of the
    other role) with, measured against their whole capacity: the overtime needed to keep this
    date and every later one, the earliest date it would fit without overtime, and how many of
    their commitments would slip if it were booked anyway. Ranked: no overtime first, then the
    least overtime, the fewest commitments put at risk, the client's own people (``history``,
    most recent first), the earliest date, the lowest tier; people who declined it last.
    ``limit``: at most that many (``Policy.partner_candidates_shown`` is what the partner's
    message shows).
    """
    service = snapshot.service_type(request.service_type)
    if service is None:
        return []
    need = next((n for n in role_needs(request, service, snapshot) if n.role is role), None)
    if need is None:
        return []
    calendar = calendar_of(snapshot)
    today = snapshot.today
    options: list[tuple[tuple[object, ...], PartnerOption]] = []
    for cap in snapshot.staff:
        member = cap.member
        if (
            not member.active
            or member.id == other_role_holder
            or any(s not in member.skills for s in need.required_skills)
            or not need.min_tier.rank <= member.tier.rank <= need.max_tier.rank
        ):
            continue
        person = person_of(cap, day_left)
        if absent_throughout(person, need.start, need.due, calendar):
            continue
        index = ledger.index(member.id, skip_workflow=request.workflow_id)
        avail = available_hours(person, index, need.due, today, calendar)
        overtime = round(max(need.hours - avail, 0.0), 2)
        finish = _earliest_fitting_due(person, index, need.hours, need.due, today, calendar)
        short = {
            due
            for due in set(index.dues[bisect_left(index.dues, need.due) :])
            if calendar_slack(person, index, due, today, calendar) < need.hours - 1e-9
        }
        at_risk = sum(1 for due in index.dues if due in short)
        declined = member.id in need.exclude
        if finish == need.due:
            when = "fits by its date"
        elif finish is not None:
            when = f"fits without overtime if due {finish.isoformat()}"
        else:
            when = "does not fit without overtime within half a year"
        summary = (
            f"{member.name} ({member.tier}): {overtime:.1f} h overtime to finish by "
            f"{need.due.isoformat()}; {when}; {at_risk} other commitment(s) at risk"
            + ("; declined it" if declined else "")
        )
        option = PartnerOption(
            role=role,
            staff_id=member.id,
            name=member.name,
            tier=member.tier,
            hours=need.hours,
            overtime_hours=overtime,
            finish_by=finish,
            commitments_at_risk=at_risk,
            declined=declined,
            summary=summary,
        )
        key = (
            declined,
            overtime > 0,
            overtime,
            at_risk,
            -_history_score(member.id, history),
            finish or date.max,
            member.tier.rank,
            member.id,
        )
        options.append((key, option))
    options.sort(key=lambda pair: pair[0])
    ranked = [o for _, o in options]
    return ranked[:limit] if limit is not None else ranked


def calendar_slack(
    person: PersonCapacity, index: BookingIndex, day: date, today: date, calendar: WorkCalendar
) -> float:
    """Capacity until ``day`` less the work due by then (negative: already over)."""
    return capacity_between(person, today, day, calendar) - index.demand_by(day)


def _earliest_fitting_due(
    person: PersonCapacity,
    index: BookingIndex,
    hours: float,
    due: date,
    today: date,
    calendar: WorkCalendar,
) -> date | None:
    """The earliest due date from ``due`` on at which ``hours`` fit, within the horizon.

    Between two of the person's due dates the room for a new job only grows with its date
    (more capacity, the same work due, the same later commitments), so each such stretch is
    checked at its end and bisected when it holds the answer.
    """

    def room(day: date) -> float:
        return available_hours(person, index, day, today, calendar)

    if room(due) >= hours - 1e-9:
        return due
    horizon = due + timedelta(days=OPTION_HORIZON_DAYS)
    breaks = [*sorted({d for d in index.dues if due < d < horizon}), horizon]
    low = due
    for brk in breaks:
        end = brk - timedelta(days=1)
        if end >= low and room(end) >= hours - 1e-9:
            while low < end:
                mid = low + (end - low) // 2
                if room(mid) >= hours - 1e-9:
                    end = mid
                else:
                    low = mid + timedelta(days=1)
            return low
        if room(brk) >= hours - 1e-9:
            return brk
        low = brk + timedelta(days=1)
    return None


def batch_order(requests: Iterable[AssignmentRequest]) -> list[AssignmentRequest]:
    """Within one batch, earliest due date first (then arrival order): urgent work picks first."""
    indexed = list(enumerate(requests))
    indexed.sort(key=lambda pair: (pair[1].due_date, pair[0]))
    return [r for _, r in indexed]


def decide_batch(
    requests: Sequence[AssignmentRequest],
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    *,
    day_left: float = 1.0,
) -> list[AssignmentResult]:
    """The greedy policy over a batch: each decision sees the reservations of the ones before."""
    results = []
    for request in batch_order(requests):
        result, reservations = decide(request, snapshot, ledger, learned_history, day_left=day_left)
        for reservation in reservations:
            ledger.add(reservation)
        results.append(result)
    return results


def replan(
    requests: Sequence[AssignmentRequest],
    snapshot: CapacitySnapshot,
    ledger: Ledger,
    learned_history: dict[str, list[str]],
    *,
    day_left: float = 1.0,
) -> list[tuple[AssignmentRequest, AssignmentResult, list[Reservation]]]:
    """Move work not yet started off people who can no longer do it by its date.

    ``requests``: one per engagement whose preparer has not started, as the engagement would
    ask again (``keep_preparer`` = the preparer it has, ``keep_reviewer`` = its reviewer).
    Earliest due first, each preparer is checked against everything else they hold: if the
    engagement still fits them (their whole capacity, not the ceiling), it stays; if not (a
    partner's "assign anyway", a sick day, work that ran over), the rule decides it again
    without them, and a preparer who does fit takes it. Nothing moves otherwise: a re-plan is
    a reassignment the person is told about, so it is made only where the date is at risk.
    The ledger is updated as it goes; returns the moves (the new result and reservations).
    The caller keeps the churn budget (``Policy.replan_moves_per_engagement``).
    """
    moves: list[tuple[AssignmentRequest, AssignmentResult, list[Reservation]]] = []
    staff = {c.member.id: c for c in snapshot.staff}
    calendar = calendar_of(snapshot)
    for request in batch_order(requests):
        holder = request.keep_preparer
        if holder is None or holder not in staff or request.due_date < snapshot.today:
            continue
        bookings = ledger.index(holder, skip_workflow=request.workflow_id)
        if fits(
            person_of(staff[holder], day_left),
            bookings,
            request.estimated_hours,
            request.due_date,
            snapshot.today,
            calendar,
            start=request.start_date,
        ):
            continue
        # The holder does not fit by construction, so the rule passes them over on capacity.
        again = request.model_copy(update={"keep_preparer": None})
        result, reservations = decide(again, snapshot, ledger, learned_history, day_left=day_left)
        if result.outcome != "assigned" or result.preparer is None:
            continue
        for reservation in reservations:
            ledger.add(reservation)
        result.reason = (
            f"moved from {staff[holder].member.name}, who can no longer do it by "
            f"{request.due_date.isoformat()}: " + result.reason
        )
        moves.append((request, result, reservations))
    return moves
