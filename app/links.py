"""The web side of action links: the confirmation pages behind ``{base}/links/{token}``,
the one-time codes by email, and what a verified click means to the workflow.

The tokens themselves (signing, expiry, the one-time code's derivation) are pure and live in
``dispatch.links``, where the activities that build Teams cards use them too.

``GET /links/{token}`` never acts: chat clients and mail scanners fetch links to build previews,
so GET only shows a confirmation page whose button POSTs back to the same URL (with
``send_code=1`` to have the code emailed, with ``code=...`` to act). Single use is the
``deliver`` callable's job: it uses the link's nonce as the Temporal Update id.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient

from dispatch import limits
from dispatch.config import FirmConfig, SendGridConnector, StaffMember, TeamsConnector, secret
from dispatch.links import (
    CODE_GUESSES_PER_HOUR,
    CODE_SENDS_PER_HOUR,
    DEFAULT_LINK_SECRET_ENV,
    RETRY_AFTER_SECONDS,
    RETRY_FORM,
    LinkClaims,
    LinkError,
    Reason,
    code_matches,
    mask_email,
    one_time_code,
    show_code,
    verify_link,
)
from dispatch.models import AssignmentResponse, PartnerDecision

log = logging.getLogger("dispatch.links")

CodeSender = Callable[[StaffMember, LinkClaims, str], Awaitable[bool]]
"""Email ``code`` to the staff member; False when it could not be sent."""


@dataclass
class _Throttle:
    """At most ``limit`` events per link nonce per hour, in this process."""

    limit: int
    _events: dict[str, list[float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._events.get(key, []) if now - t < 3600]
        if len(self._events) > 10_000:  # forget idle links rather than grow without bound
            self._events = {k: v for k, v in self._events.items() if v and now - v[-1] < 3600}
        if len(recent) >= self.limit:
            self._events[key] = recent
            return False
        self._events[key] = [*recent, now]
        return True


# --- what a click means ----------------------------------------------------------------------


def response_for(claims: LinkClaims) -> AssignmentResponse:
    """An Accept / Request reassignment link as the workflow's answer model."""
    if claims.kind == "partner_assign":
        raise ValueError("a partner link is a PartnerDecision, not an AssignmentResponse")
    action: Literal["accept", "reassign"] = "accept" if claims.kind == "accept" else "reassign"
    return AssignmentResponse(
        action=action, staff_id=claims.staff_id, channel="teams", event_id=claims.event_id
    )


def decision_for(claims: LinkClaims) -> PartnerDecision:
    """A partner's link as the workflow's decision model."""
    candidate = claims.candidate_id
    if candidate is None:
        raise ValueError("not a partner link")
    return PartnerDecision(
        partner_id=claims.staff_id,
        staff_id=candidate,
        override_capacity=claims.override_capacity,
        channel="teams",
        event_id=claims.event_id,
    )


# --- the web pages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkOutcome:
    """What ``deliver`` made of a verified click.

    - ``done``: recorded (200);
    - ``already_used``: this link's nonce was seen before (409);
    - ``refused``: the engagement moved on, e.g. it was reassigned or closed (409);
    - ``unavailable``: could not be recorded now, try again (503 with Retry-After).
    """

    result: Literal["done", "already_used", "refused", "unavailable"]
    message: str


Deliver = Callable[[LinkClaims], Awaitable[LinkOutcome]]

_STATUS = {"done": 200, "already_used": 409, "refused": 409, "unavailable": 503}
_ERROR_PAGES: dict[Reason, tuple[int, str, str]] = {
    "forged": (
        403,
        "This link is not valid",
        "It was not issued by the dispatch service, or it was changed. Nothing was done.",
    ),
    "expired": (
        410,
        "This link has expired",
        "Nothing was done. Ask the operations lead to send the engagement again.",
    ),
    "malformed": (
        400,
        "This link is incomplete",
        "Part of the link seems to be missing (some mail programs split long links). "
        "Open it from the original message, or copy the whole link. Nothing was done.",
    ),
}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
"""The token is in the URL: no caching, no Referer, no indexing, no framing (click-jacking the
confirmation button)."""


def link_secret_env(config: FirmConfig) -> str:
    chat = config.connectors.chat
    if isinstance(chat, TeamsConnector):
        return chat.link_secret_env
    return DEFAULT_LINK_SECRET_ENV


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _page(status: int, title: str, message: str, *, firm: str, form: str = "") -> HTMLResponse:
    e = html.escape
    body = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · {e(firm)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;"
        "padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem}</style>"
        f"</head><body><p>{e(firm)}</p><h1>{e(title)}</h1><p>{e(message)}</p>{form}"
        "</body></html>\n"
    )
    headers = dict(_SECURITY_HEADERS)
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    return HTMLResponse(body, status_code=status, headers=headers)


