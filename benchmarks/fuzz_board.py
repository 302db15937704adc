"""Property-based fuzz of the web dispatch board (``/board``), against a real Temporal server.

Run by ``python -m benchmarks.fuzz_routes`` (before the webhook cases, on the same fresh dev
server) and by tests/workflows/test_fuzz_routes.py.

Generates requests for every board route — sign-in links (valid, reused, expired, forged,
tampered, signed with odd claims, junk, huge, non-ASCII, NUL), sign-out, the board with odd
filters, an engagement's page and candidates with hostile ids, a partner's decision and due-date
move with odd forms, dates, origins, content types and sizes, the audit export with odd
dates, the static files with traversal names — with a session cookie of a deciding partner,
of a manager (may look, may not decide), none, or a forged, tampered, expired or otherwise
refused one.

Properties checked on every case:

- no 5xx (Temporal is up; nothing here may make it look otherwise);
- no traceback in any answer;
- a decision reaches Temporal (an Update, seen by a client interceptor on the real client)
  only from a deciding partner's session with the session's CSRF token, from our own origin,
  and as that partner;
- a session cookie is issued only for a valid link, once;
- each answer is the one the route promises (401 without a session, 404 for an unknown
  engagement, 409 for a partner's well-formed decision on an engagement that does not run,
  ...);
- no client data (the fuzz's marker) and no token in any log line.

A known finding whose fix is still to come can be listed in ``PENDING``: reported apart, it
does not fail the run (none is listed now).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import quote, unquote, urlencode

import httpx
from hypothesis import strategies as st
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowUpdateHandle,
)

from app.board_web.auth import COOKIE, SECRET_ENV, Purpose, csrf_token, sign, verify
from dispatch.config import FirmConfig, Tier
from dispatch.models import DispatchStatus, DueDateMove, PartnerDecision

Session = Literal[
    "partner",
    "manager",
    "none",
    "wrong_key",
    "tampered",
    "expired",
    "not_allowed",
    "unknown_staff",
    "link_token",
    "odd_claims",
    "text",
]
SIGNED_IN: frozenset[str] = frozenset({"partner", "manager"})
Csrf = Literal["valid", "stale", "none", "text"]
Token = Literal[
    "valid", "reused", "expired", "wrong_key", "tampered", "session", "not_allowed", "odd", "text"
]
Origin = Literal["none", "self", "self_referer", "evil", "null", "broken", "evil_referer"]
Body = Literal["form", "text_plain", "json_type", "no_type", "json", "bytes", "oversized"]
FORM_BODIES: frozenset[str] = frozenset({"form", "text_plain", "json_type", "no_type"})
"""Bodies the board reads as a form (it reads the body, whatever the Content-Type says)."""

BASE = "http://starter"
FUZZ_SOURCE = "fzb"
"""Engagement ids the fuzz aims at: never started, so every one is unknown to Temporal."""
WRONG_KEY = "not-the-board-secret-000000"
LINK_BODY = 4 * 1024

_ORIGINS: dict[str, tuple[str, str] | None] = {
    "none": None,
    "self": ("Origin", BASE),
    "self_referer": ("Referer", f"{BASE}/board/e/x"),
    "evil": ("Origin", "https://evil.example"),
    "null": ("Origin", "null"),
    "broken": ("Origin", "http://["),
    "evil_referer": ("Referer", "https://evil.example/board"),
}
OWN_ORIGINS = frozenset({"none", "self", "self_referer"})


@dataclass(frozen=True)
class BoardCase:
    """One request, described symbolically: tokens, cookies and CSRF values are made when it
    is sent (they expire), from what was drawn here (so the draw stays derandomized)."""

    route: str
    """Which route it aims at (a label: the path is ``path``)."""
    method: Literal["GET", "POST"]
    path: str
    query: tuple[tuple[str, str], ...] = ()
    session: Session = "none"
    variant: int = 0
    """Picks among tampering, odd claims and such (taken modulo their count)."""
    text: str = ""
    """The raw text for ``text`` sessions and tokens."""
    token: Token | None = None
    fields: tuple[tuple[str, str], ...] = ()
    csrf: Csrf = "none"
    body: Body = "form"
    raw: bytes = b""
    origin: Origin = "none"
    live: bool = False
    target: str = ""
    """The engagement id or file name in the path, before escaping."""
    kind: str = "mutated"
    """``valid`` when every part is well-formed (the route's promised answer is checked)."""


# --- hostile values --------------------------------------------------------------------------

MARKER = "Pq7Mark"
"""As in benchmarks.fuzz_routes: client data carries it; no log line may."""

_HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "line\nbreak",
    "\r\n",
    "bidi \u202eevil",
    "\u2066x\u2069",
    "\u200d",
    "emoji 🧾",
    "é",
    "../../etc/passwd",
    "..",
    ".",
    "a/b",
    "%2e%2e%2f",
    "%00",
    "%zz",
    "%ff",
    "<script>x</script>",
    "'\"><",
    'x" OR WorkflowType="DispatcherWorkflow',
    "x" * 101,
    "x" * 1025,
    "x" * 5000,
    f"cl-{MARKER}",
    f"Client {MARKER} & Co",
]
hostile_text = st.one_of(st.sampled_from(_HOSTILE), st.text(max_size=24))
_DATES = [
    "2027-01-04",
    "2026-12-01",
    "2027-02-28",
    "2027-02-30",
    "0001-01-01",
    "1970-01-01",
    "9999-12-31",
    "9999-12-30",
    "2027-1-4",
    "20270104",
    "2027-W01-1",
    "2027-01-04T00:00:00",
    "+2027-01-04",
    "\uff12\uff10\uff12\uff17-01-04",  # full-width digits
    "today",
]
odd_dates = st.one_of(st.sampled_from(_DATES), hostile_text)


