"""Metrics from the event log alone (dispatch-anchors.md §4.7): any policy, any implementation.

Nothing here looks at the simulator or the policy: only ``Record`` s. The definitions:

* **Utilisation** per person-week (peak weeks 1-10, assignable staff, weeks with some capacity):
  chargeable hours worked / chargeable hours available. ``utilisation_mean``, its
  ``utilisation_std`` (population) and ``utilisation_p90_p10`` across person-weeks, and Jain's
  fairness index.
* **Overload hours**: every working morning of the peak weeks, each person's open commitments
  (estimated hours booked, less hours logged on them, by due date; overdue work counts as due
  that day) are checked earliest-due-first against their capacity from that morning: the
  excess is ``max over dates D of (work due by D - capacity until D)``, i.e. the overtime the
  person would need to meet every due date as booked. A person-week's overload is its largest
  morning excess; ``overload_hours`` sums them. ``overloaded_person_weeks`` counts weeks whose
  overload exceeds 10 % of the person's weekly hours. This includes what nobody booked:
  work that ran over its estimate pushing later work past its date, and sick days.
* **Overbooked hours**: the same excess, measured at each assignment in the peak weeks, before
  and after it: what the decision itself booked past capacity. ``overbooked_hours_auto``
  counts the policy's own decisions only (a partner's "assign anyway" is explicit and
  recorded as forced). Capacity here is what could be known at the moment of the decision:
  today's hours still ahead, and from tomorrow the person's usual days less their planned
  leave. A sick day next week is not the decision's doing (it shows in the overload hours);
  ``overbooked_hours_auto_hindsight`` is the same count with the days as they turned out.
* **On time**: jobs due from week 1 to the end of the run, done by the end of their original
  due date. An extension the firm files because the work was not done counts as a miss; a
  client who never sent documents is not a job here (only the extension filed for them is).
  ``late_without_extension_rate``: not done by the date and not extended.
  ``extension_rate``: extensions filed (for missing documents or unfinished work) per return.
* **Auto-assigned**: dispatch requests resolved by the policy without a person deciding.
  **Partner review**: requests that went to the partner; dwell = hours until someone was
  assigned (by the dispatcher when hours freed up, or by the partner).
* **Reassignment rate**: assignments of a job's role beyond its first, per dispatched job.
* **Client continuity**: jobs whose preparer is the client's previous preparer, over jobs whose
  previous preparer still works at the firm and is qualified for the job.
* **Turnaround** (returns): documents ready to completion, in business days (10 h = 1 day).
* **Reviewer queue**: hours from submitted-for-review to the review starting (p95), and the
  longest queue of waiting reviews any reviewer had.
* **Escalations fired**: not started 48 h after assignment, status checks (due - 3 days, not
  done), past due.
* **Idle while work went up-tier** (``idle_while_up_tier``): person-weeks (peak weeks, with
  capacity) in which the person worked under half their available hours while a job they
  could have prepared (its skills theirs, their tier at least the job's preparer tier) was
  given, as preparer, to someone of a higher tier than theirs in the same week.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from dispatch.config import Tier
from simulation import calendar as cal
from simulation.events import Record

METRICS = (
    "utilisation_mean",
    "utilisation_std",
    "utilisation_p90_p10",
    "utilisation_jain",
    "overload_hours",
    "overloaded_person_weeks",
    "overbooked_hours",
    "overbooked_hours_auto",
    "overbooked_hours_auto_hindsight",
    "on_time_rate",
    "late_without_extension_rate",
    "extension_rate",
    "auto_assigned_pct",
    "partner_review_pct",
    "partner_review_dwell_hours",
    "partner_review_dwell_p95_hours",
    "reassignment_rate",
    "client_continuity",
    "turnaround_days_mean",
    "turnaround_days_p90",
    "reviewer_queue_p95_hours",
    "reviewer_queue_max",
    "escalations_fired",
    "escalations_not_started",
    "escalations_status_check",
    "escalations_past_due",
    "idle_while_up_tier",
)
"""Every metric, in the order tables and JSON list them."""

PERCENT = {
    "utilisation_mean",
    "utilisation_std",
    "utilisation_p90_p10",
    "on_time_rate",
    "late_without_extension_rate",
    "extension_rate",
    "auto_assigned_pct",
    "partner_review_pct",
    "client_continuity",
}
"""Metrics that are shares in [0, 1] (shown as percentages)."""

LOWER_IS_BETTER = {
    "utilisation_std",
    "utilisation_p90_p10",
    "overload_hours",
    "overloaded_person_weeks",
    "overbooked_hours",
    "overbooked_hours_auto",
    "overbooked_hours_auto_hindsight",
    "late_without_extension_rate",
    "extension_rate",
    "partner_review_pct",
    "partner_review_dwell_hours",
    "partner_review_dwell_p95_hours",
    "reassignment_rate",
    "turnaround_days_mean",
    "turnaround_days_p90",
    "reviewer_queue_p95_hours",
    "reviewer_queue_max",
    "escalations_fired",
    "escalations_not_started",
    "escalations_status_check",
    "escalations_past_due",
    "idle_while_up_tier",
}


@dataclass
class RunMetrics:
    values: dict[str, float]
    utilisation: dict[str, list[float | None]] = field(default_factory=dict)
    """Person -> utilisation in each peak week (None: no capacity that week)."""
    late_by_week: list[int] = field(default_factory=list)
    """Jobs missing their original due date, by the due date's week (1 .. last week)."""
    due_by_week: list[int] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


