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

import math
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from dispatch.config import Absence


@dataclass(frozen=True)
class WorkCalendar:
    """A firm's working week and holidays. Every count is arithmetic (whole weeks times the
    working days per week, the remainder from a table, holidays by bisection), so a window of
    eighty centuries costs what a window of a week costs: a date typed into a PM system never
    turns one decision into a scan of millions of days."""

    workdays: tuple[int, ...]
    """``date.weekday()`` numbers that are working days (Monday = 0)."""
    holidays: frozenset[date] = frozenset()
    _rules: _CalendarRules = field(init=False, repr=False, compare=False, hash=False)
    _hash: int = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", _CalendarRules.of(self.workdays, self.holidays))
        object.__setattr__(self, "_hash", hash((self.workdays, self.holidays)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, workdays: Iterable[int], holidays: Iterable[date] = ()) -> WorkCalendar:
        return _calendar(tuple(sorted(set(workdays))), frozenset(holidays))

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays

    def count_working_days(self, start: date, end: date) -> int:
        """How many working days [start, end] holds, both inclusive (0 when end < start)."""
        if end < start:
            return 0
        rules = self._rules
        span = (end - start).days + 1
        weeks, rest = divmod(span, 7)
        count = weeks * rules.per_week + rules.partial[start.weekday()][rest]
        return count - (bisect_right(rules.holidays, end) - bisect_left(rules.holidays, start))

    def working_days(self, start: date, end: date) -> list[date]:
        """Working days in [start, end], both inclusive.

        A list as long as the window: for counting use ``count_working_days``, which does not
        depend on the window's length.
        """
        days = []
        day = start
        while day <= end:
            if self.is_working_day(day):
                days.append(day)
            day += timedelta(days=1)
        return days

    def first_working_day(self, start: date) -> date | None:
        """``start`` if it is a working day, else the next one; None if there is none."""
        if not self.workdays:
            return None
        return self.nth_working_day(start, 1)

    def nth_working_day(self, start: date, n: int) -> date | None:
        """The ``n``-th working day counting from ``start`` itself (n >= 1); None if the
        calendar ends first."""
        if n < 1 or not self.workdays:
            return None
        # The count up to a date only grows, so the date where it reaches n is found by
        # bisection; a week holds at least one working day, plus one per holiday skipped.
        low, high = start, _shift(start, 7 * (n + len(self._rules.holidays)) + 7)
        if self.count_working_days(start, high) < n:
            return None
        while low < high:
            mid = low + (high - low) // 2
            if self.count_working_days(start, mid) >= n:
                high = mid
            else:
                low = mid + timedelta(days=1)
        return low

    def add_working_days(self, start: date, count: int) -> date:
        """The date ``count`` working days after ``start`` (``start`` itself when count is 0)."""
        if count <= 0:
            return start
        found = self.nth_working_day(start + timedelta(days=1), count)
        if found is None:
            raise OverflowError(f"no {count} working days after {start.isoformat()}")
        return found


@dataclass(frozen=True)
class _CalendarRules:
    per_week: int
    partial: tuple[tuple[int, ...], ...]
    """``partial[w][r]``: working weekdays among the ``r`` days from a weekday ``w`` on."""
    holidays: tuple[date, ...]
    """Holidays that fall on a working weekday, sorted (the others change no count)."""

    @classmethod
    def of(cls, workdays: tuple[int, ...], holidays: frozenset[date]) -> _CalendarRules:
        partial = tuple(
            tuple(sum(1 for k in range(r) if (w + k) % 7 in workdays) for r in range(8))
            for w in range(7)
        )
        on_workdays = sorted(d for d in holidays if d.weekday() in workdays)
        return cls(len(set(workdays)), partial, tuple(on_workdays))


def _shift(day: date, days: int) -> date:
    """``day + days``, stopping at the last date Python knows."""
    return day + timedelta(days=min(days, (date.max - day).days))


@lru_cache(maxsize=64)
def _calendar(workdays: tuple[int, ...], holidays: frozenset[date]) -> WorkCalendar:
    return WorkCalendar(workdays, holidays)


@dataclass(frozen=True)
class PersonCapacity:
    """What the tracker and the config say about one person's time."""

    weekly_hours: float
    logged_this_week: float = 0.0
    logged_last_week: float = 0.0
    absences: tuple[Absence, ...] = ()
    today_share: float = 1.0
    """Share of today's working hours still ahead (a decision at 17:00 of a 9-to-5 day sees
    1/8 of the day's hours, not the whole day). 1.0: the day has not started."""
    _hash: int = field(init=False, repr=False, compare=False)
    _away: _AbsenceIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Hashed and indexed once: every cached capacity question is keyed by the person, and
        # every count of days at work looks at their absences.
        fields = (
            self.weekly_hours,
            self.logged_this_week,
            self.logged_last_week,
            self.absences,
            self.today_share,
        )
        object.__setattr__(self, "_hash", hash(fields))
        object.__setattr__(self, "_away", _AbsenceIndex.of(self.absences))

    def __hash__(self) -> int:
        return self._hash

    def absent_on(self, day: date) -> bool:
        return any(a.start <= day <= a.end for a in self.absences)


@dataclass(frozen=True)
class _AbsenceIndex:
    """A person's absences merged into disjoint periods, sorted, for counts by bisection."""

    starts: tuple[date, ...]
    ends: tuple[date, ...]

    @classmethod
    def of(cls, absences: Iterable[Absence]) -> _AbsenceIndex:
        merged: list[list[date]] = []
        for a in sorted(absences, key=lambda a: a.start):
            if merged and (a.start - merged[-1][1]).days <= 1:
                merged[-1][1] = max(merged[-1][1], a.end)
            else:
                merged.append([a.start, a.end])
        return cls(tuple(m[0] for m in merged), tuple(m[1] for m in merged))


def absent_working_days(
    person: PersonCapacity, start: date, end: date, calendar: WorkCalendar
) -> int:
    """Working days in [start, end] on which the person is away."""
    index = person._away
    if end < start or not index.starts:
        return 0
    first = bisect_left(index.ends, start)
    last = bisect_right(index.starts, end)
    return sum(
        calendar.count_working_days(max(index.starts[k], start), min(index.ends[k], end))
        for k in range(first, last)
    )


def present_working_days(
    person: PersonCapacity, start: date, end: date, calendar: WorkCalendar
) -> int:
    """Working days in [start, end] on which the person is at work."""
    return calendar.count_working_days(start, end) - absent_working_days(
        person, start, end, calendar
    )


def absent_throughout(
    person: PersonCapacity, start: date, end: date, calendar: WorkCalendar
) -> bool:
    """Away on every working day of [start, end] (and there is at least one)."""
    days = calendar.count_working_days(start, end)
    return days > 0 and absent_working_days(person, start, end, calendar) == days


@dataclass(frozen=True)
class Booking:
    """Hours a person has promised, due by a date (one reservation, seen by the arithmetic)."""

    hours: float
    due: date


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def local_date(now: datetime, time_zone: str) -> date:
    """The calendar date at the instant ``now`` (aware) on the firm's clock.

    Not ``now.date()``: west of UTC the UTC date is tomorrow's by the evening, east of it
    (Sydney, Auckland) it is still yesterday's in the morning.
    """
    return now.astimezone(ZoneInfo(time_zone)).date()


def day_left_at(now: datetime, time_zone: str, start_hour: float, end_hour: float) -> float:
    """``share_of_day_left`` at the instant ``now`` (aware), on the firm's clock."""
    local = now.astimezone(ZoneInfo(time_zone))
    hour = local.hour + local.minute / 60 + local.second / 3600
    return share_of_day_left(hour, start_hour, end_hour)


def share_of_day_left(hour: float, start_hour: float, end_hour: float) -> float:
    """Share of a working day from ``start_hour`` to ``end_hour`` still ahead at ``hour``
    (local clock hours, e.g. 17.5 for 17:30): 1 before the day starts, 0 after it ends."""
    if end_hour <= start_hour:
        return 1.0
    return min(max((end_hour - hour) / (end_hour - start_hour), 0.0), 1.0)


@lru_cache(maxsize=65536)
def capacity_between(
    person: PersonCapacity, today: date, end: date, calendar: WorkCalendar, ceiling: float = 1.0
) -> float:
    """Hours the person can work in [today, end], after logged time and last week's overtime.

    Cached: a batch asks the same (person, window) question many times, and the dispatcher
    must decide a month-end burst well inside one workflow task. Pure, so caching is safe.
    """
    return _capacity(person, today, end, calendar, ceiling)


def _capacity(
    person: PersonCapacity, today: date, end: date, calendar: WorkCalendar, ceiling: float
) -> float:
    if end < today or person.weekly_hours <= 0:
        return 0.0
    per_day = person.weekly_hours / max(len(calendar.workdays), 1)
    this_week_end = min(_shift(week_start(today), 6), end)
    this_week_days: float = present_working_days(person, today, this_week_end, calendar)
    if person.today_share < 1.0 and calendar.is_working_day(today) and not person.absent_on(today):
        # What is left of today, not the whole day: the hours already gone cannot be promised.
        this_week_days -= 1.0 - max(person.today_share, 0.0)
    later_days = (
        present_working_days(person, this_week_end + timedelta(days=1), end, calendar)
        if this_week_end < end
        else 0
    )
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
    _later_slack: dict[tuple[object, ...], list[float]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """Per (person, today, calendar, ceiling), from the end backwards, as far as asked so far:
    ``[n - i]`` = the least slack at any due date from ``dues[i]`` on. A person's later
    commitments are then checked once per ledger, not once per decision."""

    @classmethod
    def of(cls, bookings: Iterable[Booking]) -> BookingIndex:
        return cls.of_pairs((b.due, b.hours) for b in bookings)

    @classmethod
    def of_pairs(cls, pairs: Iterable[tuple[date, float]]) -> BookingIndex:
        """From (due, hours) pairs, in any order (ties keep their order, as ``of`` does)."""
        ordered = sorted(pairs, key=lambda p: p[0])
        totals = [0.0]
        for _, hours in ordered:
            totals.append(totals[-1] + hours)
        return cls(tuple(due for due, _ in ordered), tuple(totals))

    def demand_by(self, day: date) -> float:
        return self.totals[bisect_right(self.dues, day)]

    def slack_from(
        self,
        i: int,
        person: PersonCapacity,
        today: date,
        calendar: WorkCalendar,
        ceiling: float,
    ) -> float:
        """The least of ``capacity(today, D) - demand by D`` over the due dates D from
        ``dues[i]`` on (infinite when there are none)."""
        n = len(self.dues)
        suffix = self._later_slack.setdefault((person, today, calendar, ceiling), [math.inf])
        for k in range(n - len(suffix), i - 1, -1):
            due = self.dues[k]
            room = capacity_between(person, today, due, calendar, ceiling) - self.demand_by(due)
            suffix.append(min(room, suffix[-1]))
        return suffix[n - i]


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
    slack = capacity_between(person, today, due, calendar, ceiling) - index.demand_by(due)
    later = index.slack_from(bisect_right(index.dues, due), person, today, calendar, ceiling)
    return min(slack, later)


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
    index = BookingIndex.of(bookings)
    return any(
        index.demand_by(checkpoint)
        > capacity_between(person, today, checkpoint, calendar, ceiling) + 1e-6
        for checkpoint in sorted(set(index.dues))
    )


def estimated_completion(
    person: PersonCapacity,
    bookings: Sequence[Booking] | BookingIndex,
    hours: float,
    due: date,
    today: date,
    calendar: WorkCalendar,
) -> date:
    """The first working day by which this job is done if work runs earliest-due-first.

    Falls back to the due date when the job only just fits (or does not fit at all).
    Capacity to a date only grows with the date, so the day is found by bisection over the
    window, not by walking it.
    """
    if isinstance(bookings, BookingIndex):
        ahead = bookings.demand_by(due) + hours
    else:
        ahead = sum(b.hours for b in bookings if b.due <= due) + hours
    if _capacity(person, today, due, calendar, 1.0) < ahead - 1e-9:
        return due
    low, high = today, due
    while low < high:
        mid = low + (high - low) // 2
        if _capacity(person, today, mid, calendar, 1.0) >= ahead - 1e-9:
            high = mid
        else:
            low = mid + timedelta(days=1)
    done = calendar.first_working_day(low)
    return done if done is not None and done <= due else due


def hours_in_window(bookings: Collection[Booking]) -> float:
    return sum(b.hours for b in bookings)
