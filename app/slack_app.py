"""Slack interactivity: the Accept / Request reassignment and partner buttons and the partner's
due-date picker, through Bolt, and the ``/board`` slash command ("Open the board": a sign-in
link only its asker sees).

Mounted by the webhook server at ``POST /slack/events``. Before Bolt sees a request we check,
ourselves, what Bolt would trip over or log:

1. the signature (``SLACK_SIGNING_SECRET`` over the raw body, at most five minutes old, as
   Bolt does): anything else is a 401 and is logged without its body;
2. the shape: a form with one JSON ``payload`` of type ``block_actions``, a user id and an
   action id — a signed request without them is a 400; an action that is not ours (or a
   payload type we do not use) is acknowledged with 200 and ignored.

Only then does Bolt dispatch the click. A click becomes an Update on the engagement, with an
id made from the Slack message, the action's timestamp and the user — the same payload
delivered twice counts once. We answer Slack only after the workflow recorded the click
(``process_before_response``), so a click Slack believes delivered is never lost.

Who clicked is decided here, from Slack's user id: the firm config's ``slack_id``, else the
Slack profile's email matched to the staff list. The workflow decides whether that person may
answer; anyone else gets an ephemeral explanation and nothing changes. The person is told the
outcome through the click's ``response_url``; a click without one (from a modal) gets an
ephemeral message in its channel, or a DM when there is no channel either.

Whatever arrives, this route never answers 5xx: a Temporal outage is explained to the person
("try again in a minute") and acknowledged, and logs carry ids only — never the body, which
holds client names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client

from activities.slack import PARTNER_DUE_ACTION
from app.board_web import NotAllowed, signin_link
from app.responses import (
    BUSY,
    Refused,
    ServiceUnavailable,
    UnknownEngagement,
    deliver_decision,
    deliver_due_move,
    deliver_response,
)
from dispatch import limits
from dispatch.config import FirmConfig, SlackConnector, secret
from dispatch.ids import is_engagement_workflow_id
from dispatch.models import AssignmentResponse, DueDateMove, PartnerDecision, ResponseOutcome

log = logging.getLogger("dispatch.slack")
_bolt_log = logging.getLogger("dispatch.slack.bolt")
# Bolt logs whole request bodies at INFO (e.g. on a bad signature); ours never reach it
# unchecked, and its INFO chatter stays out of the firm's logs.
_bolt_log.setLevel(logging.WARNING)
# slack_sdk logs every request body at DEBUG: our replies repeat the message, client names
# included. Even a firm debugging at DEBUG must not get client data in its logs.
logging.getLogger("slack_sdk").setLevel(logging.INFO)

ASSIGNMENT_ACTIONS = re.compile(r"^assignment_(accept|reassign)$")
PARTNER_ACTIONS = re.compile(r"^partner_(assign|force):([a-z0-9][a-z0-9_.-]{0,62})$")
PARTNER_DUE = re.compile(rf"^{PARTNER_DUE_ACTION}$")
_DUE_BLOCK = re.compile(r"^partner:(.{1,240}):due$")
_ISO_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SLACK_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,12})?$")
_PAYLOAD_TYPE = re.compile(r"^[a-z_]{1,64}$")
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
MAX_AGE_SECONDS = 5 * 60
"""Slack's replay window: an older signed request is refused."""
MAX_ACTION_ID = 255
MAX_VALUE = 2000
"""Slack's own limit on a button's value."""
SLACK_HOOKS_HOST = "hooks.slack.com"
DAMAGED = "This button is damaged or out of date, so nothing was changed."
NOT_STAFF = "You are not on this firm's staff list, so this isn't yours to answer."

Respond = Callable[..., Awaitable[Any]]


class SlackDirectory:
    """Slack user id -> staff id, from the config first, then the Slack profile's email."""

    def __init__(self, config: FirmConfig, client: AsyncWebClient) -> None:
        self._by_slack = {s.slack_id: s.id for s in config.staff if s.slack_id}
        self._by_email = {s.email.lower(): s.id for s in config.staff}
        self._client = client

    async def staff_id(self, slack_user: str) -> str | None:
        found = self._by_slack.get(slack_user)
        if found is not None:
            return found
        try:
            info = await self._client.users_info(user=slack_user)
        except Exception as err:  # Slack down, slow, or refusing: we cannot tell who it is
            log.warning("Slack users.info failed for %s: %s", slack_user, type(err).__name__)
            return None
        user = info.get("user")
        profile = user.get("profile") if isinstance(user, dict) else None
        email = str(profile.get("email") or "").lower() if isinstance(profile, dict) else ""
        staff_id = self._by_email.get(email)
        if staff_id is not None:
            self._by_slack[slack_user] = staff_id
        return staff_id