def _valid_id(n: int) -> str:
    return f"engagement-{FUZZ_SOURCE}-E-{n}"


hostile_ids = st.one_of(
    st.integers(0, 10**6).map(_valid_id),
    st.integers(0, 10**6).map(lambda n: _valid_id(n) + "\n"),
    st.sampled_from(
        [
            "engagement-",
            "engagement-fzb-",
            "engagement-FZB-E1",
            "engagement-fzb-" + "x" * 129,
            "engagement-fzb-E1/../../audit.csv",
            "engagement-fzb-E1\x00",
            "engagement-fzb-\u202eE1",
            "dispatcher-harbor",
            "%2e%2e",
            "e",
        ]
    ),
    hostile_text,
)


def _path_part(value: str) -> str:
    """A path segment as sent: '/' stays (a traversal attempt), the rest is escaped."""
    return quote(value, safe="/%")


# --- the generators --------------------------------------------------------------------------

_SESSIONS: list[Session] = ["partner", "partner", "partner", "manager", *get_args(Session)]
"""Every kind once; a signed-in partner (the one who may act) most often."""
sessions = st.sampled_from(_SESSIONS)
variants = st.integers(0, 1000)
_CSRFS: list[Csrf] = ["valid", "valid", "valid", "valid", "stale", "none", "text"]
_ORIGIN_LIST: list[Origin] = [
    "none",
    "none",
    "self",
    "self",
    "self_referer",
    "evil",
    "null",
    "broken",
    "evil_referer",
]
_BODIES: list[Body] = [
    *("form", "form", "form", "form", "form", "form"),
    *("text_plain", "json_type", "no_type", "json", "bytes", "oversized"),
]


@st.composite
def _signed_in_part(draw: st.DrawFn) -> dict[str, Any]:
    return {"session": draw(sessions), "variant": draw(variants), "text": draw(hostile_text)}


@st.composite
def signin_cases(draw: st.DrawFn) -> BoardCase:
    token: Token = draw(
        st.sampled_from(
            [
                *("valid", "valid", "valid", "reused", "expired", "wrong_key", "tampered"),
                *("session", "not_allowed", "odd", "text", "text"),
            ]
        )
    )
    text = draw(hostile_text)
    variant = draw(variants)
    if draw(st.booleans()):
        shape = draw(st.sampled_from(["t", "t", "t", "none", "twice", "other"]))
        query: tuple[tuple[str, str], ...] = {
            "t": (("t", "{token}"),),
            "none": (),
            "twice": (("t", "{token}"), ("t", text)),
            "other": (("token", "{token}"),),
        }[shape]
        kind = "valid" if shape == "t" else "mutated"
        return BoardCase(
            "GET /board/signin", "GET", "/board/signin", query, token=token, text=text,
            variant=variant, kind=kind,
        )  # fmt: skip
    body: Body = draw(st.sampled_from(_BODIES))
    fields: tuple[tuple[str, str], ...] = (("t", "{token}"),)
    if draw(st.integers(0, 4)) == 0:
        fields = draw(st.sampled_from([(), (("t", "{token}"), ("t", text)), (("t", text),)]))
    return BoardCase(
        "POST /board/signin", "POST", "/board/signin", token=token, text=text, variant=variant,
        fields=fields, body=body, origin=draw(st.sampled_from(_ORIGIN_LIST)),
        kind="valid" if body == "form" and fields == (("t", "{token}"),) else "mutated",
    )  # fmt: skip


@st.composite
def signout_cases(draw: st.DrawFn) -> BoardCase:
    signed = draw(_signed_in_part())
    return BoardCase(
        "POST /board/signout", "POST", "/board/signout", **signed,
        csrf=draw(st.sampled_from(_CSRFS)), body=draw(st.sampled_from(_BODIES)),
        origin=draw(st.sampled_from(_ORIGIN_LIST)), fields=(("csrf", "{csrf}"),),
    )  # fmt: skip


