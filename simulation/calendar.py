"""The simulated season's clock: hours since the epoch, working days, business hours.

Time is a float: hours since Monday 00:00 of the first warm-up week (the *epoch*). A working
day runs from 08:00 to 18:00 (ten clock hours); a person's chargeable hours for the day are
spread evenly over that span, so a 9-hour day works at 0.9 h per clock hour. Weekends are
not worked. The season has no firm holidays: most tax practices work through Presidents' Day
(an assumption, stated in the README).

The calendar (2027, April 15 a Thursday):

* weeks -2 and -1 (Jan 25 - Feb 5): warm-up, not scored;
* weeks 1-10 (Feb 8 - Apr 16): the peak season, scored; week 10 holds April 15;
* weeks 11-14 (Apr 19 - May 14): the tail, in which late and extended work drains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

DAY_OPEN = 8.0
"""Clock hour the working day starts."""
DAY_CLOSE = 18.0
DAY_SPAN = DAY_CLOSE - DAY_OPEN

EPOCH = date(2027, 1, 25)
"""Monday of the first warm-up week."""
WARMUP_WEEKS = 2
SEASON_WEEKS = 10
TAIL_WEEKS = 4
TOTAL_WEEKS = WARMUP_WEEKS + SEASON_WEEKS + TAIL_WEEKS
TOTAL_DAYS = TOTAL_WEEKS * 7

SEASON_START_DAY = WARMUP_WEEKS * 7
"""Day index of Monday, week 1 (Feb 8, 2027)."""
SEASON_END_DAY = SEASON_START_DAY + SEASON_WEEKS * 7
"""Day index just after the peak season (Monday Apr 19, 2027)."""

END_TIME = (TOTAL_DAYS - 3) * 24.0 + DAY_CLOSE
"""Friday of the last tail week, 18:00: the simulation stops there."""


def day_of(t: float) -> int:
    return int(t // 24.0)


def date_of_day(day: int) -> date:
    return EPOCH + timedelta(days=day)


def day_of_date(d: date) -> int:
    return (d - EPOCH).days


def date_at(t: float) -> date:
    return date_of_day(day_of(t))


def is_working_day(day: int) -> bool:
    return day % 7 < 5


def week_of_day(day: int) -> int:
    """Season week number: 1-10 in the peak, <= 0 in the warm-up, >= 11 in the tail."""
    return day // 7 - WARMUP_WEEKS + 1


def week_start_day(week: int) -> int:
    return (week + WARMUP_WEEKS - 1) * 7


def opening(day: int) -> float:
    return day * 24.0 + DAY_OPEN


def closing(day: int) -> float:
    return day * 24.0 + DAY_CLOSE


def due_time(due: date) -> float:
    """Work due on a date is on time when it is done by the end of that working day."""
    return closing(day_of_date(due))


def working_day_on_or_before(day: int) -> int:
    while not is_working_day(day):
        day -= 1
    return day


def add_working_days(day: int, count: int) -> int:
    """The working day ``count`` working days after ``day`` (itself, rolled forward, for 0)."""
    while not is_working_day(day):
        day += 1
    remaining = count
    while remaining > 0:
        day += 1
        if is_working_day(day):
            remaining -= 1
    return day


def add_business_hours(t: float, hours: float) -> float:
    """``t`` plus ``hours`` of the firm's open time (08:00-18:00 on working days)."""
    day = day_of(t)
    clock = t - day * 24.0
    if not is_working_day(day) or clock >= DAY_CLOSE:
        day = add_working_days(day + 1, 0)
        clock = DAY_OPEN
    elif clock < DAY_OPEN:
        clock = DAY_OPEN
    left = hours
    while True:
        room = DAY_CLOSE - clock
        if left <= room:
            return day * 24.0 + clock + left
        left -= room
        day = add_working_days(day + 1, 0)
        clock = DAY_OPEN


def business_hours_between(start: float, end: float) -> float:
    """Open hours (08:00-18:00 on working days) between two moments."""
    if end <= start:
        return 0.0
    hours = 0.0
    for day in range(day_of(start), day_of(end) + 1):
        if is_working_day(day):
            lo = max(start, opening(day))
            hi = min(end, closing(day))
            if hi > lo:
                hours += hi - lo
    return hours


@dataclass(frozen=True)
class Season:
    """Named dates of the simulated season (for generators and reports)."""

    epoch: date = EPOCH

    @property
    def march_15(self) -> date:
        return date(2027, 3, 15)

    @property
    def april_15(self) -> date:
        return date(2027, 4, 15)

    @property
    def end(self) -> date:
        return date_of_day(day_of(END_TIME))


SEASON = Season()
