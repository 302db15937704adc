"""Capacity arithmetic: working days, logged hours, overtime carry-over, earliest-due-first."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from dispatch.capacity import (
    Booking,
    PersonCapacity,
    WorkCalendar,
    absent_throughout,
    absent_working_days,
    available_hours,
    capacity_between,
    day_left_at,
    estimated_completion,
    fits,
    is_overbooked,
    present_working_days,
    share_of_day_left,
)
from dispatch.config import Absence

CAL = WorkCalendar.of(range(5), [date(2026, 12, 25)])
MON = date(2026, 11, 30)


def test_working_days_skip_weekends_and_holidays() -> None:
    days = CAL.working_days(date(2026, 12, 21), date(2026, 12, 27))
    assert days == [date(2026, 12, 21), date(2026, 12, 22), date(2026, 12, 23), date(2026, 12, 24)]
    assert CAL.add_working_days(date(2026, 12, 24), 1) == date(2026, 12, 28)


def test_full_week_capacity_is_weekly_hours() -> None:
    person = PersonCapacity(weekly_hours=40)
    assert capacity_between(person, MON, MON + timedelta(days=4), CAL) == 40
    assert capacity_between(person, MON, MON + timedelta(days=11), CAL) == 80


def test_hours_logged_this_week_come_off_what_is_left_this_week() -> None:
    wednesday = MON + timedelta(days=2)
    # Pro rata Wed-Fri would be 24 h, but 30 h are already logged: only 10 h remain.
    busy = PersonCapacity(weekly_hours=40, logged_this_week=30)
    assert capacity_between(busy, wednesday, wednesday + timedelta(days=2), CAL) == 10
    # Next week is untouched by this week's logging.
    assert capacity_between(busy, wednesday, wednesday + timedelta(days=9), CAL) == 50
    # Logged time under the pro-rata share does not add capacity beyond the days left.
    idle = PersonCapacity(weekly_hours=40, logged_this_week=0)
    assert capacity_between(idle, wednesday, wednesday + timedelta(days=2), CAL) == 24


def test_last_weeks_overtime_is_carried_over() -> None:
    tired = PersonCapacity(weekly_hours=40, logged_last_week=52)
    assert capacity_between(tired, MON, MON + timedelta(days=4), CAL) == 28


def test_absence_and_ceiling_reduce_capacity() -> None:
    away = PersonCapacity(
        weekly_hours=40, absences=(Absence(start=MON, end=MON + timedelta(days=1)),)
    )
    assert capacity_between(away, MON, MON + timedelta(days=4), CAL) == 24
    assert capacity_between(PersonCapacity(40), MON, MON + timedelta(days=4), CAL, 0.8) == 32


def test_new_job_cannot_push_an_existing_commitment_past_its_date() -> None:
    person = PersonCapacity(weekly_hours=40)
    friday = MON + timedelta(days=4)
    bookings = [Booking(hours=36, due=friday)]
    # Due Tuesday: 16 h of capacity by then, but Friday's 36 h would no longer fit.
    assert available_hours(person, bookings, MON + timedelta(days=1), MON, CAL) == 4
    # Due the Friday after: 80 h by then, 36 h already promised.
    assert available_hours(person, bookings, friday + timedelta(days=7), MON, CAL) == 44


def test_start_date_in_the_future_needs_room_inside_its_own_window() -> None:
    person = PersonCapacity(weekly_hours=40)
    friday = MON + timedelta(days=4)
    assert fits(person, [], 8, friday, MON, CAL, start=friday)
    assert not fits(person, [], 9, friday, MON, CAL, start=friday)


def test_estimated_completion_runs_earliest_due_first() -> None:
    person = PersonCapacity(weekly_hours=40)
    bookings = [Booking(hours=16, due=MON + timedelta(days=3))]
    # 16 h ahead of it plus its own 8 h: done at the end of Wednesday.
    assert estimated_completion(
        person, bookings, 8, MON + timedelta(days=9), MON, CAL
    ) == MON + timedelta(days=2)


def test_a_decision_late_in_the_day_counts_only_the_hours_left_today() -> None:
    # 17:00 in a 09:00-17:00 day: nothing of today is left; 16:00: one hour of eight.
    assert share_of_day_left(17.0, 9, 17) == 0.0
    assert share_of_day_left(16.0, 9, 17) == 0.125
    assert share_of_day_left(7.5, 9, 17) == 1.0
    wednesday = MON + timedelta(days=2)
    late = PersonCapacity(weekly_hours=40, today_share=0.125)
    assert capacity_between(late, wednesday, wednesday, CAL) == 1.0
    assert capacity_between(late, wednesday, wednesday + timedelta(days=2), CAL) == 17.0
    # Someone away today loses nothing more; a weekend has no hours to lose.
    away = PersonCapacity(40, absences=(Absence(start=wednesday, end=wednesday),), today_share=0)
    assert capacity_between(away, wednesday, wednesday + timedelta(days=2), CAL) == 16.0
    saturday = MON + timedelta(days=5)
    weekend = PersonCapacity(40, today_share=0.0)
    assert capacity_between(weekend, saturday, saturday + timedelta(days=2), CAL) == 8.0
    # The job that fits at 08:00 no longer fits at 16:00 when it is due tonight.
    assert fits(PersonCapacity(40), [], 4, wednesday, wednesday, CAL)
    assert not fits(late, [], 4, wednesday, wednesday, CAL)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    weekly=st.sampled_from([20.0, 32.0, 40.0]),
    logged=st.floats(min_value=0, max_value=45),
    overtime=st.floats(min_value=0, max_value=60),
    jobs=st.lists(
        st.tuples(st.floats(min_value=0.5, max_value=40), st.integers(0, 20)), max_size=25
    ),
)
def test_booking_only_what_fits_never_overbooks(
    weekly: float, logged: float, overtime: float, jobs: list[tuple[float, int]]
) -> None:
    """Invariant 1 at the arithmetic level: accept jobs only when they fit, in any order."""
    person = PersonCapacity(weekly_hours=weekly, logged_this_week=logged, logged_last_week=overtime)
    today = MON + timedelta(days=1)
    bookings: list[Booking] = []
    for hours, offset in jobs:
        due = today + timedelta(days=offset)
        if fits(person, bookings, hours, due, today, CAL):
            assert available_hours(person, bookings, due, today, CAL) >= hours - 1e-9
            bookings.append(Booking(hours, due))
            assert not is_overbooked(person, bookings, today, CAL)


# --- the arithmetic against the day-by-day scan it replaced ------------------------------------
#
# Counting working days, capacity and completion dates used to walk the window one day at a
# time; a due date in the year 9999 then took seconds inside a workflow task. The functions
# below are that old implementation, kept as the oracle: the arithmetic must agree with it
# exactly, on any calendar, holidays, absences and dates.


def _scan_days(calendar: WorkCalendar, start: date, end: date) -> list[date]:
    days = []
    day = start
    while day <= end:
        if day.weekday() in calendar.workdays and day not in calendar.holidays:
            days.append(day)
        day += timedelta(days=1)
    return days


def _scan_add(calendar: WorkCalendar, start: date, count: int) -> date:
    day, remaining = start, count
    while remaining > 0:
        day += timedelta(days=1)
        if day.weekday() in calendar.workdays and day not in calendar.holidays:
            remaining -= 1
    return day


def _scan_capacity(
    person: PersonCapacity, today: date, end: date, calendar: WorkCalendar, ceiling: float
) -> float:
    if end < today or person.weekly_hours <= 0:
        return 0.0
    per_day = person.weekly_hours / max(len(calendar.workdays), 1)
    days = [d for d in _scan_days(calendar, today, end) if not person.absent_on(d)]
    this_week_end = today - timedelta(days=today.weekday()) + timedelta(days=6)
    this_week_days: float = sum(1 for d in days if d <= this_week_end)
    later_days = len(days) - this_week_days
    if days and days[0] == today:
        # The new behaviour, stated on the old scan: only the share of today still ahead.
        this_week_days -= 1.0 - person.today_share
    left_this_week = max(0.0, person.weekly_hours - person.logged_this_week)
    this_week = min(per_day * this_week_days, left_this_week)
    overtime_carry = max(0.0, person.logged_last_week - person.weekly_hours)
    total = this_week + per_day * later_days - overtime_carry
    return max(0.0, total) * ceiling


def _scan_completion(
    person: PersonCapacity,
    bookings: list[Booking],
    hours: float,
    due: date,
    today: date,
    calendar: WorkCalendar,
) -> date:
    ahead = sum(b.hours for b in bookings if b.due <= due) + hours
    for day in _scan_days(calendar, today, due):
        if _scan_capacity(person, today, day, calendar, 1.0) >= ahead - 1e-9:
            return day
    return due


BASE = date(2026, 12, 28)
offsets = st.integers(min_value=-20, max_value=420)
spans = st.integers(min_value=-3, max_value=300)
"""A window's length in days (a few negative: empty windows)."""
calendars = st.builds(
    WorkCalendar.of,
    st.sets(st.integers(0, 6)),
    st.lists(offsets.map(lambda k: BASE + timedelta(days=k)), max_size=30),
)
absences = st.lists(
    # Crowded into a few months so that they overlap, touch and nest.
    st.tuples(st.integers(-10, 90), st.integers(0, 20)).map(
        lambda p: Absence(start=BASE + timedelta(days=p[0]), end=BASE + timedelta(days=p[0] + p[1]))
    ),
    max_size=8,
)
people = st.builds(
    PersonCapacity,
    weekly_hours=st.sampled_from([0.0, 12.5, 20.0, 32.0, 37.5, 40.0, 55.0]),
    logged_this_week=st.floats(0, 60),
    logged_last_week=st.floats(0, 70),
    absences=absences.map(tuple),
    today_share=st.sampled_from([1.0, 1.0, 0.5, 0.125, 0.0]),
)


