"""``/slack/events`` against hostile and odd input: never a 5xx, never a body in the logs.

Each case here was a 500 (with a traceback and the whole body logged) before the route checked
signature and shape itself: an unsigned ``payload=%7Bx``, signed clicks with no
``response_url`` (clicks from a modal have none), an empty ``value``, no ``user`` or
``actions``, unknown action ids, and an unauthenticated 2 MB POST.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from dispatch.models import DispatchStatus, EngagementState
from tests.harness import RunningWorker
from tests.sandbox_server import RunningSandbox
from tests.slack_driver import Click, click, message_with, store, token_headers
from tests.workflows.test_interactions import post, slack_id, start_assigned
from tests.workflows.test_webhook_server import app_without_temporal, http_for
from tests.workflows.test_webhook_server import relay as relay

SECRET = os.environ["SLACK_SIGNING_SECRET"]
MARKER = "Zephyrine-Quillfeather"
"""A client-data stand-in: it must never appear in a log line."""


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Slack's v0 signature over any bytes (slack_sdk's helper wants UTF-8 text)."""
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return token_headers(stamp, f"v0={digest.hexdigest()}")


def payload_of(c: Click) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(parse_qs(c.body.decode())["payload"][0])
    return found


def form(payload: object) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


async def send(worker: RunningWorker, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with http_for(worker) as http:
        return await http.post("/slack/events", content=body, headers=headers)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)


async def assigned_click(
    worker: RunningWorker, sandbox: RunningSandbox, name: str, action: str
) -> tuple[EngagementState, Click]:
    state = await start_assigned(worker, name)
    assert state.preparer is not None
    preparer = slack_id(worker.config, state.preparer.id)
    message = message_with(sandbox, preparer, "assignment_accept", state.workflow_id)
    return state, click(sandbox, message, action, preparer, signing_secret=SECRET)


