"""Capacity arithmetic: how many hours a person can still promise before a date.

Pure functions, no Temporal, no I/O: the dispatcher workflow, the tests and the benchmark all
call these same functions.

The model (DESIGN §5):

* Capacity accrues per working day: ``weekly hours / working days per week``, nothing on
  weekends, firm holidays or the person's absences.
* The time tracker is the truth about the current week: what is left this week is at most
  ``weekly - logged this week`` (someone who already worked 30 of 40 hours by Wednesday has 10
  left, not 24), and overtime logged last week (beyond capacity) is carried over and taken off.
* Open reservations are checked the way a person would actually work them, earliest due date
  first. A new job with due date D fits when, for D and for every later due date D' among the
  person's reservations, all work due by D' still fits into the capacity between today and D'.
  So a new job can use slack before D but can never push an existing commitment past its date.

``available_hours`` is the largest job (due D) that passes that test. Hours already logged on a
reserved engagement are not subtracted from its reservation: the estimate stays whole, which
errs on the side of never overloading anyone.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from dispatch.config import Absence


@dataclass(frozen=True)
class WorkCalendar:
    workdays: tuple[int, ...]
    """``date.weekday()`` numbers that are working days (Monday = 0)."""
    holidays: frozenset[date] = frozenset()

    @classmethod
    def of(cls, workdays: Iterable[int], holidays: Iterable[date] = ()) -> WorkCalendar:
        return _calendar(tuple(sorted(set(workdays))), frozenset(holidays))

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays

    def working_days(self, start: date, end: date) -> list[date]:
        """Working days in [start, end], both inclusive."""
        return list(_working_days(self, start, end))

    def _scan(self, start: date, end: date) -> tuple[date, ...]:
        days = []
        day = start
        while day <= end:
            if self.is_working_day(day):
                days.append(day)
            day += timedelta(days=1)
        return tuple(days)

    def add_working_days(self, start: date, count: int) -> date:
        """The date ``count`` working days after ``start`` (``start`` itself when count is 0)."""
        day = start
        remaining = count
        while remaining > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                remaining -= 1
        return day


@lru_cache(maxsize=64)
def _calendar(workdays: tuple[int, ...], holidays: frozenset[date]) -> WorkCalendar:
    return WorkCalendar(workdays, holidays)


@lru_cache(maxsize=65536)
def _working_days(calendar: WorkCalendar, start: date, end: date) -> tuple[date, ...]:
    return calendar._scan(start, end)


@dataclass(frozen=True)
class PersonCapacity:
    """What the tracker and the config say about one person's time."""

    weekly_hours: float
    logged_this_week: float = 0.0
    logged_last_week: float = 0.0
    absences: tuple[Absence, ...] = ()

    def absent_on(self, day: date) -> bool:
        return any(a.start <= day <= a.end for a in self.absences)


@dataclass(frozen=True)
class Booking:
    """Hours a person has promised, due by a date (one reservation, seen by the arithmetic)."""

    hours: float
    due: date


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


@lru_cache(maxsize=65536)
def capacity_between(
    person: PersonCapacity, today: date, end: date, calendar: WorkCalendar, ceiling: float = 1.0
) -> float:
    """Hours the person can work in [today, end], after logged time and last week's overtime.

    Cached: a batch asks the same (person, window) question many times, and the dispatcher
    must decide a month-end burst well inside one workflow task. Pure, so caching is safe.
    """
    if end < today or person.weekly_hours <= 0:
        return 0.0
    per_day = person.weekly_hours / max(len(calendar.workdays), 1)
    days = [d for d in calendar.working_days(today, end) if not person.absent_on(d)]
    this_week_end = week_start(today) + timedelta(days=6)
    this_week_days = sum(1 for d in days if d <= this_week_end)
    later_days = len(days) - this_week_days
    left_this_week = max(0.0, person.weekly_hours - person.logged_this_week)
    this_week = min(per_day * this_week_days, left_this_week)
    overtime_carry = max(0.0, person.logged_last_week - person.weekly_hours)
    total = this_week + per_day * later_days - overtime_carry
    return max(0.0, total) * ceiling


@dataclass(frozen=True)
class BookingIndex:
    """Bookings sorted by due date with running totals: demand by any date in O(log n)."""

    dues: tuple[date, ...]
    totals: tuple[float, ...]
    """``totals[i]`` = hours of the first ``i`` bookings (``totals[0]`` = 0)."""

    @classmethod
    def of(cls, bookings: Iterable[Booking]) -> BookingIndex:
        ordered = sorted(bookings, key=lambda b: b.due)
        totals = [0.0]
        for booking in ordered:
            totals.append(totals[-1] + booking.hours)
        return cls(tuple(b.due for b in ordered), tuple(totals))

    def demand_by(self, day: date) -> float:
        return self.totals[bisect_right(self.dues, day)]


def available_hours(
    person: PersonCapacity,
    bookings: Sequence[Booking] | BookingIndex,
    due: date,
    today: date,
    calendar: WorkCalendar,
    ceiling: float = 1.0,
) -> float:
    """The most hours a new job due on ``due`` can take without breaking any commitment.

    Negative when the person is already over-committed (e.g. after a partner's override).
    """
    index = bookings if isinstance(bookings, BookingIndex) else BookingIndex.of(bookings)
    later = index.dues[bisect_right(index.dues, due) :]
    slack = capacity_between(person, today, due, calendar, ceiling) - index.demand_by(due)
    previous = due
    for checkpoint in later:
        if checkpoint == previous:
            continue
        previous = checkpoint
        cap = capacity_between(person, today, checkpoint, calendar, ceiling)
        slack = min(slack, cap - index.demand_by(checkpoint))
    return slack


def fits(
    person: PersonCapacity,
    bookings: Sequence[Booking] | BookingIndex,
    hours: float,
    due: date,
    today: date,
    calendar: WorkCalendar,
    ceiling: float = 1.0,
    start: date | None = None,
) -> bool:
    """Whether a job of ``hours`` due on ``due`` (not before ``start``) fits the person."""
    if available_hours(person, bookings, due, today, calendar, ceiling) < hours - 1e-9:
        return False
    if start is not None and start > today:
        # The job cannot begin before its start date: it must fit in its own window too.
        return capacity_between(person, start, due, calendar, ceiling) >= hours - 1e-9
    return True


def is_overbooked(
    person: PersonCapacity,
    bookings: Sequence[Booking],
    today: date,
    calendar: WorkCalendar,
    ceiling: float = 1.0,
) -> bool:
    """True when some due date has more work due by it than capacity until it (the invariant)."""
    for checkpoint in sorted({b.due for b in bookings}):
        demand = sum(b.hours for b in bookings if b.due <= checkpoint)
        if demand > capacity_between(person, today, checkpoint, calendar, ceiling) + 1e-6:
            return True
    return False


def estimated_completion(
    person: PersonCapacity,
    bookings: Sequence[Booking],
    hours: float,
    due: date,
    today: date,
    calendar: WorkCalendar,
) -> date:
    """The first working day by which this job is done if work runs earliest-due-first.

    Falls back to the due date when the job only just fits (or does not fit at all).
    """
    ahead = sum(b.hours for b in bookings if b.due <= due) + hours
    for day in calendar.working_days(today, due):
        if capacity_between(person, today, day, calendar) >= ahead - 1e-9:
            return day
    return due


def hours_in_window(bookings: Collection[Booking]) -> float:
    return sum(b.hours for b in bookings)