SCORED_WEEKS = range(1, cal.SEASON_WEEKS + 1)


def compute(records: Iterable[Record]) -> RunMetrics:
    log = sorted(records, key=lambda r: r.t)
    staff: dict[str, float] = {}
    leave: dict[str, list[tuple[int, int]]] = {}
    capacity: dict[str, dict[int, float]] = defaultdict(dict)
    worked: dict[tuple[str, int], float] = defaultdict(float)
    jobs: dict[str, Record] = {}
    for r in log:
        if r.type == "staff" and r.person is not None:
            staff[r.person] = float(r.hours or 0.0)
            if r.get("leave") is not None:
                leave[r.person] = [(int(a), int(b)) for a, b in r.get("leave")]
        elif r.type == "capacity" and r.person is not None:
            capacity[r.person][int(r.get("day"))] = float(r.hours or 0.0)
        elif r.type == "work_logged" and r.person is not None:
            worked[(r.person, int(r.get("day")))] += float(r.hours or 0.0)
        elif r.type == "job_created" and r.job is not None:
            jobs[r.job] = r

    values: dict[str, float] = {}
    utilisation = _utilisation(staff, capacity, worked, values)
    _idle_while_up_tier(log, jobs, utilisation, values)
    values.update(_overload(log, staff, capacity, leave))
    late_by_week, due_by_week = _deadlines(log, jobs, values)
    _dispatch(log, jobs, values)
    _flow(log, jobs, values)
    return RunMetrics(values, utilisation, late_by_week, due_by_week)


def _utilisation(
    staff: dict[str, float],
    capacity: dict[str, dict[int, float]],
    worked: dict[tuple[str, int], float],
    values: dict[str, float],
) -> dict[str, list[float | None]]:
    per_week: dict[str, list[float | None]] = {}
    flat: list[float] = []
    for person in sorted(staff):
        row: list[float | None] = []
        for week in SCORED_WEEKS:
            first = cal.week_start_day(week)
            days = range(first, first + 7)
            avail = sum(capacity[person].get(d, 0.0) for d in days)
            if avail <= 1e-9:
                row.append(None)
                continue
            u = sum(worked.get((person, d), 0.0) for d in days) / avail
            row.append(u)
            flat.append(u)
        per_week[person] = row
    values["utilisation_mean"] = _mean(flat)
    values["utilisation_std"] = _std(flat)
    values["utilisation_p90_p10"] = percentile(flat, 90) - percentile(flat, 10)
    squares = sum(u * u for u in flat)
    values["utilisation_jain"] = _ratio(sum(flat) ** 2, len(flat) * squares)
    return per_week


