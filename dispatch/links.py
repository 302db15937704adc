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

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote

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
RETRY_FORM = '<form method="post"><button type="submit">Try again</button></form>'

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


__all__ = [
    "ACCEPT",
    "PARTNER_ASSIGN",
    "PARTNER_ASSIGN_ANYWAY",
    "REASSIGN",
    "LinkClaims",
    "LinkError",
    "code_matches",
    "derive_nonce",
    "make_link",
    "make_token",
    "mask_email",
    "one_time_code",
    "partner_action",
    "show_code",
    "upload_link",
    "valid_action",
    "verify_link",
]
