"""Due dates of recurring work: pure date rules, no Temporal, no clock, no I/O.

A :class:`~dispatch.config.RecurringTemplate` describes work that comes back every period:

* **Periods** are calendar months, quarters or years. ``period_start_month`` moves the start of
  the year (a fiscal year starting in July has quarters Jul-Sep, Oct-Dec, Jan-Mar, Apr-Jun).
* **Period keys** name a period in ids and titles: ``2027-01`` (a month), ``2027-Q1`` (a
  calendar quarter), ``FY2027-Q1`` (a fiscal quarter, when the year does not start in
  January), ``FY2027`` (a year). A fiscal year is named after the calendar year it *ends* in,
  as the IRS and most firms do: July 2026 - June 2027 is FY2027.
* **Due date**: ``due_day`` of the month ``due_months_after_period_end`` months after the
  period's last month (0 = in that month). A day past the month's end is the last day (the 31st
  in February is the 28th or 29th). ``last_day`` is the last calendar day; ``last_business_day``
  the last working day (firm workdays and holidays). A due date that is not a working day is
  rolled to the working day before (``preceding``) or after (``following``), or left alone
  (``none``).
* **Trigger date**: ``lead_days`` calendar days before the due date (the template's, else the
  service type's), moved back to a working day so the lead time is never shortened and nobody
  is handed new work on a Sunday.

Temporal Schedules cannot say "last business day" (temporal#5811), so a template's Schedule
fires at the start of every month in which a trigger date can fall
(:meth:`Recurrence.trigger_months`), and the spawner works out which periods trigger in that
month (:meth:`Recurrence.triggered_in`) and sleeps until each trigger date.
"""

from __future__ import annotations

import calendar as _calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig, RecurringTemplate

MONTHS_PER_PERIOD = {"monthly": 1, "quarterly": 3, "annual": 12}

ROLL_LIMIT = 366
"""A calendar with (almost) no working days must not loop forever: give up after a year."""

TRIGGER_MONTH_YEARS = range(2000, 2100)
"""Years scanned for the months a trigger can fall in: every weekday/month alignment repeats
within 28 years, and the firm's holidays are dated, so a century is more than enough."""


def _month_index(day: date) -> int:
    """Months since year 0: arithmetic on months without carrying years by hand."""
    return day.year * 12 + day.month - 1


def _first_of(index: int) -> date:
    year, month0 = divmod(index, 12)
    return date(year, month0 + 1, 1)


def _last_of(index: int) -> date:
    first = _first_of(index)
    return first.replace(day=_calendar.monthrange(first.year, first.month)[1])


@dataclass(frozen=True, order=True)
class Period:
    """One occurrence of a template's period: [start, end], both inclusive."""

    start: date
    end: date
    key: str


@dataclass(frozen=True)
class Occurrence:
    """A period with its due date and the date its engagement is created."""

    period: Period
    due: date
    trigger: date


