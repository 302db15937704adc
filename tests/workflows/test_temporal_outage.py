"""Temporal hung or stopped: the webhook answers 503 with Retry-After within seconds.

A dev server of its own, so the test can freeze it (SIGSTOP: the process is there, the
socket accepts, nothing answers) and stop it (SIGKILL: connections refused) without touching
the session's server. Before, a hung server meant a 500 after 30 s (CANCELLED was not seen as
"unavailable") and a stopped one a 503 only after the client's own 10 s of retries.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from app.temporal import data_converter, ensure_search_attributes
from dispatch.config import FirmConfig
from starter import create_app
from tests.conftest import temporal_cli
from tests.harness import isolated, workdays_ahead
from tests.sandbox_server import RunningSandbox, free_port
from tests.workflows.conftest import relay_firm
from tests.workflows.test_webhook_server import post_signed, relay_event

ANSWER_WITHIN = 10.0
"""Generous on a shared 2-core machine; the old behaviour took 30 s (hung) or ~10 s."""


@dataclass
class OwnServer:
    process: subprocess.Popen[bytes]
    address: str


@contextmanager
def own_dev_server() -> Iterator[OwnServer]:
    port = free_port()
    process = subprocess.Popen(
        [
            temporal_cli(),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield OwnServer(process, f"127.0.0.1:{port}")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait(timeout=30)


async def connected(address: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address, data_converter=data_converter())
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[tuple[OwnServer, Client]]:
    with own_dev_server() as own:
        client = await connected(own.address)
        await ensure_search_attributes(client)
        yield own, client


def firm(sandbox: RunningSandbox) -> FirmConfig:
    return isolated(relay_firm(sandbox.config))


async def timed(http: httpx.AsyncClient, body: dict[str, object]) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = await post_signed(http, body)
    return response, time.monotonic() - began


def http_to(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://starter",
        timeout=httpx.Timeout(60.0),
    )


def assert_unavailable(response: httpx.Response, took: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "unavailable" in response.json()["error"]
    assert took < ANSWER_WITHIN, f"took {took:.1f} s"


@pytest.mark.usefixtures("sandbox")
async def test_hung_then_killed_temporal_is_a_prompt_503(
    server: tuple[OwnServer, Client], sandbox: RunningSandbox
) -> None:
    own, client = server
    config = firm(sandbox)
    due = workdays_ahead(config, 5)
    app = create_app(config, client, task_queue="nobody-polls-this")
    async with http_to(app) as http:
        healthy, _ = await timed(http, relay_event("OUT-1", due))
        assert healthy.status_code == 202, healthy.text

        os.kill(own.process.pid, signal.SIGSTOP)
        try:
            response, took = await timed(http, relay_event("OUT-2", due))
            assert_unavailable(response, took)
            update = relay_event("OUT-1", due)
            update["event"], update["event_id"] = "engagement.updated", "evt-OUT-1-u"
            response, took = await timed(http, update)  # a signal, not a start
            assert_unavailable(response, took)
        finally:
            os.kill(own.process.pid, signal.SIGCONT)

        # Thawed, it records the retried webhook as if nothing happened.
        retried, _ = await timed(http, relay_event("OUT-2", due))
        assert retried.status_code == 202, retried.text

        own.process.kill()
        own.process.wait(timeout=30)
        response, took = await timed(http, relay_event("OUT-3", due))
        assert_unavailable(response, took)
        assert took < 5.0, f"a stopped server took {took:.1f} s to notice"