IDLE_BELOW = 0.5
"""A person-week under this share of the person's available hours worked counts as idle."""


def _idle_while_up_tier(
    log: list[Record],
    jobs: dict[str, Record],
    utilisation: dict[str, list[float | None]],
    values: dict[str, float],
) -> None:
    people: dict[str, tuple[int, set[str]]] = {
        r.person: (Tier(r.get("tier")).rank, set(r.get("skills") or []))
        for r in log
        if r.type == "staff" and r.person is not None and r.get("tier") is not None
    }
    up_tier: dict[int, list[tuple[set[str], int, int]]] = defaultdict(list)
    """Week -> (skills the job needs, its preparer tier, the preparer's tier) per assignment."""
    for r in log:
        if r.type != "assigned" or r.role != "preparer" or r.job not in jobs:
            continue
        created = jobs[r.job]
        if r.person not in people or created.get("preparer_tier") is None:
            continue  # a log from before jobs carried their skills and tier
        needs = set(created.get("skills") or [])
        floor = Tier(created.get("preparer_tier")).rank
        week = cal.week_of_day(cal.day_of(r.t))
        up_tier[week].append((needs, floor, people[r.person][0]))
    idle = 0
    for person, row in utilisation.items():
        if person not in people:
            continue
        rank, skills = people[person]
        for week, used in zip(SCORED_WEEKS, row, strict=True):
            if used is None or used >= IDLE_BELOW:
                continue
            if any(
                needs <= skills and floor <= rank < given
                for needs, floor, given in up_tier.get(week, [])
            ):
                idle += 1
    values["idle_while_up_tier"] = float(idle)


class _Commitment:
    __slots__ = ("done", "due_day", "hours", "person")

    def __init__(self, person: str, hours: float, due_day: int) -> None:
        self.person = person
        self.hours = hours
        self.due_day = due_day
        self.done = False