@seed(20261127)
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    calendar=calendars,
    person=people,
    a=st.integers(-20, 120),
    span=spans,
    ceiling=st.sampled_from([1.0, 0.8]),
)
def test_arithmetic_matches_the_day_scan(
    calendar: WorkCalendar, person: PersonCapacity, a: int, span: int, ceiling: float
) -> None:
    start, end = BASE + timedelta(days=a), BASE + timedelta(days=a + span)
    scanned = _scan_days(calendar, start, end)
    assert calendar.count_working_days(start, end) == len(scanned)
    assert calendar.working_days(start, end) == scanned
    at_work = sum(1 for d in scanned if not person.absent_on(d))
    assert present_working_days(person, start, end, calendar) == at_work
    assert capacity_between(person, start, end, calendar, ceiling) == _scan_capacity(
        person, start, end, calendar, ceiling
    )
    away = bool(scanned) and all(person.absent_on(d) for d in scanned)
    assert absent_throughout(person, start, end, calendar) is away
    if calendar.workdays:
        count = abs(span) % 40
        assert calendar.add_working_days(start, count) == _scan_add(calendar, start, count)


@seed(20261128)
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    calendar=calendars,
    person=people,
    a=st.integers(-20, 120),
    span=spans,
    hours=st.floats(0, 80),
    jobs=st.lists(st.tuples(st.floats(0.25, 40), offsets), max_size=12),
)
def test_estimated_completion_matches_the_day_scan(
    calendar: WorkCalendar,
    person: PersonCapacity,
    a: int,
    span: int,
    hours: float,
    jobs: list[tuple[float, int]],
) -> None:
    today, due = BASE + timedelta(days=a), BASE + timedelta(days=a + span)
    bookings = [Booking(h, BASE + timedelta(days=k)) for h, k in jobs]
    assert estimated_completion(person, bookings, hours, due, today, calendar) == (
        _scan_completion(person, bookings, hours, due, today, calendar)
    )


