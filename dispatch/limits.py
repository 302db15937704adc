"""Limits at the door: how long, how many and how far every inbound value may be.

One engagement's payload travels into workflow histories, chat messages, calendar events,
emails and the dispatcher's ledger. A value that is merely "valid JSON" can still stop all of
that (a 990 KB scope kills the workflow, a due date in 9999 makes the dispatcher scan eight
thousand years of working days), so every field is bounded here, once, and the webhook models
and the PM loaders use the same numbers.

The helpers are pure (no clock): callers pass "today" in the firm's time zone. The one
exception is ``read_limited``, which reads a request body no further than its limit.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field
from starlette.requests import Request

# --- sizes -----------------------------------------------------------------------------------

MAX_ID = 128
"""An engagement's external id, a client id: the workflow id must stay short and readable."""
MAX_EVENT_ID = 200
MAX_SOURCE = 31
MAX_TITLE = 300
MAX_NAME = 300
"""Client and contact names."""
MAX_EMAIL = 254
"""RFC 5321's limit on a forward path."""
MAX_SERVICE_TYPE = 64
MAX_STATUS = 64
MAX_URL = 2048
MAX_SCOPE = 4_000
"""The scope summary: a paragraph for the assignee and the client, never a document."""
MAX_SKILLS = 20
MAX_SKILL = 64
MAX_DOCUMENTS = 30
MAX_DOCUMENT = 300
MAX_KARBON_FIELD = 64
"""Karbon's ResourceType / ActionType words."""

MIN_HOURS_EXCLUSIVE = 0.0
MAX_ESTIMATED_HOURS = 2_000.0
"""A year of one person's full-time work: anything larger is a typo."""

# --- dates -----------------------------------------------------------------------------------

MAX_YEARS_AHEAD = 3
"""A due date at most this many years after today (the firm's time zone)."""
EARLIEST_DATE = date(1990, 1, 1)
"""No start date before this; older ones are typos or epoch zero."""

# --- request bodies (bytes) ------------------------------------------------------------------

KARBON_BODY = 16 * 1024
"""Karbon's thin notification is four short fields."""
ENGAGEMENT_BODY = 64 * 1024
"""Every field above at its limit, even JSON-escaped, fits with room to spare."""
SLACK_BODY = 256 * 1024
"""A click carries the clicked message (our own, a few KB), URL-encoded."""
LINK_BODY = 4 * 1024
"""A confirmation form: at most a one-time code."""

# --- ids -------------------------------------------------------------------------------------

SOURCE_PATTERN = r"^[a-z][a-z0-9_]{0,30}$"
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Starts with a letter or digit (so never ``.``, ``..``, ``-x`` or ``_x``); the same rule the
workflow id is built with (``dispatch.ids``), so the model and the id never disagree."""
CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""Client ids end up in paths (the client's upload link): no '/', no '..', no spaces."""

_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Directional overrides and isolates: they make a name display as something else."""
_MULTILINE_ALLOWED = frozenset("\t\n\r")


def latest_due(today: date) -> date:
    """The furthest due date accepted: ``MAX_YEARS_AHEAD`` years from today (Feb 29 -> 28)."""
    year = today.year + MAX_YEARS_AHEAD
    try:
        return today.replace(year=year)
    except ValueError:
        return today.replace(year=year, day=28)


def due_date_problem(due: date, today: date, *, may_be_past: bool = False) -> str | None:
    """Why a due date cannot be dispatched, or None. ``today`` is in the firm's time zone."""
    if not may_be_past and due < today:
        return (
            f"{due.isoformat()} is in the past (today is {today.isoformat()} in the firm's "
            "time zone)"
        )
    if due > latest_due(today):
        return (
            f"{due.isoformat()} is more than {MAX_YEARS_AHEAD} years ahead "
            f"(latest accepted: {latest_due(today).isoformat()})"
        )
    if due < EARLIEST_DATE:
        return f"is before {EARLIEST_DATE.isoformat()}"
    return None


def start_date_problem(start: date, due: date) -> str | None:
    if start < EARLIEST_DATE:
        return f"{start.isoformat()} is before {EARLIEST_DATE.isoformat()}"
    if start > due:
        return "is after the due date"
    return None