class _Books:
    """Every person's open commitments as the log tells them, and their capacity."""

    def __init__(
        self,
        staff: dict[str, float],
        capacity: dict[str, dict[int, float]],
        ahead: dict[str, dict[int, float]] | None = None,
    ) -> None:
        """``ahead``: capacity of the days after today as known beforehand (default: as they
        turned out)."""
        self.staff = staff
        self.capacity = capacity
        self.by_person: dict[str, dict[tuple[str, str], _Commitment]] = defaultdict(dict)
        self.where: dict[tuple[str, str], _Commitment] = {}
        self.logged: dict[tuple[str, str], float] = defaultdict(float)
        self.horizon = cal.TOTAL_DAYS
        self.cum: dict[str, list[float]] = {}
        later = ahead if ahead is not None else capacity
        for person in staff:
            row = [0.0]
            for day in range(self.horizon):
                row.append(row[-1] + later[person].get(day, 0.0))
            self.cum[person] = row

    def capacity_from(self, person: str, t: float, last: int) -> float:
        """Capacity from the moment ``t`` to the end of day ``last``; beyond the run, the
        person's usual working days."""
        row = self.cum[person]
        day = cal.day_of(t)
        if last < day:
            return 0.0
        today = 0.0
        if day < self.horizon:
            share = (cal.closing(day) - max(t, cal.opening(day))) / cal.DAY_SPAN
            today = self.capacity[person].get(day, 0.0) * min(max(share, 0.0), 1.0)
        first = day + 1
        inside = row[min(last, self.horizon - 1) + 1] - row[min(first, self.horizon)]
        if last >= self.horizon:
            extra = sum(1 for d in range(max(first, self.horizon), last + 1) if d % 7 < 5)
            inside += extra * self.staff[person] / 5.0
        return today + max(inside, 0.0)

    def excess(self, person: str, t: float) -> float:
        """Hours of booked work the person cannot do by its due dates from ``t`` on, working
        earliest due first (overdue work counts as due today)."""
        if person not in self.cum:
            return 0.0
        day = cal.day_of(t)
        items: list[tuple[int, float]] = []
        for key, c in self.by_person[person].items():
            if c.done:
                continue
            left = c.hours - self.logged[key]
            if left > 1e-9:
                items.append((max(c.due_day, day), left))
        items.sort()
        total = excess = 0.0
        for i, (due_day, hours) in enumerate(items):
            total += hours
            if i + 1 < len(items) and items[i + 1][0] == due_day:
                continue
            excess = max(excess, total - self.capacity_from(person, t, due_day))
        return excess

    def apply(self, r: Record) -> None:
        if r.job is None:
            return
        if r.type == "assigned" and r.person is not None and r.role is not None:
            key = (r.job, r.role)
            self._drop(key)
            due = date.fromisoformat(str(r.get("due")))
            c = _Commitment(r.person, float(r.hours or 0.0), cal.day_of_date(due))
            self.where[key] = c
            self.by_person[r.person][key] = c
            self.logged[key] = 0.0
        elif r.type == "released" and r.role is not None:
            self._drop((r.job, r.role))
        elif r.type == "work_logged" and r.role is not None:
            self.logged[(r.job, r.role)] += float(r.hours or 0.0)
        elif r.type == "submitted_for_review":
            self._mark((r.job, "preparer"), True)
            self._mark((r.job, "reviewer"), False)
        elif r.type == "review_returned":
            self._mark((r.job, "preparer"), False)
            self._mark((r.job, "reviewer"), True)
        elif r.type == "completed":
            self._drop((r.job, "preparer"))
            self._drop((r.job, "reviewer"))
        elif r.type == "extended":
            new_day = cal.day_of_date(date.fromisoformat(str(r.get("new_due"))))
            for role in ("preparer", "reviewer"):
                moved = self.where.get((r.job, role))
                if moved is not None:
                    moved.due_day = new_day

    def _drop(self, key: tuple[str, str]) -> None:
        c = self.where.pop(key, None)
        if c is not None:
            self.by_person[c.person].pop(key, None)

    def _mark(self, key: tuple[str, str], done: bool) -> None:
        c = self.where.get(key)
        if c is not None:
            c.done = done


def _overload(
    log: list[Record],
    staff: dict[str, float],
    capacity: dict[str, dict[int, float]],
    leave: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, float]:
    """Standing over-commitment each peak-week morning, and over-booking at each assignment.

    ``overbooked_hours``: at every assignment, how much it raised the assignee's excess (the
    hours booked past capacity by that decision) against the capacity known then;
    ``overbooked_hours_auto`` counts only the policy's own decisions, not a partner's explicit
    override; ``overbooked_hours_auto_hindsight`` measures those against the days as they
    turned out (sick days included).
    """
    books = _Books(staff, capacity)
    known = _Books(staff, capacity, _planned(staff, capacity, leave or {}))
    week_max: dict[tuple[str, int], float] = defaultdict(float)
    overbooked = overbooked_auto = hindsight_auto = 0.0
    mornings = [d for d in range(cal.SEASON_START_DAY, cal.SEASON_END_DAY) if cal.is_working_day(d)]
    m = 0
    for r in log:
        while m < len(mornings) and cal.opening(mornings[m]) <= r.t:
            _morning(books, mornings[m], week_max)
            m += 1
        if r.type == "assigned" and r.person is not None and r.person in staff:
            before = books.excess(r.person, r.t)
            known_before = known.excess(r.person, r.t)
            books.apply(r)
            known.apply(r)
            raised = max(0.0, books.excess(r.person, r.t) - before)
            raised_known = max(0.0, known.excess(r.person, r.t) - known_before)
            in_season = cal.SEASON_START_DAY <= cal.day_of(r.t) < cal.SEASON_END_DAY
            if in_season:
                overbooked += raised_known
                if r.get("auto"):
                    overbooked_auto += raised_known
                    hindsight_auto += raised
        else:
            books.apply(r)
            known.apply(r)
    while m < len(mornings):
        _morning(books, mornings[m], week_max)
        m += 1
    hours = sum(week_max.values())
    heavy = sum(1 for (person, _), v in week_max.items() if v > 0.1 * staff.get(person, 0.0))
    return {
        "overload_hours": hours,
        "overloaded_person_weeks": float(heavy),
        "overbooked_hours": overbooked,
        "overbooked_hours_auto": overbooked_auto,
        "overbooked_hours_auto_hindsight": hindsight_auto,
    }


