"""SendGrid v3 emulator: Mail Send (``POST /sendgrid/v3/mail/send``) and the Email Activity
API (``GET /sendgrid/v3/messages``).

Mail Send holds to SendGrid's OpenAPI spec and its documented responses:

- ``Authorization: Bearer <SENDGRID_API_KEY>``; otherwise 401 ``authorization required``.
- Validation failures are 400 ``{"errors": [{"message", "field", "help"}]}``, every problem at once.
- Accepted mail is ``202`` with an empty body and an ``X-Message-Id`` header; with
  ``mail_settings.sandbox_mode.enable`` the request is validated, answered ``200`` and not queued.

The error messages follow SendGrid's wording where it is known; the ``help`` links and the
message for non-string ``custom_args`` are assumptions [A]. Message-level ``custom_args`` is
accepted as an object of strings (what the SDKs send) or a string (what the spec types) [P].
SendGrid answers a bad key with the same 401 body as a missing one here [A].

The Email Activity API (a paid add-on at SendGrid) lists what was queued, one row per recipient
(``{"messages": [{from_email, msg_id, subject, to_email, status, opens_count, clicks_count,
last_event_time}]}``, newest first) [C: SendGrid's email-activity OpenAPI spec]:

- ``query`` in SendGrid's query language; this emulator understands clauses joined by ``AND``
  (optionally in parentheses): ``field="value"`` for ``msg_id``, ``from_email``, ``to_email``,
  ``subject`` and ``status``, ``unique_args['name']="value"`` for custom arguments, and
  ``msg_id LIKE '<X-Message-Id>%'``. An unknown field is 400 ``invalid syntax: '<field>' is not a
  known field`` [C: spec example]; other SendGrid fields, ``OR`` and ``NOT`` are 400 here [A].
- ``limit`` 1..1000, default 10 [C]; outside that 400 [A wording].
- 6 requests per minute per account [C: SendGrid's Email Activity rate limit]; over it, 429
  ``{"errors": [{"message": "too many requests"}]}`` with ``X-RateLimit-Limit``,
  ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (unix seconds) [C headers / P values].
- ``msg_id`` starts with the ``X-Message-Id`` mail/send answered [C: SendGrid support article];
  the rest of it is ours [A]. Rows are ``processed``: the sandbox delivers nothing.
- An account without the add-on (``MailStore.activity_enabled = False``) gets 403 ``access
  forbidden`` [A]. A message shows in the feed ``MailStore.activity_lag`` seconds after it was
  queued (0 by default; SendGrid does not document its delay) [A].
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "sendgrid"
API_KEY_ENV = "SENDGRID_API_KEY"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."


ACTIVITY_RATE_LIMIT = 6
ACTIVITY_RATE_WINDOW = 60.0
MAX_ACTIVITY_LIMIT = 1000


class MailStore:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        """Queued messages, oldest first: ``{message_id, received_at, request}``."""
        self.activity: list[dict[str, Any]] = []
        """Email Activity rows, oldest first: one per recipient of each queued message."""
        self.activity_enabled = True
        """False: the account has no Email Activity add-on, so the API answers 403."""
        self.activity_lag = 0.0
        """Seconds between a message being queued and showing in the activity feed."""
        self.activity_calls: deque[float] = deque()
        """When recent activity queries were answered (wall clock), for the rate limit."""

    def dump(self) -> dict[str, Any]:
        return {"messages": self.messages}

    def queue(self, message_id: str, body: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        self.messages.append(
            {"message_id": message_id, "received_at": now.isoformat(), "request": body}
        )
        self.activity.extend(_activity_rows(message_id, body, now, time.time() + self.activity_lag))


def create_store(seed: SandboxSeed) -> MailStore:
    return MailStore()


def _errors(*items: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(items)}


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    if status == 429:
        return _errors({"field": None, "message": "too many requests"}), "application/json"
    if status >= 500:
        return _errors({"message": "internal server error"}), "application/json"
    body = _errors({"message": f"injected error {status}", "field": None, "help": None})
    return body, "application/json"


def _error(field: str | None, message: str, anchor: str) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP + anchor}


def _email_errors(value: Any, field: str, anchor: str) -> list[dict[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return [_error(f"{field}.email", "The email parameter is required.", anchor)]
    if not _EMAIL.match(value["email"]):
        return [_error(f"{field}.email", "Does not contain a valid address.", anchor)]
    if "name" in value and not isinstance(value["name"], str):
        return [_error(f"{field}.name", "The name must be a string.", anchor)]
    return []


def _string_map_errors(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return [_error(field, "custom_args must be an object of string values.", "custom_args")]
    return [
        _error(f"{field}.{key}", "custom_args values must be strings.", "custom_args")
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every reason SendGrid would refuse this body, in field order."""
    errors: list[dict[str, Any]] = []
    has_template = isinstance(body.get("template_id"), str) and bool(body["template_id"])

    if not isinstance(body.get("from"), dict) or "email" not in body["from"]:
        errors.append(
            _error(
                "from.email",
                "The from object must be provided for every email "
                "send. It is an object that requires an email parameter, but may "
                "also contain a name parameter.",
                "from",
            )
        )
    else:
        errors += _email_errors(body["from"], "from", "from")

    personalizations = body.get("personalizations")
    every_has_subject = False
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "personalizations",
                "The personalizations field is required and must have at least 1 personalization.",
                "personalizations",
            )
        )
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                "personalizations",
                "The personalizations field is limited to "
                f"{MAX_PERSONALIZATIONS} personalizations per request.",
                "personalizations",
            )
        )
    else:
        recipients = 0
        every_has_subject = True
        for i, p in enumerate(personalizations):
            where = f"personalizations.{i}"
            if not isinstance(p, dict):
                errors.append(
                    _error(where, "Each personalization must be an object.", "personalizations")
                )
                every_has_subject = False
                continue
            to = p.get("to")
            if not isinstance(to, list) or not to:
                errors.append(
                    _error(
                        f"{where}.to",
                        "The to array is required for all "
                        "personalization objects, and must have at least one email "
                        "object with a valid email address.",
                        "personalizations.to",
                    )
                )
            for kind in ("to", "cc", "bcc"):
                people = p.get(kind)
                if not isinstance(people, list):
                    continue
                recipients += len(people)
                for j, person in enumerate(people):
                    errors += _email_errors(
                        person, f"{where}.{kind}.{j}", f"personalizations.{kind}"
                    )
            if "custom_args" in p:
                errors += _string_map_errors(p["custom_args"], f"{where}.custom_args")
            if not (isinstance(p.get("subject"), str) and p["subject"]):
                every_has_subject = False
        if recipients > MAX_RECIPIENTS:
            errors.append(
                _error(
                    "personalizations",
                    "The total number of recipients must be "
                    f"less than {MAX_RECIPIENTS}. This includes all recipients "
                    "defined within the to, cc, and bcc parameters, across each "
                    "object that you include in the personalizations array.",
                    "personalizations",
                )
            )

    subject = body.get("subject")
    if subject is not None and not isinstance(subject, str):
        errors.append(_error("subject", "The subject must be a string.", "subject"))
    elif not subject and not has_template and not every_has_subject:
        errors.append(
            _error(
                "subject",
                "The subject is required. You can get around this "
                "requirement if you use a template with a subject defined or if "
                "every personalization has a subject defined.",
                "subject",
            )
        )

    content = body.get("content")
    if content is None or content == []:
        if not has_template:
            errors.append(
                _error(
                    "content",
                    "Unless a valid template_id is provided, the content "
                    "parameter is required. There must be at least one defined "
                    "content block.",
                    "content",
                )
            )
    elif not isinstance(content, list):
        errors.append(_error("content", "The content parameter must be an array.", "content"))
    else:
        types = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                errors.append(
                    _error(f"content.{i}.type", "The content type is required.", "content.type")
                )
                continue
            types.append(block["type"])
            value = block.get("value")
            if not isinstance(value, str) or not value:
                errors.append(
                    _error(
                        f"content.{i}.value",
                        "The content value must be a string at least one character in length.",
                        "content.value",
                    )
                )
        if "text/plain" in types and types[0] != "text/plain":
            errors.append(
                _error(
                    "content",
                    "If present, text/plain content must be first, "
                    "followed by text/html, followed by any other content.",
                    "content",
                )
            )

    if "reply_to" in body:
        if "reply_to_list" in body:
            errors.append(
                _error(
                    "reply_to",
                    "The reply_to and reply_to_list parameters cannot be used together.",
                    "reply_to",
                )
            )
        errors += _email_errors(body["reply_to"], "reply_to", "reply_to")

    if "custom_args" in body and not isinstance(body["custom_args"], str):
        errors += _string_map_errors(body["custom_args"], "custom_args")

    categories = body.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            errors.append(
                _error("categories", "Categories must be an array of strings.", "categories")
            )
        elif len(categories) > MAX_CATEGORIES:
            errors.append(
                _error(
                    "categories",
                    f"Too many categories. Please use at most {MAX_CATEGORIES}.",
                    "categories",
                )
            )
    return errors


