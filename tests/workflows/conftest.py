"""Workflow tests: the real worker and activities on the session dev server, against a sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from dispatch.config import FirmConfig, RelayConnector
from tests.factories import MONDAY
from tests.sandbox_server import RunningSandbox, run_sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox() as running:
        yield running


def relay_firm(config: FirmConfig) -> FirmConfig:
    """The demo firm with a relay PM (TaxDome-style): engagements arrive whole, no write-back."""
    connectors = config.connectors.model_copy(
        update={"pm": RelayConnector(kind="relay", system_name="TaxDome")}
    )
    return config.model_copy(update={"connectors": connectors})


def quick_snapshots(config: FirmConfig) -> FirmConfig:
    """``relay_firm`` whose capacity snapshot lives 1 s: a tracker outage is met at once."""
    config = relay_firm(config)
    policy = config.policy.model_copy(update={"snapshot_ttl_seconds": 1})
    return config.model_copy(update={"policy": policy})


def next_monday() -> date:
    return MONDAY