def _planned(
    staff: dict[str, float],
    capacity: dict[str, dict[int, float]],
    leave: dict[str, list[tuple[int, int]]],
) -> dict[str, dict[int, float]]:
    """Each person's days as the firm knows them in advance: their usual hours on working
    days, nothing on planned leave (a log without leave periods: the days as they were)."""
    planned: dict[str, dict[int, float]] = {}
    for person, weekly in staff.items():
        if person not in leave:
            planned[person] = capacity[person]
            continue
        away = leave[person]
        planned[person] = {
            day: weekly / 5.0
            for day in range(cal.TOTAL_DAYS)
            if cal.is_working_day(day) and not any(a <= day <= b for a, b in away)
        }
    return planned


def _morning(books: _Books, day: int, week_max: dict[tuple[str, int], float]) -> None:
    t = cal.opening(day)
    week = cal.week_of_day(day)
    for person in books.staff:
        excess = books.excess(person, t)
        if excess > week_max[(person, week)]:
            week_max[(person, week)] = excess


def _finished(log: list[Record]) -> tuple[dict[str, float], set[str], int]:
    """When each job was first completed, which were extended, and the log's last day."""
    completed: dict[str, float] = {}
    extended: set[str] = set()
    for r in log:
        if r.type == "completed" and r.job is not None and r.job not in completed:
            completed[r.job] = r.t
        elif r.type == "extended" and r.job is not None:
            extended.add(r.job)
    return completed, extended, max((cal.day_of(r.t) for r in log), default=0)


def _judged(
    jobs: dict[str, Record], completed: dict[str, float], extended: set[str], end_day: int
) -> Iterator[tuple[str, int, bool]]:
    """(job, due day, on time) for every job due inside the scored season."""
    for job_id, r in jobs.items():
        day = cal.day_of_date(date.fromisoformat(str(r.get("due"))))
        if not cal.SEASON_START_DAY <= day <= end_day:
            continue
        done_at = completed.get(job_id)
        on_time = (
            done_at is not None and done_at <= cal.closing(day) + 1e-6 and job_id not in extended
        )
        yield job_id, day, on_time


def late_jobs(log: list[Record]) -> set[str]:
    """The jobs ``on_time_rate`` counts as not on time (late, or on time only by extension)."""
    jobs = {r.job: r for r in log if r.type == "job_created" and r.job is not None}
    return {job for job, _, on_time in _judged(jobs, *_finished(log)) if not on_time}


def _deadlines(
    log: list[Record], jobs: dict[str, Record], values: dict[str, float]
) -> tuple[list[int], list[int]]:
    completed, extended, end_day = _finished(log)
    weeks = cal.week_of_day(end_day)
    late_by_week = [0] * weeks
    due_by_week = [0] * weeks
    due = on_time = late_plain = 0
    for job_id, day, in_time in _judged(jobs, completed, extended, end_day):
        due += 1
        week = cal.week_of_day(day)
        if 1 <= week <= weeks:
            due_by_week[week - 1] += 1
        if in_time:
            on_time += 1
            continue
        if 1 <= week <= weeks:
            late_by_week[week - 1] += 1
        if job_id not in extended:
            late_plain += 1
    returns = sum(1 for r in jobs.values() if r.get("is_return"))
    exogenous = sum(1 for r in jobs.values() if r.get("exogenous"))
    values["on_time_rate"] = _ratio(on_time, due)
    values["late_without_extension_rate"] = _ratio(late_plain, due)
    values["extension_rate"] = _ratio(len(extended) + exogenous, returns + exogenous)
    return late_by_week, due_by_week


