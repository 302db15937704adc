"""The example firms in ``examples/firms/`` load, cover the stacks the README promises, and
each has a demo twin that talks only to the sandbox and the local webhook server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.demo import in_sandbox, load_scenario
from dispatch.config import FirmConfig, load_firm_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "firms"
FILES = sorted(EXAMPLES.glob("*.yaml"))
SANDBOX = "http://127.0.0.1:8100"
STARTER = "http://127.0.0.1:8000"
URL = re.compile(r"https?://[^\s'\"]+")


def kinds(config: FirmConfig) -> tuple[str, ...]:
    c = config.connectors
    return (c.pm.kind, c.time_tracker.kind, c.chat.kind, c.calendar.kind, c.email.kind)


def test_the_promised_stacks_are_all_there() -> None:
    stacks = {path.name: kinds(load_firm_config(path)) for path in FILES}
    assert stacks["default.yaml"] == ("karbon", "harvest", "slack", "google", "sendgrid")
    assert stacks["xpm-quickbooks-teams-outlook.yaml"] == (
        "xpm",
        "quickbooks_time",
        "teams",
        "outlook",
        "sendgrid",
    )
    assert stacks["taxdome-toggl-slack.yaml"] == ("relay", "toggl", "slack", "google", "sendgrid")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_demo_twin_reaches_only_local_services(path: Path) -> None:
    config = load_firm_config(path)
    twin = in_sandbox(config, SANDBOX, STARTER)
    # ``app_url`` is where a person opens the job in the PM system's web app: a link in a
    # message, never called by the software.
    called = twin.connectors.model_dump(mode="json")
    called["pm"].pop("app_url", None)
    urls = URL.findall(str(called))
    assert urls, "an example firm names its services' URLs"
    outside = [u for u in urls if not u.startswith((SANDBOX, STARTER))]
    assert outside == []
    # The twin changes where the firm's systems are, nothing about the firm.
    assert twin.staff == config.staff and twin.policy == config.policy


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_month_end_story_fits_every_example_firm(path: Path) -> None:
    config = load_firm_config(path)
    planned = load_scenario(config)
    assert len(planned) == 11
    for item in planned:
        assert config.client(item.client) is not None, item.client
        assert config.service_type_for_work_type(item.work_type) is not None, item.work_type
        if item.expect_preparer is not None:
            assert item.expect_preparer in {s.id for s in config.staff}
