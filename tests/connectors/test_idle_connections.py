"""No client breaks a call by reusing a connection the vendor closed while it sat idle.

The sandbox runs on uvicorn, which closes an idle keep-alive connection after
``timeout_keep_alive`` seconds (5), as real vendors and their load balancers do after their own
idle time. Each connector here makes a call, waits longer than that, and calls again: both calls
must reach the vendor exactly once, with no transport error and no dead connection found.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
import uvicorn
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.state import RetryState

from activities.crm import WebhookCrmActivities
from activities.google_calendar import GoogleCalendarActivities
from activities.outlook_calendar import OutlookCalendarActivities
from activities.slack import SafeConnectionRetry, SlackActivities
from activities.transport import FreshHttp, FreshTransport
from dispatch.models import Role
from tests.connectors import test_crm as crm
from tests.connectors import test_google_calendar as google
from tests.connectors import test_outlook_calendar as outlook
from tests.connectors import test_slack as slack
from tests.sandbox_server import RunningSandbox

SERVER_IDLE_TIMEOUT = uvicorn.Config(app="sandbox.app:create_app").timeout_keep_alive
IDLE = SERVER_IDLE_TIMEOUT + 1.5


def statuses(sandbox: RunningSandbox, prefix: str) -> list[int]:
    return [int(r["status"]) for r in sandbox.requests(prefix=prefix)]


async def test_every_connector_survives_an_idle_spell(
    sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="activities.transport")
    calendar = GoogleCalendarActivities(google.connector_of(sandbox))
    graph = OutlookCalendarActivities(outlook.connector_for(sandbox.base_url))
    records = WebhookCrmActivities(crm.connector_of(sandbox))
    chat = SlackActivities(sandbox.config, slack.connector_of(sandbox))

    async def round(seq: int) -> None:
        # Sequential, so Google's thread pool hands the same worker thread (and connection) on.
        await google.block(calendar, google.block_input(sandbox, seq=seq))
        await outlook.block(graph, outlook.block_input(sandbox, seq=seq))
        await crm.crm_log(records, crm.log_input(sandbox, key=f"idle:{seq}"))
        await slack.notify(
            chat, slack.notice(sandbox, role=(Role.PREPARER, Role.REVIEWER)[seq - 1])
        )

    await round(1)
    await asyncio.sleep(IDLE)
    await round(2)

    assert statuses(sandbox, "/google/") == [200, 200]  # one insert each, nothing retried
    assert [s for s in statuses(sandbox, "/graph/v1.0/") if s == 201] == [201, 201]
    assert all(s < 400 for s in statuses(sandbox, "/graph/"))
    assert statuses(sandbox, "/crm/") == [201, 201]
    assert len(sandbox.requests(prefix="/slack/api/chat.postMessage")) == 2
    assert calendar.dead_connections == graph.dead_connections == records.dead_connections == 0
    assert not [r for r in caplog.records if r.name == "activities.transport"]


async def test_a_dead_reused_connection_is_replaced_inside_the_call(
    sandbox: RunningSandbox,
) -> None:
    # An Http that keeps idle connections forever finds the one uvicorn closed, as plain
    # httplib2 does (BrokenPipeError); FreshHttp sends again on a new connection instead.
    http = FreshHttp(timeout=5, max_idle=3600)
    url = f"{sandbox.base_url}/_sandbox/health"
    first, _ = await asyncio.to_thread(http.request, url)
    [conn] = http.connections.values()
    await closed_by_the_server(conn.sock)
    body = '{"summary": "x"}'
    second, _ = await asyncio.to_thread(
        http.request,
        f"{sandbox.base_url}/google/calendar/v3/calendars/nobody@example.com/events",
        "POST",
        body,
        {"content-type": "application/json"},
    )
    assert first.status == 200 and second.status == 401  # it reached the emulator
    assert http.dead_connections == 1


async def closed_by_the_server(sock: socket.socket) -> None:
    """Wait until the server closed this idle connection (the socket reads as end of file)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_IDLE_TIMEOUT + 15
    while not select.select([sock], [], [], 0)[0]:
        assert loop.time() < deadline, "the server never closed the idle connection"
        await asyncio.sleep(0.2)


@pytest.fixture
async def one_answer_per_connection() -> AsyncIterator[tuple[str, list[int]]]:
    """A server that answers the first request on a connection and drops the second unanswered:
    a keep-alive connection closing at the moment the client reuses it."""
    answered: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in (1, 2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if n == 2:
                break
            answered.append(n)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/", answered


async def test_httpx_transport_resends_on_a_connection_dropped_before_answering(
    one_answer_per_connection: tuple[str, list[int]],
) -> None:
    url, answered = one_answer_per_connection
    transport = FreshTransport()
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        assert (await http.post(url, content=b"a")).text == "ok"
        assert (await http.post(url, content=b"b")).text == "ok"
    assert answered == [1, 1]  # the second request was answered on a new connection
    assert transport.dead_connections == 1


@pytest.mark.parametrize(
    ("method", "error", "retried"),
    [
        ("chat.postMessage", aiohttp.ServerDisconnectedError(), False),
        ("chat.postMessage", aiohttp.ClientOSError(104, "Connection reset by peer"), False),
        ("users.lookupByEmail", aiohttp.ServerDisconnectedError(), True),
        ("conversations.open", aiohttp.ClientOSError(104, "Connection reset by peer"), True),
    ],
)
async def test_slack_sdk_never_reposts_after_a_dropped_connection(
    method: str, error: Exception, retried: bool
) -> None:
    handler = SafeConnectionRetry(max_retry_count=1)
    request = HttpRequest(method="POST", url=f"https://slack.com/api/{method}", headers={})
    assert (
        await handler.can_retry_async(state=RetryState(), request=request, error=error) is retried
    )


async def test_slack_sdk_retries_a_post_that_could_not_connect() -> None:
    handler = SafeConnectionRetry(max_retry_count=1)
    request = HttpRequest(method="POST", url="https://slack.com/api/chat.postMessage", headers={})
    key = aiohttp.client_reqrep.ConnectionKey("slack.com", 443, True, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    assert await handler.can_retry_async(state=RetryState(), request=request, error=refused)