def _dispatch(log: list[Record], jobs: dict[str, Record], values: dict[str, float]) -> None:
    requests: set[str] = set()
    auto: set[str] = set()
    npr: list[str] = []
    dwell: list[float] = []
    first_seen: set[tuple[str, str]] = set()
    reassignments = 0
    dispatched: set[str] = set()
    final_preparer: dict[str, str] = {}
    for r in log:
        if r.type == "dispatch_requested":
            requests.add(str(r.get("request")))
        elif r.type == "assigned" and r.job is not None and r.role is not None:
            dispatched.add(r.job)
            if r.get("auto"):
                auto.add(str(r.get("request")))
            key = (r.job, r.role)
            if key in first_seen:
                reassignments += 1
            first_seen.add(key)
            if r.role == "preparer" and r.person is not None:
                final_preparer[r.job] = r.person
        elif r.type == "npr_raised":
            npr.append(str(r.get("request")))
        elif r.type == "npr_resolved":
            dwell.append(float(r.get("dwell", 0.0)))
    values["auto_assigned_pct"] = _ratio(len(auto & requests), len(requests))
    values["partner_review_pct"] = _ratio(len(npr), len(requests))
    values["partner_review_dwell_hours"] = _mean(dwell) if dwell else 0.0
    values["partner_review_dwell_p95_hours"] = percentile(dwell, 95) if dwell else 0.0
    values["reassignment_rate"] = _ratio(reassignments, len(dispatched))
    eligible = kept = 0
    for job_id, preparer in final_preparer.items():
        created = jobs.get(job_id)
        if created is None or not created.get("prior_eligible"):
            continue
        eligible += 1
        if preparer == created.get("prior_preparer"):
            kept += 1
    values["client_continuity"] = _ratio(kept, eligible)


def _flow(log: list[Record], jobs: dict[str, Record], values: dict[str, float]) -> None:
    ready: dict[str, float] = {}
    turnaround: list[float] = []
    reviewer_of: dict[str, str] = {}
    submitted: dict[str, float] = {}
    waits: list[float] = []
    queue: dict[str, int] = defaultdict(int)
    longest = 0
    escalations: dict[str, int] = defaultdict(int)
    for r in log:
        job = r.job
        if r.type == "job_ready" and job is not None:
            ready[job] = r.t
        elif r.type == "assigned" and r.role == "reviewer" and job is not None and r.person:
            reviewer_of[job] = r.person
        elif r.type == "submitted_for_review" and job is not None:
            submitted[job] = r.t
            who = reviewer_of.get(job)
            if who is not None:
                queue[who] += 1
                longest = max(longest, queue[who])
        elif r.type == "review_started" and job is not None and job in submitted:
            waits.append(r.t - submitted.pop(job))
            if r.person is not None and queue[r.person] > 0:
                queue[r.person] -= 1
        elif r.type == "completed" and job is not None:
            created = jobs.get(job)
            if created is not None and created.get("is_return") and job in ready:
                turnaround.append(_business_days(ready[job], r.t))
        elif r.type == "escalation_fired":
            escalations[str(r.get("kind"))] += 1
    values["turnaround_days_mean"] = _mean(turnaround)
    values["turnaround_days_p90"] = percentile(turnaround, 90)
    values["reviewer_queue_p95_hours"] = percentile(waits, 95) if waits else 0.0
    values["reviewer_queue_max"] = float(longest)
    values["escalations_not_started"] = float(escalations["not_started"])
    values["escalations_status_check"] = float(escalations["status_check"])
    values["escalations_past_due"] = float(escalations["past_due"])
    values["escalations_fired"] = float(sum(escalations.values()))


def _business_days(start: float, end: float) -> float:
    """Open hours between two moments, in 10-hour business days."""
    return cal.business_hours_between(start, end) / cal.DAY_SPAN