@st.composite
def board_cases(draw: st.DrawFn, config: FirmConfig) -> BoardCase:
    names = ["status", "person", "client", "service", "due_from", "due_to"]
    valid_values: dict[str, st.SearchStrategy[str]] = {
        "status": st.sampled_from([s.value for s in DispatchStatus]),
        "person": st.sampled_from([s.id for s in config.staff]),
        "client": st.sampled_from([f"cl-{MARKER.lower()}", "cl-northwind", "cl-x"]),
        "service": st.sampled_from([t.id for t in config.service_types]),
        "due_from": st.sampled_from(["2027-01-01", "2027-02-01"]),
        "due_to": st.sampled_from(["2027-03-01", "2027-12-31"]),
    }
    valid = draw(st.integers(0, 2)) == 0
    query: list[tuple[str, str]] = []
    if valid:
        for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
            query.append((name, draw(valid_values[name])))
    else:
        for _ in range(draw(st.integers(1, 6))):
            name = draw(st.one_of(st.sampled_from(names), hostile_text))
            value = draw(st.one_of(valid_values.get(name, hostile_text), hostile_text, odd_dates))
            query.append((name, value))
    return BoardCase(
        "GET /board", "GET", "/board", tuple(query), **draw(_signed_in_part()),
        live=draw(st.booleans()), kind="valid" if valid else "mutated",
    )  # fmt: skip


@st.composite
def engagement_cases(draw: st.DrawFn) -> BoardCase:
    workflow_id = draw(hostile_ids)
    candidates = draw(st.booleans())
    path = f"/board/e/{_path_part(workflow_id)}" + ("/candidates" if candidates else "")
    query: tuple[tuple[str, str], ...] = ()
    if draw(st.booleans()):
        query = (("outcome", draw(st.one_of(hostile_text, st.just(f"Assigned {MARKER}")))),)
    route = "GET /board/e/{id}/candidates" if candidates else "GET /board/e/{id}"
    return BoardCase(
        route, "GET", path, query, **draw(_signed_in_part()), live=draw(st.booleans()),
        target=workflow_id,
    )  # fmt: skip


@st.composite
def decide_cases(draw: st.DrawFn, config: FirmConfig) -> BoardCase:
    """A partner's decision: well-formed (the Update is sent) or with something wrong."""
    staff = draw(st.sampled_from([s.id for s in config.staff]))
    event = draw(st.from_regex(r"\A[A-Za-z0-9_-]{16,64}\Z"))
    fields: list[tuple[str, str]] = [("staff_id", staff), ("event", event), ("csrf", "{csrf}")]
    if draw(st.booleans()):
        fields.append(("anyway", "1"))
    odd = st.one_of(
        hostile_text, st.sampled_from([f"{MARKER}-x", event + "\n", "1 ", "ava", "nobody"])
    )
    return _partner_form(draw, "decide", fields, ["staff_id", "event", "anyway"], odd)


@st.composite
def due_cases(draw: st.DrawFn) -> BoardCase:
    """A partner moving a due date: a date the board accepts (the Update is sent) or with
    something wrong (no date, a date in the past or in 9999, not a date, a damaged event)."""
    due = date.today() + timedelta(days=draw(st.integers(2, 400)))
    event = draw(st.from_regex(r"\A[A-Za-z0-9_-]{16,64}\Z"))
    fields = [("due_date", due.isoformat()), ("event", event), ("csrf", "{csrf}")]
    odd = st.one_of(
        odd_dates,
        st.sampled_from(["2020-01-31", "9999-12-31", "", due.isoformat() + "\n", event + "\n"]),
    )
    return _partner_form(draw, "due", fields, ["due_date", "due_date", "event"], odd)


def _partner_form(
    draw: st.DrawFn,
    action: str,
    fields: list[tuple[str, str]],
    damageable: list[str],
    odd: st.SearchStrategy[str],
) -> BoardCase:
    """One of a partner's forms, well-formed (a third of them) or with one to three fields
    damaged, dropped, added or the engagement id made hostile."""
    valid = draw(st.integers(0, 2)) == 0
    workflow_id = _valid_id(draw(st.integers(0, 10**6)))
    if not valid:
        for _ in range(draw(st.integers(1, 3))):
            what = draw(st.sampled_from([*damageable, "extra", "drop", "id"]))
            if what == "id":
                workflow_id = draw(hostile_ids)
            elif what == "drop" and fields:
                fields.pop(draw(st.integers(0, len(fields) - 1)))
            elif what == "extra":
                fields.append((draw(hostile_text), draw(hostile_text)))
            else:
                fields.insert(draw(st.integers(0, len(fields))), (what, draw(odd)))
    return BoardCase(
        f"POST /board/e/{{id}}/{action}", "POST", f"/board/e/{_path_part(workflow_id)}/{action}",
        **draw(_signed_in_part()), fields=tuple(fields), csrf=draw(st.sampled_from(_CSRFS)),
        body=draw(st.sampled_from(_BODIES)), origin=draw(st.sampled_from(_ORIGIN_LIST)),
        target=workflow_id, kind="valid" if valid else "mutated",
    )  # fmt: skip


_CALENDAR_EDGES = [date(1, 1, 1), date(999, 12, 1), date(1969, 12, 20), date(9999, 12, 1)]


