"""What the emulators start with: staff, clients and logged hours, derived from a firm config.

Every vendor emulator builds its own records (Karbon users, Harvest time entries, Slack users)
from this one seed, so the systems agree with each other the way a real firm's would.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from dispatch.config import FirmConfig


class SeedStaff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    email: str
    weekly_capacity_hours: float = 40.0
    slack_id: str | None = None
    logged_this_week: float = 0.0
    """Hours logged from Monday up to and including today."""
    logged_last_week: float = 0.0
    active: bool = True


class SeedClient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    email: str | None = None
    contact_name: str | None = None


class SandboxSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    today: date = Field(default_factory=date.today)
    staff: list[SeedStaff] = Field(default_factory=list)
    clients: list[SeedClient] = Field(default_factory=list)

    @property
    def week_start(self) -> date:
        return self.today - timedelta(days=self.today.weekday())

    def staff_by_email(self, email: str) -> SeedStaff | None:
        wanted = email.lower()
        return next((s for s in self.staff if s.email.lower() == wanted), None)


def seed_from_firm(
    config: FirmConfig, profile_path: str | Path | None = None, today: date | None = None
) -> SandboxSeed:
    """Build a seed from the firm file plus an optional profile of logged hours per person.

    The profile (YAML) maps staff id to ``{logged_this_week_per_day, logged_last_week}`` and
    ``weekly_capacity_hours`` for the time tracker; staff it does not name log a steady 6 h/day.
    """
    profile: dict[str, Any] = {}
    if profile_path is not None:
        profile = yaml.safe_load(Path(profile_path).read_text(encoding="utf-8")) or {}
    # The firm's date, not the machine's: in the evening west of UTC the UTC date is tomorrow's.
    day = today or config.firm.today_at(datetime.now(UTC))
    elapsed = _elapsed_workdays(day)
    per_staff: dict[str, dict[str, Any]] = profile.get("staff", {}) or {}
    staff = []
    for idx, member in enumerate(config.staff):
        p = per_staff.get(member.id, {})
        weekly = float(p.get("tracker_weekly_capacity_hours", member.weekly_capacity_hours or 40.0))
        per_day = float(p.get("logged_this_week_per_day", 6.0))
        staff.append(
            SeedStaff(
                id=member.id,
                name=member.name,
                email=member.email,
                weekly_capacity_hours=weekly,
                slack_id=member.slack_id or f"U{idx + 1:02d}{member.id.upper()[:6]}",
                logged_this_week=round(per_day * elapsed, 2),
                logged_last_week=float(p.get("logged_last_week", min(weekly, 36.0))),
                active=member.active,
            )
        )
    clients = [
        SeedClient(id=c.id, name=c.name or c.id, email=c.email, contact_name=None)
        for c in config.clients
    ]
    return SandboxSeed(today=day, staff=staff, clients=clients)


def _elapsed_workdays(day: date) -> int:
    """Mon..today inclusive, capped at five (weekend days log nothing)."""
    return min(day.weekday() + 1, 5)
