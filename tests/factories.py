"""Builders for the pure decision-logic tests: snapshots and requests from the demo firm."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache

from dispatch.config import FirmConfig, StaffMember, load_firm_config
from dispatch.models import AssignmentRequest, CapacitySnapshot, StaffCapacity

MONDAY = date(2026, 11, 30)
"""A Monday with no holiday in the following fortnight."""


@lru_cache(maxsize=1)
def demo_config() -> FirmConfig:
    return load_firm_config()


def snapshot(
    config: FirmConfig | None = None,
    today: date = MONDAY,
    logged_this_week: dict[str, float] | None = None,
    logged_last_week: dict[str, float] | None = None,
    staff: list[StaffMember] | None = None,
) -> CapacitySnapshot:
    config = config or demo_config()
    this_week = logged_this_week or {}
    last_week = logged_last_week or {}
    members = staff if staff is not None else config.staff
    return CapacitySnapshot(
        taken_at=datetime.combine(today, datetime.min.time(), tzinfo=UTC),
        today=today,
        week_start=today,
        workdays=config.firm.workday_numbers,
        holidays=config.firm.holidays,
        staff=[
            StaffCapacity(
                member=m,
                weekly_capacity_hours=m.weekly_capacity_hours or 40.0,
                logged_this_week=this_week.get(m.id, 0.0),
                logged_last_week=last_week.get(m.id, 0.0),
            )
            for m in members
        ],
        service_types=config.service_types,
        policy=config.policy,
        client_history={c.id: c.history for c in config.clients if c.history},
        managing_partner=config.escalation.managing_partner,
        source="test",
    )


def request(
    n: int = 1,
    *,
    service_type: str = "individual_tax",
    hours: float = 4.0,
    due: date = date(2026, 12, 11),
    client_id: str = "cl-new",
    exclude: list[str] | None = None,
    start: date | None = None,
) -> AssignmentRequest:
    workflow_id = f"engagement-test-{n}"
    return AssignmentRequest(
        request_id=f"{workflow_id}:req-1",
        workflow_id=workflow_id,
        client_id=client_id,
        service_type=service_type,
        due_date=due,
        start_date=start,
        estimated_hours=hours,
        exclude=exclude or [],
    )
