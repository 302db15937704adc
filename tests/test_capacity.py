"""Capacity arithmetic: working days, logged hours, overtime carry-over, earliest-due-first."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.capacity import (
    Booking,
    PersonCapacity,
    WorkCalendar,
    available_hours,
    capacity_between,
    estimated_completion,
    fits,
    is_overbooked,
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


@settings(max_examples=200, deadline=None)
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