def _sandbox_mode(body: dict[str, Any]) -> bool:
    settings = body.get("mail_settings")
    if not isinstance(settings, dict):
        return False
    mode = settings.get("sandbox_mode")
    return isinstance(mode, dict) and mode.get("enable") is True


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["sendgrid"])

    @router.post(f"/{NAME}/v3/mail/send")
    async def mail_send(request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return JSONResponse(_errors(_error(None, "Bad Request", "json")), status_code=400)
        problems = validate(body)
        if problems:
            return JSONResponse(_errors(*problems), status_code=400)
        if _sandbox_mode(body):
            return Response(status_code=200)
        message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        store: MailStore = ctx.stores[NAME]
        store.queue(message_id, body)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    @router.get(f"/{NAME}/v3/messages")
    async def email_activity(request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        store: MailStore = ctx.stores[NAME]
        if not store.activity_enabled:
            return JSONResponse(
                _errors({"field": None, "message": "access forbidden"}), status_code=403
            )
        now = time.time()
        calls = store.activity_calls
        while calls and calls[0] <= now - ACTIVITY_RATE_WINDOW:
            calls.popleft()
        if len(calls) >= ACTIVITY_RATE_LIMIT:
            reset = int(calls[0] + ACTIVITY_RATE_WINDOW) + 1
            return JSONResponse(
                _errors({"message": "too many requests"}),
                status_code=429,
                headers=_rate_headers(0, reset),
            )
        try:
            limit = _activity_limit(request.query_params.get("limit"))
            matches = parse_activity_query(request.query_params.get("query", ""))
        except ValueError as err:
            return JSONResponse(_errors({"message": str(err)}), status_code=400)
        calls.append(now)
        rows = [
            _public_row(row)
            for row in reversed(store.activity)
            if row["visible_at"] <= now and all(match(row) for match in matches)
        ]
        reset = int(calls[0] + ACTIVITY_RATE_WINDOW) + 1
        return JSONResponse(
            {"messages": rows[:limit]},
            headers=_rate_headers(ACTIVITY_RATE_LIMIT - len(calls), reset),
        )

    return router


def _unauthorized(request: Request) -> JSONResponse | None:
    """SendGrid's 401 unless the request carries the account's API key."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip() == demo_secret(API_KEY_ENV):
        return None
    return JSONResponse(
        _errors({"message": "authorization required", "field": None, "help": None}),
        status_code=401,
    )


def _rate_headers(remaining: int, reset: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(ACTIVITY_RATE_LIMIT),
        "X-RateLimit-Remaining": str(max(remaining, 0)),
        "X-RateLimit-Reset": str(reset),
    }


# --- the Email Activity feed -----------------------------------------------------------------


def _activity_rows(
    message_id: str, body: dict[str, Any], when: datetime, visible_at: float
) -> list[dict[str, Any]]:
    """One feed row per recipient, with the custom arguments that apply to it."""
    shared: dict[str, Any] = (
        body["custom_args"] if isinstance(body.get("custom_args"), dict) else {}
    )
    rows: list[dict[str, Any]] = []
    for p in body["personalizations"]:
        sender = p.get("from") if isinstance(p.get("from"), dict) else body["from"]
        args = {**shared, **(p.get("custom_args") or {})}
        for kind in ("to", "cc", "bcc"):
            for person in p.get(kind) or []:
                rows.append(
                    {
                        "msg_id": f"{message_id}.sandbox-{len(rows)}.0",
                        "from_email": sender["email"],
                        "to_email": person["email"],
                        "subject": str(p.get("subject") or body.get("subject") or ""),
                        "status": "processed",
                        "unique_args": {str(k): str(v) for k, v in args.items()},
                        "last_event_time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "visible_at": visible_at,
                    }
                )
    return rows


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "from_email": row["from_email"],
        "msg_id": row["msg_id"],
        "subject": row["subject"],
        "to_email": row["to_email"],
        "status": row["status"],
        "opens_count": 0,
        "clicks_count": 0,
        "last_event_time": row["last_event_time"],
    }


def _activity_limit(raw: str | None) -> int:
    if raw is None:
        return 10
    try:
        limit = float(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_ACTIVITY_LIMIT or limit != int(limit):
        raise ValueError(f"limit must be an integer from 1 to {MAX_ACTIVITY_LIMIT}")
    return int(limit)


_BASIC_FIELDS = {"msg_id", "from_email", "to_email", "subject", "status"}
_OTHER_FIELDS = {
    "template_id",
    "asm_group_id",
    "api_key_id",
    "events",
    "originating_ip",
    "categories",
    "outbound_ip",
    "last_event_time",
    "clicks",
    "opens",
    "teammate",
    "marketing_campaign_id",
    "marketing_campaign_name",
}
"""Fields SendGrid's query language knows that this emulator does not filter on."""
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) |
        (?P<and>AND\b) | (?P<word>(?:OR|NOT)\b) |
        (?P<arg>unique_args\[\s*'(?P<arg_name>[^']+)'\s*\]) |
        (?P<like>LIKE\b) | (?P<eq>=) |
        "(?P<dq>[^"]*)" | '(?P<sq>[^']*)' |
        (?P<field>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE | re.IGNORECASE,
)
Match = Callable[[dict[str, Any]], bool]
"""A predicate over one feed row."""