# --- text ------------------------------------------------------------------------------------


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why a piece of text is refused, or None. Never echoes the text (it may be client data)."""
    if not value.strip():
        return "must not be blank"
    for char in value:
        if multiline and char in _MULTILINE_ALLOWED:
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            return "must not contain control characters (such as NUL or line breaks)"
        if category == "Cs" or char in _BIDI_CONTROLS:
            return "must not contain surrogates or text-direction overrides"
    return None


def clip(value: str, limit: int) -> str:
    """Shorten text to ``limit`` characters, marking the cut (for data read from PM systems)."""
    if len(value) <= limit:
        return value
    return value[: limit - 1].rstrip() + "…"


def clean_text(value: str, limit: int, *, multiline: bool = False) -> str:
    """Text from a PM system made safe to carry: control characters dropped, clipped."""
    kept = "".join(
        c
        for c in value
        if (multiline and c in _MULTILINE_ALLOWED)
        or (unicodedata.category(c) not in ("Cc", "Cs") and c not in _BIDI_CONTROLS)
    )
    return clip(kept.strip(), limit)


def _line(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value.strip()


def _paragraph(value: str) -> str:
    problem = text_problem(value, multiline=True)
    if problem:
        raise ValueError(problem)
    return value.strip()


def _optional_paragraph(value: str) -> str:
    """Empty is allowed (the service type's text is used); blank-but-not-empty is not."""
    return value if value == "" else _paragraph(value)


def client_id_problem(value: str) -> str | None:
    if not _CLIENT_ID.match(value) or ".." in value:
        return (
            f"must be 1-{MAX_ID} letters, digits, '_', '-' or '.', starting with a letter or "
            "digit, without '..'"
        )
    return None


def _client_id(value: str) -> str:
    problem = client_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain spaces or control characters")
    return value


Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE), AfterValidator(_line)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_line)]
EventId = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_ID), AfterValidator(_line)]
ServiceTypeId = Annotated[
    str, Field(min_length=1, max_length=MAX_SERVICE_TYPE), AfterValidator(_line)
]
Status = Annotated[str, Field(min_length=1, max_length=MAX_STATUS), AfterValidator(_line)]
KarbonWord = Annotated[str, Field(min_length=1, max_length=MAX_KARBON_FIELD), AfterValidator(_line)]
Skill = Annotated[str, Field(min_length=1, max_length=MAX_SKILL), AfterValidator(_line)]
Document = Annotated[str, Field(min_length=1, max_length=MAX_DOCUMENT), AfterValidator(_line)]
Scope = Annotated[str, Field(max_length=MAX_SCOPE), AfterValidator(_optional_paragraph)]
Email = Annotated[
    str,
    Field(max_length=MAX_EMAIL, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    AfterValidator(_line),
]
ExternalId = Annotated[str, Field(max_length=MAX_ID, pattern=EXTERNAL_ID_PATTERN)]
ClientId = Annotated[
    str, Field(max_length=MAX_ID, pattern=CLIENT_ID_PATTERN), AfterValidator(_client_id)
]
Source = Annotated[str, Field(max_length=MAX_SOURCE, pattern=SOURCE_PATTERN)]
Url = Annotated[str, Field(max_length=MAX_URL), AfterValidator(_http_url)]
Hours = Annotated[
    float,
    Field(strict=True, gt=MIN_HOURS_EXCLUSIVE, le=MAX_ESTIMATED_HOURS, allow_inf_nan=False),
]
"""Strict: ``true`` and ``"5"`` are refused; integers and decimals are accepted."""
Day = Annotated[date, Field(strict=True)]
"""Strict: only ``YYYY-MM-DD`` (never ``0`` read as 1970-01-01, never a timestamp)."""
Skills = Annotated[list[Skill], Field(max_length=MAX_SKILLS)]
Documents = Annotated[list[Document], Field(max_length=MAX_DOCUMENTS)]


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be larger than ``limit`` bytes.

    Content-Length is checked first and the stream is cut at the limit, so a huge body is
    never held in memory (a missing or lying Content-Length changes nothing)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