@st.composite
def audit_cases(draw: st.DrawFn) -> BoardCase:
    fmt = draw(st.sampled_from(["csv", "csv", "json", "json", "xml", "CSV", "csv%00", "c%2Fsv"]))
    mode = draw(st.sampled_from(["valid", "odd", "odd", "edge"]))
    valid = mode == "valid"
    query: list[tuple[str, str]] = []
    if mode == "edge":  # a window the checks allow, where the calendar ends
        first = draw(
            st.sampled_from(
                [date(1, 1, 1), date(999, 12, 1), date(1969, 12, 20), date(9999, 12, 1)]
            )
        )
        last = first + timedelta(days=draw(st.integers(0, 30)))
        query = [("from", first.isoformat()), ("to", last.isoformat())]
    elif valid:
        start = draw(st.integers(0, 300))
        span = draw(st.integers(0, 365))
        first = datetime(2026, 1, 1) + timedelta(days=start)
        query = [("from", f"{first:%Y-%m-%d}"), ("to", f"{first + timedelta(days=span):%Y-%m-%d}")]
    else:
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(["from", "to", "from", "to", "fmt"]))
            query.append((name, draw(odd_dates)))
    return BoardCase(
        "GET /board/audit.{fmt}", "GET", f"/board/audit.{fmt}", tuple(query),
        **draw(_signed_in_part()), target=fmt, kind="mutated" if mode == "odd" else mode,
    )  # fmt: skip


@st.composite
def static_cases(draw: st.DrawFn) -> BoardCase:
    name = draw(
        st.one_of(
            st.sampled_from(
                [
                    *("board.js", "board.css", "BOARD.JS", "board.js%00", "board.js.map"),
                    *("auth.py", "..%2Fauth.py", "%2e%2e%2froutes.py", "..%5Cauth.py", "."),
                    *("../auth.py", "..%2F..%2F..%2Fpyproject.toml", "templates%2Fbase.html"),
                    "board.js%20",
                ]
            ),
            hostile_text,
        )
    )
    return BoardCase(
        "GET /board/static/{name}", "GET", f"/board/static/{_path_part(name)}",
        **draw(_signed_in_part()), target=name,
    )  # fmt: skip


def board_case_strategy(config: FirmConfig) -> st.SearchStrategy[BoardCase]:
    return st.one_of(
        signin_cases(),
        signin_cases(),
        signout_cases(),
        board_cases(config),
        engagement_cases(),
        decide_cases(config),
        decide_cases(config),  # the one that acts: drawn twice as often
        due_cases(),
        audit_cases(),
        static_cases(),
    )


# --- making the tokens -----------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def signed_raw(key: str, purpose: str, body: bytes) -> str:
    """A token over any claims bytes, made the way the docstring of ``auth`` says: what a
    bug elsewhere or a leaked secret could produce, which ``verify`` must still survive."""
    encoded = _b64(body)
    mac = hmac.new(key.encode(), f"{purpose}|{encoded}".encode(), hashlib.sha256).digest()
    return f"{encoded}.{_b64(mac)}"


def _claims(staff: str, expires: int, nonce: str | None = None) -> dict[str, Any]:
    return {"s": staff, "e": expires, "n": nonce or secrets.token_urlsafe(18)}


def odd_claims(staff: str, now: int) -> list[bytes]:
    """Claims no honest signer makes (each checked once the signature holds)."""
    later = now + 3600
    dumps: Callable[[Any], bytes] = lambda v: json.dumps(v).encode()  # noqa: E731
    return [
        dumps(_claims(staff, 10**20)),
        dumps(_claims(staff, -(10**20))),
        dumps(_claims(staff, 2**63)),
        dumps(_claims(staff, 10**15)),
        dumps(_claims(staff, 253402300800)),  # 10000-01-01: one past datetime's range
        dumps({**_claims(staff, later), "e": 1e300}),
        dumps({**_claims(staff, later), "e": float(later)}),
        dumps({**_claims(staff, later), "e": True}),
        dumps({**_claims(staff, later), "e": str(later)}),
        dumps({**_claims(staff, later), "e": None}),
        dumps({**_claims(staff, later), "s": [staff]}),
        dumps({**_claims(staff, later), "s": staff + "\n"}),
        dumps({**_claims(staff, later), "s": staff.upper()}),
        dumps({**_claims(staff, later), "s": staff + "\x00"}),
        dumps({**_claims(staff, later), "s": ""}),
        dumps({**_claims(staff, later), "n": "short"}),
        dumps({**_claims(staff, later), "n": "a" * 16 + "\n"}),
        dumps({**_claims(staff, later), "n": 5}),
        dumps({"s": staff, "e": later}),
        dumps([staff, later]),
        dumps("claims"),
        dumps(None),
        dumps(10**400),
        b"{not json",
        b"\xff\xfe\x00",
        b"",
        json.dumps(_claims(staff, later)).encode("utf-16"),
        b'{"s": "' + staff.encode() + b'", "e": ' + str(later).encode() + b', "n": NaN}',
        b'{"s": "' + staff.encode() + b'", "e": 1' + b"0" * 5000 + b', "n": "x"}',
    ]


