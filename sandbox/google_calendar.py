"""Google Calendar API v3 emulator: ``/google/calendar/v3/calendars/{calendarId}/events[/{id}]``.

What it holds to (Calendar v3 discovery document and errors guide):

- ``Authorization: Bearer <GOOGLE_ACCESS_TOKEN>``; anything else is a 401 ``authError``.
- Client-chosen ids: ``[a-v0-9]{5,1024}`` (base32hex), unique per calendar. A reused id is a 409
  ``duplicate``; a deleted id stays reserved (insert 409, get/delete 410 ``deleted``).
- Errors use Google's envelope
  ``{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}``.
- ``alt=json`` (sent on every request by googleapiclient) and unknown query parameters are ignored.
- ``POST /google/oauth2/token`` stands in for Google's token endpoint: a service account's
  JWT-bearer grant (``sub`` = the impersonated user) gets an access token these routes accept.
- ``events.list`` filters like Google: ``timeMin`` bounds an event's *end*, ``timeMax`` its *start*
  (both exclusive), and pages with an opaque ``pageToken``.

Simplifications, each an assumption [A]: calendars are the seed's staff emails, ``primary`` and
any ``…@group.calendar.google.com`` id (others are 404 like an unshared calendar); all-day events
are compared in UTC when listing; recurrence is stored but never expanded; ``syncToken`` is not
supported; ``htmlLink`` points at a read-only view in this sandbox. Error reasons beyond
``authError``, ``invalidParameter``, ``duplicate``, ``deleted``, ``notFound``, ``timeRangeEmpty``
and the rate-limit ones (e.g. for a malformed time or time zone) are our guesses [A]; the 409
``duplicate`` body comes from client issue reports rather than Google's guide [P], and the
wording of the 400 for a malformed id is an assumption [A].
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "google"
ACCESS_TOKEN_ENV = "GOOGLE_ACCESS_TOKEN"
_PREFIX = f"/{NAME}/calendar/v3"
_EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
_SHARED_CALENDAR_SUFFIX = "@group.calendar.google.com"
TOKEN_PATH = f"/{NAME}/oauth2/token"
"""Stands in for ``https://oauth2.googleapis.com/token`` (a key file's ``token_uri``)."""
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_CALENDAR_SCOPES = {
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.events",
}
_DEFAULT_PAGE = 250
_MAX_PAGE = 2500

_WRITABLE = (
    "summary",
    "description",
    "location",
    "start",
    "end",
    "attendees",
    "extendedProperties",
    "transparency",
    "visibility",
    "colorId",
    "reminders",
    "recurrence",
    "source",
    "guestsCanModify",
    "guestsCanInviteOthers",
    "guestsCanSeeOtherGuests",
    "eventType",
)
"""Fields a client may set; read-only ones (etag, htmlLink, created, ...) in a body are ignored."""


class CalendarStore:
    def __init__(self, seed: SandboxSeed) -> None:
        self.known_calendars = {"primary", *(s.email.lower() for s in seed.staff)}
        self.events: dict[str, dict[str, dict[str, Any]]] = {}
        self.deleted: dict[str, dict[str, dict[str, Any]]] = {}
        """Deleted events by calendar: their ids stay reserved, ``showDeleted`` lists them."""
        self.delegated_tokens: dict[str, str] = {}
        """Access tokens minted by the token endpoint, each bound to the user it impersonates."""
        self._version = 0

    def knows(self, calendar_id: str) -> bool:
        cal = calendar_id.lower()
        return cal in self.known_calendars or cal.endswith(_SHARED_CALENDAR_SUFFIX)

    def next_etag(self) -> str:
        # Google etags are quoted numbers that change on every write.
        self._version += 1
        return f'"{datetime.now(UTC).timestamp() * 1_000_000:.0f}{self._version:04d}"'

    def live(self, calendar_id: str) -> dict[str, dict[str, Any]]:
        return self.events.setdefault(calendar_id.lower(), {})

    def gone(self, calendar_id: str) -> dict[str, dict[str, Any]]:
        return self.deleted.setdefault(calendar_id.lower(), {})

    def all_events(self) -> list[dict[str, Any]]:
        return [e for cal in self.events.values() for e in cal.values()]

    def dump(self) -> dict[str, Any]:
        return {
            "delegated_subjects": sorted(set(self.delegated_tokens.values())),
            "calendars": {
                cal: {
                    "events": list(self.events.get(cal, {}).values()),
                    "deleted_ids": sorted(self.deleted.get(cal, {})),
                }
                for cal in sorted({*self.events, *self.deleted})
            },
        }