def describe(claims: LinkClaims, config: FirmConfig) -> tuple[str, str]:
    """(question, button label) for the confirmation page."""
    engagement = claims.workflow_id
    if claims.kind == "accept":
        return f"Accept the assignment for engagement {engagement}?", "Accept"
    if claims.kind == "reassign":
        return (
            f"Ask for engagement {engagement} to be reassigned to someone else?",
            "Request reassignment",
        )
    candidate = claims.candidate_id or ""
    try:
        name = config.staff_by_id(candidate).name
    except KeyError:
        name = candidate
    if claims.override_capacity:
        return (
            f"Assign engagement {engagement} to {name} even though it takes them past their "
            "capacity?",
            f"Assign {name} anyway",
        )
    return f"Assign engagement {engagement} to {name}?", f"Assign {name}"


def _code_forms(label: str, *, offer_email: bool = True) -> str:
    """Ask for the code (and offer to email it): both post back to this very URL."""
    e = html.escape
    send = (
        '<form method="post"><input type="hidden" name="send_code" value="1">'
        '<button type="submit">Email me the code</button></form>'
        if offer_email
        else ""
    )
    return (
        f'{send}<form method="post"><p><label>Code from the email '
        '<input name="code" autocomplete="one-time-code" autocapitalize="characters" '
        f'maxlength="16" size="10" required></label></p>'
        f'<button type="submit">{e(label)}</button></form>'
    )


def _retry_form(code: str | None) -> str:
    if code is None:
        return RETRY_FORM
    hidden = f'<input type="hidden" name="code" value="{html.escape(code)}">'
    return f'<form method="post">{hidden}<button type="submit">Try again</button></form>'


async def read_form(request: Request) -> dict[str, str] | None:
    """The posted form's fields (first value each); None when the body is over the limit."""
    body = await limits.read_limited(request, limits.LINK_BODY)
    if body is None:
        return None
    try:
        parsed = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}