def _tampered(good: str, variant: int, key: str, purpose: str) -> str:
    body, mac = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_body = _b64(json.dumps({**claims, "s": "ben"}).encode())
    options = [
        f"{forged_body}.{mac}",  # someone else's claims under this signature
        good[:-2] + ("xx" if not good.endswith("xx") else "yy"),
        good.replace(".", ""),
        good + ".",
        "." + good,
        good + "=",
        good.upper(),
        f"{body}.{_b64(hmac.new(key.encode(), body.encode(), hashlib.sha256).digest())}",
        f"{body}.",
        f".{mac}",
        good + "x" * 1024,
        f"{body}.{mac[:-1]}é",
        f"{body}\x00.{mac}",
    ]
    return options[variant % len(options)]


@dataclass
class Minter:
    """Makes the tokens a case asks for, with the board's secret, at send time."""

    key: str
    config: FirmConfig
    partner: str
    manager: str
    outsider: str
    """A staff member who may not open the board."""
    issued: set[str] = field(default_factory=set)
    """Every token made: none may appear in a log line."""
    spent_link: str | None = None

    @classmethod
    def for_config(cls, key: str, config: FirmConfig) -> Minter:
        partner = config.deciding_partners[0]
        manager = next(
            s.id
            for s in config.staff
            if s.tier is Tier.MANAGER and s.id not in config.deciding_partners
        )
        outsider = next(s.id for s in config.staff if s.tier not in (Tier.PARTNER, Tier.MANAGER))
        # The odd tokens are made by hand: they must be made as the board makes its own, or
        # they would all be refused as forged and check nothing past the signature.
        honest = json.dumps(_claims(partner, int(time.time()) + 60)).encode()
        verify(key, "session", signed_raw(key, "session", honest), datetime.now(UTC))
        return cls(key, config, partner, manager, outsider)

    def sign(self, purpose: Purpose, staff: str, ttl: float, key: str | None = None) -> str:
        """A token as the board makes them (``auth.sign``)."""
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        token = sign(key or self.key, purpose, staff, expires)
        self.issued.add(token)
        return token

    def session(self, case: BoardCase) -> str | None:
        """The cookie's value (None: no cookie)."""
        s = case.session
        if s == "none":
            return None
        if s == "text":
            return case.text
        if s == "odd_claims":
            choices = odd_claims(self.partner, int(time.time()))
            return signed_raw(self.key, "session", choices[case.variant % len(choices)])
        staff = {"manager": self.manager, "not_allowed": self.outsider}.get(s, self.partner)
        if s == "unknown_staff":
            staff = "nobody"
        purpose: Purpose = "signin" if s == "link_token" else "session"
        token = self.sign(
            purpose,
            staff,
            -1 if s == "expired" else 3600,
            key=WRONG_KEY if s == "wrong_key" else None,
        )
        return _tampered(token, case.variant, self.key, purpose) if s == "tampered" else token

    def csrf(self, case: BoardCase, cookie: str | None) -> str | None:
        if case.csrf == "none":
            return None
        if case.csrf == "text":
            return case.text
        staff = self.manager if case.session == "manager" else self.partner
        source = cookie if case.csrf == "valid" and cookie else self.sign("session", staff, 3600)
        try:
            claims = verify(self.key, "session", source, datetime.now(UTC))
        except Exception:  # a refused session has no token; the partner's fresh one stands in
            claims = verify(
                self.key, "session", self.sign("session", self.partner, 3600), datetime.now(UTC)
            )
        return csrf_token(self.key, claims)

    def link(self, case: BoardCase) -> str:
        t = case.token
        if t == "text":
            return case.text
        if t == "odd":
            choices = odd_claims(self.partner, int(time.time()))
            return signed_raw(self.key, "signin", choices[case.variant % len(choices)])
        if t == "reused" and self.spent_link is not None:
            return self.spent_link
        staff = self.outsider if t == "not_allowed" else self.partner
        token = self.sign(
            "session" if t == "session" else "signin",
            staff,
            -1 if t == "expired" else 900,
            key=WRONG_KEY if t == "wrong_key" else None,
        )
        return _tampered(token, case.variant, self.key, "signin") if t == "tampered" else token


# --- watching Temporal -----------------------------------------------------------------------


class UpdateTap(Interceptor):
    """Every Update the app sends through its (real) client, in order."""

    def __init__(self) -> None:
        self.sent: list[StartWorkflowUpdateInput] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Tapped(next, self.sent)


class _Tapped(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, sent: list[StartWorkflowUpdateInput]) -> None:
        super().__init__(next)
        self._sent = sent

    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        self._sent.append(input)
        return await super().start_workflow_update(input)


def tapped_client(client: Client, tap: UpdateTap) -> Client:
    """The same connection, with ``tap`` watching what is sent."""
    config = client.config()
    config["interceptors"] = [*config["interceptors"], tap]
    return Client(**config)


# --- sending ---------------------------------------------------------------------------------


