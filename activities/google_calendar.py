"""Google Calendar: one all-day block per engagement, role and assignment round, created once.

Idempotency comes from the event id: it is derived from the workflow's ``event_key``, so a
retried or replayed insert meets Google's 409 ``duplicate`` and we read the existing event
instead of creating a second one. A deleted event's id stays reserved at Google (409 on insert,
410 on get): the block is then left deleted, since someone removed it on purpose.
``calendar_remove`` deletes by the same derived id; 404 / 410 mean it is already gone.

Credentials, in order:
1. ``GOOGLE_ACCESS_TOKEN`` (the sandbox, or a short-lived token minted elsewhere): used as is.
   The token's owner must be able to write to each staff calendar; no attendees are added.
2. A service-account key file named by ``connector.credentials_file_env``, impersonating each
   staff member (domain-wide delegation). Only this path may add attendees: Google refuses
   attendees from a service account without delegation (``forbiddenForServiceAccounts``).
Neither is a configuration error, reported as non-retryable.

``googleapiclient`` is synchronous (httplib2) and an ``Http`` object is not thread-safe, so each
worker thread builds its own client (with the bundled discovery document, about 2 ms) and keeps
it. Its ``Http`` is ``activities.transport.FreshHttp``: httplib2 alone writes to a keep-alive
connection however long it sat idle and fails with ``BrokenPipeError`` once the server has
closed it; ``FreshHttp`` closes idle connections first and sends once more on a new connection
if a reused one is dead (safe: every call here is idempotent, the insert by its fixed id).
The client sends ``User-Agent: (gzip)`` and ``x-goog-api-client: gdcl/<version>
gl-python/<version>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
import weakref
from datetime import date, timedelta
from typing import Any

import google.auth.exceptions
import google_auth_httplib2  # type: ignore[import-untyped]  # no type hints shipped
import httplib2
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials as TokenCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, redact, retry_after, transport_error
from activities.roles import CalendarActivities
from activities.transport import FreshHttp
from dispatch.config import GoogleCalendarConnector, secret
from dispatch.models import (
    CalendarBlockInput,
    CalendarBlockResult,
    CalendarRemoveInput,
    CalendarRemoveResult,
    Role,
)

SYSTEM = "Google Calendar"
ACCESS_TOKEN_ENV = "GOOGLE_ACCESS_TOKEN"
SCOPES = ["https://www.googleapis.com/auth/calendar.events"]
TIMEOUT_SECONDS = 20.0
"""Below the activity's start-to-close timeout, so a hung connection fails the attempt cleanly."""
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timeouts (socket.timeout is TimeoutError, an OSError)
    httplib2.HttpLib2Error,
    google.auth.exceptions.TransportError,
)


def event_id_for(event_key: str) -> str:
    """Google event id for a key: base32hex of SHA-256, lowercase, unpadded (52 of [0-9a-v])."""
    digest = hashlib.sha256(event_key.encode("utf-8")).digest()
    return base64.b32hexencode(digest).decode("ascii").lower().rstrip("=")


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type="CalendarConfigError", non_retryable=True)


class _Auth:
    def __init__(self, credentials: Any, delegated: bool) -> None:
        self.credentials = credentials
        self.delegated = delegated