def create_links_router(
    config: FirmConfig,
    deliver: Deliver,
    *,
    clock: Callable[[], datetime] = _utc_now,
    send_code: CodeSender | None = None,
) -> APIRouter:
    """``GET /links/{token}`` (confirmation page) and ``POST /links/{token}`` (act).

    ``send_code`` emails a link's one-time code; links that need a code cannot be used
    without it (the page says so)."""
    router = APIRouter(tags=["links"])
    env_name = link_secret_env(config)
    firm = config.firm.name
    sends = _Throttle(CODE_SENDS_PER_HOUR)
    guesses = _Throttle(CODE_GUESSES_PER_HOUR)

    def claims_or_page(token: str) -> tuple[LinkClaims, str] | HTMLResponse:
        # Read per request: a rotated secret takes effect without a restart.
        key = secret(env_name, required=False)
        if not key:
            log.warning("action links are disabled: %s is not set", env_name)
            return _page(503, "Links are not available", "Try again later.", firm=firm)
        try:
            return verify_link(key, token, clock()), key
        except LinkError as err:
            # Never log the token: it is a bearer capability until it expires.
            log.info("refused an action link: %s", err.reason)
            status, title, message = _ERROR_PAGES[err.reason]
            return _page(status, title, message, firm=firm)

    @router.get("/links/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm(token: str) -> HTMLResponse:
        checked = claims_or_page(token)
        if isinstance(checked, HTMLResponse):
            return checked
        claims, _ = checked
        question, label = describe(claims, config)
        if claims.needs_code:
            who = _person(claims)
            question += (
                f" To confirm it is you, we email a one-time code to {who}'s work address: "
                "ask for it below, then type it in."
            )
            return _page(200, label, question, firm=firm, form=_code_forms(label))
        # No action attribute: the form posts back to this very URL.
        form = f'<form method="post"><button type="submit">{html.escape(label)}</button></form>'
        return _page(200, label, question, firm=firm, form=form)

    def _person(claims: LinkClaims) -> str:
        try:
            return config.staff_by_id(claims.staff_id).name
        except KeyError:
            return claims.staff_id

    async def email_code(claims: LinkClaims, key: str, label: str) -> HTMLResponse:
        try:
            member = config.staff_by_id(claims.staff_id)
        except KeyError:
            return _page(409, "This link's person is gone", "Nothing was done.", firm=firm)
        if send_code is None:
            log.warning("a link needs a code but no email connector is configured")
            return _page(
                503,
                "Codes cannot be sent",
                "This link needs a code by email, and email is not set up. Ask the operations "
                "lead to send the engagement again.",
                firm=firm,
            )
        if not sends.allow(claims.nonce):
            log.info("link code for %s: too many requests", claims.workflow_id)
            return _page(
                429,
                "Code already sent",
                "A code was sent to this address several times in the last hour. Use the "
                "newest email, or try again later.",
                firm=firm,
                form=_code_forms(label, offer_email=False),
            )
        try:
            sent = await send_code(member, claims, show_code(one_time_code(key, claims)))
        except Exception as err:  # the mail service's failure must not become a 500
            log.warning("could not email a link code: %s", type(err).__name__)
            sent = False
        if not sent:
            return _page(
                503,
                "The code could not be sent",
                "Try again in a minute.",
                firm=firm,
                form=_code_forms(label),
            )
        log.info("link code emailed to %s for %s", member.id, claims.workflow_id)
        return _page(
            200,
            "Check your email",
            f"We emailed a code to {mask_email(member.email)}. Type it here to go on.",
            firm=firm,
            form=_code_forms(label, offer_email=False),
        )

    @router.post("/links/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def act(token: str, request: Request) -> HTMLResponse:
        checked = claims_or_page(token)
        if isinstance(checked, HTMLResponse):
            return checked
        claims, key = checked
        code: str | None = None
        if claims.needs_code:
            fields = await read_form(request)
            if fields is None:
                return _page(413, "Too much data", "Nothing was done.", firm=firm)
            _, label = describe(claims, config)
            if fields.get("send_code") == "1":
                return await email_code(claims, key, label)
            code = fields.get("code", "")
            if not code:
                return _page(
                    403,
                    "A code is needed",
                    f"This link acts for {_person(claims)}: ask for the code by email, then "
                    "type it in. Nothing was done.",
                    firm=firm,
                    form=_code_forms(label),
                )
            if not guesses.allow(claims.nonce):
                log.info("link code for %s: too many wrong codes", claims.workflow_id)
                return _page(429, "Too many tries", "Nothing was done. Try again later.", firm=firm)
            if not code_matches(key, claims, code):
                log.info("link code for %s: wrong code", claims.workflow_id)
                return _page(
                    403,
                    "That code is not right",
                    "Nothing was done. Check the newest email and try again.",
                    firm=firm,
                    form=_code_forms(label),
                )
        try:
            outcome = await deliver(claims)
        except Exception as err:  # the consumer's failure must not become a stack trace page
            log.warning(
                "could not deliver link action %s for %s: %s",
                claims.kind,
                claims.workflow_id,
                type(err).__name__,
            )
            return _page(
                503,
                "Not recorded yet",
                "Your answer could not be recorded right now. Try the button again in a minute.",
                firm=firm,
                form=_retry_form(code),
            )
        log.info("link action %s for %s: %s", claims.kind, claims.workflow_id, outcome.result)
        titles = {
            "done": "Done",
            "already_used": "This link was already used",
            "refused": "This can no longer be done",
            "unavailable": "Not recorded yet",
        }
        retry = ""
        if outcome.result == "unavailable":
            retry = _retry_form(code)
        return _page(
            _STATUS[outcome.result],
            titles[outcome.result],
            outcome.message,
            firm=firm,
            form=retry,
        )

    return router


def sendgrid_code_sender(config: FirmConfig) -> CodeSender | None:
    """Codes by the firm's email connector (SendGrid), or None when it has none."""
    connector = config.connectors.email
    if not isinstance(connector, SendGridConnector):
        return None
    api_key = secret(connector.api_key_env)
    client = SendGridAPIClient(api_key=api_key, host=connector.base_url.rstrip("/"))
    client.client.timeout = 10.0
    firm = config.firm.name

    def send(member: StaffMember, claims: LinkClaims, code: str) -> bool:
        question, _ = describe(claims, config)
        text = (
            f"Your code: {code}\n\n"
            f"It confirms the link you opened: {question}\n"
            "It works only with that link, and only until the link expires.\n\n"
            "If you did not open a dispatch link just now, someone else did: tell your "
            "operations lead, and do not share this code."
        )
        message = {
            "personalizations": [
                {
                    "to": [{"email": member.email, "name": member.name}],
                    "custom_args": {"dispatch_id": claims.workflow_id},
                }
            ],
            "from": {"email": connector.from_email, "name": connector.from_name or firm},
            "subject": f"Your confirmation code: {code}",
            "content": [{"type": "text/plain", "value": text}],
            "categories": ["link-code"],
        }
        try:
            response = client.send(message)
        except (SendGridHTTPError, OSError, http.client.HTTPException) as err:
            log.warning("SendGrid refused a link code: %s", type(err).__name__)
            return False
        return int(response.status_code) in (200, 202)

    async def send_async(member: StaffMember, claims: LinkClaims, code: str) -> bool:
        return await asyncio.to_thread(send, member, claims, code)

    return send_async


__all__ = [
    "CodeSender",
    "Deliver",
    "LinkOutcome",
    "create_links_router",
    "decision_for",
    "link_secret_env",
    "response_for",
    "sendgrid_code_sender",
]