def _form_body(case: BoardCase, token: str | None, csrf: str | None) -> tuple[bytes, str | None]:
    fields: list[tuple[str, str]] = []
    for name, value in case.fields:
        if value == "{csrf}":
            if csrf is None:
                continue
            value = csrf
        elif value == "{token}":
            value = token or ""
        fields.append((name, value))
    form = urlencode(fields).encode()
    content_type: str | None = {
        "form": "application/x-www-form-urlencoded",
        "text_plain": "text/plain",
        "json_type": "application/json",
        "oversized": "application/x-www-form-urlencoded",
        "json": "application/json",
        "bytes": "application/octet-stream",
    }.get(case.body)
    if case.body == "json":
        return json.dumps(dict(fields)).encode(), content_type
    if case.body == "bytes":
        return case.text.encode("utf-8", errors="surrogatepass") + b"\xff\x00", content_type
    if case.body == "oversized":
        extra = [LINK_BODY + 1, LINK_BODY * 16, 1 << 20][case.variant % 3]
        return form + b"&pad=" + b"x" * extra, content_type
    return form, content_type


@dataclass
class Sent:
    response: httpx.Response
    cookie: str | None
    csrf: str | None
    token: str | None
    updates: list[StartWorkflowUpdateInput]
    size: int
    """The body's length in bytes."""


async def send(http: httpx.AsyncClient, case: BoardCase, minter: Minter, tap: UpdateTap) -> Sent:
    cookie = minter.session(case)
    csrf = minter.csrf(case, cookie) if case.method == "POST" else None
    token = minter.link(case) if case.token else None
    if case.token == "reused" and minter.spent_link is None and token:
        # Spend it first (a link signs in once).
        await http.post("/board/signin", data={"t": token})
        http.cookies.clear()
        minter.spent_link = token
    headers: dict[bytes, bytes] = {}
    if cookie is not None:
        headers[b"Cookie"] = f"{COOKIE}={cookie}".encode("utf-8", errors="surrogatepass")
    origin = _ORIGINS[case.origin]
    if origin:
        headers[origin[0].encode()] = origin[1].encode()
    if case.live:
        headers[b"X-Board-Live"] = b"1"
    query = [(k, token or "" if v == "{token}" else v) for k, v in case.query]
    url = case.path + ("?" + urlencode(query) if query else "")
    before = len(tap.sent)
    body = b""
    if case.method == "GET":
        response = await http.get(url, headers=headers)
    else:
        body, content_type = _form_body(case, token, csrf)
        if content_type:
            headers[b"Content-Type"] = content_type.encode()
        response = await http.post(url, content=body, headers=headers)
    http.cookies.clear()  # each case brings its own cookie, or none
    if case.token == "valid" and response.status_code == 303:
        minter.spent_link = token
    return Sent(response, cookie, csrf, token, tap.sent[before:], len(body))


# --- checking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A finding whose fix belongs in ``app/board_web/routes.py``: described, not failed."""

    name: str
    fix: str
    matches: Callable[[BoardCase, Sent], bool]


PENDING: list[Pending] = []
"""Findings whose fix is still to come (none now: the three the first run found, a non-URL
Origin, an audit window at the calendar's edge and an event ending in a newline, are fixed and
kept as tests in tests/workflows/test_fuzz_routes.py)."""

_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
_SOURCE = re.compile(r"from __future__ import|DISPATCH_BOARD_SECRET")
"""Our source code or settings in an answer (a static file served from the wrong place)."""
_SESSION_SET = re.compile(rf'{COOKIE}=(?!"")[^;\s]+')
"""A session cookie being set (signing out sets it to ``""``)."""


@dataclass
class BoardFindings:
    cases: int = 0
    seconds: float = 0.0
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    kinds: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)
    unearned_updates: list[str] = field(default_factory=list)
    unearned_cookies: list[str] = field(default_factory=list)
    updates_sent: int = 0
    sessions_issued: int = 0
    pending: collections.Counter[str] = field(default_factory=collections.Counter)
    pending_examples: dict[str, str] = field(default_factory=dict)
    pending_lines: set[str] = field(default_factory=set)
    """What the log line of a pending finding's 500 says (not counted again as a leak)."""
    pii_lines: list[str] = field(default_factory=list)
    token_lines: list[str] = field(default_factory=list)
    log_lines: int = 0
    route_seconds: collections.defaultdict[str, float] = field(
        default_factory=lambda: collections.defaultdict(float)
    )
    slowest: tuple[float, str] = (0.0, "")

    def problems(self) -> list[str]:
        return [
            *(f"5xx: {e}" for e in self.server_errors),
            *(f"traceback or source in an answer: {e}" for e in self.traces),
            *(f"decision without a partner session and token: {e}" for e in self.unearned_updates),
            *(f"session cookie without a valid link: {e}" for e in self.unearned_cookies),
            *(f"wrong answer: {e}" for e in self.wrong_answers),
            *(f"client data in a log line: {line[:200]}" for line in self.pii_lines),
            *(f"a token in a log line: {line[:120]}" for line in self.token_lines),
        ]  # fmt: skip