@seed(20261129)
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(calendar=calendars, person=people, a=offsets, split=st.integers(0, 2_900_000))
def test_counts_add_up_over_any_distance(
    calendar: WorkCalendar, person: PersonCapacity, a: int, split: int
) -> None:
    """Far dates cost no more and count consistently: a window splits into two that sum."""
    start, end = BASE + timedelta(days=a), date(9999, 12, 31)
    middle = min(start + timedelta(days=split), end - timedelta(days=1))
    whole = calendar.count_working_days(start, end)
    assert whole == calendar.count_working_days(start, middle) + calendar.count_working_days(
        middle + timedelta(days=1), end
    )
    assert whole >= (end - start).days // 7 * len(calendar.workdays) - len(calendar.holidays)
    present = present_working_days(person, start, end, calendar)
    assert present == whole - absent_working_days(person, start, end, calendar)
    assert 0 <= present <= whole


def test_a_due_date_in_the_year_9999_is_answered_like_any_other() -> None:
    person = PersonCapacity(weekly_hours=40, absences=(Absence(start=MON, end=MON),))
    far = date(9999, 12, 31)
    # Mon 2026-11-30 to Fri 9999-12-31: whole weeks of five days and a Mon-Fri remainder,
    # less the calendar's one holiday (Christmas 2026) and the person's day off.
    weeks, rest = divmod((far - MON).days + 1, 7)
    assert rest == 5
    assert CAL.count_working_days(MON, far) == weeks * 5 + 5 - 1
    assert capacity_between(person, MON, far, CAL) == 8 * (weeks * 5 + 5 - 1 - 1)
    assert estimated_completion(person, [], 16, far, MON, CAL) == MON + timedelta(days=2)
    assert estimated_completion(person, [Booking(1e9, far)], 16, far, MON, CAL) == far
    assert CAL.add_working_days(date(9999, 12, 30), 1) == far


def test_the_share_of_today_left_is_read_on_the_firms_clock() -> None:
    # 21:00 UTC is 16:00 in New York in December: one hour of a 9-to-5 day left.
    now = datetime(2026, 12, 2, 21, 0, tzinfo=UTC)
    assert day_left_at(now, "America/New_York", 9, 17) == 0.125
    assert day_left_at(now, "Europe/London", 9, 17) == 0.0
