"""Signed, expiring action links: Accept / Request reassignment / a partner's pick, by URL.

Surfaces that cannot call us back with an authenticated click (a Teams card posted through a
Workflows webhook only has ``Action.OpenUrl`` buttons) carry these links instead. A link is
``{base}/links/{token}``; the token names the engagement workflow, the staff member the link
was issued to (a staff id, never an email), the action, an expiry and a nonce, and is signed
with HMAC-SHA256 keyed by the link secret (``DISPATCH_LINK_SECRET`` by default)::

    token   = b64url(payload) "." b64url(HMAC-SHA256(secret, b64url(payload)))
    payload = {"v": 1, "w": workflow id, "s": staff id, "a": action, "e": expiry (unix s),
               "n": nonce}

(base64url without padding). The payload is signed, not encrypted: anyone holding the link can
read it, so it holds ids only.

**Single use is the consumer's job, not this module's.** ``verify_link`` is pure: it proves who
issued the link, to whom, for what and until when. Whoever acts on the claims (the ``deliver``
callable given to ``create_links_router``) must use the nonce (``LinkClaims.event_id``) as the
Temporal Update id or seen-set key, so a second click — or the same click retried — counts
once and is answered as already used (``LinkOutcome.already_used`` → HTTP 409).

A link is a bearer capability: whoever opens it acts as the staff member it was issued to.
Short expiry, single use and the confirmation step below limit the damage of a forwarded link;
they do not replace a sign-in.

``GET /links/{token}`` never acts: chat clients and mail scanners fetch links to build previews,
so GET only shows a confirmation page whose button POSTs back to the same URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from dispatch.config import FirmConfig, TeamsConnector, secret
from dispatch.models import AssignmentResponse, PartnerDecision

log = logging.getLogger("dispatch.links")

TOKEN_VERSION = 1
ACCEPT = "accept"
REASSIGN = "reassign"
PARTNER_ASSIGN = "partner_assign:"
"""Prefix: ``partner_assign:<candidate staff id>`` — the partner assigns that candidate."""
PARTNER_ASSIGN_ANYWAY = "partner_assign_anyway:"
"""Prefix: the partner assigns the candidate past their capacity, explicitly."""
MAX_TOKEN_LENGTH = 2048
"""Far above any token we issue (a 200-char workflow id gives ~450); longer input is junk."""
DEFAULT_LINK_SECRET_ENV = "DISPATCH_LINK_SECRET"
RETRY_AFTER_SECONDS = "5"
_RETRY_FORM = '<form method="post"><button type="submit">Try again</button></form>'

_STAFF_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

Reason = Literal["expired", "forged", "malformed"]


class LinkError(Exception):
    """A token that must not be acted on; ``reason`` is ``expired``, ``forged`` or ``malformed``."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True)
class LinkClaims:
    workflow_id: str
    staff_id: str
    """Who the link was issued to (the assignee, or the deciding partner)."""
    action: str
    expires_at: datetime
    nonce: str

    @property
    def event_id(self) -> str:
        """The single-use key: the Update id / seen-set entry for this link."""
        return f"link:{self.nonce}"

    @property
    def kind(self) -> Literal["accept", "reassign", "partner_assign"]:
        if self.action == ACCEPT:
            return "accept"
        if self.action == REASSIGN:
            return "reassign"
        return "partner_assign"

    @property
    def candidate_id(self) -> str | None:
        """The staff member a partner link assigns; None for Accept / Request reassignment."""
        for prefix in (PARTNER_ASSIGN_ANYWAY, PARTNER_ASSIGN):
            if self.action.startswith(prefix):
                return self.action[len(prefix) :]
        return None

    @property
    def override_capacity(self) -> bool:
        return self.action.startswith(PARTNER_ASSIGN_ANYWAY)


def valid_action(action: str) -> bool:
    if action in (ACCEPT, REASSIGN):
        return True
    for prefix in (PARTNER_ASSIGN_ANYWAY, PARTNER_ASSIGN):
        if action.startswith(prefix):
            return _STAFF_ID.match(action[len(prefix) :]) is not None
    return False


def partner_action(candidate_id: str, *, anyway: bool = False) -> str:
    return (PARTNER_ASSIGN_ANYWAY if anyway else PARTNER_ASSIGN) + candidate_id


# --- tokens ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret_value: str, payload: str) -> bytes:
    return hmac.new(secret_value.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).digest()


def derive_nonce(secret_value: str, *parts: str) -> str:
    """A nonce that is the same every time for the same parts (e.g. workflow, staff, action,
    issue time), so a message rebuilt on a retry carries identical links. Keyed with the link
    secret so nobody can predict it from the ids alone."""
    message = "\x1f".join(("nonce", *parts)).encode("utf-8")
    return _b64(hmac.new(secret_value.encode("utf-8"), message, hashlib.sha256).digest()[:12])


