"""Microsoft Graph emulator: the Entra ID token endpoint and Outlook calendar events.

Routes:

- ``POST /graph/{tenant}/oauth2/v2.0/token`` — client credentials (form body: ``grant_type=
  client_credentials``, ``client_id``, ``client_secret``, ``scope=<resource>/.default``), checked
  against ``MS_TENANT_ID`` / ``MS_CLIENT_ID`` / ``MS_CLIENT_SECRET``; answers ``{"token_type":
  "Bearer", "expires_in": 3599, "access_token": ...}``.
- ``POST /graph/v1.0/users/{id}/events`` — ``201`` with the event (``id``, ``iCalUId``,
  ``webLink``, ...). ``transactionId`` dedupe [C]: a repeat with the same id in the same mailbox
  answers ``201`` with the *same* event and creates nothing.
- ``GET /graph/v1.0/users/{id}/events`` — ``$filter`` on a single-value extended property
  (``singleValueExtendedProperties/Any(ep: ep/id eq '...' and ep/value eq '...')``, value compared
  case-insensitively [C]); ``$top`` (default 10), ``$skip``, ``$select``; ``@odata.nextLink``.
- ``GET`` / ``DELETE /graph/v1.0/users/{id}/events/{eventId}`` — ``404 ErrorItemNotFound`` when
  unknown, ``204`` on delete.
- Every Graph call needs ``Authorization: Bearer <token from the endpoint above>``; otherwise
  ``401 InvalidAuthenticationToken``. Errors use ``{"error": {"code", "message", "innerError":
  {"date", "request-id", "client-request-id"}}}`` (shape partly confirmed [P]).

Assumptions [A]: the wording and AADSTS numbers of Entra's 400/401 answers; Graph's codes for an
unknown mailbox (``ErrorInvalidUser``), an unsupported time zone and a malformed all-day event;
that a deleted event's ``transactionId`` may be used again; any ``$filter`` other than the
extended-property one is refused with 400 (filtering on ``transactionId`` is not documented, so
the emulator does not pretend it works). Mailboxes are the seed's staff emails. Start and end are
stored in the time zone sent (real Graph answers in UTC unless ``Prefer: outlook.timezone``).
``webLink`` opens a read-only view in this sandbox.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "graph"
TENANT_ENV = "MS_TENANT_ID"
CLIENT_ID_ENV = "MS_CLIENT_ID"
CLIENT_SECRET_ENV = "MS_CLIENT_SECRET"
TOKEN_LIFETIME = 3599
_API = f"/{NAME}/v1.0"
_SHOW_AS = {"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"}
_WINDOWS_ZONES = {
    "UTC",
    "Eastern Standard Time",
    "Central Standard Time",
    "Mountain Standard Time",
    "Pacific Standard Time",
    "GMT Standard Time",
    "W. Europe Standard Time",
}
"""A few Windows zone names Graph accepts besides IANA ones (the full list is long)."""
_PROP_ID = re.compile(
    r"^(String|Integer|Boolean|SystemTime|Double|Binary|Long|Short|CLSID|Currency|Object) "
    r"(\{[0-9A-Fa-f-]{36}\} (Name \S+|Id 0x[0-9A-Fa-f]{1,4})|0x[0-9A-Fa-f]{1,4})$"
)
_FILTER = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(?P<v>\w+)\s*:\s*(?P=v)/id\s+eq\s+"
    r"'(?P<id>(?:[^']|'')*)'\s+and\s+(?P=v)/value\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*\)\s*$",
    re.IGNORECASE,
)
_ICAL_PREFIX = "040000008200E00074C5B7101A82E00800000000"
_READ_ONLY = {"id", "iCalUId", "webLink", "createdDateTime", "lastModifiedDateTime", "changeKey"}


class GraphStore:
    def __init__(self, seed: SandboxSeed) -> None:
        self.mailboxes = {s.email.lower() for s in seed.staff}
        self.events: dict[str, dict[str, dict[str, Any]]] = {}
        """Events by mailbox, then id, in creation order."""
        self.extended: dict[str, list[dict[str, str]]] = {}
        """Single-value extended properties by event id (not part of the event's JSON)."""
        self.transactions: dict[str, dict[str, str]] = {}
        """transactionId -> event id, by mailbox."""
        self.tokens: dict[str, float] = {}
        """Issued access tokens and when they expire (epoch seconds)."""
        self.token_requests = 0

    def mailbox(self, user: str) -> dict[str, dict[str, Any]]:
        return self.events.setdefault(user.lower(), {})

    def dump(self) -> dict[str, Any]:
        return {
            "tokens_issued": self.token_requests,
            "mailboxes": {
                box: {
                    "events": list(events.values()),
                    "extended_properties": {eid: self.extended.get(eid, []) for eid in events},
                }
                for box, events in sorted(self.events.items())
            },
        }


def create_store(seed: SandboxSeed) -> GraphStore:
    return GraphStore(seed)


# --- errors ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _graph_error_body(
    code: str, message: str, client_request_id: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _now(),
                "request-id": str(uuid.uuid4()),
                "client-request-id": client_request_id or str(uuid.uuid4()),
            },
        }
    }


