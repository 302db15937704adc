"""The discrete-event simulator: one season, one policy, one event log.

The simulator plays everyone but the dispatcher's brain: the PM system creating jobs, clients
sending documents (and sometimes going quiet), staff answering Accept / Request reassignment
and doing the work, reviewers sending work back, a partner clearing the review queue twice a
day, and the dispatcher workflow's bookkeeping (batches, the reservations ledger, parked
requests retried when hours are released, the client history it learns). The policy only
decides who.

How people work (the same for every policy):

* A person works their chargeable hours each working day, spread over 08:00-18:00, on the
  open task with the earliest due date (reviews before preparation on the same date). A new,
  more urgent task pre-empts the current one; nobody works overtime, so an over-committed
  person shows up as lateness, not extra hours.
* Preparation starts once the assignee has accepted and the documents are in. A fifth of
  returns stop part-way, waiting on the client for a few business days.
* True hours = estimate x the person's speed x the job's noise. A reviewer sends a quarter of
  jobs back: the preparer reworks 15 % of the preparation, then a second, shorter review.
* Returns whose preparation is not finished on the morning of the due date are extended: the
  firm files a 4868/7004 that day (a small job due that day) and the return moves to the
  extended date. Other work cannot be extended and is simply late.
* Escalations fire as the lifecycle defines them: 48 h after assignment with no work started
  (the preparer's manager), three days before the due date while not done (a status check),
  and at the due date while not done (the partner).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from dispatch.capacity import share_of_day_left
from dispatch.config import Absence, Policy, ServiceType, StaffMember
from dispatch.decision import Ledger, open_hours
from dispatch.lookahead import ExpectedWork
from dispatch.models import AssignmentRequest, CapacitySnapshot, Reservation, Role, StaffCapacity
from simulation import calendar as cal
from simulation.catalogue import BY_ID, REWORK_PREP_SHARE, SECOND_REVIEW_SHARE, service_types
from simulation.events import Record
from simulation.generator import JobPlan, Scenario, StaffPlan
from simulation.policies import DispatchPolicy, Outcome, Pending

MAX_DECLINES = Policy().max_declines
"""Production's default: after two "Request reassignment" answers, the partner decides."""
ACCEPT_P = 0.92
ACCEPT_P_OVERCOMMITTED = 0.70
"""Someone with more than a week of booked work declines more often [A]."""
NOT_STARTED_HOURS = Policy().not_started_hours
STATUS_CHECK_DAYS = Policy().status_check_days_before_due
PARTNER_HOURS = (10.0, 16.0)
RETRY_STEP_HOURS = 0.25
"""Releases are coalesced to the next quarter hour before parked requests are retried."""
BATCH_LIMIT = 150
"""``workflows.dispatcher.BATCH_LIMIT``: at most this many decisions per batch."""

# Event kinds, in the order they run when they share a moment.
_DAY, _CREATE, _READY, _RESPONSE, _DONE, _RESUME, _EXTEND, _ESCALATE, _DISPATCH, _PARTNER = range(
    10
)
_PRIORITY = {
    _DAY: 0,
    _CREATE: 1,
    _READY: 1,
    _RESPONSE: 1,
    _DONE: 1,
    _RESUME: 1,
    _EXTEND: 1,
    _ESCALATE: 2,
    _DISPATCH: 5,
    _PARTNER: 6,
}


@dataclass(frozen=True)
class Behaviour:
    """The people's side of the model, the same for every policy; defaults in the README."""

    partner: Literal["urgent", "all"] = "urgent"
    """At each review (10:00, 16:00) the partner assigns, to the least-loaded qualified person
    and over capacity if need be, either every waiting item ("all", the anchors' model) or only
    those that cannot wait ("urgent"): due within ``urgent_days`` working days, or waiting for
    ``patience_hours`` business hours already. The rest assign themselves when hours free up,
    which is what the product promises a partner."""
    urgent_days: int = 5
    patience_hours: float = 30.0
    ledger: Literal["whole", "open-hours"] | None = None
    """What the dispatcher's reservations hold; None: what the policy asks for (its ``ledger``
    attribute; production's is "open-hours"). "whole": the estimate, whole, from assignment
    until the engagement closes (production before the open-hours ledger). "open-hours":
    ``dispatch.decision.open_hours`` - the estimate less the hours the time tracker shows
    logged on the job (entries are made at the end of each day, in quarter hours), nothing
    once the role's work is handed over, re-opened when a review sends it back."""


Observer = Callable[
    [DispatchPolicy, "_View", list[Reservation], Sequence[Pending], list[Outcome]], None
]
"""Called after every automatic batch decision with the ledger as it was before it (tests)."""


class _Task:
    __slots__ = ("job", "kind", "remaining", "role", "seen")

    def __init__(self, job: _Job, role: Role, kind: str, hours: float) -> None:
        self.job = job
        self.role = role
        self.kind = kind
        self.remaining = hours
        self.seen = False

    def key(self) -> tuple[float, int, int]:
        return (self.job.due_t, 0 if self.role is Role.REVIEWER else 1, self.job.seq)


