"""Slack interactivity: the Accept / Request reassignment and partner buttons, through Bolt.

Mounted by the webhook server at ``POST /slack/events``. Bolt verifies every request's
signature with ``SLACK_SIGNING_SECRET`` over the raw body and refuses one older than five
minutes (401), so a captured click cannot be replayed.

A click becomes an Update on the engagement, with an id made from the Slack message, the
action's timestamp and the user — the same payload delivered twice counts once. We answer Slack
only after the workflow recorded the click (``process_before_response``), so a click Slack
believes delivered is never lost; if that takes longer than Slack's three seconds, Slack
retries and the retry is deduplicated.

Who clicked is decided here, from Slack's user id: the firm config's ``slack_id``, else the
Slack profile's email matched to the staff list. The workflow decides whether that person may
answer; anyone else gets an ephemeral explanation and nothing changes. The original message is
updated to show the outcome.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client

from dispatch.config import FirmConfig, SlackConnector, secret
from dispatch.models import AssignmentResponse, PartnerDecision, ResponseOutcome
from dispatch.responses import Refused, UnknownEngagement, deliver_decision, deliver_response

log = logging.getLogger("dispatch.slack")

ASSIGNMENT_ACTIONS = re.compile(r"^assignment_(accept|reassign)$")
PARTNER_ACTIONS = re.compile(r"^partner_(assign|force):(.+)$")

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
        except SlackApiError:
            return None
        user: dict[str, Any] = info.get("user") or {}
        email = str((user.get("profile") or {}).get("email") or "").lower()
        staff_id = self._by_email.get(email)
        if staff_id is not None:
            self._by_slack[slack_user] = staff_id
        return staff_id


def event_id(body: dict[str, Any], action: dict[str, Any]) -> str:
    """One id per click: Slack redelivers the same payload with the same values."""
    message_ts = body.get("container", {}).get("message_ts", "")
    return f"slack:{message_ts}:{action.get('action_ts', '')}:{body['user']['id']}:" \
        f"{action.get('action_id', '')}"


def _outcome_blocks(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The original message without its buttons, plus a line saying what happened."""
    original = body.get("message", {}).get("blocks", []) or []
    kept = [b for b in original if b.get("type") != "actions"]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}]


def create_slack_handler(config: FirmConfig, connector: SlackConnector,
                         temporal: Callable[[], Awaitable[Client]]) -> AsyncSlackRequestHandler:
    web = AsyncWebClient(token=secret(connector.bot_token_env), base_url=connector.base_url)
    app = AsyncApp(
        client=web,
        signing_secret=secret(connector.signing_secret_env),
        process_before_response=True,
        logger=log,
    )
    directory = SlackDirectory(config, web)

    async def who(body: dict[str, Any], respond: Respond) -> str | None:
        staff_id = await directory.staff_id(body["user"]["id"])
        if staff_id is None:
            await respond(response_type="ephemeral", replace_original=False,
                          text="You are not on this firm's staff list, so this isn't yours "
                               "to answer.")
        return staff_id

    async def deliver(respond: Respond, body: dict[str, Any],
                      call: Callable[[Client], Awaitable[ResponseOutcome]], done_text: str
                      ) -> None:
        try:
            outcome = await call(await temporal())
        except Refused as err:
            await respond(response_type="ephemeral", replace_original=False, text=str(err))
            return
        except UnknownEngagement as err:
            await respond(response_type="ephemeral", replace_original=False, text=str(err))
            return
        text = f"{done_text} {outcome.message}" if outcome.changed else outcome.message
        await respond(replace_original=True, text=text, blocks=_outcome_blocks(body, text))

    @app.action(ASSIGNMENT_ACTIONS)
    async def on_assignment(ack: Callable[[], Awaitable[None]], body: dict[str, Any],
                            action: dict[str, Any], respond: Respond) -> None:
        await ack()
        staff_id = await who(body, respond)
        if staff_id is None:
            return
        matched = ASSIGNMENT_ACTIONS.match(action["action_id"])
        assert matched is not None
        choice = "accept" if matched.group(1) == "accept" else "reassign"
        response = AssignmentResponse(action=choice, staff_id=staff_id, channel="slack",
                                      event_id=event_id(body, action))
        workflow_id = str(action.get("value", ""))
        label = ":white_check_mark:" if choice == "accept" else ":leftwards_arrow_with_hook:"
        await deliver(respond, body,
                      lambda client: deliver_response(client, workflow_id, response), label)

    @app.action(PARTNER_ACTIONS)
    async def on_partner(ack: Callable[[], Awaitable[None]], body: dict[str, Any],
                         action: dict[str, Any], respond: Respond) -> None:
        await ack()
        partner_id = await who(body, respond)
        if partner_id is None:
            return
        matched = PARTNER_ACTIONS.match(action["action_id"])
        assert matched is not None
        workflow_id, _, staff_id = str(action.get("value", "")).partition("|")
        decision = PartnerDecision(partner_id=partner_id, staff_id=staff_id or matched.group(2),
                                   override_capacity=matched.group(1) == "force",
                                   channel="slack", event_id=event_id(body, action))
        await deliver(respond, body,
                      lambda client: deliver_decision(client, workflow_id, decision),
                      ":ballot_box_with_check:")

    return AsyncSlackRequestHandler(app)