class GoogleCalendarActivities(CalendarActivities):
    def __init__(
        self, connector: GoogleCalendarConnector, *, access_token_env: str = ACCESS_TOKEN_ENV
    ) -> None:
        self._connector = connector
        self._access_token_env = access_token_env
        self._lock = threading.Lock()
        self._service_account: service_account.Credentials | None = None
        self._delegated: dict[str, service_account.Credentials] = {}
        """Per-staff delegated credentials, kept so each reuses its access token until expiry."""
        self._token_credentials: tuple[str, TokenCredentials] | None = None
        self._local = threading.local()
        """Built clients per worker thread: ``build`` parses the discovery document (tens of
        milliseconds of CPU), and a client is not safe to share across threads."""
        self._transports: weakref.WeakSet[FreshHttp] = weakref.WeakSet()

    @property
    def dead_connections(self) -> int:
        """Reused connections the server had closed, over every thread (each was replaced)."""
        with self._lock:
            transports = list(self._transports)
        return sum(http.dead_connections for http in transports)

    @activity.defn(name="calendar_block")
    async def block(self, input: CalendarBlockInput) -> CalendarBlockResult:
        return await asyncio.to_thread(self._block, input)

    @activity.defn(name="calendar_remove")
    async def remove(self, input: CalendarRemoveInput) -> CalendarRemoveResult:
        """Delete the block made for ``input.event_key``; one already gone is success.

        The event id is derived from the key exactly as ``calendar_block`` derived it, so nothing
        needs to be stored. Google answers 404 for an id never used and 410 for one deleted
        before (by us on an earlier attempt, or by the person): both mean "already gone".
        """
        return await asyncio.to_thread(self._remove, input)

    # --- the call, in a worker thread ------------------------------------------------------

    def _block(self, input: CalendarBlockInput) -> CalendarBlockResult:
        auth = self._auth_for(input.staff.email)
        calendar_id = self._calendar_id(input.staff.email)
        body, clamped = self._event_body(input, with_attendee=auth.delegated)
        events = self._events(auth, input.staff.email)
        note = "end date was before the start; blocked the start day only" if clamped else ""
        try:
            # sendUpdates=none: the chat message is the notification, not an invitation email.
            created = _execute(
                events.insert(calendarId=calendar_id, body=body, sendUpdates="none"),
                "events.insert",
            )
            return _result(created, created=True, detail=note)
        except HttpError as err:
            if err.status_code != 409:
                raise _http_error(err, "events.insert") from None
        # 409: this id exists (our earlier attempt succeeded) or was deleted in the calendar.
        try:
            existing = _execute(
                events.get(calendarId=calendar_id, eventId=body["id"]), "events.get"
            )
        except HttpError as err:
            if err.status_code == 410:
                return _deleted(body["id"])
            raise _http_error(err, "events.get") from None
        if existing.get("status") == "cancelled":
            return _deleted(body["id"])
        return _result(existing, created=False, detail=note)

    def _remove(self, input: CalendarRemoveInput) -> CalendarRemoveResult:
        auth = self._auth_for(input.staff.email)
        events = self._events(auth, input.staff.email)
        event_id = event_id_for(input.event_key)
        try:
            _execute(
                events.delete(
                    calendarId=self._calendar_id(input.staff.email),
                    eventId=event_id,
                    sendUpdates="none",
                ),
                "events.delete",
            )
        except HttpError as err:
            if err.status_code in (404, 410):
                return CalendarRemoveResult(removed=True, detail="already gone")
            raise _http_error(err, "events.delete") from None
        return CalendarRemoveResult(removed=True, detail="deleted")

    def _events(self, auth: _Auth, staff_email: str) -> Any:
        """This thread's events resource for these credentials (built once, then reused)."""
        services: dict[tuple[str, int], Any] = self._local.__dict__.setdefault("services", {})
        key = (staff_email if auth.delegated else "token", id(auth.credentials))
        if key not in services:
            if not auth.delegated:
                # A new access token replaces the old client rather than piling up beside it.
                for old in [k for k in services if k[0] == "token"]:
                    del services[old]
            transport = FreshHttp(timeout=TIMEOUT_SECONDS)
            with self._lock:
                self._transports.add(transport)
            services[key] = build(
                "calendar",
                "v3",
                http=google_auth_httplib2.AuthorizedHttp(auth.credentials, http=transport),
                static_discovery=True,
                cache_discovery=False,
                client_options={"api_endpoint": self._connector.api_endpoint},
            ).events()
        return services[key]

    def _calendar_id(self, staff_email: str) -> str:
        configured = self._connector.calendar_id
        return staff_email if configured == "primary" else configured

    def _auth_for(self, staff_email: str) -> _Auth:
        token = os.environ.get(self._access_token_env)
        if token:
            with self._lock:
                cached = self._token_credentials
                if cached is None or cached[0] != token:
                    # google-auth leaves these constructors unannotated.
                    credentials = TokenCredentials(token=token)  # type: ignore[no-untyped-call]
                    cached = self._token_credentials = (token, credentials)
            return _Auth(cached[1], delegated=False)
        env = self._connector.credentials_file_env
        path = secret(env, required=False)
        if not path:
            raise _config_error(
                f"no Google credentials: set {self._access_token_env} or point {env} at a "
                "service-account key file with domain-wide delegation"
            )
        with self._lock:
            if self._service_account is None:
                try:
                    load = service_account.Credentials.from_service_account_file
                    self._service_account = load(  # type: ignore[no-untyped-call]
                        path, scopes=SCOPES
                    )
                except (OSError, ValueError) as err:
                    raise _config_error(
                        f"the service-account key file named by {env} cannot be used "
                        f"({type(err).__name__})"
                    ) from None
            key = staff_email.lower()
            if key not in self._delegated:
                self._delegated[key] = self._service_account.with_subject(staff_email)
            return _Auth(self._delegated[key], delegated=True)

    def _event_body(
        self, input: CalendarBlockInput, *, with_attendee: bool
    ) -> tuple[dict[str, Any], bool]:
        last_day, clamped = block_last_day(input)
        body: dict[str, Any] = {
            "id": event_id_for(input.event_key),
            "summary": block_title(input),
            "description": block_description(input),
            # All-day events: the end date is exclusive.
            "start": {"date": input.start_date.isoformat()},
            "end": {"date": (last_day + timedelta(days=1)).isoformat()},
            "transparency": "opaque",
            "extendedProperties": {
                "private": {
                    "dispatch_workflow_id": input.workflow_id,
                    "dispatch_role": input.role.value,
                }
            },
        }
        if with_attendee:
            body["attendees"] = [
                {
                    "email": input.staff.email,
                    "displayName": input.staff.name,
                    "responseStatus": "accepted",
                }
            ]
        return body, clamped