def create_store(seed: SandboxSeed) -> CalendarStore:
    return CalendarStore(seed)


# --- errors ----------------------------------------------------------------------------------


def _error_body(
    code: int,
    reason: str,
    message: str,
    *,
    domain: str = "global",
    location: str | None = None,
    location_type: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"domain": domain, "reason": reason, "message": message}
    if location is not None:
        item["locationType"] = location_type or "parameter"
        item["location"] = location
    return {"error": {"errors": [item], "code": code, "message": message}}


def _error(code: int, reason: str, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(_error_body(code, reason, message, **kwargs), status_code=code)


class _Invalid(Exception):
    """A request the API rejects; carries Google's reason and message."""

    def __init__(self, code: int, reason: str, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.location = location

    def response(self) -> JSONResponse:
        return _error(self.code, self.reason, self.message, location=self.location)


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    if status == 429:
        body = _error_body(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    elif status == 403:
        # The retryable 403: Calendar's per-user/per-project rate limit.
        body = _error_body(403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    elif status >= 500:
        body = _error_body(status, "backendError", "Backend Error")
    else:
        reasons = {
            400: ("badRequest", "Bad Request"),
            401: ("authError", "Invalid Credentials"),
            404: ("notFound", "Not Found"),
            409: ("conflict", "Conflict"),
            410: ("deleted", "Resource has been deleted"),
            412: ("conditionNotMet", "Precondition Failed"),
        }
        reason, message = reasons.get(status, ("badRequest", "Bad Request"))
        body = _error_body(status, reason, message)
    return body, "application/json; charset=UTF-8"


# --- helpers ---------------------------------------------------------------------------------


def _authorized(request: Request, store: CalendarStore) -> JSONResponse | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and (
        token == demo_secret(ACCESS_TOKEN_ENV) or token in store.delegated_tokens
    ):
        return None
    return _error(
        401, "authError", "Invalid Credentials", location="Authorization", location_type="header"
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise _Invalid(400, "parseError", "Parse Error") from err
    if not isinstance(body, dict):
        raise _Invalid(400, "parseError", "Parse Error")
    return body


def _instant(value: Any, field: str) -> datetime:
    """An EventDateTime as an aware instant, or a 400 naming the field."""
    if not isinstance(value, dict):
        raise _Invalid(400, "required", f"Missing {field} time.")
    if value.get("date") is not None:
        try:
            day = date.fromisoformat(str(value["date"]))
        except ValueError as err:
            raise _Invalid(400, "invalid", f"Invalid {field} time.", f"{field}.date") from err
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    if value.get("dateTime") is not None:
        try:
            moment = datetime.fromisoformat(str(value["dateTime"]))
        except ValueError as err:
            raise _Invalid(400, "invalid", f"Invalid {field} time.", f"{field}.dateTime") from err
        if moment.tzinfo is None:
            tz_name = value.get("timeZone")
            if not tz_name:
                raise _Invalid(
                    400,
                    "missingTimeZone",
                    f"Missing time zone definition for {field} time.",
                    f"{field}.timeZone",
                )
            try:
                moment = moment.replace(tzinfo=ZoneInfo(str(tz_name)))
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise _Invalid(
                    400,
                    "timeZoneInvalid",
                    f"Invalid time zone definition for {field} time.",
                    f"{field}.timeZone",
                ) from err
        return moment
    raise _Invalid(400, "required", f"Missing {field} time.")


def _check_times(event: dict[str, Any]) -> None:
    start, end = event.get("start"), event.get("end")
    begins = _instant(start, "start")
    ends = _instant(end, "end")
    if _all_day(start) != _all_day(end):
        raise _Invalid(
            400,
            "invalid",
            "Start and end times must either both be date or both be dateTime.",
            "end",
        )
    if ends <= begins:
        raise _Invalid(400, "timeRangeEmpty", "The specified time range is empty.", "end")


def _all_day(value: Any) -> bool:
    return isinstance(value, dict) and value.get("date") is not None


def _normalized_attendees(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _Invalid(400, "invalid", "Invalid attendees value.", "attendees")
    out = []
    for idx, attendee in enumerate(value):
        if not isinstance(attendee, dict) or not attendee.get("email"):
            raise _Invalid(400, "required", "Missing attendee email.", f"attendees[{idx}].email")
        out.append({"responseStatus": "needsAction", **attendee})
    return out


def _writable(body: dict[str, Any]) -> dict[str, Any]:
    fields = {k: body[k] for k in _WRITABLE if k in body}
    if "attendees" in fields:
        fields["attendees"] = _normalized_attendees(fields["attendees"])
    return fields


def _html_link(base_url: str, calendar_id: str, event_id: str) -> str:
    eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode().rstrip("=")
    return f"{base_url}/{NAME}/calendar/event?eid={eid}"


def _jwt_claims(assertion: str) -> dict[str, Any] | None:
    """The JWT's claims. The signature is not checked: the sandbox has no key registry [A]."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, number = decoded.partition(":")
        if kind != "offset":
            raise ValueError(decoded)
        return max(int(number), 0)
    except (ValueError, binascii.Error) as err:
        raise _Invalid(400, "invalid", "Invalid page token value.", "pageToken") from err


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _query_instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise _Invalid(400, "badRequest", "Bad Request", name) from err
    if moment.tzinfo is None:
        # Google requires an RFC3339 offset on timeMin/timeMax.
        raise _Invalid(400, "badRequest", "Bad Request", name)
    return moment


def _int_param(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise _Invalid(400, "invalid", f"Invalid value for: {name}", name) from err


# --- routes ----------------------------------------------------------------------------------


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["google calendar"])

    def store() -> CalendarStore:
        found: CalendarStore = ctx.stores[NAME]
        return found

    def calendar(calendar_id: str) -> CalendarStore:
        current = store()
        if not current.knows(calendar_id):
            raise _Invalid(404, "notFound", "Not Found")
        return current

    def existing(current: CalendarStore, calendar_id: str, event_id: str) -> dict[str, Any]:
        found = current.live(calendar_id).get(event_id)
        if found is not None:
            return found
        if event_id in current.gone(calendar_id):
            raise _Invalid(410, "deleted", "Resource has been deleted")
        raise _Invalid(404, "notFound", "Not Found")

    @router.post(_PREFIX + "/calendars/{calendar_id}/events")
    async def insert(calendar_id: str, request: Request) -> Response:
        if (denied := _authorized(request, store())) is not None:
            return denied
        try:
            current = calendar(calendar_id)
            body = await _json_object(request)
            event_id = body.get("id")
            if event_id is None:
                event_id = base64.b32hexencode(uuid.uuid4().bytes).decode().lower().rstrip("=")
            elif not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
                raise _Invalid(400, "invalidParameter", "Invalid resource id value.", "id")
            if event_id in current.live(calendar_id) or event_id in current.gone(calendar_id):
                raise _Invalid(409, "duplicate", "The requested identifier already exists.")
            fields = _writable(body)
            _check_times(fields)
        except _Invalid as err:
            return err.response()
        stamp = _now()
        organizer = calendar_id if "@" in calendar_id else None
        resource: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": current.next_etag(),
            "id": event_id,
            "status": "confirmed",
            "htmlLink": _html_link(ctx.base_url, calendar_id, event_id),
            "created": stamp,
            "updated": stamp,
            **(
                {
                    "creator": {"email": organizer, "self": True},
                    "organizer": {"email": organizer, "self": True},
                }
                if organizer
                else {}
            ),
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
            **fields,
        }
        current.live(calendar_id)[event_id] = resource
        return JSONResponse(resource, status_code=200)

    @router.get(_PREFIX + "/calendars/{calendar_id}/events")
    async def list_events(calendar_id: str, request: Request) -> Response:
        if (denied := _authorized(request, store())) is not None:
            return denied
        params = request.query_params
        try:
            current = calendar(calendar_id)
            time_min = _query_instant(params.get("timeMin"), "timeMin")
            time_max = _query_instant(params.get("timeMax"), "timeMax")
            if time_min is not None and time_max is not None and time_max <= time_min:
                raise _Invalid(
                    400, "timeRangeEmpty", "The specified time range is empty.", "timeMax"
                )
            size = min(_int_param(params.get("maxResults"), "maxResults", _DEFAULT_PAGE), _MAX_PAGE)
            if size < 1:
                raise _Invalid(400, "invalid", "Invalid value for: maxResults", "maxResults")
            offset = _page_offset(params.get("pageToken"))
        except _Invalid as err:
            return err.response()
        candidates = list(current.live(calendar_id).values())
        if params.get("showDeleted", "").lower() == "true":
            candidates += list(current.gone(calendar_id).values())

        def window(event: dict[str, Any]) -> tuple[datetime, datetime]:
            return _instant(event.get("start"), "start"), _instant(event.get("end"), "end")

        matching = []
        for event in candidates:
            begins, ends = window(event)
            if time_min is not None and ends <= time_min:
                continue
            if time_max is not None and begins >= time_max:
                continue
            matching.append((begins, event["id"], event))
        matching.sort(key=lambda item: (item[0], item[1]))
        page = [item[2] for item in matching[offset : offset + size]]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": current.next_etag(),
            "summary": calendar_id,
            "updated": _now(),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
            "items": page,
        }
        if offset + size < len(matching):
            body["nextPageToken"] = _page_token(offset + size)
        return JSONResponse(body)

    @router.get(_PREFIX + "/calendars/{calendar_id}/events/{event_id}")
    async def get_event(calendar_id: str, event_id: str, request: Request) -> Response:
        if (denied := _authorized(request, store())) is not None:
            return denied
        try:
            return JSONResponse(existing(calendar(calendar_id), calendar_id, event_id))
        except _Invalid as err:
            return err.response()

    async def modify(
        calendar_id: str, event_id: str, request: Request, *, replace: bool
    ) -> Response:
        if (denied := _authorized(request, store())) is not None:
            return denied
        try:
            current = calendar(calendar_id)
            event = existing(current, calendar_id, event_id)
            fields = _writable(await _json_object(request))
            updated = (
                {k: v for k, v in event.items() if k not in _WRITABLE} if replace else dict(event)
            )
            updated.update(fields)
            _check_times(updated)
        except _Invalid as err:
            return err.response()
        if updated.get("start") != event.get("start") or updated.get("end") != event.get("end"):
            updated["sequence"] = int(event.get("sequence", 0)) + 1
        updated["etag"] = current.next_etag()
        updated["updated"] = _now()
        current.live(calendar_id)[event_id] = updated
        return JSONResponse(updated)

    @router.patch(_PREFIX + "/calendars/{calendar_id}/events/{event_id}")
    async def patch_event(calendar_id: str, event_id: str, request: Request) -> Response:
        return await modify(calendar_id, event_id, request, replace=False)

    @router.put(_PREFIX + "/calendars/{calendar_id}/events/{event_id}")
    async def update_event(calendar_id: str, event_id: str, request: Request) -> Response:
        return await modify(calendar_id, event_id, request, replace=True)

    @router.delete(_PREFIX + "/calendars/{calendar_id}/events/{event_id}")
    async def delete_event(calendar_id: str, event_id: str, request: Request) -> Response:
        if (denied := _authorized(request, store())) is not None:
            return denied
        try:
            current = calendar(calendar_id)
            event = existing(current, calendar_id, event_id)
        except _Invalid as err:
            return err.response()
        del current.live(calendar_id)[event_id]
        current.gone(calendar_id)[event_id] = {
            **event,
            "status": "cancelled",
            "etag": current.next_etag(),
            "updated": _now(),
        }
        return Response(status_code=204)

    @router.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        """OAuth 2.0 JWT-bearer grant, as a service account with delegation uses it."""
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if form.get("grant_type", [""])[0] != _JWT_BEARER:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."},
                status_code=400,
            )
        claims = _jwt_claims(form.get("assertion", [""])[0])
        if claims is None or not claims.get("iss"):
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid JWT."}, status_code=400
            )
        scopes = str(claims.get("scope", "")).split()
        if not any(scope in _CALENDAR_SCOPES for scope in scopes):
            return JSONResponse(
                {
                    "error": "unauthorized_client",
                    "error_description": "Client is "
                    "unauthorized to retrieve access tokens using this method, or "
                    "client not authorized for any of the scopes requested.",
                },
                status_code=401,
            )
        minted = f"ya29.sandbox-delegated-{secrets.token_urlsafe(16)}"
        store().delegated_tokens[minted] = str(claims.get("sub") or claims["iss"])
        return JSONResponse({"access_token": minted, "expires_in": 3599, "token_type": "Bearer"})

    @router.get(f"/{NAME}/calendar/event", include_in_schema=False)
    async def html_view(eid: str = "") -> Response:
        """The ``htmlLink`` target: a read-only view of one event, as a browser would open it."""
        try:
            decoded = base64.urlsafe_b64decode(eid + "=" * (-len(eid) % 4)).decode()
        except (ValueError, binascii.Error):
            return JSONResponse({"error": "unknown event"}, status_code=404)
        event_id, _, calendar_id = decoded.partition(" ")
        event = store().live(calendar_id).get(event_id)
        if event is None:
            return JSONResponse({"error": "unknown event"}, status_code=404)
        return JSONResponse(event)

    return router