_ENGAGEMENT_ID = re.compile(r"engagement-[a-z][a-z0-9_]{0,30}-[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_UPDATE_ID = re.compile(r"board:[a-z0-9][a-z0-9_.-]{0,62}:(decide|due):[A-Za-z0-9_-]{16,64}")
ACTS = {"POST /board/e/{id}/decide": PartnerDecision, "POST /board/e/{id}/due": DueDateMove}
"""The routes that may put a partner's action to Temporal, and what each sends."""


def _clean_update(update: StartWorkflowUpdateInput) -> bool:
    """Whether what reached Temporal is exactly what the route promises to check."""
    return bool(
        _ENGAGEMENT_ID.fullmatch(update.id) and _UPDATE_ID.fullmatch(update.update_id or "")
    )


def describe(case: BoardCase, response: httpx.Response) -> str:
    parts = [f"{case.method} {case.path[:120]!r}"]
    if case.query:
        parts.append(f"query={list(case.query)!r:.160}")
    parts.append(f"session={case.session}/{case.variant}")
    if case.token:
        parts.append(f"token={case.token}/{case.variant}")
    if case.method == "POST":
        parts.append(f"csrf={case.csrf} body={case.body} origin={case.origin}")
        parts.append(f"fields={list(case.fields)!r:.160}")
    if case.session == "text" or case.token == "text":
        parts.append(f"text={case.text[:60]!r}")
    return " ".join(parts) + f" -> {response.status_code}"


REFUSED = set(range(400, 500))
_LINK_ANSWERS: dict[str, set[int]] = {
    "expired": {410},
    "wrong_key": {403},
    "session": {403},
    "not_allowed": {403},
}


def expected(case: BoardCase, size: int) -> set[int] | None:
    """The statuses the route promises for this case (None: any 4xx will do)."""
    route = case.route
    if route == "GET /board/static/{name}":
        if case.target in ("board.js", "board.css"):
            return {200}
        return None if _reshaped(case.target) else {404}
    if route == "POST /board/signin" and case.origin not in OWN_ORIGINS:
        return {403}  # another site may not sign a browser in, whatever its link
    if route in ("GET /board/signin", "POST /board/signin"):
        token = case.token or "text"
        if token not in ("valid", "reused"):  # refused, however the request is shaped
            return _LINK_ANSWERS.get(token, REFUSED) if case.kind == "valid" else REFUSED
        if case.kind != "valid":
            return None  # the token may be missing, misnamed or sent twice
        if case.method == "GET":
            return {200}  # looking at a link does not spend it
        return {303} if token == "valid" else {409}
    if case.route not in ("GET /board", "POST /board/signout") and _reshaped(case.target):
        return None
    if case.session not in SIGNED_IN:
        return {401}
    if case.method == "POST":
        if case.origin not in OWN_ORIGINS:
            return {403}
        if size > LINK_BODY:
            return {413}
        if case.body not in FORM_BODIES or case.csrf != "valid":
            return {403}
        if route == "POST /board/signout":
            return {200}
        if case.session != "partner":
            return {403}
        return {409} if case.kind == "valid" else None
    if route.startswith("GET /board/e/"):
        return {404}  # the fuzz's engagements never run
    if route == "GET /board" and case.kind == "valid":
        return {200}
    if route == "GET /board/audit.{fmt}" and case.kind == "valid":
        return {200} if case.path.endswith((".csv", ".json")) else {404}
    return None


def _reshaped(target: str) -> bool:
    """Whether the path may reach another route than the one aimed at: dot segments are
    resolved by the client, escapes decoded by the server, '/' splits the segment."""
    return not target or target in (".", "..") or any(c in target for c in "/%\\")


def may_decide(case: BoardCase) -> bool:
    """Only this may put a decision to Temporal."""
    return (
        case.route in ACTS
        and case.session == "partner"
        and case.csrf == "valid"
        and case.origin in OWN_ORIGINS
        and case.body in FORM_BODIES
    )


def check(case: BoardCase, sent: Sent, minter: Minter, findings: BoardFindings) -> None:
    response = sent.response
    status = response.status_code
    said = describe(case, response)
    pending = next((p for p in PENDING if p.matches(case, sent)), None)
    promised = expected(case, sent.size)
    if pending is not None:
        if status >= 500:
            # The server logs a 500 with its path: that line belongs to this finding too.
            findings.pending_lines.add(f"on {unquote(response.request.url.path)!r} at")
        findings.pending[pending.name] += 1
        findings.pending_examples.setdefault(pending.name, said)
        return
    if status >= 500:
        findings.server_errors.append(said)
    if _TRACE.search(response.text) or _SOURCE.search(response.text):
        findings.traces.append(said)
    for update in sent.updates:
        findings.updates_sent += 1
        decision = update.args[0] if update.args else None
        honest = (
            may_decide(case)
            and isinstance(decision, ACTS[case.route])
            and decision.partner_id == minter.partner
            and decision.channel == "board"
            and (update.update_id or "").startswith(f"board:{minter.partner}:")
            and _clean_update(update)
        )
        if not honest:
            findings.unearned_updates.append(f"{said} sent {update.update} to {update.id}")
    cookie_set = _SESSION_SET.search(response.headers.get("set-cookie", ""))
    if cookie_set is not None:
        findings.sessions_issued += 1
        earned = (
            case.route == "POST /board/signin"
            and case.token == "valid"
            and case.origin in OWN_ORIGINS
            and status == 303
        )
        if not earned:
            findings.unearned_cookies.append(said)
    if promised is not None and status not in promised:
        findings.wrong_answers.append(f"{said} (expected {sorted(promised)})")
    elif promised is None and not 400 <= status < 500 and status not in (200, 303, 307):
        findings.wrong_answers.append(f"{said} (expected a 4xx)")
    if case.route == "POST /board/signout" and status == 200:
        if f'{COOKIE}=""' not in response.headers.get("set-cookie", ""):
            findings.wrong_answers.append(f"{said} but the session cookie was not cleared")
    if case.route in ACTS and case.kind == "valid" and status == 409:
        if len(sent.updates) != 1:
            findings.wrong_answers.append(f"{said} but {len(sent.updates)} Updates were sent")


_TOKENISH = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")


def check_logs(lines: Sequence[str], minter: Minter, findings: BoardFindings) -> None:
    # The fuzz's own HTTP client logs every URL it sends (tokens, markers and all): those
    # lines are the sender's, not the app's.
    lines = [line for line in lines if not line.startswith("INFO httpx ")]
    pending = [
        line for line in lines if any(p in line for p in findings.pending_lines)
    ]  # fmt: skip
    lines = [line for line in lines if line not in pending]
    findings.log_lines = len(lines)
    markers = (MARKER, MARKER.lower())
    findings.pii_lines = [line for line in lines if any(m in line for m in markers)]
    findings.token_lines = [
        line for line in lines if any(t in minter.issued for t in _TOKENISH.findall(line))
    ]


async def run_board_cases(
    cases: list[BoardCase],
    config: FirmConfig,
    client: Client,
    key: str,
    app_factory: Callable[[Client], Any],
    lines: Callable[[], Sequence[str]],
) -> BoardFindings:
    """Send every case to the real app (made by ``app_factory`` around a tapped client);
    check each answer, then the log lines ``lines`` returns (written during the run)."""
    findings = BoardFindings(cases=len(cases))
    tap = UpdateTap()
    minter = Minter.for_config(key, config)
    app = app_factory(tapped_client(client, tap))
    began = time.monotonic()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url=BASE,
        timeout=60,
    ) as http:
        for case in cases:
            sent_at = time.monotonic()
            sent = await send(http, case, minter, tap)
            took = time.monotonic() - sent_at
            findings.slowest = max(findings.slowest, (took, case.route))
            findings.route_seconds[case.route] += took
            findings.statuses[(case.route, sent.response.status_code)] += 1
            findings.kinds[(case.route, case.kind)] += 1
            check(case, sent, minter, findings)
    findings.seconds = time.monotonic() - began
    check_logs(lines(), minter, findings)
    return findings