def make_token(
    secret_value: str,
    *,
    workflow_id: str,
    staff_id: str,
    action: str,
    ttl: timedelta,
    now: datetime,
    nonce: str | None = None,
) -> str:
    if not secret_value:
        raise ValueError("the link secret is empty")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not _WORKFLOW_ID.match(workflow_id):
        raise ValueError("workflow_id is not a valid workflow id")
    if not _STAFF_ID.match(staff_id):
        raise ValueError("staff_id is not a valid staff id")
    if not valid_action(action):
        raise ValueError(f"unknown link action {action!r}")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    chosen = nonce if nonce is not None else secrets.token_urlsafe(12)
    if not _NONCE.match(chosen):
        raise ValueError("nonce must be 8-64 base64url characters")
    expires = int((now + ttl).timestamp())
    body = {
        "v": TOKEN_VERSION,
        "w": workflow_id,
        "s": staff_id,
        "a": action,
        "e": expires,
        "n": chosen,
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    return f"{payload}.{_b64(_sign(secret_value, payload))}"


def make_link(
    secret: str,
    base_url: str,
    *,
    workflow_id: str,
    staff_id: str,
    action: str,
    ttl: timedelta,
    now: datetime,
    nonce: str | None = None,
) -> str:
    """``{base_url}/links/{token}``. Without ``nonce`` a random one is used."""
    token = make_token(
        secret,
        workflow_id=workflow_id,
        staff_id=staff_id,
        action=action,
        ttl=ttl,
        now=now,
        nonce=nonce,
    )
    return f"{base_url.rstrip('/')}/links/{token}"


def verify_link(secret: str, token: str, now: datetime) -> LinkClaims:
    """The claims of a genuine, unexpired token; ``LinkError`` otherwise.

    The signature is checked (constant time) before the payload is even parsed, so nothing an
    attacker writes is interpreted. An empty secret verifies nothing.
    """
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise LinkError("malformed", "the link is incomplete or damaged")
    payload, _, signature = token.partition(".")
    try:
        given = _unb64(signature)
        raw = _unb64(payload)
    except (ValueError, binascii.Error):
        raise LinkError("malformed", "the link is incomplete or damaged") from None
    if len(given) != hashlib.sha256().digest_size or not payload:
        raise LinkError("malformed", "the link is incomplete or damaged")
    if not secret or not hmac.compare_digest(_sign(secret, payload), given):
        raise LinkError("forged", "the link's signature is not valid")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise LinkError("malformed", "the link's content cannot be read") from None
    claims = _claims(body)
    if now >= claims.expires_at:
        raise LinkError("expired", "the link has expired")
    return claims


def _claims(body: object) -> LinkClaims:
    """Claims from a signed payload; only our own (older or newer) formats can fail here."""
    if not isinstance(body, dict) or body.get("v") != TOKEN_VERSION:
        raise LinkError("malformed", "the link was made by an unknown version")
    workflow_id, staff_id, action = body.get("w"), body.get("s"), body.get("a")
    expires, nonce = body.get("e"), body.get("n")
    if not (
        isinstance(workflow_id, str)
        and _WORKFLOW_ID.match(workflow_id)
        and isinstance(staff_id, str)
        and _STAFF_ID.match(staff_id)
        and isinstance(action, str)
        and valid_action(action)
        and isinstance(expires, int)
        and isinstance(nonce, str)
        and _NONCE.match(nonce)
    ):
        raise LinkError("malformed", "the link's content is incomplete")
    return LinkClaims(
        workflow_id=workflow_id,
        staff_id=staff_id,
        action=action,
        expires_at=datetime.fromtimestamp(expires, UTC),
        nonce=nonce,
    )


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


def create_links_router(
    config: FirmConfig, deliver: Deliver, *, clock: Callable[[], datetime] = _utc_now
) -> APIRouter:
    """``GET /links/{token}`` (confirmation page) and ``POST /links/{token}`` (act)."""
    router = APIRouter(tags=["links"])
    env_name = link_secret_env(config)
    firm = config.firm.name

    def claims_or_page(token: str) -> LinkClaims | HTMLResponse:
        # Read per request: a rotated secret takes effect without a restart.
        key = secret(env_name, required=False)
        if not key:
            log.warning("action links are disabled: %s is not set", env_name)
            return _page(503, "Links are not available", "Try again later.", firm=firm)
        try:
            return verify_link(key, token, clock())
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
        question, label = describe(checked, config)
        # No action attribute: the form posts back to this very URL.
        form = f'<form method="post"><button type="submit">{html.escape(label)}</button></form>'
        return _page(200, label, question, firm=firm, form=form)

    @router.post("/links/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def act(token: str) -> HTMLResponse:
        checked = claims_or_page(token)
        if isinstance(checked, HTMLResponse):
            return checked
        try:
            outcome = await deliver(checked)
        except Exception as err:  # the consumer's failure must not become a stack trace page
            log.warning(
                "could not deliver link action %s for %s: %s",
                checked.kind,
                checked.workflow_id,
                type(err).__name__,
            )
            return _page(
                503,
                "Not recorded yet",
                "Your answer could not be recorded right now. Try the button again in a minute.",
                firm=firm,
                form=_RETRY_FORM,
            )
        log.info("link action %s for %s: %s", checked.kind, checked.workflow_id, outcome.result)
        titles = {
            "done": "Done",
            "already_used": "This link was already used",
            "refused": "This can no longer be done",
            "unavailable": "Not recorded yet",
        }
        retry = ""
        if outcome.result == "unavailable":
            retry = _RETRY_FORM
        return _page(
            _STATUS[outcome.result],
            titles[outcome.result],
            outcome.message,
            firm=firm,
            form=retry,
        )

    return router


__all__ = [
    "ACCEPT",
    "PARTNER_ASSIGN",
    "PARTNER_ASSIGN_ANYWAY",
    "REASSIGN",
    "Deliver",
    "LinkClaims",
    "LinkError",
    "LinkOutcome",
    "create_links_router",
    "decision_for",
    "derive_nonce",
    "make_link",
    "make_token",
    "partner_action",
    "response_for",
    "verify_link",
]
