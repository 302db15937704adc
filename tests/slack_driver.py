"""Drive the Slack buttons like Slack does: a signed ``block_actions`` payload per click.

Messages come from the Slack emulator's store (what our activities really posted); the
signature is made with slack_sdk's own signing code, and ``response_url`` points at the
emulator's sink, bound to the clicked message so Bolt's ``respond`` updates it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from sandbox.slack import SlackStore, dm_channel_id, response_url_for
from tests.sandbox_server import RunningSandbox


@dataclass
class Click:
    body: bytes
    headers: dict[str, str]
    response_token: str


def store(sandbox: RunningSandbox) -> SlackStore:
    found: SlackStore = sandbox.ctx.stores["slack"]
    return found


def dm_messages(sandbox: RunningSandbox, slack_user: str) -> list[dict[str, Any]]:
    return list(store(sandbox).messages.get(dm_channel_id(slack_user), []))


def message_with(
    sandbox: RunningSandbox | dict[str, Any], slack_user: str, action_prefix: str, workflow_id: str
) -> dict[str, Any]:
    """The newest DM to ``slack_user`` carrying a button for ``workflow_id`` (with its channel,
    which Slack gives in the click's ``container``). ``sandbox`` may also be the Slack
    emulator's state as ``GET /_sandbox/state/slack`` returns it."""
    if isinstance(sandbox, dict):
        found = sandbox["messages"].get(dm_channel_id(slack_user), [])
    else:
        found = dm_messages(sandbox, slack_user)
    for message in reversed(found):
        for block in message.get("blocks") or []:
            for button in block.get("elements", []) if block.get("type") == "actions" else []:
                # A button names the engagement in its value; a date picker has none, and its
                # block id names the engagement instead.
                named = button.get("value", "") if "value" in button else block["block_id"]
                if button["action_id"].startswith(action_prefix) and workflow_id in named:
                    return {**message, "channel": dm_channel_id(slack_user)}
    raise AssertionError(f"no {action_prefix} button for {workflow_id} in {slack_user}'s DMs")


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        el
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for el in block["elements"]
    ]


def click(
    sandbox: RunningSandbox | str,
    message: dict[str, Any],
    action_id: str,
    clicker: str,
    *,
    signing_secret: str,
    timestamp: int | None = None,
    action_ts: str | None = None,
    selected_date: str | None = None,
) -> Click:
    """A signed click (or, with ``selected_date``, a date picked in a date picker).
    ``sandbox`` is the in-process sandbox (the reply then updates the message), or the base URL
    of a sandbox running in another process."""
    channel = str(message["channel"])
    button = next(b for b in buttons(message) if b["action_id"] == action_id)
    block_id = next(
        b["block_id"]
        for b in message["blocks"]
        if b.get("type") == "actions" and button in b["elements"]
    )
    if button["type"] == "datepicker":
        action: dict[str, Any] = {
            "type": "datepicker",
            "action_id": action_id,
            "block_id": block_id,
            "selected_date": selected_date,
            "initial_date": button.get("initial_date"),
        }
    else:
        action = {
            "action_id": action_id,
            "block_id": block_id,
            "text": button["text"],
            "value": button["value"],
            "type": "button",
        }
    action["action_ts"] = action_ts or f"{time.time():.6f}"
    token = uuid.uuid4().hex
    payload = {
        "type": "block_actions",
        "user": {
            "id": clicker,
            "username": clicker.lower(),
            "name": clicker.lower(),
            "team_id": "T0HARBOR",
        },
        "api_app_id": "A0DISPATCH",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": "1111.2222.sandbox",
        "team": {"id": "T0HARBOR", "domain": "harborfinch"},
        "channel": {"id": channel, "name": "directmessage"},
        "message": {k: v for k, v in message.items() if k != "channel"},
        "response_url": (
            response_url_for(sandbox, token)
            if isinstance(sandbox, str)
            else response_url_for(sandbox.ctx, token, channel=channel, message_ts=message["ts"])
        ),
        "actions": [action],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return Click(body, token_headers(stamp, signature), token)


def token_headers(timestamp: str, signature: str) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


def replies(sandbox: RunningSandbox, click_: Click) -> list[dict[str, Any]]:
    """What our server posted back to the click's response_url."""
    return list(store(sandbox).response_posts.get(click_.response_token, []))