def parse_activity_query(query: str) -> list[Match]:
    """The clauses of ``query`` as predicates; ValueError says why it is not understood."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(query):
        if not query[pos:].strip():
            break
        found = _TOKEN.match(query, pos)
        if found is None or found.end() == pos:
            raise ValueError(f"invalid syntax near {query[pos : pos + 20]!r}")
        kind = str(found.lastgroup)
        value = found.group("arg_name" if kind == "arg" else kind)
        tokens.append((kind, value))
        pos = found.end()
    clauses = [t for t in tokens if t[0] not in ("open", "close")]
    matches: list[Match] = []
    i = 0
    while i < len(clauses):
        if matches:
            if clauses[i][0] != "and":
                raise ValueError(
                    f"invalid syntax: expected AND, found {clauses[i][1]!r} "
                    "(the sandbox understands AND only)"
                )
            i += 1
        matches.append(_clause(clauses[i : i + 3]))
        i += 3
    return matches


def _clause(tokens: list[tuple[str, str]]) -> Match:
    if len(tokens) < 3:
        raise ValueError('invalid syntax: a clause is field="value"')
    (kind, name), (op, _), (quote, value) = tokens
    if quote not in ("dq", "sq") or op not in ("eq", "like"):
        raise ValueError(f"invalid syntax near {name!r}")
    if kind == "field":
        if name in _OTHER_FIELDS:
            raise ValueError(f"the sandbox does not query '{name}'")
        if name not in _BASIC_FIELDS:
            raise ValueError(f"invalid syntax: '{name}' is not a known field")
    elif kind != "arg":
        raise ValueError(f"invalid syntax near {name!r}")

    def read(row: dict[str, Any]) -> str | None:
        if kind == "arg":
            found = row["unique_args"].get(name)
            return None if found is None else str(found)
        return str(row[name])

    if op == "eq":
        return lambda row: read(row) == value
    pattern = re.compile(
        "^" + ".*".join(re.escape(part) for part in value.split("%")) + "$", re.DOTALL
    )
    return lambda row: (found := read(row)) is not None and pattern.match(found) is not None