def _graph_error(
    status: int, code: str, message: str, request: Request | None = None
) -> JSONResponse:
    crid = request.headers.get("client-request-id") if request is not None else None
    headers = {}
    if status == 401:
        # Graph names the authority to get a token from [P].
        headers["WWW-Authenticate"] = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        )
    return JSONResponse(_graph_error_body(code, message, crid), status_code=status, headers=headers)


def _entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status_code=status,
    )


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    codes = {
        429: ("TooManyRequests", "Too many requests."),
        503: ("ServiceNotAvailable", "The service is temporarily unavailable."),
        504: ("GatewayTimeout", "The gateway timed out."),
        401: ("InvalidAuthenticationToken", "Access token validation failure."),
        404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    }
    code, message = codes.get(
        status, ("generalException" if status >= 500 else "BadRequest", "Injected fault.")
    )
    return _graph_error_body(code, message), "application/json"


class _Invalid(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# --- helpers ---------------------------------------------------------------------------------


def _jwt_like(claims: dict[str, Any]) -> str:
    """Shaped like Entra's tokens (``eyJ...``) so the client's redaction is exercised."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signature = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.{signature}"


def _parse_datetime(value: Any, field: str) -> tuple[datetime, str]:
    if not isinstance(value, dict):
        raise _Invalid(400, "ErrorPropertyValidationFailure", f"Missing {field}.")
    raw, zone = value.get("dateTime"), value.get("timeZone")
    if not isinstance(raw, str):
        raise _Invalid(400, "ErrorPropertyValidationFailure", f"Missing {field}.dateTime.")
    text = re.sub(r"(\.\d{6})\d+$", r"\1", raw)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        raise _Invalid(
            400, "UnableToDeserializePostBody", f"Cannot convert '{raw}' to a date and time."
        ) from err
    if not isinstance(zone, str) or not zone:
        zone = "UTC"
    if zone not in _WINDOWS_ZONES:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise _Invalid(
                400,
                "TimeZoneNotSupportedException",
                "A valid TimeZone value must be specified. The following TimeZone value is "
                f"not supported: '{zone}'.",
            ) from err
    return moment.replace(tzinfo=None), zone


def _check_event(body: dict[str, Any]) -> None:
    start, start_zone = _parse_datetime(body.get("start"), "start")
    end, end_zone = _parse_datetime(body.get("end"), "end")
    if body.get("isAllDay") is True:
        midnight = all(t.hour == t.minute == t.second == t.microsecond == 0 for t in (start, end))
        if not midnight or start_zone != end_zone:
            raise _Invalid(
                400,
                "ErrorPropertyValidationFailure",
                "An all-day event's start and end must be at midnight in the same time zone.",
            )
    if end <= start and start_zone == end_zone:
        raise _Invalid(400, "ErrorPropertyValidationFailure", "The event must end after it starts.")
    show_as = body.get("showAs")
    if show_as is not None and show_as not in _SHOW_AS:
        raise _Invalid(400, "RequestBodyRead", f"The value '{show_as}' is not valid for showAs.")
    tx = body.get("transactionId")
    if tx is not None and (not isinstance(tx, str) or not tx):
        raise _Invalid(400, "RequestBodyRead", "transactionId must be a non-empty string.")
    props = body.get("singleValueExtendedProperties", [])
    if not isinstance(props, list) or not all(
        isinstance(p, dict)
        and isinstance(p.get("id"), str)
        and _PROP_ID.match(p["id"])
        and isinstance(p.get("value"), str)
        for p in props
    ):
        raise _Invalid(
            400, "ErrorInvalidProperty", "singleValueExtendedProperties: invalid id or value."
        )


def _prop_key(prop_id: str) -> str:
    """Extended property ids compare case-insensitively except the ``Name`` part [C]."""
    head, sep, name = prop_id.partition(" Name ")
    return head.lower() + sep + name


def _select(event: dict[str, Any], select: str | None) -> dict[str, Any]:
    if not select:
        return event
    wanted = {f.strip() for f in select.split(",") if f.strip()} | {"id", "@odata.etag"}
    return {k: v for k, v in event.items() if k in wanted}


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as err:
        raise _Invalid(400, "BadRequest", f"Invalid value '{value}' for {name}.") from err
    if not low <= number <= high:
        raise _Invalid(400, "BadRequest", f"Invalid value '{value}' for {name}.")
    return number


# --- routes ----------------------------------------------------------------------------------


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["microsoft graph"])

    def store() -> GraphStore:
        found: GraphStore = ctx.stores[NAME]
        return found

    def authorized(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token is empty.", request
            )
        expires = store().tokens.get(token)
        if expires is None:
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token validation failure.", request
            )
        if expires <= time.time():
            return _graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
                request,
            )
        return None

    def mailbox(user: str) -> dict[str, dict[str, Any]]:
        current = store()
        if user.lower() not in current.mailboxes:
            raise _Invalid(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        return current.mailbox(user)

    @router.post(f"/{NAME}/{{tenant}}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> Response:
        form = {
            k: v[0]
            for k, v in parse_qs((await request.body()).decode("utf-8", errors="replace")).items()
        }
        if tenant != demo_secret(TENANT_ENV):
            return _entra_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        grant = form.get("grant_type")
        if not grant:
            return _entra_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant != "client_credentials":
            return _entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        scope = form.get("scope", "")
        if not scope:
            return _entra_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        if not scope.endswith("/.default"):
            return _entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier.",
            )
        client_id = form.get("client_id", "")
        if not hmac.compare_digest(client_id.encode(), demo_secret(CLIENT_ID_ENV).encode()):
            return _entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        given = form.get("client_secret", "")
        if not hmac.compare_digest(given.encode(), demo_secret(CLIENT_SECRET_ENV).encode()):
            return _entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID.",
            )
        current = store()
        current.token_requests += 1
        now = int(time.time())
        access = _jwt_like(
            {
                "aud": "https://graph.microsoft.com",
                "tid": tenant,
                "appid": client_id,
                "roles": ["Calendars.ReadWrite"],
                "iat": now,
                "exp": now + TOKEN_LIFETIME,
                "jti": str(uuid.uuid4()),
            }
        )
        current.tokens[access] = now + TOKEN_LIFETIME
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME,
                "access_token": access,
            }
        )

    @router.post(_API + "/users/{user}/events")
    async def create_event(user: str, request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            events = mailbox(user)
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError) as err:
                raise _Invalid(400, "BadRequest", "Unable to read JSON request payload.") from err
            if not isinstance(body, dict):
                raise _Invalid(400, "BadRequest", "The request body must be an event object.")
            _check_event(body)
        except _Invalid as err:
            return _graph_error(err.status, err.code, err.message, request)
        current = store()
        transactions = current.transactions.setdefault(user.lower(), {})
        tx = body.get("transactionId")
        if isinstance(tx, str) and tx in transactions and transactions[tx] in events:
            # The documented retry guard: same answer, nothing new.
            return JSONResponse(events[transactions[tx]], status_code=201)
        event_id = "AAMkAGRpc3BhdGNo" + base64.urlsafe_b64encode(os.urandom(32)).decode()
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        fields = {
            k: v
            for k, v in body.items()
            if k not in _READ_ONLY and k != "singleValueExtendedProperties"
        }
        event: dict[str, Any] = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{user}')/"
            "events/$entity",
            "@odata.etag": f'W/"{base64.b64encode(os.urandom(12)).decode()}"',
            "id": event_id,
            "createdDateTime": stamp,
            "lastModifiedDateTime": stamp,
            "changeKey": base64.b64encode(os.urandom(12)).decode(),
            "iCalUId": _ICAL_PREFIX + uuid.uuid4().hex.upper(),
            "isAllDay": False,
            "isCancelled": False,
            "isOrganizer": True,
            "showAs": "busy",
            "type": "singleInstance",
            "attendees": [],
            "organizer": {"emailAddress": {"name": user, "address": user}},
            "webLink": f"{ctx.base_url}/{NAME}/owa/?itemid={quote(event_id, safe='')}"
            "&exvsurl=1&path=/calendar/item",
            **fields,
        }
        events[event_id] = event
        current.extended[event_id] = list(body.get("singleValueExtendedProperties", []))
        if isinstance(tx, str):
            transactions[tx] = event_id
        return JSONResponse(event, status_code=201)

    @router.get(_API + "/users/{user}/events")
    async def list_events(user: str, request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        params = request.query_params
        try:
            events = mailbox(user)
            top = _int_param(params.get("$top"), "$top", 10, 1, 1000)
            skip = _int_param(params.get("$skip"), "$skip", 0, 0, 1_000_000)
            found = list(events.values())
            expression = params.get("$filter")
            if expression:
                match = _FILTER.match(expression)
                if match is None:
                    raise _Invalid(
                        400,
                        "ErrorInvalidUrlQueryFilter",
                        "The query filter contains one or more invalid nodes.",
                    )
                prop = _prop_key(match["id"].replace("''", "'"))
                value = match["value"].replace("''", "'").casefold()
                extended = store().extended
                found = [
                    e
                    for e in found
                    if any(
                        _prop_key(p["id"]) == prop and p["value"].casefold() == value
                        for p in extended.get(e["id"], [])
                    )
                ]
        except _Invalid as err:
            return _graph_error(err.status, err.code, err.message, request)
        page = [_select(e, params.get("$select")) for e in found[skip : skip + top]]
        answer: dict[str, Any] = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{user}')/events",
            "value": page,
        }
        if skip + top < len(found):
            rest = {k: v for k, v in params.items() if k != "$skip"}
            rest["$skip"] = str(skip + top)
            answer["@odata.nextLink"] = (
                f"{ctx.base_url}{_API}/users/{quote(user, safe='@')}/events?{urlencode(rest)}"
            )
        return JSONResponse(answer)

    @router.get(_API + "/users/{user}/events/{event_id}")
    async def get_event(user: str, event_id: str, request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            event = mailbox(user).get(event_id)
            if event is None:
                raise _Invalid(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
        except _Invalid as err:
            return _graph_error(err.status, err.code, err.message, request)
        return JSONResponse(_select(event, request.query_params.get("$select")))

    @router.delete(_API + "/users/{user}/events/{event_id}")
    async def delete_event(user: str, event_id: str, request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            events = mailbox(user)
            if event_id not in events:
                raise _Invalid(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
        except _Invalid as err:
            return _graph_error(err.status, err.code, err.message, request)
        current = store()
        del events[event_id]
        current.extended.pop(event_id, None)
        transactions = current.transactions.get(user.lower(), {})
        for tx in [t for t, eid in transactions.items() if eid == event_id]:
            del transactions[tx]
        return Response(status_code=204)

    @router.get(f"/{NAME}/owa/", include_in_schema=False)
    async def web_view(itemid: str = "") -> Response:
        """The ``webLink`` target: a read-only view of one event."""
        for events in store().events.values():
            if itemid in events:
                return JSONResponse(events[itemid])
        return JSONResponse({"error": "unknown event"}, status_code=404)

    return router
