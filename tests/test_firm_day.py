"""The firm's date is its own time zone's, not the machine's (which is UTC on a server)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from dispatch.config import load_firm_config
from sandbox.seed import seed_from_firm


def test_the_firms_today_is_the_date_in_its_time_zone() -> None:
    firm = load_firm_config().firm.model_copy(update={"time_zone": "America/Los_Angeles"})
    # 02:30 UTC on a Monday is 18:30 on Sunday in Los Angeles.
    assert firm.today_at(datetime(2026, 12, 7, 2, 30, tzinfo=UTC)) == date(2026, 12, 6)
    assert firm.today_at(datetime(2026, 12, 7, 8, 30, tzinfo=UTC)) == date(2026, 12, 7)


def test_the_sandbox_seeds_the_firms_today_not_the_utc_date() -> None:
    """Hours are logged through the firm's today, the day its engagements are booked from.

    One of the two zones is on another date than UTC at any hour (UTC-11 before 11:00 UTC,
    UTC+14 from 10:00 UTC), so a seed dated by the machine's clock fails here whenever it runs.
    """
    config = load_firm_config()
    utc_today = datetime.now(UTC).date()
    differs = 0
    for zone in ("Pacific/Pago_Pago", "Pacific/Kiritimati"):
        firm = config.model_copy(
            update={"firm": config.firm.model_copy(update={"time_zone": zone})}
        )
        before = firm.firm.today_at(datetime.now(UTC))
        seeded = seed_from_firm(firm).today
        after = firm.firm.today_at(datetime.now(UTC))
        assert seeded in (before, after), zone
        differs += seeded != utc_today
    assert differs >= 1
