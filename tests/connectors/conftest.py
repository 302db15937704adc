"""Contract tests: the real client code of each connector against its sandbox emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox_server import RunningSandbox, run_sandbox


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[RunningSandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture
def sandbox(sandbox_session: RunningSandbox) -> RunningSandbox:
    """A sandbox back at its seed, with an empty request log and no faults."""
    sandbox_session.reset()
    return sandbox_session