async def test_junk_is_refused_without_a_5xx_or_its_body_in_the_logs(
    relay: RunningWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    unsigned = b"payload=%7Bx" + MARKER.encode()
    assert (await send(relay, unsigned, {})).status_code == 401
    stale = signed(unsigned)
    stale["X-Slack-Request-Timestamp"] = str(int(time.time()) - 3600)
    assert (await send(relay, unsigned, stale)).status_code == 401
    cases: dict[bytes, int] = {
        unsigned: 400,  # signed, but the payload is not JSON
        b"\xff\xfe" + MARKER.encode(): 400,
        b"payload=1&payload=2": 400,
        form([MARKER]): 400,
        form({"type": "block_actions", "actions": [{"action_id": "assignment_accept"}]}): 400,
        form({"type": "block_actions", "user": {"id": "U01AVA"}}): 400,
        form({"type": "block_actions", "user": {"id": "U01AVA"}, "actions": []}): 400,
        form({"type": "block_actions", "user": {"id": MARKER}, "actions": [{}]}): 400,
        form({"type": "block_actions", "user": {"id": "U01AVA"}, "actions": [{"x": 1}]}): 400,
        form(
            {
                "type": "block_actions",
                "user": {"id": "U01AVA"},
                "actions": [{"action_id": "not_ours", "value": MARKER}],
            }
        ): 200,
        form({"type": "view_submission", "user": {"id": "U01AVA"}, "view": {"x": MARKER}}): 200,
        b"ssl_check=1&token=x": 200,
    }
    for body, expected in cases.items():
        response = await send(relay, body, signed(body))
        assert response.status_code == expected, (body[:80], response.text)
    assert MARKER not in logged(caplog)


async def test_a_huge_body_is_413_and_leaves_the_log_small(
    relay: RunningWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dispatch")
    caplog.set_level(logging.INFO)
    body = b"payload=" + (MARKER.encode() * 80_000)  # ~2 MB, unsigned
    response = await send(relay, body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert MARKER not in logged(caplog)
    assert len(logged(caplog)) < 2_000


async def test_a_click_without_response_url_is_recorded_and_answered(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    """Clicks from a modal carry no response_url: the answer still counts and the person is
    told by an ephemeral message."""
    state, accepted = await assigned_click(relay, sandbox, "modal", "assignment_accept")
    payload = payload_of(accepted)
    del payload["response_url"]
    body = form(payload)
    before = len(store(sandbox).ephemeral)
    response = await send(relay, body, signed(body))
    assert response.status_code == 200, response.text
    after = await relay.state(state.workflow_id)
    assert after.status is DispatchStatus.ACCEPTED
    told = store(sandbox).ephemeral[before:]
    assert [e["user"] for e in told] == [payload["user"]["id"]]
    assert "Accepted" in told[0]["text"]


async def test_damaged_buttons_change_nothing_and_say_so(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state, accepted = await assigned_click(relay, sandbox, "damaged", "assignment_accept")
    for value in ("", "dispatcher-" + relay.config.firm.id, "engagement-x-../../x", None):
        payload = payload_of(accepted)
        if value is None:
            del payload["actions"][0]["value"]
        else:
            payload["actions"][0]["value"] = value
        body = form(payload)
        response = await send(relay, body, signed(body))
        assert response.status_code == 200, response.text
    partner = payload_of(accepted)
    partner["actions"][0].update(action_id="partner_assign:nobody", value=state.workflow_id)
    body = form(partner)
    assert (await send(relay, body, signed(body))).status_code == 200
    after = await relay.state(state.workflow_id)
    assert after.status is DispatchStatus.ASSIGNED and after.timeline == state.timeline
    said = [e["text"] for e in store(sandbox).ephemeral]
    response_posts = store(sandbox).response_posts.get(accepted.response_token, [])
    texts = said + [str(p.get("text")) for p in response_posts]
    assert sum("damaged" in t for t in texts) == 5


async def test_a_real_click_logs_ids_and_no_client_data(
    relay: RunningWorker, sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Even at DEBUG (slack_sdk logged the reply's body, with the client's name, there)."""
    caplog.set_level(logging.DEBUG)
    state, accepted = await assigned_click(relay, sandbox, "logged", "assignment_accept")
    assert state.client_name and state.title
    assert (await post(relay, accepted)).status_code == 200
    text = logged(caplog)
    assert state.workflow_id in text  # the click is traceable by ids
    for pii in (state.client_name, state.title, "c@example.com"):
        assert pii not in text, pii


async def test_temporal_down_is_explained_to_the_clicker_not_a_5xx(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    state, accepted = await assigned_click(relay, sandbox, "outage", "assignment_accept")
    async with app_without_temporal(relay) as http:
        response = await http.post("/slack/events", content=accepted.body, headers=accepted.headers)
    assert response.status_code == 200
    [reply] = store(sandbox).response_posts[accepted.response_token]
    assert "not recorded" in reply["text"]
    assert (await relay.state(state.workflow_id)).status is DispatchStatus.ASSIGNED


async def test_a_response_url_off_slack_is_never_called(
    relay: RunningWorker, sandbox: RunningSandbox
) -> None:
    """Only Slack's hooks host (or the configured Slack API's host) gets the answer: a signed
    payload must not make this server post to an address of someone's choosing."""
    state, accepted = await assigned_click(relay, sandbox, "elsewhere", "assignment_accept")
    payload = payload_of(accepted)
    elsewhere = sandbox.base_url.replace("127.0.0.1", "localhost") + "/slack/response/elsewhere"
    payload["response_url"] = elsewhere
    body = form(payload)
    before = len(store(sandbox).ephemeral)
    assert (await send(relay, body, signed(body))).status_code == 200
    assert (await relay.state(state.workflow_id)).status is DispatchStatus.ACCEPTED
    assert sandbox.requests(prefix="/slack/response/elsewhere") == []
    assert len(store(sandbox).ephemeral) == before + 1  # told in the channel instead
