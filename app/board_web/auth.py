"""Signing in to the board without an identity server: a short-lived link, then a cookie.

The bot (Slack's ``/board`` command) or the operator (``dispatch board --link --as ID``) hands
a partner or manager a link ``{base}/board/signin?t=TOKEN``. Opening it shows a button (chat
clients and mail scanners fetch links to preview them, so GET never signs in); pressing it
exchanges the token, once, for a session in a signed, HttpOnly, SameSite=Strict cookie that
expires. Both tokens are::

    b64url(claims) "." b64url(HMAC-SHA256(secret, purpose "|" b64url(claims)))
    claims = {"s": staff id, "e": expiry (unix s), "n": nonce}

signed, not encrypted, so they hold a staff id only. The purpose ("signin" or "session") is
in the MAC, so a link is never a cookie and a cookie never a link. Forms carry a CSRF token
derived from the session's nonce; the cookie alone cannot act.

The secret is ``DISPATCH_BOARD_SECRET``, read per request (a rotated secret signs everyone
out at once); without it the board answers 503 and no link can be made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import quote

from app.secrets_demo import BOARD_SECRET_ENV
from dispatch.config import FirmConfig, StaffMember, Tier

SECRET_ENV = BOARD_SECRET_ENV
BASE_URL_ENV = "DISPATCH_BOARD_URL"
"""Where people reach the webhook server (behind the firm's TLS proxy); default: loopback."""
LINK_TTL = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=8)
CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of ours the clock of the process that made a link may be (the CLI's, say)."""
COOKIE = "dispatch_board"
MIN_SECRET_LENGTH = 16
MAX_TOKEN = 1024
SIGNIN_TIERS = frozenset({Tier.PARTNER, Tier.MANAGER})
"""Who may open the board: it shows every engagement, client names on its detail pages."""

Purpose = Literal["signin", "session"]
Reason = Literal["expired", "forged", "malformed", "used"]
_STAFF_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class BoardAuthError(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAllowed(Exception):
    """This person may not have a board link; the message says why (safe to show)."""


def board_secret() -> str | None:
    value = os.environ.get(SECRET_ENV, "")
    return value if len(value) >= MIN_SECRET_LENGTH else None


def base_url() -> str:
    found = os.environ.get(BASE_URL_ENV)
    if found:
        return found.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('DISPATCH_PORT', '8000')}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, purpose: Purpose, body: str) -> str:
    return _b64(hmac.new(key.encode(), f"{purpose}|{body}".encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class Claims:
    staff_id: str
    expires: datetime
    nonce: str


def sign(key: str, purpose: Purpose, staff_id: str, expires: datetime) -> str:
    claims = {"s": staff_id, "e": int(expires.timestamp()), "n": secrets.token_urlsafe(18)}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_mac(key, purpose, body)}"


_TTL: dict[Purpose, timedelta] = {"signin": LINK_TTL, "session": SESSION_TTL}


def verify(key: str, purpose: Purpose, token: str, now: datetime) -> Claims:
    """The token's claims; ``BoardAuthError`` when forged, expired or damaged.

    Claims are checked even under a good signature (a signing bug or a leaked secret must
    not turn into a 500 or an everlasting session): ids whole-string, the expiry an integer
    no later than the purpose's lifetime from now."""
    if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
        raise BoardAuthError("malformed")
    body, mac = token.split(".")
    if not hmac.compare_digest(mac.encode(), _mac(key, purpose, body).encode()):
        raise BoardAuthError("forged")
    try:
        claims = json.loads(_unb64(body).decode("utf-8"))  # ours: UTF-8, nothing else
        staff_id, expiry, nonce = claims["s"], claims["e"], claims["n"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BoardAuthError("malformed") from None
    if not (
        isinstance(staff_id, str)
        and _STAFF_ID.fullmatch(staff_id)
        and type(expiry) is int  # not a bool, not a float
        and isinstance(nonce, str)
        and _NONCE.fullmatch(nonce)
    ):
        raise BoardAuthError("malformed")
    # Compared as numbers first: a timestamp outside datetime's range cannot be converted.
    if expiry <= now.timestamp():
        raise BoardAuthError("expired")
    if expiry > (now + _TTL[purpose] + CLOCK_SKEW).timestamp():
        raise BoardAuthError("malformed")
    return Claims(staff_id, datetime.fromtimestamp(expiry, tz=now.tzinfo), nonce)


def may_sign_in(config: FirmConfig, staff_id: str) -> StaffMember:
    try:
        member = config.staff_by_id(staff_id)
    except KeyError:
        raise NotAllowed(f"{staff_id!r} is not on the firm's staff list") from None
    if not member.active:
        raise NotAllowed(f"{staff_id!r} is not active")
    if member.tier not in SIGNIN_TIERS:
        raise NotAllowed("the board is for partners and managers")
    return member


def signin_link(config: FirmConfig, staff_id: str, now: datetime, base: str | None = None) -> str:
    """A link that signs ``staff_id`` in once, within ``LINK_TTL``."""
    may_sign_in(config, staff_id)
    key = board_secret()
    if key is None:
        raise NotAllowed(f"{SECRET_ENV} is not set (at least {MIN_SECRET_LENGTH} characters)")
    token = sign(key, "signin", staff_id, now + LINK_TTL)
    return f"{base or base_url()}/board/signin?t={quote(token)}"


def csrf_token(key: str, session: Claims) -> str:
    return _mac(key, "session", f"csrf:{session.nonce}")


def csrf_ok(key: str, session: Claims, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), csrf_token(key, session).encode())


class UsedLinks:
    """Nonces of links already exchanged (this process): a link signs in once.

    Kept until the link would have expired anyway, so the set stays small."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def first_use(self, claims: Claims, now: datetime) -> bool:
        with self._lock:
            self._seen = {n: e for n, e in self._seen.items() if e > now}
            if claims.nonce in self._seen:
                return False
            self._seen[claims.nonce] = claims.expires
            return True