# --- checking a request before Bolt sees it --------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A signed request we cannot use: ``reason`` is safe to log and to answer with."""

    reason: str


@dataclass(frozen=True)
class Ignored:
    reason: str


def _string(value: object, limit: int) -> str | None:
    return value if isinstance(value, str) and len(value) <= limit else None


BOARD_COMMAND = "/board"


def slash_command(body: bytes) -> tuple[str, str] | None:
    """(command, Slack user id) when ``body`` is a slash command, else None."""
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=30, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    commands, users = form.get("command", []), form.get("user_id", [])
    if len(commands) != 1 or len(users) != 1 or not _SLACK_ID.match(users[0]):
        return None
    command = commands[0]
    return (command, users[0]) if re.match(r"^/[a-z0-9_-]{1,32}$", command) else None


def check_click(body: bytes) -> Problem | Ignored | None:
    """None when ``body`` is a click Bolt can safely dispatch to one of our listeners."""
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return Problem("the body is not a form")
    if form.get("ssl_check") == ["1"]:
        return Ignored("ssl_check")
    payloads = form.get("payload", [])
    if len(payloads) != 1:
        return Problem("the form has no single payload field")
    try:
        payload = json.loads(payloads[0])
    except ValueError:
        return Problem("the payload is not JSON")
    if not isinstance(payload, dict):
        return Problem("the payload is not an object")
    kind = _string(payload.get("type"), 64) or ""
    if kind != "block_actions":
        named = kind if _PAYLOAD_TYPE.match(kind) else "unknown"
        return Ignored(f"payload type {named}")
    user = payload.get("user")
    user_id = _string(user.get("id"), 32) if isinstance(user, dict) else None
    if user_id is None or not _SLACK_ID.match(user_id):
        return Problem("the payload has no user id")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return Problem("the payload has no actions")
    action = actions[0]
    action_id = _string(action.get("action_id"), MAX_ACTION_ID)
    if not action_id:
        return Problem("the action has no action_id")
    if not (
        ASSIGNMENT_ACTIONS.match(action_id)
        or PARTNER_ACTIONS.match(action_id)
        or PARTNER_DUE.match(action_id)
    ):
        return Ignored("an action that is not ours")
    for field in ("selected_date", "block_id"):
        if action.get(field) is not None and _string(action.get(field), 255) is None:
            return Problem(f"the action's {field} is not text")
    if action.get("value") is not None and _string(action.get("value"), MAX_VALUE) is None:
        return Problem("the action's value is not text")
    return None


def _day(value: object) -> date | None:
    text = value if isinstance(value, str) else ""
    try:
        return date.fromisoformat(text) if _ISO_DAY.fullmatch(text) else None
    except ValueError:
        return None


def event_id(body: dict[str, Any], action: dict[str, Any]) -> str:
    """One id per click: Slack redelivers the same payload with the same values."""
    container = body.get("container")
    message_ts = container.get("message_ts", "") if isinstance(container, dict) else ""
    action_ts = action.get("action_ts", "")
    parts = [
        str(message_ts) if _TIMESTAMP.match(str(message_ts)) else "-",
        str(action_ts) if _TIMESTAMP.match(str(action_ts)) else "-",
        body["user"]["id"],
        str(action.get("action_id", "")),
    ]
    return "slack:" + ":".join(parts)