class _KeepUnknown(dict[str, Any]):
    """``str.format_map`` helper: an unknown ``{placeholder}`` stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class Recurrence:
    """The date rules of one template, with the firm's working calendar and the lead time."""

    template: RecurringTemplate
    calendar: WorkCalendar
    lead_days: int

    @classmethod
    def of(cls, template: RecurringTemplate, config: FirmConfig) -> Recurrence:
        """The template's rules in this firm: its calendar, and lead days defaulted from the
        service type (the config validator guarantees the service type exists)."""
        service = config.service_type(template.service_type)
        lead = template.lead_days
        if lead is None:
            lead = service.lead_days if service is not None else 0
        calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
        return cls(template, calendar, lead)

    # --- periods -------------------------------------------------------------------------

    @property
    def months(self) -> int:
        return MONTHS_PER_PERIOD[self.template.cadence]

    def _period_at(self, start_index: int) -> Period:
        end_index = start_index + self.months - 1
        return Period(_first_of(start_index), _last_of(end_index), self._key(start_index))

    def _key(self, start_index: int) -> str:
        start = _first_of(start_index)
        if self.template.cadence == "monthly":
            return f"{start.year}-{start.month:02d}"
        anchor = self.template.period_start_month - 1
        year_start = start_index - (start_index - anchor) % 12
        fiscal_year = (year_start + 11) // 12  # named after the calendar year it ends in
        if self.template.cadence == "annual":
            return f"FY{fiscal_year}"
        quarter = (start_index - year_start) // 3 + 1
        prefix = "" if anchor == 0 else "FY"
        return f"{prefix}{fiscal_year}-Q{quarter}"

    def period_containing(self, day: date) -> Period:
        index = _month_index(day)
        anchor = 0 if self.template.cadence == "monthly" else self.template.period_start_month - 1
        return self._period_at(index - (index - anchor) % self.months)

    def next_period(self, period: Period) -> Period:
        return self.period_containing(period.end + timedelta(days=1))

    def previous_period(self, period: Period) -> Period:
        return self.period_containing(period.start - timedelta(days=1))

    def periods_between(self, first: date, last: date) -> list[Period]:
        """Every period that contains a day of [first, last]."""
        periods: list[Period] = []
        period = self.period_containing(first)
        while period.start <= last:
            periods.append(period)
            period = self.next_period(period)
        return periods

    # --- dates ---------------------------------------------------------------------------

    def due_date(self, period: Period) -> date:
        index = _month_index(period.end) + self.template.due_months_after_period_end
        rule = self.template.due_day
        last = _last_of(index)
        if rule == "last_business_day":
            return self._roll(last, "preceding")
        day = last if rule == "last_day" else _first_of(index).replace(day=min(rule, last.day))
        return self._roll(day, self.template.roll)

    def trigger_date(self, period: Period) -> date:
        return self.trigger_for(self.due_date(period))

    def trigger_for(self, due: date) -> date:
        return self._roll(due - timedelta(days=self.lead_days), "preceding")

    def occurrence(self, period: Period) -> Occurrence:
        due = self.due_date(period)
        return Occurrence(period, due, self.trigger_for(due))

    def _roll(self, day: date, direction: str) -> date:
        if direction == "none" or not self.calendar.workdays:
            return day
        step = timedelta(days=-1 if direction == "preceding" else 1)
        candidate = day
        for _ in range(ROLL_LIMIT):
            if self.calendar.is_working_day(candidate):
                return candidate
            candidate += step
        return day

    # --- what a Schedule fire means ------------------------------------------------------

    def triggered_in(self, year: int, month: int) -> list[Occurrence]:
        """Every occurrence whose trigger date falls in this calendar month, earliest first.

        Usually one or none; two when rolling pulls one period's trigger into the month that
        already holds the next one's (e.g. a due date on the 1st that falls on a Saturday).
        """
        first = date(year, month, 1)
        last = _last_of(_month_index(first))
        # A trigger is never after its due date, and a due date is at most ~13 months after
        # its period ends (a year long at most), so periods starting more than ~25 months
        # earlier cannot trigger here. A due date is at most a few rolled days before its
        # period starts and the trigger is lead_days before that, which bounds the other side.
        found: list[Occurrence] = []
        period = self.period_containing(first - timedelta(days=900))
        while period.start <= last + timedelta(days=self.lead_days + 45):
            occurrence = self.occurrence(period)
            if first <= occurrence.trigger <= last:
                found.append(occurrence)
            period = self.next_period(period)
        return sorted(found, key=lambda o: (o.trigger, o.period.start))

    def trigger_months(self) -> list[int]:
        """The months of the year (1-12) in which some period's trigger date can fall.

        The Schedule fires at the start of each of these months; a fire that finds no trigger
        in its month does nothing.
        """
        months: set[int] = set()
        period = self.period_containing(date(TRIGGER_MONTH_YEARS.start, 1, 1))
        while period.start.year < TRIGGER_MONTH_YEARS.stop:
            months.add(self.trigger_date(period).month)
            if len(months) == 12:
                break
            period = self.next_period(period)
        return sorted(months)

    # --- words ---------------------------------------------------------------------------

    def title(self, period: Period, service_name: str, client_name: str) -> str:
        """The template's title with ``{service}``, ``{client}`` and ``{period}`` filled in;
        anything else in braces is kept as written rather than failing a Schedule fire."""
        values = _KeepUnknown(service=service_name, client=client_name, period=period.key)
        try:
            return self.template.title.format_map(values)
        except (ValueError, IndexError):  # stray braces or positional fields: use it verbatim
            return self.template.title
