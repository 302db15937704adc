"""Signed, expiring action links: Accept / Request reassignment / a partner's pick, by URL.

Surfaces that cannot call us back with an authenticated click (a Teams card posted through a
Workflows webhook only has ``Action.OpenUrl`` buttons) carry these links instead. A link is
``{base}/links/{token}``; the token names the engagement workflow, the staff member the link
was issued to (a staff id, never an email), the action, an expiry and a nonce, and is signed
with HMAC-SHA256 keyed by the link secret (``DISPATCH_LINK_SECRET`` by default)::

    token   = b64url(payload) "." b64url(HMAC-SHA256(secret, b64url(payload)))
    payload = {"v": 1, "w": workflow id, "s": staff id, "a": action, "e": expiry (unix s),
               "n": nonce, "c": 1 when a one-time code by email is required (optional)}

(base64url without padding). The payload is signed, not encrypted: anyone holding the link can
read it, so it holds ids only.

**Single use is the consumer's job, not this module's.** ``verify_link`` is pure: it proves who
issued the link, to whom, for what and until when. Whoever acts on the claims (the ``deliver``
callable given to ``create_links_router``) must use the nonce (``LinkClaims.event_id``) as the
Temporal Update id or seen-set key, so a second click — or the same click retried — counts
once and is answered as already used (``LinkOutcome.already_used`` → HTTP 409).

**Bound to the person by a one-time code.** A card posted through a Teams Workflows webhook
lands in a channel, where everyone sees the same links, and nothing tells us who opens one:
the webhook answers 202 with no body, ``Action.OpenUrl`` is a plain browser navigation, and
the callbacks that carry the clicker's identity (``Action.Submit`` / ``Action.Execute``) need
a Teams bot. So a link alone is a bearer capability. When the firm has an email connector,
links are issued with ``"c": 1``: the confirmation page then asks for a code that is emailed,
on request, to the address on file for the staff member the link was issued to. Whoever else
opens the link in the channel can ask for the code, but it goes to that person's mailbox, not
to them. The code is derived from the link secret and the nonce (nothing to store); requests
for it and wrong guesses are throttled per link. Without an email connector links stay bearer
links (short expiry, single use, a confirmation step); the README says what that means.

``GET /links/{token}`` never acts: chat clients and mail scanners fetch links to build previews,
so GET only shows a confirmation page whose button POSTs back to the same URL (with
``send_code=1`` to have the code emailed, with ``code=...`` to act).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import http.client
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient

from dispatch import limits
from dispatch.config import FirmConfig, SendGridConnector, StaffMember, TeamsConnector, secret
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

CODE_LENGTH = 8
"""Crockford base32: 40 bits, typed as ``XXXX-XXXX``."""
CODE_SENDS_PER_HOUR = 3
CODE_GUESSES_PER_HOUR = 10
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CODE_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})

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
    needs_code: bool = False
    """True when acting needs the one-time code emailed to the staff member."""

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
    needs_code: bool = False,
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
    if needs_code:
        body["c"] = 1
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
    needs_code: bool = False,
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
        needs_code=needs_code,
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
    expires, nonce, needs_code = body.get("e"), body.get("n"), body.get("c", 0)
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
        and needs_code in (0, 1)
    ):
        raise LinkError("malformed", "the link's content is incomplete")
    return LinkClaims(
        workflow_id=workflow_id,
        staff_id=staff_id,
        action=action,
        expires_at=datetime.fromtimestamp(expires, UTC),
        nonce=nonce,
        needs_code=needs_code == 1,
    )


# --- the one-time code -----------------------------------------------------------------------


def one_time_code(secret_value: str, claims: LinkClaims) -> str:
    """The code for this link: keyed with the link secret, so only our emails can carry it."""
    message = "\x1f".join(("code", claims.nonce, claims.staff_id)).encode("utf-8")
    digest = hmac.new(secret_value.encode("utf-8"), message, hashlib.sha256).digest()
    number = int.from_bytes(digest[:5], "big")
    chars = [_CROCKFORD[(number >> (5 * i)) & 31] for i in range(CODE_LENGTH)]
    return "".join(reversed(chars))


def code_matches(secret_value: str, claims: LinkClaims, typed: str) -> bool:
    """Compare what the person typed, forgiving case, spaces, dashes and O/0, I/L/1."""
    cleaned = re.sub(r"[\s-]", "", typed).upper().translate(_CODE_READS_AS)
    return hmac.compare_digest(cleaned.encode(), one_time_code(secret_value, claims).encode())


def show_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


def upload_link(template: str, client_id: str) -> str:
    """The client's upload link with the client id quoted for a URL (no '/' or '..' can
    change the path, whatever the PM system calls its clients)."""
    return template.format(client_id=quote(client_id, safe=""))


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
        return _RETRY_FORM
    hidden = f'<input type="hidden" name="code" value="{html.escape(code)}">'
    return f'<form method="post">{hidden}<button type="submit">Try again</button></form>'


async def _form(request: Request) -> dict[str, str] | None:
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
            fields = await _form(request)
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
    "ACCEPT",
    "PARTNER_ASSIGN",
    "PARTNER_ASSIGN_ANYWAY",
    "REASSIGN",
    "CodeSender",
    "Deliver",
    "LinkClaims",
    "LinkError",
    "LinkOutcome",
    "code_matches",
    "create_links_router",
    "decision_for",
    "derive_nonce",
    "make_link",
    "make_token",
    "one_time_code",
    "partner_action",
    "response_for",
    "sendgrid_code_sender",
    "show_code",
    "upload_link",
    "verify_link",
]