def _outcome_blocks(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The original message without its buttons, plus a line saying what happened."""
    message = body.get("message")
    original = message.get("blocks") if isinstance(message, dict) else None
    kept = [
        b
        for b in (original if isinstance(original, list) else [])
        if isinstance(b, dict) and b.get("type") != "actions"
    ]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}]


def _channel_of(body: dict[str, Any]) -> str | None:
    for holder, key in ((body.get("container"), "channel_id"), (body.get("channel"), "id")):
        if isinstance(holder, dict):
            channel = _string(holder.get(key), 32)
            if channel and _SLACK_ID.match(channel):
                return channel
    return None


# --- the handler -----------------------------------------------------------------------------


class SlackEvents:
    """``POST /slack/events``: checks, then Bolt, then an Update on the engagement."""

    def __init__(
        self,
        config: FirmConfig,
        connector: SlackConnector,
        temporal: Callable[[], Awaitable[Client]],
    ) -> None:
        self._config = config
        self._temporal = temporal
        self._staff = {s.id for s in config.staff}
        signing_secret = secret(connector.signing_secret_env)
        assert signing_secret is not None  # required: raises when missing
        self._signing_secret = signing_secret.encode()
        self._web = AsyncWebClient(
            token=secret(connector.bot_token_env), base_url=connector.base_url
        )
        self._directory = SlackDirectory(config, self._web)
        base = urlsplit(connector.base_url)
        self._response_origins = {("https", SLACK_HOOKS_HOST), (base.scheme, base.netloc)}
        """Where a click's response_url may point: Slack's hooks host, or the configured Slack
        API's own host (the sandbox). Anything else is never called (a leaked signing secret
        must not turn this server into a proxy)."""
        self._bolt = AsyncApp(
            client=self._web,
            signing_secret=signing_secret,
            process_before_response=True,
            logger=_bolt_log,
        )
        self._bolt.action(ASSIGNMENT_ACTIONS)(self._on_assignment)
        self._bolt.action(PARTNER_ACTIONS)(self._on_partner)
        self._bolt.action(PARTNER_DUE)(self._on_due)
        self._zone = ZoneInfo(config.firm.time_zone)

    async def handle(self, request: Request, body: bytes) -> Response:
        headers = request.headers
        if not self._signed(
            body, headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
        ):
            log.info("refused a Slack request: bad, missing or stale signature")
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        command = slash_command(body)
        if command is not None:
            return await self._on_command(*command)
        checked = check_click(body)
        if isinstance(checked, Problem):
            log.info("refused a signed Slack request: %s", checked.reason)
            return JSONResponse({"error": checked.reason}, status_code=400)
        if isinstance(checked, Ignored):
            log.info("ignored a Slack request: %s", checked.reason)
            return Response(status_code=200)
        bolt_request = AsyncBoltRequest(
            body=body.decode("utf-8"),
            query=dict(request.query_params),
            headers={k: v for k, v in headers.items()},
        )
        try:
            answer = await self._bolt.async_dispatch(bolt_request)
        except Exception as err:  # a bug of ours must not become a 5xx Slack shows as an error
            log.error("Slack click failed: %s", type(err).__name__)
            return Response(status_code=200)
        if answer.status >= 500:
            log.error("Slack click answered %s by Bolt; acknowledged instead", answer.status)
            return Response(status_code=200)
        return to_starlette_response(answer)

    def _signed(self, body: bytes, timestamp: str, signature: str) -> bool:
        """Slack's v0 signature, at most five minutes old (slack_sdk's check, which assumes
        well-formed headers and UTF-8 bodies: anything else must be a 401, not an exception)."""
        if not _UNIX_SECONDS.match(timestamp) or not _SIGNATURE.match(signature):
            return False
        if abs(time.time() - int(timestamp)) > MAX_AGE_SECONDS:
            return False
        expected = hmac.new(
            self._signing_secret, f"v0:{timestamp}:".encode() + body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(f"v0={expected}", signature)

    # --- listeners ---------------------------------------------------------------------------

    async def _on_command(self, command: str, slack_user: str) -> Response:
        """``/board``: "Open the board", a sign-in link only the person who asked can see."""
        if command != BOARD_COMMAND:
            log.info("ignored the Slack command %s", command)
            return JSONResponse({"response_type": "ephemeral", "text": "Unknown command."})
        staff_id = await self._directory.staff_id(slack_user)
        if staff_id is None:
            return JSONResponse({"response_type": "ephemeral", "text": NOT_STAFF})
        try:
            link = signin_link(self._config, staff_id, datetime.now(UTC))
        except NotAllowed as err:
            log.info("no board link for %s: %s", staff_id, err)
            text = f"No board link: {err}."
            return JSONResponse({"response_type": "ephemeral", "text": text})
        log.info("board link sent to %s", staff_id)
        text = f"<{link}|Open the board> (the link works once, for 15 minutes)."
        return JSONResponse({"response_type": "ephemeral", "text": text})

    async def _on_assignment(
        self,
        ack: Callable[[], Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond | None,
    ) -> None:
        await ack()
        workflow_id = str(action.get("value") or "")
        if not is_engagement_workflow_id(workflow_id):
            log.info("Slack click with a damaged assignment button by %s", body["user"]["id"])
            await self._tell(body, respond, DAMAGED)
            return
        staff_id = await self._who(body, respond)
        if staff_id is None:
            return
        matched = ASSIGNMENT_ACTIONS.match(str(action["action_id"]))
        assert matched is not None  # Bolt matched the same pattern
        choice = "accept" if matched.group(1) == "accept" else "reassign"
        response = AssignmentResponse(
            action=choice, staff_id=staff_id, channel="slack", event_id=event_id(body, action)
        )
        label = ":white_check_mark:" if choice == "accept" else ":leftwards_arrow_with_hook:"
        await self._deliver(
            body,
            respond,
            workflow_id,
            lambda client: deliver_response(client, workflow_id, response),
            label,
        )

    async def _on_partner(
        self,
        ack: Callable[[], Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond | None,
    ) -> None:
        await ack()
        matched = PARTNER_ACTIONS.match(str(action["action_id"]))
        assert matched is not None  # Bolt matched the same pattern
        workflow_id, _, staff_id = str(action.get("value") or "").partition("|")
        staff_id = staff_id or matched.group(2)
        if not is_engagement_workflow_id(workflow_id) or staff_id not in self._staff:
            log.info("Slack click with a damaged partner button by %s", body["user"]["id"])
            await self._tell(body, respond, DAMAGED)
            return
        partner_id = await self._who(body, respond)
        if partner_id is None:
            return
        decision = PartnerDecision(
            partner_id=partner_id,
            staff_id=staff_id,
            override_capacity=matched.group(1) == "force",
            channel="slack",
            event_id=event_id(body, action),
        )
        await self._deliver(
            body,
            respond,
            workflow_id,
            lambda client: deliver_decision(client, workflow_id, decision),
            ":ballot_box_with_check:",
        )

    async def _on_due(
        self,
        ack: Callable[[], Awaitable[None]],
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond | None,
    ) -> None:
        """The partner picked a new due date in the review message's date picker."""
        await ack()
        block = _DUE_BLOCK.match(str(action.get("block_id") or ""))
        workflow_id = block.group(1) if block else ""
        due = _day(action.get("selected_date"))
        if not is_engagement_workflow_id(workflow_id) or due is None:
            log.info("Slack date pick with a damaged picker by %s", body["user"]["id"])
            await self._tell(body, respond, DAMAGED)
            return
        problem = limits.due_date_problem(due, datetime.now(self._zone).date())
        if problem is not None:
            await self._tell(body, respond, f"That due date cannot be used: {problem}.")
            return
        partner_id = await self._who(body, respond)
        if partner_id is None:
            return
        move = DueDateMove(
            partner_id=partner_id, due_date=due, channel="slack", event_id=event_id(body, action)
        )
        await self._deliver(
            body,
            respond,
            workflow_id,
            lambda client: deliver_due_move(client, workflow_id, move),
            ":calendar:",
        )

    # --- steps -------------------------------------------------------------------------------

    async def _who(self, body: dict[str, Any], respond: Respond | None) -> str | None:
        staff_id = await self._directory.staff_id(body["user"]["id"])
        if staff_id is None:
            log.info("Slack click by %s, who is not on the staff list", body["user"]["id"])
            await self._tell(body, respond, NOT_STAFF)
        return staff_id

    async def _deliver(
        self,
        body: dict[str, Any],
        respond: Respond | None,
        workflow_id: str,
        call: Callable[[Client], Awaitable[ResponseOutcome]],
        done_text: str,
    ) -> None:
        user = body["user"]["id"]
        try:
            outcome = await call(await self._temporal())
        except (Refused, UnknownEngagement) as err:
            log.info("Slack click by %s on %s refused", user, workflow_id)
            await self._tell(body, respond, str(err))
            return
        except ServiceUnavailable:
            log.warning(
                "Slack click by %s on %s not recorded: Temporal unavailable", user, workflow_id
            )
            await self._tell(body, respond, BUSY)
            return
        except Exception as err:  # anything else: explain, never a stack trace to Slack
            log.error("Slack click by %s on %s failed: %s", user, workflow_id, type(err).__name__)
            await self._tell(body, respond, BUSY)
            return
        log.info(
            "Slack click by %s on %s recorded (changed=%s)", user, workflow_id, outcome.changed
        )
        text = f"{done_text} {outcome.message}" if outcome.changed else outcome.message
        await self._tell(body, respond, text, replace=True)

    def _trusted(self, response_url: object) -> bool:
        if not isinstance(response_url, str) or len(response_url) > 2048:
            return False
        parts = urlsplit(response_url)
        return (parts.scheme, parts.netloc) in self._response_origins

    async def _tell(
        self, body: dict[str, Any], respond: Respond | None, text: str, *, replace: bool = False
    ) -> None:
        """Tell the person who clicked: through response_url when the click has one."""
        user = body["user"]["id"]
        try:
            if respond is not None and self._trusted(body.get("response_url")):
                if replace:
                    await respond(
                        replace_original=True, text=text, blocks=_outcome_blocks(body, text)
                    )
                else:
                    await respond(response_type="ephemeral", replace_original=False, text=text)
                return
            channel = _channel_of(body)
            if channel is not None:
                await self._web.chat_postEphemeral(channel=channel, user=user, text=text)
            else:
                # A modal has neither a response_url nor a channel: a DM still reaches them.
                await self._web.chat_postMessage(channel=user, text=text)
        except Exception as err:  # the outcome is recorded; only the courtesy message failed
            log.warning("could not tell Slack user %s the outcome: %s", user, type(err).__name__)


def create_slack_handler(
    config: FirmConfig, connector: SlackConnector, temporal: Callable[[], Awaitable[Client]]
) -> SlackEvents:
    return SlackEvents(config, connector, temporal)
