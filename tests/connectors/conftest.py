"""Contract tests: the real client code of each connector against its sandbox emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from tests.sandbox_server import RunningSandbox, run_sandbox


def contract_day() -> date:
    """The seed's today: this week's Wednesday, or ``SANDBOX_TODAY`` (ISO date) when set.

    The emulators seed this week's hours up to today, so what a read returns depends on the
    weekday (nothing is on the clock at the weekend; on a Monday this week holds one day).
    The suite runs on the same weekday whenever CI runs it; ``SANDBOX_TODAY=2026-12-07``
    replays it as of a Monday.
    """
    wanted = os.environ.get("SANDBOX_TODAY")
    if wanted:
        return date.fromisoformat(wanted)
    today = date.today()
    return today - timedelta(days=today.weekday()) + timedelta(days=2)


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[RunningSandbox]:
    with run_sandbox(today=contract_day()) as running:
        yield running


@pytest.fixture
def sandbox(sandbox_session: RunningSandbox) -> RunningSandbox:
    """A sandbox back at its seed, with an empty request log and no faults."""
    sandbox_session.reset()
    return sandbox_session
