"""Every activity a workflow may call is registered for every example firm's stack: a missing
one only shows up as an activity retrying "not registered" until its total runs out."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import activity

from activities import roles
from activities.registry import build_activities
from app.demo import in_sandbox
from app.secrets_demo import DEMO_SECRETS
from dispatch.config import load_firm_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "firms"
NOT_SCHEDULED = {"pm_list_new_jobs", "tracker_read"}
"""The poller's (it runs only for polled PM systems), and the tracker read that the firm's
capacity snapshot activity makes itself (no workflow schedules it)."""


def role_activity_names() -> set[str]:
    names: set[str] = set()
    for role in (
        roles.PmActivities,
        roles.TimeTrackerActivities,
        roles.ChatActivities,
        roles.CalendarActivities,
        roles.EmailActivities,
        roles.CrmActivities,
    ):
        for member in vars(role).values():
            defn = activity._Definition.from_callable(member) if callable(member) else None
            if defn is not None and defn.name is not None:
                names.add(defn.name)
    return names


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_role_activity_is_registered(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)
    config = in_sandbox(load_firm_config(path), "http://127.0.0.1:8100", "http://127.0.0.1:8000")
    registered = {
        defn.name
        for fn in build_activities(config)
        if (defn := activity._Definition.from_callable(fn)) is not None
    }
    wanted = role_activity_names() - NOT_SCHEDULED
    assert "pm_move_due_date" in wanted
    assert wanted - registered == set()
