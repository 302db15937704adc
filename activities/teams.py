"""Microsoft Teams: Adaptive Cards posted through a Workflows ("when a Teams webhook request is
received") webhook, with Accept / Request reassignment as signed one-time links.

A card posted by a workflow cannot call us back: its only buttons are ``Action.OpenUrl``
(assumption 12 of the contract notes [A]). So each button opens a link made by
``dispatch.links.make_link`` — signed with ``connector.link_secret_env``, expiring after
``connector.link_ttl_hours``, naming the workflow, the person it was issued to (a staff id)
and the action — served by the webhook server at ``connector.public_base_url``. The card
mentions the person by email (``msteams.entities``), since the workflow posts to a channel.

The webhook URL is a secret (its ``sig`` parameter is the credential): it is read from
``connector.webhook_url_env`` at each post and never appears in a log line or an error message
(httpx's own INFO line is rewritten by a filter below; errors are scrubbed).

Idempotency: a Workflows webhook has no dedupe key, so a retry after a lost answer posts a second
card. We keep that window small and harmless:
- Temporal retries only on 429 (after the Retry-After asked for), 5xx and transport errors; any
  other 4xx fails the activity for good with the vendor's reason.
- The card is deterministic: the same notice gives the same bytes on every attempt. Link expiry
  and nonces derive from the activity's *first* scheduled time (``activity.info()
  .scheduled_time``), not the attempt's clock, so a duplicate card carries the very same links
  and a click counts once whichever copy it comes from (the nonce is the single-use key).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, transport_error
from activities.roles import ChatActivities
from activities.slack import review_sequence
from dispatch.config import FirmConfig, FirmConfigError, TeamsConnector, secret
from dispatch.links import (
    ACCEPT,
    REASSIGN,
    derive_nonce,
    make_link,
    partner_action,
)
from dispatch.models import (
    AssignmentNotice,
    CandidateScore,
    ChatResult,
    PartnerReviewNotice,
    Role,
    StaffNotice,
    StaffRef,
)
from dispatch.partner_review import blocked_reason
from dispatch.partner_review import only_capacity as capacity_only

SYSTEM = "Teams"
OPERATION = "workflow webhook post"
TIMEOUT = httpx.Timeout(20.0, connect=5.0)
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"
"""1.4 renders on Teams desktop, web and mobile [P]; we need nothing newer."""
MAX_CANDIDATES = 10
WEBHOOK_HIDDEN = "<Teams webhook URL>"


# --- keeping the webhook URL out of logs -----------------------------------------------------


class _HideWebhookUrls(logging.Filter):
    """httpx logs ``HTTP Request: POST <url> ...`` at INFO; for our webhook URL that is the
    credential itself. Rewrites the URL argument of those records (other URLs are untouched)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self.urls:
            record.args = tuple(
                WEBHOOK_HIDDEN if isinstance(a, httpx.URL | str) and str(a) in self.urls else a
                for a in record.args
            )
        return True


_HIDE = _HideWebhookUrls()
logging.getLogger("httpx").addFilter(_HIDE)


def _secret_fragments(url: str) -> list[str]:
    """The parts of a webhook URL that must not be shown: the URL and its long components."""
    parts = urlsplit(url)
    fragments = {url, str(httpx.URL(url)), f"{parts.scheme}://{parts.netloc}{parts.path}"}
    fragments.update(v for _, v in parse_qsl(parts.query) if len(v) >= 8)
    fragments.update(s for s in parts.path.split("/") if len(s) >= 12)
    if parts.query:
        fragments.add(parts.query)
    return sorted((f for f in fragments if f), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    for fragment in _secret_fragments(url):
        text = text.replace(fragment, "<redacted>")
    return text


def _scrubbed(err: ApplicationError, url: str) -> ApplicationError:
    return ApplicationError(
        scrub(err.message, url),
        type=err.type,
        non_retryable=err.non_retryable,
        next_retry_delay=err.next_retry_delay,
    )


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type="TeamsConfigError", non_retryable=True)


# --- the activities --------------------------------------------------------------------------


def _first_scheduled_time() -> datetime:
    """When the activity was first scheduled: the same on every retry of this activity."""
    return activity.info().scheduled_time


@dataclass(frozen=True)
class CandidateLinks:
    candidate: CandidateScore
    assign_url: str
    anyway_url: str | None
    """Only when capacity alone blocks the candidate."""