class _Worker:
    """One person's day-by-day capacity and the work in front of them."""

    def __init__(self, plan: StaffPlan) -> None:
        self.plan = plan
        self.daily = [plan.daily_hours(d) for d in range(cal.TOTAL_DAYS)]
        self.cum = [0.0]
        for hours in self.daily:
            self.cum.append(self.cum[-1] + hours)
        self.tasks: list[_Task] = []
        self.current: _Task | None = None
        self.last_t = 0.0
        self.version = 0
        self.logged = [0.0] * (cal.TOTAL_DAYS + 1)
        self.open: set[tuple[str, Role]] = set()
        self.booked = 0.0
        """Estimated hours still open on this person's reservations."""
        self.members: dict[tuple[tuple[date, date], ...], StaffMember] = {}
        self.member: StaffMember | None = None
        self.member_day = -1

    def work_until(self, t: float) -> float:
        """Cumulative capacity hours from the epoch to ``t``."""
        day = int(t // 24.0)
        if day >= cal.TOTAL_DAYS:
            return self.cum[-1]
        if day < 0:
            return 0.0
        frac = (t - day * 24.0 - cal.DAY_OPEN) / cal.DAY_SPAN
        frac = 0.0 if frac < 0 else 1.0 if frac > 1 else frac
        return self.cum[day] + self.daily[day] * frac

    def time_at(self, target: float) -> float:
        """The moment cumulative capacity reaches ``target`` (inf beyond the horizon)."""
        idx = bisect_left(self.cum, target)
        if idx == 0:
            return 0.0
        if idx >= len(self.cum):
            return math.inf
        day = idx - 1
        return day * 24.0 + cal.DAY_OPEN + (target - self.cum[day]) / self.daily[day] * cal.DAY_SPAN


class _Job:
    def __init__(self, plan: JobPlan, seq: int) -> None:
        self.plan = plan
        self.seq = seq
        self.job_type = BY_ID[plan.type_id]
        self.due = plan.due
        self.due_t = cal.due_time(plan.due)
        self.preparer: str | None = None
        self.reviewer: str | None = None
        self.preparer_hours = 0.0
        self.reviewer_hours = 0.0
        self.accepted = False
        self.ready = False
        self.offers = 0
        self.offer_to: str | None = None
        self.declined: list[str] = []
        self.requests = 0
        self.round = 0
        self.started = False
        self.prep_true = 0.0
        self.prep_task: _Task | None = None
        self.pause_left = plan.pause_fraction is not None
        self.prep_done = False
        self.reviews = 0
        self.completed = False
        self.extended = False
        self.parked_at: float | None = None
        self.forced = False


class _View:
    """The dispatcher's window on the firm (``policies.DispatchView``)."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._snapshot: tuple[float, CapacitySnapshot] | None = None

    @property
    def now(self) -> float:
        return self._sim.now

    @property
    def today(self) -> date:
        return cal.date_at(self._sim.now)

    @property
    def day_left(self) -> float:
        return share_of_day_left(self._sim.now % 24.0, cal.DAY_OPEN, cal.DAY_CLOSE)

    def members(self) -> Sequence[StaffMember]:
        return [self._sim.member(w) for w in self._sim.workers.values()]

    def weekly_capacity(self, staff_id: str) -> float:
        return self._sim.workers[staff_id].plan.chargeable_hours

    def logged_this_week(self, staff_id: str) -> float:
        return self._sim.logged_week(self._sim.workers[staff_id], 0)

    def booked_remaining(self, staff_id: str) -> float:
        return self._sim.booked_remaining(staff_id)

    def absent_today(self, staff_id: str) -> bool:
        return self._sim.workers[staff_id].plan.absent(cal.day_of(self._sim.now))

    def snapshot(self) -> CapacitySnapshot:
        # Everything in it changes at most once a day (time entries are made at the end of
        # the day; sick days are known in the morning), so one snapshot serves the day.
        day = float(cal.day_of(self._sim.now))
        if self._snapshot is None or self._snapshot[0] != day:
            self._snapshot = (day, self._sim.build_snapshot())
        return self._snapshot[1]

    def reservations(self) -> list[Reservation]:
        return list(self._sim.reservations.values())

    def ledger(self) -> Ledger:
        """The live ledger: a policy adds its batch's reservations as it decides them."""
        return self._sim.ledger

    def learned_history(self) -> dict[str, list[str]]:
        return self._sim.history

    def expected_work(self) -> list[ExpectedWork]:
        """Known recurring work, arrived or not (what an arriving request is matched to)."""
        return self._sim.expected_list

    def expected_ahead(self, days: int) -> list[ExpectedWork]:
        """Known recurring work not arrived yet and due within ``days`` (what holds are
        planned for)."""
        last = self.today + timedelta(days=days)
        return [
            e for e in self._sim.expected_list if e.key not in self._sim.arrived and e.due <= last
        ]

    def service(self, type_id: str) -> ServiceType:
        return self._sim.services[type_id]

    def rng(self, key: str) -> random.Random:
        return random.Random(f"{self._sim.scenario.seed}:{key}")


def _quarter(hours: float) -> float:
    """Time trackers hold quarter hours: what they report is rounded down to one."""
    return math.floor(hours * 4.0 + 1e-9) / 4.0


class Simulator:
    """Run one scenario under one policy; ``run()`` returns the event log."""

    def __init__(
        self,
        scenario: Scenario,
        policy: DispatchPolicy,
        *,
        behaviour: Behaviour | None = None,
        observer: Observer | None = None,
        until: float = cal.END_TIME,
    ) -> None:
        self.until = min(until, cal.END_TIME)
        self.scenario = scenario
        self.policy = policy
        self.behaviour = behaviour or Behaviour()
        ledger = self.behaviour.ledger or getattr(policy, "ledger", "whole")
        self.open_hours = ledger == "open-hours"
        self.observer = observer
        self.services = {s.id: s for s in service_types()}
        self._service_list = list(self.services.values())
        self._policy = Policy()
        self.workers = {p.id: _Worker(p) for p in scenario.staff}
        self.jobs: dict[str, _Job] = {}
        self.reservations: dict[tuple[str, Role], Reservation] = {}
        self.logged: dict[tuple[str, Role], float] = {}
        self.done_roles: set[tuple[str, Role]] = set()
        self._remain: dict[tuple[str, Role], tuple[str | None, float]] = {}
        # Production's ledger, kept in step with the simulation (the dispatcher workflow keeps
        # its reservations the same way), so per-person indexes survive between batches.
        self.ledger = Ledger()
        self.tracked: dict[tuple[str, Role], float] = {}
        """Hours the time tracker shows on each (job, role): entries up to yesterday."""
        self.history: dict[str, list[str]] = {}
        self.configured_history = {
            c.id: [c.prior_preparer] for c in scenario.clients.values() if c.prior_preparer
        }
        self.expected_list = expected_work(scenario)
        self.arrived: set[str] = set()
        self._expected_keys = {e.key for e in self.expected_list}
        self.records: list[Record] = []
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        self._pending: list[Pending] = []
        self._parked: dict[str, Pending] = {}
        self._dirty: set[str] = set()
        """Parked jobs someone qualified for has released hours since their last try."""
        self._qualified: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}
        self._next_dispatch: float | None = None
        self._planned_ahead = False
        self._replans: dict[str, int] = {}
        self._order = 0
        self.view = _View(self)

    # --- plumbing -----------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, _PRIORITY[kind], self._seq, kind, payload))

    def _log(
        self,
        type_: str,
        job: str | None = None,
        person: str | None = None,
        role: Role | None = None,
        hours: float | None = None,
        t: float | None = None,
        **data: Any,
    ) -> None:
        self.records.append(
            Record(
                self.now if t is None else t,
                type_,
                job,
                person,
                role.value if role is not None else None,
                hours,
                data or None,
            )
        )

    def run(self) -> list[Record]:
        for plan in self.scenario.staff:
            self._log(
                "staff",
                person=plan.id,
                hours=plan.chargeable_hours,
                t=0.0,
                tier=plan.tier.value,
                skills=list(plan.skills),
                leave=[list(period) for period in plan.planned_leave],
            )
        for day in range(cal.TOTAL_DAYS):
            if cal.is_working_day(day):
                self._push(cal.opening(day), _DAY, day)
                for hour in PARTNER_HOURS:
                    self._push(day * 24.0 + hour, _PARTNER)
        for seq, job_plan in enumerate(self.scenario.jobs):
            self._push(job_plan.created_t, _CREATE, (job_plan, seq))
        handlers: dict[int, Callable[[Any], None]] = {
            _DAY: self._on_day,
            _CREATE: self._on_create,
            _READY: self._on_ready,
            _RESPONSE: self._on_response,
            _DONE: self._on_done,
            _RESUME: self._on_resume,
            _EXTEND: self._on_extend,
            _ESCALATE: self._on_escalate,
            _DISPATCH: self._on_dispatch,
            _PARTNER: self._on_partner,
        }
        while self._heap:
            t, _, _, kind, payload = heapq.heappop(self._heap)
            if t > self.until:
                break
            self.now = t
            handlers[kind](payload)
        self.now = self.until
        for worker in self.workers.values():
            self._settle(worker)
        return self.records

    # --- people -------------------------------------------------------------------------------

    def member(self, worker: _Worker) -> StaffMember:
        """The staff record as the firm knows it today: leave to come, and today's sick day.

        Leave already over is left out: it cannot change capacity from today on, and the
        capacity arithmetic checks every absence for every day of a window.
        """
        day = cal.day_of(self.now)
        if worker.member_day == day and worker.member is not None:
            return worker.member
        plan = worker.plan
        absences = [
            Absence(start=cal.date_of_day(a), end=cal.date_of_day(b), reason="leave")
            for a, b in plan.planned_leave
            if b >= day
        ]
        if day in plan.sick_days:
            today = cal.date_of_day(day)
            absences.append(Absence(start=today, end=today, reason="sick"))
        key = tuple((a.start, a.end) for a in absences)
        member = worker.members.get(key)
        if member is None:
            member = StaffMember(
                id=plan.id,
                name=plan.name,
                email=f"{plan.id}@firm.example",
                tier=plan.tier,
                skills=list(plan.skills),
                weekly_capacity_hours=plan.chargeable_hours,
                absences=absences,
            )
            worker.members[key] = member
        worker.member, worker.member_day = member, day
        return member

    def logged_week(self, worker: _Worker, weeks_back: int) -> float:
        """Hours the tracker shows for this week (0) or last week (1), to the quarter hour.

        Staff enter their time at the end of each working day [A], so "this week" is the
        week's days before today.
        """
        day = cal.day_of(self.now)
        monday = day - day % 7 - 7 * weeks_back
        end = day if weeks_back == 0 else monday + 7
        return _quarter(sum(worker.logged[max(monday, 0) : max(end, 0)]))

    def booked_remaining(self, staff_id: str) -> float:
        return max(0.0, self.workers[staff_id].booked)

    def _refresh(self, key: tuple[str, Role]) -> None:
        """Recompute one reservation's open estimate and its holder's total."""
        old_holder, old = self._remain.pop(key, (None, 0.0))
        if old_holder is not None:
            self.workers[old_holder].booked -= old
        reservation = self.reservations.get(key)
        if reservation is None:
            return
        left = 0.0
        if key not in self.done_roles:
            left = max(0.0, reservation.hours - self.logged.get(key, 0.0))
        self._remain[key] = (reservation.staff_id, left)
        self.workers[reservation.staff_id].booked += left
        if self.open_hours:
            held = open_hours(
                reservation.hours, self.tracked.get(key, 0.0), handed_over=key in self.done_roles
            )
            self.ledger.add(reservation.model_copy(update={"hours": round(held, 2)}))

    def _book(self, key: tuple[str, Role], reservation: Reservation) -> None:
        previous = self.reservations.get(key)
        if previous is not None and previous.staff_id != reservation.staff_id:
            self.workers[previous.staff_id].open.discard(key)
        self.reservations[key] = reservation
        self.ledger.add(reservation)
        self.workers[reservation.staff_id].open.add(key)
        self._refresh(key)

    def _unbook(self, key: tuple[str, Role]) -> Reservation | None:
        reservation = self.reservations.pop(key, None)
        if reservation is not None:
            self.ledger.remove(*key)
            self.workers[reservation.staff_id].open.discard(key)
            self._refresh(key)
        return reservation

    def build_snapshot(self) -> CapacitySnapshot:
        today = cal.date_at(self.now)
        staff = [
            StaffCapacity.model_construct(
                member=self.member(w),
                weekly_capacity_hours=w.plan.chargeable_hours,
                logged_this_week=self.logged_week(w, 0),
                logged_last_week=self.logged_week(w, 1),
                capacity_source="simulation",
            )
            for w in self.workers.values()
        ]
        return CapacitySnapshot.model_construct(
            taken_at=datetime.combine(today, datetime.min.time(), tzinfo=UTC)
            + timedelta(hours=self.now % 24.0),
            today=today,
            week_start=today - timedelta(days=today.weekday()),
            workdays=[0, 1, 2, 3, 4],
            holidays=[],
            staff=staff,
            service_types=self._service_list,
            policy=self._policy,
            client_history=self.configured_history,
            managing_partner=self.scenario.staff[0].id,
            source="simulation",
            warnings=[],
        )

    def _settle(self, worker: _Worker) -> None:
        """Book the work done on the current task since the last look, day by day."""
        now = self.now
        task = worker.current
        if task is not None and now > worker.last_t:
            start = worker.last_t
            day = int(start // 24.0)
            while True:
                end = min(now, (day + 1) * 24.0)
                hours = worker.work_until(end) - worker.work_until(max(start, day * 24.0))
                if hours > 1e-9:
                    worker.logged[day] += hours
                    key = (task.job.plan.id, task.role)
                    self.logged[key] = self.logged.get(key, 0.0) + hours
                    self._refresh(key)
                    self._log(
                        "work_logged",
                        task.job.plan.id,
                        worker.plan.id,
                        task.role,
                        hours,
                        t=min(end, cal.closing(day)),
                        day=day,
                    )
                    task.remaining -= hours
                if end >= now:
                    break
                day += 1
        worker.last_t = now

    def _reschedule(self, worker: _Worker) -> None:
        self._settle(worker)
        worker.version += 1
        if not worker.tasks:
            worker.current = None
            return
        task = min(worker.tasks, key=_Task.key)
        worker.current = task
        if not task.seen:
            task.seen = True
            job = task.job
            if task.role is Role.PREPARER and not job.started:
                job.started = True
                self._log("work_started", job.plan.id, worker.plan.id, Role.PREPARER)
            elif task.kind == "review":
                self._log("review_started", job.plan.id, worker.plan.id, Role.REVIEWER)
        done_at = worker.time_at(worker.work_until(self.now) + max(task.remaining, 0.0))
        if done_at <= cal.END_TIME:
            self._push(max(done_at, self.now), _DONE, (worker, worker.version))

    def _give(self, worker: _Worker, task: _Task) -> None:
        self._settle(worker)
        worker.tasks.append(task)
        self._reschedule(worker)

    # --- jobs ---------------------------------------------------------------------------------

    def _on_create(self, payload: tuple[JobPlan, int]) -> None:
        plan, seq = payload
        job = _Job(plan, seq)
        self.jobs[plan.id] = job
        if plan.id in self._expected_keys:
            self.arrived.add(plan.id)

        client = self.scenario.clients.get(plan.client_id)
        prior = client.prior_preparer if client else None
        prior_worker = self.workers.get(prior) if prior else None
        jt = job.job_type
        prior_ok = prior_worker is not None and (
            jt.skill in prior_worker.plan.skills
            and all(s in prior_worker.plan.skills for s in plan.required_skills)
            and jt.preparer_tier.rank <= prior_worker.plan.tier.rank <= 2
        )
        self._log(
            "job_created",
            plan.id,
            hours=plan.est_hours,
            client=plan.client_id,
            job_type=plan.type_id,
            skills=[jt.skill, *plan.required_skills],
            preparer_tier=jt.preparer_tier.value,
            due=plan.due.isoformat(),
            is_return=jt.is_return,
            has_review=jt.reviewer_tier is not None,
            prior_preparer=prior,
            prior_eligible=prior_ok,
            exogenous=plan.exogenous,
            ready_t=round(plan.ready_t, 4),
        )
        if plan.ready_t <= self.now:
            self._on_ready(job)
        else:
            self._push(plan.ready_t, _READY, job)
        self._request(job, "new")
        check = job.due_t - 24.0 * STATUS_CHECK_DAYS
        if check > self.now:
            self._push(check, _ESCALATE, (job, "status_check", job.due))
        self._push(job.due_t, _ESCALATE, (job, "past_due", job.due))
        if plan.extended_due is not None:
            self._push(max(cal.opening(cal.day_of_date(plan.due)), self.now), _EXTEND, job)

    def _on_ready(self, job: _Job) -> None:
        job.ready = True
        self._log("job_ready", job.plan.id)
        self._maybe_start(job)

    def _maybe_start(self, job: _Job) -> None:
        if not (job.ready and job.accepted) or job.prep_task is not None or job.preparer is None:
            return
        worker = self.workers[job.preparer]
        job.prep_true = job.plan.est_hours * worker.plan.speed * job.plan.prep_noise
        first = job.prep_true
        if job.pause_left and job.plan.pause_fraction is not None:
            first = job.prep_true * job.plan.pause_fraction
        job.prep_task = _Task(job, Role.PREPARER, "prep", first)
        self._give(worker, job.prep_task)

    def _on_done(self, payload: tuple[_Worker, int]) -> None:
        worker, version = payload
        if version != worker.version or worker.current is None:
            return
        self._settle(worker)
        task = worker.current
        worker.tasks.remove(task)
        worker.current = None
        job = task.job
        if task.kind == "prep" and job.pause_left and job.plan.pause_fraction is not None:
            # Waiting on the client: the rest of the preparation resumes when they answer.
            job.pause_left = False
            task.remaining = job.prep_true * (1 - job.plan.pause_fraction)
            resume = cal.add_business_hours(self.now, job.plan.pause_days * cal.DAY_SPAN)
            self._log("client_wait", job.plan.id, worker.plan.id, Role.PREPARER, until=resume)
            self._push(resume, _RESUME, (worker.plan.id, task))
        elif task.kind in ("prep", "rework"):
            self.done_roles.add((job.plan.id, Role.PREPARER))
            self._refresh((job.plan.id, Role.PREPARER))
            job.prep_done = True
            self._submit(job)
        else:
            self._reviewed(job)
        self._reschedule(worker)

    def _on_resume(self, payload: tuple[str, _Task]) -> None:
        staff_id, task = payload
        job = task.job
        if job.preparer != staff_id or job.completed:
            return
        self._give(self.workers[staff_id], task)

    def _submit(self, job: _Job) -> None:
        if job.reviewer is None:
            self._complete(job)
            return
        self._log("submitted_for_review", job.plan.id, job.preparer, Role.PREPARER)
        reviewer = self.workers[job.reviewer]
        hours = job.reviewer_hours * reviewer.plan.speed * job.plan.review_noise
        if job.reviews >= 1:
            hours *= SECOND_REVIEW_SHARE
        self.done_roles.discard((job.plan.id, Role.REVIEWER))
        self._refresh((job.plan.id, Role.REVIEWER))
        self._give(reviewer, _Task(job, Role.REVIEWER, "review", hours))

    def _reviewed(self, job: _Job) -> None:
        job.reviews += 1
        if job.plan.rework and job.reviews == 1 and job.preparer is not None:
            self._log("review_returned", job.plan.id, job.reviewer, Role.REVIEWER)
            # The work is back with the preparer: their role is open again.
            self.done_roles.discard((job.plan.id, Role.PREPARER))
            self._refresh((job.plan.id, Role.PREPARER))
            hours = job.prep_true * REWORK_PREP_SHARE * job.plan.rework_noise
            self._give(self.workers[job.preparer], _Task(job, Role.PREPARER, "rework", hours))
            return
        self.done_roles.add((job.plan.id, Role.REVIEWER))
        self._refresh((job.plan.id, Role.REVIEWER))
        self._complete(job)

    def _complete(self, job: _Job) -> None:
        job.completed = True
        self._log("completed", job.plan.id)
        self._release(job, (Role.PREPARER, Role.REVIEWER), "completed")

    # --- dispatch -----------------------------------------------------------------------------

    def _request(self, job: _Job, reason: str) -> None:
        job.requests += 1
        request = AssignmentRequest(
            request_id=f"{job.plan.id}:r{job.requests}",
            workflow_id=job.plan.id,
            client_id=job.plan.client_id,
            service_type=job.plan.type_id,
            due_date=job.due,
            estimated_hours=job.plan.est_hours,
            required_skills=list(job.plan.required_skills),
            specializations=list(job.plan.specializations),
            exclude=list(job.declined),
            keep_reviewer=job.reviewer,
        )
        self._order += 1
        self._pending.append(Pending(request, False, self._order))
        self._log("dispatch_requested", job.plan.id, request=request.request_id, reason=reason)
        self._schedule_dispatch(self.now + self.policy.batch_window_hours)

    def _schedule_dispatch(self, t: float) -> None:
        if self._next_dispatch is None or t < self._next_dispatch:
            self._next_dispatch = t
            self._push(t, _DISPATCH)

    def _on_dispatch(self, _: Any) -> None:
        if self._next_dispatch is None or self.now < self._next_dispatch:
            return
        self._next_dispatch = None
        batch = self._pending[:BATCH_LIMIT]
        self._pending = self._pending[BATCH_LIMIT:]
        if self._pending:
            self._schedule_dispatch(self.now)
        # Production retries every parked request when hours are released. Only a release by
        # someone qualified can change a parked request's answer (without one, what anybody
        # can take only shrinks as days pass), so only those are retried: same answers, less
        # work.
        retry = sorted(
            (self._parked[j] for j in self._dirty if j in self._parked),
            key=lambda p: (p.request.due_date, p.order),
        )[: BATCH_LIMIT - len(batch)]
        self._dirty.difference_update(p.request.workflow_id for p in retry)
        batch += retry
        if not batch:
            return
        # What the policy sees: whole estimates, or open hours for an open-hours ledger.
        before = self.ledger.reservations
        outcomes = self.policy.decide(self.view, batch)
        info = getattr(self.policy, "last_batch", None)
        if info is not None:
            self._log("batch_decided", **info)
        if self.observer is not None:
            self.observer(self.policy, self.view, before, batch, outcomes)
        by_id = {o.request_id: o for o in outcomes}
        for pending in batch:
            job = self.jobs[pending.request.workflow_id]
            outcome = by_id.get(pending.request.request_id)
            if job.completed:
                continue
            if outcome is not None and outcome.assigned:
                if pending.parked:
                    self._unpark(job, pending, "capacity freed")
                self._assign(job, outcome, pending, auto=True)
            elif not pending.parked:
                reason = outcome.reason if outcome else "no decision"
                self._park(job, pending, reason, outcome.explanation if outcome else None)

    def _park(self, job: _Job, pending: Pending, reason: str, explanation: Any = None) -> None:
        job.parked_at = self.now
        self._parked[job.plan.id] = Pending(pending.request, True, pending.order)
        self._log(
            "npr_raised",
            job.plan.id,
            request=pending.request.request_id,
            reason=reason,
            explanation=explanation,
        )

    def _unpark(self, job: _Job, pending: Pending, by: str) -> None:
        self._parked.pop(job.plan.id, None)
        dwell = self.now - (job.parked_at if job.parked_at is not None else self.now)
        self._log(
            "npr_resolved", job.plan.id, request=pending.request.request_id, by=by, dwell=dwell
        )
        job.parked_at = None

    def _assign(self, job: _Job, outcome: Outcome, pending: Pending, *, auto: bool) -> None:
        today = cal.date_at(self.now)
        booked = {r.role: r for r in outcome.reservations}
        roles = [(Role.PREPARER, outcome.preparer, outcome.preparer_hours)]
        if outcome.reviewer is not None:
            roles.append((Role.REVIEWER, outcome.reviewer, outcome.reviewer_hours))
        # Whoever loses a role lets go first, so the log never shows one person in both roles.
        for role, staff_id, _ in roles:
            current = job.preparer if role is Role.PREPARER else job.reviewer
            if current is not None and current != staff_id:
                self._release(job, (role,), "re-planned")
        for role, staff_id, hours in roles:
            assert staff_id is not None
            key = (job.plan.id, role)
            current = job.preparer if role is Role.PREPARER else job.reviewer
            reservation = booked.get(role) or Reservation(
                workflow_id=job.plan.id,
                role=role,
                staff_id=staff_id,
                hours=hours,
                start=today,
                due=job.due,
                client_id=job.plan.client_id,
                forced=outcome.forced,
            )
            self._book(key, reservation)
            if current == staff_id:
                continue
            if role is Role.PREPARER:
                job.preparer, job.preparer_hours = staff_id, hours
            else:
                job.reviewer, job.reviewer_hours = staff_id, hours
            self._log(
                "assigned",
                job.plan.id,
                staff_id,
                role,
                hours,
                request=pending.request.request_id,
                forced=outcome.forced,
                auto=auto,
                due=job.due.isoformat(),
                explanation=outcome.explanation if role is Role.PREPARER else None,
            )
        if outcome.preparer is not None:
            known = self.history.get(job.plan.client_id, [])
            self.history[job.plan.client_id] = list(dict.fromkeys([outcome.preparer, *known]))[:5]
        if not job.accepted and job.offer_to != job.preparer:
            self._offer(job, forced=outcome.forced)

    def _offer(self, job: _Job, *, forced: bool) -> None:
        job.round += 1
        job.offer_to = job.preparer
        idx = job.offers
        job.offers += 1
        self._push(self.now + NOT_STARTED_HOURS, _ESCALATE, (job, "not_started", job.round))
        if forced:
            # The partner has decided and told them: no Accept / Request reassignment round.
            self._push(self.now, _RESPONSE, (job, idx, True))
            return
        delay = job.plan.offer_delay[idx] if idx < len(job.plan.offer_delay) else 1.0
        self._push(cal.add_business_hours(self.now, delay), _RESPONSE, (job, idx, False))

    def _on_response(self, payload: tuple[_Job, int, bool]) -> None:
        job, idx, forced = payload
        if job.completed or job.offers != idx + 1 or job.preparer is None or job.accepted:
            return
        staff_id = job.preparer
        worker = self.workers[staff_id]
        overcommitted = self.booked_remaining(staff_id) > worker.plan.chargeable_hours
        p_accept = ACCEPT_P_OVERCOMMITTED if overcommitted else ACCEPT_P
        u = job.plan.offer_u[idx] if idx < len(job.plan.offer_u) else 0.0
        if forced or u < p_accept:
            job.accepted = True
            self._log("accepted", job.plan.id, staff_id, Role.PREPARER)
            self._maybe_start(job)
            return
        self._log("reassign_requested", job.plan.id, staff_id, Role.PREPARER)
        job.declined.append(staff_id)
        job.offer_to = None
        self._release(job, (Role.PREPARER,), "declined")
        if len(job.declined) >= MAX_DECLINES:
            self._release(job, (Role.REVIEWER,), "declined twice: to the partner")
            job.requests += 1
            request = AssignmentRequest(
                request_id=f"{job.plan.id}:r{job.requests}",
                workflow_id=job.plan.id,
                client_id=job.plan.client_id,
                service_type=job.plan.type_id,
                due_date=job.due,
                estimated_hours=job.plan.est_hours,
                required_skills=list(job.plan.required_skills),
                specializations=list(job.plan.specializations),
                exclude=list(job.declined),
            )
            self._order += 1
            self._log(
                "dispatch_requested", job.plan.id, request=request.request_id, reason="declined"
            )
            self._park(job, Pending(request, False, self._order), "declined twice")
        else:
            self._request(job, "declined")

    def _release(self, job: _Job, roles: tuple[Role, ...], reason: str) -> None:
        for role in roles:
            key = (job.plan.id, role)
            reservation = self._unbook(key)
            if reservation is None:
                continue
            self._log("released", job.plan.id, reservation.staff_id, role, reason=reason)
            if role is Role.PREPARER and reason != "completed":
                job.preparer = None
            elif role is Role.REVIEWER and reason != "completed":
                job.reviewer = None
            staff_id = reservation.staff_id
            for parked_id, pending in self._parked.items():
                if parked_id != job.plan.id and staff_id in self._qualified_for(pending.request):
                    self._dirty.add(parked_id)
        if self._dirty:
            step = RETRY_STEP_HOURS
            self._schedule_dispatch(math.ceil(self.now / step - 1e-9) * step)

    def _qualified_for(self, request: AssignmentRequest) -> frozenset[str]:
        """Who has the skills and tier for either role of the request."""
        key = (request.service_type, tuple(request.required_skills))
        found = self._qualified.get(key)
        if found is None:
            service = self.services[request.service_type]
            skills = {*service.required_skills, *request.required_skills}
            prep_max = 3 if service.preparer_tier.rank == 3 else 2
            ids = set()
            for worker in self.workers.values():
                plan = worker.plan
                if not skills <= set(plan.skills):
                    continue
                rank = plan.tier.rank
                if service.preparer_tier.rank <= rank <= prep_max or (
                    service.reviewer_tier is not None and rank >= service.reviewer_tier.rank
                ):
                    ids.add(plan.id)
            found = self._qualified[key] = frozenset(ids)
        return found

    def _on_partner(self, _: Any) -> None:
        """The partner works the review queue (see ``Behaviour.partner``)."""
        if not self._parked:
            return
        today = cal.day_of(self.now)
        soon = cal.add_working_days(today, self.behaviour.urgent_days)
        for pending in sorted(self._parked.values(), key=lambda p: (p.request.due_date, p.order)):
            job = self.jobs[pending.request.workflow_id]
            if job.completed:
                self._parked.pop(job.plan.id, None)
                continue
            if self.behaviour.partner == "urgent":
                waited = cal.business_hours_between(job.parked_at or self.now, self.now)
                due_soon = cal.day_of_date(pending.request.due_date) <= soon
                # What costs nobody overtime the partner places at once, urgent or not.
                free = getattr(self.policy, "free_option", None)
                if (
                    not due_soon
                    and waited < self.behaviour.patience_hours
                    and not (free is not None and free(self.view, pending))
                ):
                    continue
            outcome = self.policy.partner_assign(self.view, pending)
            if not outcome.assigned:
                continue
            job.forced = True
            self._unpark(job, pending, "partner")
            self._assign(job, outcome, pending, auto=False)

    def _sync_tracker(self) -> None:
        """Yesterday's time entries reach the tracker: the open hours follow them."""
        for worker in self.workers.values():
            self._settle(worker)
        for key, hours in self.logged.items():
            shown = _quarter(hours)
            if shown != self.tracked.get(key, 0.0):
                self.tracked[key] = shown
                if key in self.reservations:
                    self._refresh(key)

    # --- dates --------------------------------------------------------------------------------

    def _on_extend(self, job: _Job) -> None:
        """The due date's morning: a return whose preparation is not done gets an extension."""
        plan = job.plan
        if job.completed or job.prep_done or plan.extended_due is None:
            return
        job.extended = True
        job.due = plan.extended_due
        job.due_t = cal.due_time(job.due)
        self._log("extended", plan.id, new_due=job.due.isoformat())
        for role in (Role.PREPARER, Role.REVIEWER):
            key = (plan.id, role)
            if key in self.reservations:
                self._book(key, self.reservations[key].model_copy(update={"due": job.due}))
        parked = self._parked.get(plan.id)
        if parked is not None:
            request = parked.request.model_copy(update={"due_date": job.due})
            self._parked[plan.id] = Pending(request, True, parked.order)
        for staff_id in {job.preparer, job.reviewer} - {None}:
            assert staff_id is not None
            worker = self.workers[staff_id]
            if any(t.job is job for t in worker.tasks):
                self._reschedule(worker)
        ext = self.scenario.extensions.get(plan.id)
        if ext is not None:
            self._push(self.now, _CREATE, (ext, len(self.scenario.jobs) + job.seq))

    def _on_escalate(self, payload: tuple[_Job, str, Any]) -> None:
        job, kind, key = payload
        if job.completed:
            return
        if kind == "not_started":
            if job.round != key or job.started or job.preparer is None:
                return
            manager = job.preparer
        elif kind == "status_check":
            if job.due != key or job.preparer is None:
                return
            manager = job.preparer
        else:
            if job.due != key:
                return
            manager = None
        self._log("escalation_fired", job.plan.id, manager, kind=kind)

    def _on_day(self, day: int) -> None:
        if self.open_hours:
            self._sync_tracker()
        plan_ahead = getattr(self.policy, "plan_ahead", None)
        if plan_ahead is not None and (day % 7 == 0 or not self._planned_ahead):
            self._planned_ahead = True
            plan_ahead(self.view)
        for worker in self.workers.values():
            plan = worker.plan
            if plan.absent(day):
                planned = day not in plan.sick_days
                self._log("absence_start", person=plan.id, day=day, planned=planned)
            self._log("capacity", person=plan.id, hours=worker.daily[day], day=day)
        self._replan()

    def _replan(self) -> None:
        """Each morning: work not yet started whose preparer can no longer do it by its date
        may move to someone who can (a policy with ``replan``), once per job at most."""
        replan = getattr(self.policy, "replan", None)
        budget = int(getattr(self.policy, "replan_budget", 0))
        if replan is None or budget <= 0:
            return
        requests = []
        for job in self.jobs.values():
            plan = job.plan
            if (
                job.completed
                or job.started
                or job.prep_task is not None
                or job.preparer is None
                or plan.id in self._parked
                or self._replans.get(plan.id, 0) >= budget
                or (plan.id, Role.PREPARER) not in self.reservations
            ):
                continue
            requests.append(
                AssignmentRequest(
                    request_id=f"{plan.id}:r{job.requests}",
                    workflow_id=plan.id,
                    client_id=plan.client_id,
                    service_type=plan.type_id,
                    due_date=job.due,
                    estimated_hours=plan.est_hours,
                    required_skills=list(plan.required_skills),
                    specializations=list(plan.specializations),
                    exclude=list(job.declined),
                    keep_preparer=job.preparer,
                    keep_reviewer=job.reviewer,
                )
            )
        if not requests:
            return
        before = self.ledger.reservations
        moves: list[tuple[AssignmentRequest, Outcome]] = replan(self.view, requests)
        if not moves:
            return
        batch = [Pending(request, False, 0) for request, _ in moves]
        if self.observer is not None:
            self.observer(self.policy, self.view, before, batch, [o for _, o in moves])
        for pending, (_, outcome) in zip(batch, moves, strict=True):
            job = self.jobs[pending.request.workflow_id]
            self._replans[job.plan.id] = self._replans.get(job.plan.id, 0) + 1
            # The new preparer is told and answers like anyone offered work.
            job.accepted = False
            job.offer_to = None
            self._assign(job, outcome, pending, auto=True)


KNOWN_AHEAD = ("monthly_close", "sales_tax", "payroll_q")
"""Recurring work on Schedules, known before it arrives: the monthly closes with their sales
tax, and quarterly payroll."""


def expected_work(scenario: Scenario) -> list[ExpectedWork]:
    """The recurring work the firm's Schedules will create this season: client, service and
    due date, at the service's default estimate (the real estimate comes with the job)."""
    items = [
        ExpectedWork(key=j.id, client_id=j.client_id, service_type=j.type_id, due=j.due)
        for j in scenario.jobs
        if j.type_id in KNOWN_AHEAD
    ]
    return sorted(items, key=lambda e: (e.due, e.key))


def simulate(
    scenario: Scenario,
    policy: DispatchPolicy,
    *,
    behaviour: Behaviour | None = None,
    observer: Observer | None = None,
    until: float = cal.END_TIME,
) -> list[Record]:
    """Run one season (or its start, up to ``until``) and return the event log."""
    return Simulator(scenario, policy, behaviour=behaviour, observer=observer, until=until).run()
