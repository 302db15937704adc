"""The worker's and webhook server's logging keep Slack request bodies out, at any level.

slack_sdk logs each request's body at DEBUG; a message names the client. The call here is a real
slack_sdk client against the sandbox's Slack, logging through the SDK's own default logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from starlette.types import Message, Receive, Scope, Send

from dispatch.config import SlackConnector
from starter import NoTracebacks
from tests.sandbox_server import RunningSandbox, run_sandbox
from worker import configure_logging

CLIENT_NAME = "Okafor Family Trust"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture
def sdk_logger() -> Iterator[logging.Logger]:
    """slack_sdk's logger as a fresh process has it (another module may have set its level)."""
    found = logging.getLogger("slack_sdk")
    before = found.level
    found.setLevel(logging.NOTSET)
    yield found
    found.setLevel(before)


async def post_about_the_client(sandbox: RunningSandbox) -> None:
    chat = sandbox.config.connectors.chat
    assert isinstance(chat, SlackConnector)
    slack = AsyncWebClient(token=os.environ[chat.bot_token_env], base_url=chat.base_url)
    answer = await slack.chat_postMessage(
        channel="U10NOAH", text=f"New engagement for {CLIENT_NAME}: 2026 1040"
    )
    assert answer["ok"]
    # The body did carry the name: it is what must not be logged.
    [sent] = sandbox.requests(prefix="/slack/api/chat.postMessage")[-1:]
    assert CLIENT_NAME in str(sent["body"])


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
async def test_a_slack_message_s_body_does_not_reach_the_logs(
    level: int,
    sandbox: RunningSandbox,
    sdk_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(level)  # the root's level, as DISPATCH_LOG_LEVEL sets it
    configure_logging()
    assert sdk_logger.getEffectiveLevel() == logging.INFO

    await post_about_the_client(sandbox)

    assert CLIENT_NAME not in logged(caplog)


async def test_without_it_the_sdk_would_log_the_body_at_debug(
    sandbox: RunningSandbox, sdk_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """The check above would catch a regression: the SDK does log the name at DEBUG."""
    caplog.set_level(logging.DEBUG)
    await post_about_the_client(sandbox)
    assert CLIENT_NAME in logged(caplog)


def test_a_quieter_root_stays_quieter(
    sdk_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    configure_logging()
    assert sdk_logger.getEffectiveLevel() == logging.WARNING


async def test_a_bug_of_ours_is_a_plain_500_and_logs_no_path_beyond_the_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The path is the sender's text: the log names the route, never the rest of it."""

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("Bayside Dental Group")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope: Scope = {"type": "http", "method": "GET", "path": "/board/e/Bayside-Dental-Group/x"}
    with caplog.at_level(logging.ERROR):
        await NoTracebacks(broken)(scope, receive, send)
    assert sent[0]["status"] == 500
    assert b"Bayside" not in b"".join(m.get("body", b"") for m in sent)
    assert "unexpected KeyError on /board/e at" in caplog.text
    assert "Bayside" not in caplog.text