class TeamsActivities(ChatActivities):
    def __init__(
        self,
        config: FirmConfig,
        connector: TeamsConnector,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _first_scheduled_time,
    ) -> None:
        self._config = config
        self._connector = connector
        self._http = http
        self._clock = clock
        """When links are issued (their expiry and nonce derive from it)."""
        self._needs_code = config.connectors.email.kind != "none"
        """With an email connector, a link acts only with the code emailed to its person."""

    def _client(self) -> httpx.AsyncClient:
        # Created on first use, inside the worker's event loop, and shared by all attempts.
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT)
        return self._http

    @activity.defn(name="chat_notify_assignment")
    async def notify_assignment(self, input: AssignmentNotice) -> ChatResult:
        s = input.summary
        person = input.recipient
        links = {
            action: self._link(s.workflow_id, person.id, action, input.role.value)
            for action in (ACCEPT, REASSIGN)
        }
        card = assignment_card(
            input,
            accept_url=links[ACCEPT],
            reassign_url=links[REASSIGN],
            needs_code=self._needs_code,
        )
        return await self._post(card)

    @activity.defn(name="chat_notify_partner")
    async def notify_partner(self, input: PartnerReviewNotice) -> ChatResult:
        limit = min(self._config.policy.partner_candidates_shown, MAX_CANDIDATES)
        offered = []
        for c in unique_candidates(input.candidates)[:limit]:
            wid, partner = input.summary.workflow_id, input.partner.id
            assign = self._link(wid, partner, partner_action(c.staff_id), "partner")
            anyway = None
            if capacity_only(c):
                anyway = self._link(
                    wid, partner, partner_action(c.staff_id, anyway=True), "partner"
                )
            offered.append(CandidateLinks(c, assign, anyway))
        return await self._post(partner_card(input, offered))

    @activity.defn(name="chat_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> ChatResult:
        return await self._post(notice_card(input))

    # --- steps -------------------------------------------------------------------------------

    def _link(self, workflow_id: str, staff_id: str, action: str, role: str) -> str:
        try:
            key = secret(self._connector.link_secret_env)
        except FirmConfigError as err:
            raise _config_error(str(err)) from None
        assert key is not None  # required=True raises instead of returning None
        issued = self._clock()
        return make_link(
            key,
            self._connector.public_base_url,
            workflow_id=workflow_id,
            staff_id=staff_id,
            action=action,
            ttl=timedelta(hours=self._connector.link_ttl_hours),
            now=issued,
            nonce=derive_nonce(key, workflow_id, staff_id, action, role, issued.isoformat()),
            needs_code=self._needs_code,
        )

    def _webhook_url(self) -> str:
        env = self._connector.webhook_url_env
        try:
            url = secret(env)
        except FirmConfigError as err:
            raise _config_error(str(err)) from None
        assert url is not None
        if urlsplit(url).scheme not in ("http", "https"):
            raise _config_error(f"{env} is not an http(s) URL")
        return url

    async def _post(self, card: dict[str, Any]) -> ChatResult:
        url = self._webhook_url()
        _HIDE.urls.update({url, str(httpx.URL(url))})
        body = json.dumps(webhook_body(card), separators=(",", ":"), ensure_ascii=False)
        try:
            response = await self._client().post(
                url, content=body.encode("utf-8"), headers={"Content-Type": "application/json"}
            )
        except httpx.UnsupportedProtocol:
            raise _config_error(f"{self._connector.webhook_url_env} is not usable") from None
        except httpx.InvalidURL:
            raise _config_error(f"{self._connector.webhook_url_env} is not a valid URL") from None
        except httpx.TransportError as err:
            # ``from None``: the httpx exception carries the request, and with it the URL.
            raise _scrubbed(transport_error(SYSTEM, OPERATION, err), url) from None
        if response.status_code in (200, 202):
            return ChatResult(delivered=True, detail="posted to the Teams channel")
        failure = error_for_status(
            SYSTEM,
            response.status_code,
            response.headers,
            _reason(response),
            operation=OPERATION,
        )
        raise _scrubbed(failure, url)


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code else str(message)
    return response.text[:200] or response.reason_phrase


# --- card content (pure) ---------------------------------------------------------------------


def _day(day: date) -> str:
    return f"{day:%a} {day:%b} {day.day}, {day:%Y}"


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _heading(text: str) -> dict[str, Any]:
    return _text(text, weight="Bolder", size="Medium")


def _facts(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in pairs]}


def _open_url(title: str, url: str, style: str | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "Action.OpenUrl", "title": title, "url": url}
    if style is not None:
        action["style"] = style
    return action


def mention_text(person: StaffRef) -> str:
    return f"<at>{person.name}</at>"


def _card(
    body: list[dict[str, Any]], actions: list[dict[str, Any]], mention: StaffRef
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {
            "width": "Full",
            "entities": [
                {
                    "type": "mention",
                    "text": mention_text(mention),
                    # Teams resolves a mention in a workflow-posted card by the user's
                    # email / UPN [P]; the email goes to Teams, never into a link.
                    "mentioned": {"id": mention.email, "name": mention.name},
                }
            ],
        },
    }
    if actions:
        card["actions"] = actions
    return card


def webhook_body(card: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}]}