def report(findings: BoardFindings) -> None:
    print(
        f"board cases: {findings.cases}, sent in {findings.seconds:.1f} s: "
        f"{findings.cases / max(findings.seconds, 1e-9):.0f} requests/s"
    )
    routes = sorted({r for r, _ in findings.kinds})
    for route in routes:
        kinds = {k: c for (r, k), c in sorted(findings.kinds.items()) if r == route}
        statuses = {s: c for (r, s), c in sorted(findings.statuses.items()) if r == route}
        per = findings.route_seconds[route] / max(sum(kinds.values()), 1) * 1000
        print(f"  {route}: {sum(kinds.values())} {kinds}; answers {statuses}; {per:.0f} ms each")
    print(f"slowest board request: {findings.slowest[0] * 1000:.0f} ms ({findings.slowest[1]})")
    print(
        f"5xx: {len(findings.server_errors)}; tracebacks: {len(findings.traces)}; "
        f"wrong answers: {len(findings.wrong_answers)}"
    )
    print(
        f"decisions sent to Temporal: {findings.updates_sent} "
        f"(without a partner's session and token: {len(findings.unearned_updates)}); "
        f"sessions issued: {findings.sessions_issued} "
        f"(without a valid link: {len(findings.unearned_cookies)})"
    )
    print(
        f"log lines: {findings.log_lines}; with client data: {len(findings.pii_lines)}; "
        f"with a token: {len(findings.token_lines)}"
    )
    for pending in PENDING:
        if findings.pending[pending.name]:
            print(
                f"pending a fix in routes.py: {pending.name}: {findings.pending[pending.name]} "
                f"cases, e.g. {findings.pending_examples[pending.name][:200]}"
            )
    for problem in findings.problems()[:20]:
        print("  " + problem)


__all__ = ["SECRET_ENV", "BoardCase", "board_case_strategy", "report", "run_board_cases"]