# --- helpers ---------------------------------------------------------------------------------


def block_title(input: CalendarBlockInput) -> str:
    """The block's title; shared with the Outlook connector so both calendars read alike."""
    s = input.summary
    label = "Engagement" if input.role is Role.PREPARER else "Engagement review"
    return f"{label}: {s.service_name} — {s.client_name}"


def block_description(input: CalendarBlockInput) -> str:
    s = input.summary
    lines = [
        s.title,
        f"Client: {s.client_name}",
        f"Role: {input.role.value}",
        f"Estimated hours: {input.hours:g} (engagement estimate {s.estimated_hours:g})",
        f"Due: {_long_date(s.due_date)}",
    ]
    if s.scope_summary:
        lines.append(f"Scope: {s.scope_summary}")
    if s.pm_url:
        lines.append(f"Open in the practice management system: {s.pm_url}")
    return "\n".join(lines)


def block_last_day(input: CalendarBlockInput) -> tuple[date, bool]:
    """The last blocked day (inclusive), and whether an end before the start was clamped."""
    if input.end_date < input.start_date:
        return input.start_date, True
    return input.end_date, False


def _long_date(day: date) -> str:
    return f"{day:%A}, {day:%B} {day.day}, {day:%Y}"


def _execute(request: Any, operation: str) -> dict[str, Any]:
    """Run one request with no client-side retries: Temporal's retry policy owns retrying."""
    try:
        result: dict[str, Any] = request.execute(num_retries=0)
        return result
    except HttpError:
        raise
    except google.auth.exceptions.RefreshError as err:
        # Raised when Google answered 401 and the credentials cannot refresh (a bare access
        # token), or the token endpoint refused (e.g. delegation not granted). google-auth says
        # whether trying again may help.
        if getattr(err, "retryable", False):
            raise transport_error(SYSTEM, operation, err) from None
        raise ApplicationError(
            f"{SYSTEM} {operation}: access token refused or not refreshable (HTTP 401 or token "
            f"endpoint): {redact(str(err))}",
            type="GoogleCalendarAuthError",
            non_retryable=True,
        ) from None
    except _TRANSPORT_ERRORS as err:
        raise transport_error(SYSTEM, operation, err) from None


def _http_error(err: HttpError, operation: str) -> ApplicationError:
    """Map an HttpError; the cause is dropped because its text holds the URL (a staff email)."""
    status = int(err.status_code)
    headers = {str(k): str(v) for k, v in dict(err.resp).items()}
    details = err.error_details if isinstance(err.error_details, list) else []
    reasons = [str(d.get("reason")) for d in details if isinstance(d, dict) and d.get("reason")]
    reason = f"{','.join(reasons)}: {err.reason}" if reasons else str(err.reason)
    if status == 403 and _RATE_LIMIT_REASONS.intersection(reasons):
        delay = retry_after(headers)
        return ApplicationError(
            f"{SYSTEM} {operation}: rate limited (HTTP 403 {','.join(reasons)})",
            type="RateLimited",
            next_retry_delay=delay,
        )
    return error_for_status(SYSTEM, status, headers, reason, operation=operation)


def _result(event: dict[str, Any], *, created: bool, detail: str) -> CalendarBlockResult:
    return CalendarBlockResult(
        event_id=str(event["id"]), created=created, html_link=event.get("htmlLink"), detail=detail
    )


def _deleted(event_id: str) -> CalendarBlockResult:
    return CalendarBlockResult(
        event_id=event_id,
        created=False,
        html_link=None,
        detail="the block was deleted from the calendar; not re-created",
    )