def assignment_card(
    notice: AssignmentNotice, *, accept_url: str, reassign_url: str, needs_code: bool = False
) -> dict[str, Any]:
    """The Teams twin of the Slack assignment DM: same facts, links instead of callbacks."""
    s = notice.summary
    title = "Review assignment" if notice.role is Role.REVIEWER else "New assignment"
    facts = [
        ("Client", s.client_name),
        ("Service", s.service_name),
        ("Due", _day(s.due_date)),
        ("Estimated hours", _hours(s.estimated_hours)),
        ("Your role", notice.role.value.capitalize()),
    ]
    if notice.estimated_completion is not None:
        facts.append(("Estimated completion", _day(notice.estimated_completion)))
    body = [
        _heading(f"{title}: {s.service_name}"),
        _text(
            f"{mention_text(notice.recipient)}, you are the **{notice.role.value}** on "
            f"{s.client_name} · {s.title}"
        ),
        _facts(facts),
    ]
    sequence = review_sequence(notice.preparer, notice.reviewer)
    if sequence:
        body.append(_text(f"**Review sequence:** {sequence}"))
    if s.scope_summary:
        body.append(_text(f"**Scope:** {s.scope_summary}"))
    body.append(_text("**Documents still needed from the client**"))
    if s.documents_needed:
        body.append(_text("\n".join(f"- {d}" for d in s.documents_needed)))
    else:
        body.append(_text("None outstanding"))
    if notice.manual_pm_update:
        body.append(
            _text(
                "⚠️ **Update the practice-management record by hand** (no API can do it): "
                f"{notice.manual_pm_update}",
                color="Attention",
            )
        )
    how = "Each button opens a confirmation page and works once"
    if needs_code:
        how += f", with a code we email to {notice.recipient.name}"
    body.append(_text(how + ".", isSubtle=True, size="Small"))
    actions = [
        _open_url("Accept", accept_url, "positive"),
        _open_url("Request reassignment", reassign_url, "destructive"),
    ]
    if s.pm_url:
        actions.append(_open_url("Open in practice management", s.pm_url))
    return _card(body, actions, notice.recipient)


def unique_candidates(candidates: list[CandidateScore]) -> list[CandidateScore]:
    seen: set[str] = set()
    unique = []
    for c in candidates:
        if c.staff_id not in seen:
            seen.add(c.staff_id)
            unique.append(c)
    return unique


def partner_card(notice: PartnerReviewNotice, offered: list[CandidateLinks]) -> dict[str, Any]:
    s = notice.summary
    body = [
        _heading(f"Partner review: {s.service_name}"),
        _text(f"{mention_text(notice.partner)}, {s.client_name} · {s.title} needs your decision."),
        _text(f"**Why it needs you:** {notice.reason}"),
        _facts([("Due", _day(s.due_date)), ("Estimated hours", _hours(s.estimated_hours))]),
    ]
    if notice.options:
        # What each choice costs (overtime, a later date, other work at risk), best first.
        options = "\n".join(f"- {o.summary}" for o in notice.options[:MAX_CANDIDATES])
        body.append(_text(f"**Options**\n\n{options}"))
    if not offered:
        body.append(_text("No candidates to offer: add capacity or change the engagement."))
    else:
        body.append(_text("**Candidates**"))
    for item in offered:
        c = item.candidate
        body.append(
            {
                "type": "Container",
                "separator": True,
                "items": [
                    _text(
                        f"**{c.name}** ({c.tier.value}) · "
                        f"{_hours(round(c.available_hours, 1))} available · "
                        f"blocked: {blocked_reason(c)}"
                    ),
                    {
                        "type": "ActionSet",
                        "actions": [_open_url(f"Assign {c.name}", item.assign_url)],
                    },
                ],
            }
        )
    anyway = [item for item in offered if item.anyway_url is not None]
    if anyway:
        body.append(
            {
                "type": "Container",
                "style": "attention",
                "separator": True,
                "items": [
                    _text("**Assign anyway (over capacity)**", color="Attention"),
                    _text(
                        "Only for people blocked by capacity alone: books them past their "
                        "weekly capacity, and the record says so."
                    ),
                    {
                        "type": "ActionSet",
                        "actions": [
                            _open_url(
                                f"Assign {item.candidate.name} anyway",
                                item.anyway_url or "",
                                "destructive",
                            )
                            for item in anyway
                        ],
                    },
                ],
            }
        )
    actions = [_open_url("Open in practice management", s.pm_url)] if s.pm_url else []
    return _card(body, actions, notice.partner)


def notice_card(notice: StaffNotice) -> dict[str, Any]:
    """Checkpoints, reminders and escalations: text only, no action links."""
    s = notice.summary
    body = [
        _heading(notice.subject),
        _text(f"{mention_text(notice.recipient)} · {s.client_name} · {s.title}"),
        *(_text(line) for line in notice.lines),
        _facts([("Service", s.service_name), ("Due", _day(s.due_date))]),
    ]
    actions = [_open_url("Open in practice management", s.pm_url)] if s.pm_url else []
    return _card(body, actions, notice.recipient)


__all__ = [
    "CandidateLinks",
    "TeamsActivities",
    "assignment_card",
    "capacity_only",
    "notice_card",
    "partner_card",
    "scrub",
    "unique_candidates",
    "webhook_body",
]
