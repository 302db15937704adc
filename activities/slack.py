"""Slack: the assignee's DM with Accept / Request reassignment, and the partner's review DM.

Retries belong to Temporal. The SDK only retries a connection error once, and never a
``chat.postMessage`` whose request may have left (a connection dropped after sending may have
posted it; the next activity attempt looks for the message first, see below); a 429 becomes a
retryable ApplicationError whose ``next_retry_delay`` is Slack's ``Retry-After``, so no worker
slot sleeps inside the SDK. The SDK opens a new connection for every call (no shared session),
so an idle keep-alive connection is never reused after Slack closed it. Slack's ``ok:false``
answers (``channel_not_found``, ``invalid_blocks``, ``invalid_auth`` ...) will not get better on
retry and fail the activity for good, with the error code in the message.

Idempotency (DESIGN invariant 2): every message carries Slack message metadata naming the
workflow, the role and a digest of the content. ``chat.postMessage`` has no idempotency key, so a
retry (attempt > 1) first looks through the DM's recent history for that metadata and returns
the message it finds instead of posting a second one. A notice that names an earlier message
(``previous``) updates it in place. Checking history on retries only is our design [A] (the
contract notes only "check the stored ts before re-posting").

Button values hold the workflow id (plus a staff id for partner picks): never emails or names.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from functools import partial
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, redact, transport_error
from activities.roles import ChatActivities
from dispatch.config import FirmConfig, SlackConnector, secret
from dispatch.models import (
    AssignmentNotice,
    CandidateScore,
    ChatResult,
    MessageRef,
    PartnerReviewNotice,
    Role,
    StaffNotice,
    StaffRef,
)
from dispatch.partner_review import blocked_reason, only_capacity

SYSTEM = "Slack"
TIMEOUT_SECONDS = 20
"""Below the activity's start-to-close timeout, so a hung call fails the attempt cleanly."""
ASSIGNMENT_EVENT = "engagement_assignment"
PARTNER_EVENT = "engagement_partner_review"
ACCEPT_ACTION = "assignment_accept"
REASSIGN_ACTION = "assignment_reassign"
PARTNER_ACTION_PREFIX = "partner_assign:"
PARTNER_FORCE_PREFIX = "partner_force:"
PARTNER_DUE_ACTION = "partner_due"
"""The partner's date picker: a new due date (the engagement is named by the block id)."""
NOTICE_EVENT = "engagement_notice"
HISTORY_PAGE = 100
HISTORY_PAGES = 3
"""A retry follows its lost post within minutes: the DM's last few hundred messages suffice."""
MAX_ACTIONS = 25
NO_USER_CODES = {"users_not_found", "user_not_found", "user_disabled"}
TRANSIENT_CODES = {
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "rate_limited",
    "ratelimited",
}
"""ok:false codes Slack documents as temporary: worth another attempt."""

# The SDK logs request parameters (emails for users.lookupByEmail, message text) at DEBUG.
_SDK_LOGGER = logging.getLogger("activities.slack.sdk")
_SDK_LOGGER.setLevel(logging.INFO)


class SafeConnectionRetry(AsyncConnectionErrorRetryHandler):
    """The SDK's connection-error retry, minus the one that could post a message twice.

    A ``chat.postMessage`` is retried here only when no connection was made; after a reset or
    a dropped connection Slack may have posted it, so the retry is left to the next activity
    attempt, which first looks for the message in the DM's history.
    """

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if request.url.endswith("/chat.postMessage") and not isinstance(
            error, aiohttp.ClientConnectorError
        ):
            return False
        return await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )


class SlackActivities(ChatActivities):
    def __init__(
        self, config: FirmConfig, connector: SlackConnector, client: AsyncWebClient | None = None
    ) -> None:
        self._config = config
        self._connector = connector
        if client is None:
            client = AsyncWebClient(
                token=secret(connector.bot_token_env),
                base_url=connector.base_url,
                timeout=TIMEOUT_SECONDS,
                logger=_SDK_LOGGER,
                # Connection errors only: 429 and 5xx go back to Temporal's retry policy.
                retry_handlers=[SafeConnectionRetry(max_retry_count=1)],
            )
        self._client = client
        self._dm_channels: dict[str, str] = {}

    @activity.defn(name="chat_notify_assignment")
    async def notify_assignment(self, input: AssignmentNotice) -> ChatResult:
        s = input.summary
        text = assignment_text(input)
        blocks = assignment_blocks(input)
        metadata = _metadata(ASSIGNMENT_EVENT, s.workflow_id, input.role.value, text, blocks)

        if input.previous is not None:
            updated = await self._update(input.previous, text, blocks, metadata)
            if updated is not None:
                return updated

        channel = await self._open_dm(input.recipient)
        if channel is None:
            return ChatResult(delivered=False, detail="no Slack user for the assignee")
        return await self._post_once(channel, text, blocks, metadata)

    @activity.defn(name="chat_notify_partner")
    async def notify_partner(self, input: PartnerReviewNotice) -> ChatResult:
        shown = self._config.policy.partner_candidates_shown
        text = partner_text(input)
        blocks = partner_blocks(input, limit=shown)
        metadata = _metadata(PARTNER_EVENT, input.summary.workflow_id, "partner", text, blocks)
        channel = await self._open_dm(input.partner)
        if channel is None:
            return ChatResult(delivered=False, detail="no Slack user for the partner")
        return await self._post_once(channel, text, blocks, metadata)

    @activity.defn(name="chat_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> ChatResult:
        text = notice_text(input)
        blocks = notice_blocks(input)
        metadata = _metadata(NOTICE_EVENT, input.summary.workflow_id, input.key, text, blocks)
        channel = await self._open_dm(input.recipient)
        if channel is None:
            return ChatResult(delivered=False, detail=f"no Slack user for the {input.kind} notice")
        return await self._post_once(channel, text, blocks, metadata)

    # --- steps -------------------------------------------------------------------------------

    async def _open_dm(self, person: StaffRef) -> str | None:
        """The DM channel id with ``person``; None when they have no (active) Slack account."""
        user_id = person.slack_id
        try:
            if user_id is None:
                found = await self._call(
                    "users.lookupByEmail",
                    lambda: self._client.users_lookupByEmail(email=person.email),
                )
                user_id = str(found["user"]["id"])
            cached = self._dm_channels.get(user_id)
            if cached is not None:
                return cached
            opened = await self._call(
                "conversations.open", lambda: self._client.conversations_open(users=[user_id])
            )
        except ApplicationError as err:
            if slack_code(err) in NO_USER_CODES:
                return None
            raise
        channel = str(opened["channel"]["id"])
        # A user's DM channel never changes: open it once per worker, not once per message.
        self._dm_channels[user_id] = channel
        return channel

    async def _post_once(
        self, channel: str, text: str, blocks: list[dict[str, Any]], metadata: dict[str, Any]
    ) -> ChatResult:
        if activity.info().attempt > 1:
            # The previous attempt may have posted and lost the answer: find that message.
            existing = await self._find_posted(channel, metadata)
            if existing is not None:
                activity.logger.info("Slack message already posted by an earlier attempt")
                return ChatResult(
                    delivered=True, message=existing, detail="already posted by an earlier attempt"
                )
        posted = await self._call(
            "chat.postMessage",
            lambda: self._client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                metadata=metadata,
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return ChatResult(
            delivered=True, message=MessageRef(channel=str(posted["channel"]), ts=str(posted["ts"]))
        )

    async def _update(
        self,
        previous: MessageRef,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any],
    ) -> ChatResult | None:
        """Edit the earlier message in place; None when it is gone (then a new one is posted)."""
        try:
            updated = await self._call(
                "chat.update",
                lambda: self._client.chat_update(
                    channel=previous.channel,
                    ts=previous.ts,
                    text=text,
                    blocks=blocks,
                    metadata=metadata,
                ),
            )
        except ApplicationError as err:
            if slack_code(err) in ("message_not_found", "cant_update_message"):
                return None
            raise
        return ChatResult(
            delivered=True,
            message=MessageRef(channel=str(updated["channel"]), ts=str(updated["ts"])),
            detail="updated the earlier message",
        )

    async def _find_posted(self, channel: str, metadata: dict[str, Any]) -> MessageRef | None:
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            page = await self._call(
                "conversations.history",
                partial(
                    self._client.conversations_history,
                    channel=channel,
                    limit=HISTORY_PAGE,
                    include_all_metadata=True,
                    cursor=cursor,
                ),
            )
            for message in page.get("messages") or []:
                if _same_message(message.get("metadata"), metadata):
                    return MessageRef(channel=channel, ts=str(message["ts"]))
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not page.get("has_more") or cursor is None:
                return None
        return None

    async def _call(
        self, operation: str, call: Callable[[], Awaitable[AsyncSlackResponse]]
    ) -> AsyncSlackResponse:
        """One Web API call, its failure turned into Temporal's retry decision."""
        try:
            return await call()
        except SlackApiError as err:
            raise _classify(operation, err) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise transport_error(SYSTEM, operation, err) from None


# --- errors ----------------------------------------------------------------------------------


def slack_code(err: ApplicationError) -> str | None:
    """The Slack error code of an ``ok:false`` answer turned into an ApplicationError."""
    return str(err.details[0]) if err.type in _CODED and err.details else None


_CODED = {"SlackRejected", "SlackTransient"}


def _classify(operation: str, err: SlackApiError) -> ApplicationError:
    response = err.response
    status = int(getattr(response, "status_code", 0) or 0)
    headers = {str(k): str(v) for k, v in (getattr(response, "headers", None) or {}).items()}
    data = getattr(response, "data", None)
    code = str(data.get("error") or "unknown_error") if isinstance(data, dict) else ""
    if status != 200:
        reason = code or (data if isinstance(data, str) else "") or "no error detail"
        return error_for_status(SYSTEM, status, headers, str(reason), operation=operation)
    code = redact(code or "unknown_error", limit=80)
    if code in TRANSIENT_CODES:
        return ApplicationError(
            f"Slack {operation}: {code} (temporary)", code, type="SlackTransient"
        )
    return ApplicationError(
        f"Slack {operation}: {code}", code, type="SlackRejected", non_retryable=True
    )


# --- metadata --------------------------------------------------------------------------------


def _metadata(
    event_type: str, workflow_id: str, role: str, text: str, blocks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Slack message metadata naming the engagement; the digest tells this message from an
    earlier, different notice for the same engagement and role."""
    canonical = json.dumps({"text": text, "blocks": blocks}, sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return {
        "event_type": event_type,
        "event_payload": {"workflow_id": workflow_id, "role": role, "digest": digest},
    }


def _same_message(found: Any, wanted: dict[str, Any]) -> bool:
    if not isinstance(found, dict) or found.get("event_type") != wanted["event_type"]:
        return False
    payload = found.get("event_payload")
    return isinstance(payload, dict) and all(
        payload.get(k) == v for k, v in wanted["event_payload"].items()
    )


# --- message content (pure) ------------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn and message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _day(day: date) -> str:
    return f"{day:%a} {day:%b} {day.day}, {day:%Y}"


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _clip(text, 3000)}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _block_id(prefix: str, workflow_id: str, suffix: str) -> str:
    return _clip(f"{prefix}:{workflow_id}:{suffix}", 255)


def review_sequence(preparer: StaffRef | None, reviewer: StaffRef | None) -> str | None:
    if preparer is not None and reviewer is not None:
        return f"Prepared by {preparer.name}, then reviewed by {reviewer.name}"
    if preparer is not None:
        return f"Prepared by {preparer.name} (no separate review)"
    return None


def assignment_text(notice: AssignmentNotice) -> str:
    """The notification fallback: short, no emails, no secrets."""
    s = notice.summary
    return _escape(
        f"New {notice.role.value} assignment: {s.service_name} for {s.client_name}, "
        f"due {_day(s.due_date)}."
    )


def assignment_blocks(notice: AssignmentNotice) -> list[dict[str, Any]]:
    """Block Kit for one assignment DM (any chat surface that speaks Block Kit can reuse it)."""
    s = notice.summary
    reviewing = notice.role is Role.REVIEWER
    title = "Review assignment" if reviewing else "New assignment"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_clip(f"{title}: {s.service_name}", 150))},
        _section(
            f"*{_escape(s.client_name)}* · {_escape(s.title)}\n"
            f"You are the *{notice.role.value}* on this engagement."
        ),
    ]
    fields = [
        _mrkdwn(f"*Client*\n{_escape(s.client_name)}"),
        _mrkdwn(f"*Service*\n{_escape(s.service_name)}"),
        _mrkdwn(f"*Due*\n{_day(s.due_date)}"),
        _mrkdwn(f"*Estimated hours*\n{_hours(s.estimated_hours)}"),
        _mrkdwn(f"*Your role*\n{notice.role.value.capitalize()}"),
    ]
    if notice.estimated_completion is not None:
        fields.append(_mrkdwn(f"*Estimated completion*\n{_day(notice.estimated_completion)}"))
    blocks.append({"type": "section", "fields": fields})
    sequence = review_sequence(notice.preparer, notice.reviewer)
    if sequence:
        blocks.append(_section(f"*Review sequence*\n{_escape(sequence)}"))
    if s.scope_summary:
        blocks.append(_section(f"*Scope*\n{_escape(s.scope_summary)}"))
    if s.documents_needed:
        docs = "\n".join(f"• {_escape(d)}" for d in s.documents_needed)
        blocks.append(_section(f"*Documents still needed from the client*\n{docs}"))
    else:
        blocks.append(_section("*Documents still needed from the client*\nNone outstanding"))
    if s.pm_url:
        blocks.append(_section(f"<{s.pm_url}|Open the engagement in practice management>"))
    if notice.manual_pm_update:
        blocks.append(
            _section(
                ":warning: *Update the practice-management record by hand* "
                f"(no API can do it): {_escape(notice.manual_pm_update)}"
            )
        )
    blocks.append(
        {
            "type": "actions",
            "block_id": _block_id("assign", s.workflow_id, notice.role.value),
            "elements": [
                {
                    "type": "button",
                    "action_id": ACCEPT_ACTION,
                    "style": "primary",
                    "text": _plain("Accept"),
                    "value": s.workflow_id,
                },
                {
                    "type": "button",
                    "action_id": REASSIGN_ACTION,
                    "style": "danger",
                    "text": _plain("Request reassignment"),
                    "value": s.workflow_id,
                },
            ],
        }
    )
    return blocks


def partner_text(notice: PartnerReviewNotice) -> str:
    s = notice.summary
    return _escape(
        f"Partner review needed: {s.service_name} for {s.client_name}, due {_day(s.due_date)}."
    )


def _partner_button(workflow_id: str, candidate: CandidateScore) -> dict[str, Any]:
    """ "Assign <name>", or "Assign <name> anyway" when only capacity blocks them: that one
    books them over capacity, explicitly, and the engagement records it as such."""
    value = f"{workflow_id}|{candidate.staff_id}"
    if only_capacity(candidate):
        return {
            "type": "button",
            "action_id": f"{PARTNER_FORCE_PREFIX}{candidate.staff_id}",
            "style": "danger",
            "text": _plain(_clip(f"Assign {candidate.name} anyway", 75)),
            "value": value,
        }
    return {
        "type": "button",
        "action_id": f"{PARTNER_ACTION_PREFIX}{candidate.staff_id}",
        "text": _plain(_clip(f"Assign {candidate.name}", 75)),
        "value": value,
    }


def notice_text(notice: StaffNotice) -> str:
    return f"{notice.subject}: " + " ".join(notice.lines)


def notice_blocks(notice: StaffNotice) -> list[dict[str, Any]]:
    """A checkpoint or escalation: a header, the lines, a link to the engagement."""
    s = notice.summary
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_clip(notice.subject, 150))},
        _section("\n".join(_escape(line) for line in notice.lines)),
    ]
    context = f"{_escape(s.client_name)} · {_escape(s.service_name)} · due {_day(s.due_date)}"
    if s.pm_url:
        context += f" · <{s.pm_url}|open in practice management>"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return blocks


def partner_blocks(
    notice: PartnerReviewNotice, *, limit: int = MAX_ACTIONS
) -> list[dict[str, Any]]:
    """The partner's DM: why it needs them, who could take it and what blocks each one."""
    s = notice.summary
    candidates: list[CandidateScore] = []
    for c in notice.candidates:
        if c.staff_id not in {seen.staff_id for seen in candidates}:
            candidates.append(c)
    candidates = candidates[: max(0, min(limit, MAX_ACTIONS))]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(_clip(f"Partner review: {s.service_name}", 150))},
        _section(
            f"*{_escape(s.client_name)}* · {_escape(s.title)}\n"
            f"*Why it needs you:* {_escape(notice.reason)}"
        ),
        {
            "type": "section",
            "fields": [
                _mrkdwn(f"*Due*\n{_day(s.due_date)}"),
                _mrkdwn(f"*Estimated hours*\n{_hours(s.estimated_hours)}"),
            ],
        },
    ]
    if s.pm_url:
        blocks.append(_section(f"<{s.pm_url}|Open the engagement in practice management>"))
    if notice.options:
        # What each choice costs (overtime, a later date, other work at risk), best first.
        options = "\n".join(f"• {_escape(o.summary)}" for o in notice.options[:limit])
        blocks.append(_section(_clip(f"*Options*\n{options}", 3000)))
    blocks.append(
        _section(
            "*Or move the due date:* written back to the PM system, and the search for someone "
            "with room runs again for the new date."
        )
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": _block_id("partner", s.workflow_id, "due"),
            "elements": [
                {
                    "type": "datepicker",
                    "action_id": PARTNER_DUE_ACTION,
                    "initial_date": s.due_date.isoformat(),
                    "placeholder": _plain("New due date"),
                }
            ],
        }
    )
    if not candidates:
        blocks.append(_section("No candidates to offer: add capacity or change the engagement."))
        return blocks
    lines = [
        f"• *{_escape(c.name)}* ({c.tier.value}) · {_hours(round(c.available_hours, 1))} "
        f"available · blocked: {_escape(blocked_reason(c))}"
        for c in candidates
    ]
    blocks.append(_section("*Candidates*\n" + "\n".join(lines)))
    blocks.append(
        {
            "type": "actions",
            "block_id": _block_id("partner", s.workflow_id, "assign"),
            "elements": [_partner_button(s.workflow_id, c) for c in candidates],
        }
    )
    return blocks


__all__ = [
    "ACCEPT_ACTION",
    "ASSIGNMENT_EVENT",
    "PARTNER_ACTION_PREFIX",
    "PARTNER_DUE_ACTION",
    "PARTNER_EVENT",
    "REASSIGN_ACTION",
    "SlackActivities",
    "assignment_blocks",
    "assignment_text",
    "blocked_reason",
    "partner_blocks",
    "partner_text",
    "review_sequence",
    "slack_code",
]
