"""Due-date rules of recurring templates: periods, keys, due and trigger dates, titles."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from dispatch.capacity import WorkCalendar
from dispatch.config import RecurringTemplate
from dispatch.recurrence import Period, Recurrence
from tests.factories import demo_config

MON_FRI = WorkCalendar.of([0, 1, 2, 3, 4])


def template(**fields: Any) -> RecurringTemplate:
    base: dict[str, Any] = {
        "id": "tpl",
        "client": "cl-acme",
        "service_type": "bookkeeping",
        "cadence": "monthly",
        "due_day": 15,
    }
    return RecurringTemplate.model_validate(base | fields)


def rule(calendar: WorkCalendar = MON_FRI, lead: int = 0, **fields: Any) -> Recurrence:
    return Recurrence(template(**fields), calendar, lead)


# --- periods and keys --------------------------------------------------------------------------


def test_monthly_periods_are_calendar_months() -> None:
    r = rule(cadence="monthly")
    assert r.period_containing(date(2027, 2, 14)) == Period(
        date(2027, 2, 1), date(2027, 2, 28), "2027-02"
    )
    assert r.period_containing(date(2028, 2, 29)).end == date(2028, 2, 29)
    assert r.next_period(r.period_containing(date(2027, 12, 31))).key == "2028-01"
    assert r.previous_period(r.period_containing(date(2027, 1, 1))).key == "2026-12"


def test_calendar_quarters() -> None:
    r = rule(cadence="quarterly")
    assert [p.key for p in r.periods_between(date(2027, 1, 1), date(2027, 12, 31))] == [
        "2027-Q1",
        "2027-Q2",
        "2027-Q3",
        "2027-Q4",
    ]
    q3 = r.period_containing(date(2027, 8, 15))
    assert (q3.start, q3.end, q3.key) == (date(2027, 7, 1), date(2027, 9, 30), "2027-Q3")


def test_fiscal_quarters_are_named_after_the_year_they_end_in() -> None:
    r = rule(cadence="quarterly", period_start_month=7)  # FY2027 = Jul 2026 - Jun 2027
    first = r.period_containing(date(2026, 7, 1))
    assert (first.start, first.end, first.key) == (date(2026, 7, 1), date(2026, 9, 30), "FY2027-Q1")
    third = r.period_containing(date(2027, 2, 10))
    assert (third.start, third.end, third.key) == (date(2027, 1, 1), date(2027, 3, 31), "FY2027-Q3")
    assert r.period_containing(date(2027, 6, 30)).key == "FY2027-Q4"
    assert r.period_containing(date(2027, 7, 1)).key == "FY2028-Q1"


def test_annual_periods_calendar_and_fiscal() -> None:
    calendar_year = rule(cadence="annual")
    assert calendar_year.period_containing(date(2027, 5, 5)) == Period(
        date(2027, 1, 1), date(2027, 12, 31), "FY2027"
    )
    fiscal = rule(cadence="annual", period_start_month=4)
    assert fiscal.period_containing(date(2026, 8, 1)) == Period(
        date(2026, 4, 1), date(2027, 3, 31), "FY2027"
    )
    assert fiscal.period_containing(date(2026, 3, 31)).key == "FY2026"


# --- due dates ---------------------------------------------------------------------------------


def due(r: Recurrence, day: date) -> date:
    return r.due_date(r.period_containing(day))


def test_the_31st_is_the_last_day_of_a_short_month() -> None:
    r = rule(due_day=31, roll="none")
    assert due(r, date(2027, 4, 1)) == date(2027, 4, 30)
    assert due(r, date(2027, 2, 1)) == date(2027, 2, 28)
    assert due(r, date(2028, 2, 1)) == date(2028, 2, 29)  # leap year
    assert due(rule(due_day=29, roll="none"), date(2027, 2, 1)) == date(2027, 2, 28)
    assert due(rule(due_day=29, roll="none"), date(2028, 2, 1)) == date(2028, 2, 29)


def test_month_end_rules() -> None:
    # 2027-01-31 is a Sunday, 2027-04-30 a Friday.
    assert due(rule(due_day="last_day", roll="none"), date(2027, 1, 5)) == date(2027, 1, 31)
    assert due(rule(due_day="last_day"), date(2027, 1, 5)) == date(2027, 1, 29)
    assert due(rule(due_day="last_day", roll="following"), date(2027, 1, 5)) == date(2027, 2, 1)
    assert due(rule(due_day="last_business_day"), date(2027, 1, 5)) == date(2027, 1, 29)
    assert due(rule(due_day="last_business_day"), date(2027, 4, 5)) == date(2027, 4, 30)
    # Feb 29 2028 is a Tuesday: the last business day of a leap February.
    assert due(rule(due_day="last_business_day"), date(2028, 2, 5)) == date(2028, 2, 29)


def test_weekends_roll_by_the_template_rule() -> None:
    # 2027-05-15 is a Saturday.
    assert due(rule(due_day=15), date(2027, 5, 1)) == date(2027, 5, 14)
    assert due(rule(due_day=15, roll="following"), date(2027, 5, 1)) == date(2027, 5, 17)
    assert due(rule(due_day=15, roll="none"), date(2027, 5, 1)) == date(2027, 5, 15)


def test_holidays_roll_and_are_not_business_days() -> None:
    # 2027-12-31 (Fri) and 2027-12-24 (Fri) are firm holidays in this calendar.
    calendar = WorkCalendar.of([0, 1, 2, 3, 4], [date(2027, 12, 31), date(2027, 12, 24)])
    last_bd = rule(calendar, due_day="last_business_day")
    assert due(last_bd, date(2027, 12, 1)) == date(2027, 12, 30)
    assert due(rule(calendar, due_day=31), date(2027, 12, 1)) == date(2027, 12, 30)
    # Following from Fri Dec 31 (holiday) skips the weekend to Monday Jan 3.
    assert due(rule(calendar, due_day=31, roll="following"), date(2027, 12, 1)) == date(2028, 1, 3)


def test_due_months_after_period_end_for_quarters() -> None:
    r = rule(cadence="quarterly", due_day=15, due_months_after_period_end=1)
    dues = [r.due_date(p) for p in r.periods_between(date(2027, 1, 1), date(2027, 12, 31))]
    # 2028-01-15 is a Saturday: rolled back to Friday the 14th.
    assert dues == [date(2027, 4, 15), date(2027, 7, 15), date(2027, 10, 15), date(2028, 1, 14)]
    assert due(
        rule(cadence="annual", due_day=15, due_months_after_period_end=3), date(2027, 6, 1)
    ) == (date(2028, 3, 15))


def test_a_calendar_without_working_days_does_not_loop() -> None:
    r = rule(WorkCalendar.of([]), due_day="last_business_day")
    assert due(r, date(2027, 1, 5)) == date(2027, 1, 31)


# --- trigger dates -----------------------------------------------------------------------------


def test_trigger_is_lead_days_before_due_moved_back_to_a_working_day() -> None:
    r = rule(lead=10, due_day=20)  # 2027-05-20 (Thu) - 10 days = 2027-05-10 (Mon)
    period = r.period_containing(date(2027, 5, 1))
    assert r.trigger_date(period) == date(2027, 5, 10)
    r = rule(lead=5, due_day=20)  # 2027-05-15 is a Saturday: the Friday before
    assert r.trigger_date(r.period_containing(date(2027, 5, 1))) == date(2027, 5, 14)


def test_lead_days_default_from_the_service_type() -> None:
    config = demo_config()
    service = config.service_types[0]
    no_lead = template(service_type=service.id, lead_days=None)
    assert Recurrence.of(no_lead, config).lead_days == service.lead_days
    explicit = template(service_type=service.id, lead_days=3)
    assert Recurrence.of(explicit, config).lead_days == 3
    firm_calendar = Recurrence.of(no_lead, config).calendar
    assert all(not firm_calendar.is_working_day(h) for h in config.firm.holidays)


def test_two_triggers_can_share_a_month() -> None:
    # Due on the 1st of the next month, no lead. Aug 1 2026 is a Saturday, so July's period is
    # due (and triggers) on Fri Jul 31 — the same month as June's period (due Jul 1).
    r = rule(due_day=1, due_months_after_period_end=1)
    july = r.triggered_in(2026, 7)
    assert [(o.period.key, o.due, o.trigger) for o in july] == [
        ("2026-06", date(2026, 7, 1), date(2026, 7, 1)),
        ("2026-07", date(2026, 7, 31), date(2026, 7, 31)),
    ]
    assert r.triggered_in(2026, 8) == []


@pytest.mark.parametrize(
    "fields, lead",
    [
        ({"cadence": "monthly", "due_day": 1, "due_months_after_period_end": 1}, 0),
        ({"cadence": "monthly", "due_day": "last_business_day"}, 12),
        ({"cadence": "quarterly", "due_day": 15, "due_months_after_period_end": 1}, 21),
        ({"cadence": "quarterly", "due_day": 31, "roll": "following", "period_start_month": 2}, 40),
        ({"cadence": "annual", "due_day": 15, "due_months_after_period_end": 4}, 90),
        ({"cadence": "annual", "due_day": "last_day", "period_start_month": 7}, 365),
    ],
)
def test_every_period_triggers_in_exactly_one_month(fields: dict[str, Any], lead: int) -> None:
    """Fires at the start of each trigger month, taken together, spawn every period once."""
    calendar = WorkCalendar.of(
        [0, 1, 2, 3, 4], [date(2027, 1, 1), date(2027, 7, 5), date(2028, 1, 3)]
    )
    r = rule(calendar, lead, **fields)
    months = [(y, m) for y in range(2026, 2031) for m in range(1, 13)]
    spawned = [o.period for y, m in months for o in r.triggered_in(y, m)]
    assert len(spawned) == len(set(spawned))
    # Between the first and the last spawned period, none is missing.
    expected = r.periods_between(spawned[0].start, spawned[-1].start)
    assert spawned == expected
    fire_months = set(r.trigger_months())
    assert {m for y, m in months if r.triggered_in(y, m)} <= fire_months
    for occurrence in (o for y, m in months for o in r.triggered_in(y, m)):
        assert occurrence.trigger <= occurrence.due
        assert occurrence.due - occurrence.trigger >= timedelta(days=lead)
        assert calendar.is_working_day(occurrence.trigger)


def test_trigger_months_of_a_quarterly_template() -> None:
    r = rule(MON_FRI, 21, cadence="quarterly", due_day=15, due_months_after_period_end=1)
    assert r.trigger_months() == [3, 6, 9, 12]
    monthly = rule(MON_FRI, 10, cadence="monthly", due_day=20)
    assert monthly.trigger_months() == list(range(1, 13))


# --- titles ------------------------------------------------------------------------------------


def test_title_fills_known_placeholders_and_keeps_others() -> None:
    r = rule(title="{service} - {client} - {period}")
    period = r.period_containing(date(2027, 3, 3))
    assert r.title(period, "Bookkeeping", "Acme") == "Bookkeeping - Acme - 2027-03"
    odd = rule(title="{client} {period} {unknown}")
    assert odd.title(period, "B", "Acme") == "Acme 2027-03 {unknown}"
    broken = rule(title="Close {")
    assert broken.title(period, "B", "Acme") == "Close {"
