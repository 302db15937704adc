"""Outlook calendars through Microsoft Graph: one all-day block per engagement, role and round.

Auth is app-only: a client-credentials token from Entra ID (``connector.token_url`` with its
``{tenant}`` placeholder filled in, scope ``https://graph.microsoft.com/.default``), cached until
shortly before it expires, so a burst of blocks costs one token request. The application needs
the ``Calendars.ReadWrite`` application permission [A] (contract §12), granted for the mailboxes
it writes to.

Idempotency without storing anything outside Temporal:

- ``transactionId`` is a UUID5 of ``input.event_key``. Graph answers a repeated create that
  carries the same ``transactionId`` with the event it already made [C], which covers a retry
  after a lost 201.
- Graph does not document ``$filter`` on ``transactionId``, so the same value is also written to a
  single-value extended property of the event. Filtering events on an extended property's value
  is documented [C]; it finds the block again for ``calendar_remove`` and tells a repeated
  ``calendar_block`` that the event exists (``created=False``) before it posts anything. That
  also holds beyond whatever window Graph keeps transaction ids for (not documented [A]).

The block is an all-day event in the firm's time zone from the start date to the day after the
end date (Graph's end is exclusive), ``showAs: busy``, no reminder and no attendees — so nobody
gets an invitation; the chat message is the notification.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, redact, transport_error
from activities.google_calendar import block_description, block_last_day, block_title
from activities.roles import CalendarActivities
from activities.transport import FreshTransport
from dispatch.config import FirmConfigError, OutlookCalendarConnector, secret
from dispatch.models import (
    CalendarBlockInput,
    CalendarBlockResult,
    CalendarRemoveInput,
    CalendarRemoveResult,
)

SYSTEM = "Microsoft Graph"
TIMEOUT = httpx.Timeout(20.0, connect=5.0)
SCOPE = "https://graph.microsoft.com/.default"
TOKEN_MARGIN_SECONDS = 300
"""Renew this long before expiry, so a token never dies between being read and being used."""
TRANSACTION_NAMESPACE = uuid.UUID("3f0c7e52-9a41-5d1b-8c2e-6b7d9e0a1f24")
"""Fixed forever: changing it would make every existing block unfindable."""
EVENT_KEY_PROPERTY = "String {3f0c7e52-9a41-5d1b-8c2e-6b7d9e0a1f24} Name DispatchEventKey"
"""Our single-value extended property (a GUID of ours plus a name, Graph's documented format)."""
MAX_PAGES = 5


def transaction_id_for(event_key: str) -> str:
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, event_key))


def _config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type="CalendarConfigError", non_retryable=True)


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float
    """On the ``clock``'s scale (monotonic seconds)."""
    owner: tuple[str, str, str]
    """(tenant, client id, client secret) it was issued for: new credentials, new token."""


class OutlookCalendarActivities(CalendarActivities):
    def __init__(
        self,
        connector: OutlookCalendarConnector,
        http: httpx.AsyncClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connector = connector
        self._http = http
        self._transport: FreshTransport | None = None
        self._clock = clock
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    def _client(self) -> httpx.AsyncClient:
        # Created on first use, inside the worker's event loop, and shared by all attempts.
        # Every call here is idempotent, so a dead keep-alive connection may be retried once.
        if self._http is None:
            self._transport = FreshTransport()
            self._http = httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport)
        return self._http

    @property
    def dead_connections(self) -> int:
        """Reused connections the server had closed (each was replaced, the call went on)."""
        return self._transport.dead_connections if self._transport else 0

    @activity.defn(name="calendar_block")
    async def block(self, input: CalendarBlockInput) -> CalendarBlockResult:
        mailbox = input.staff.email
        tx = transaction_id_for(input.event_key)
        existing = await self._find(mailbox, tx)
        if existing:
            event = existing[0]
            return CalendarBlockResult(
                event_id=str(event["id"]),
                created=False,
                html_link=event.get("webLink"),
                detail="the block already exists",
            )
        body, clamped = event_body(input)
        response = await self._call(
            "POST", self._events_url(mailbox), "create event", json_body=body
        )
        event = _json(response)
        return CalendarBlockResult(
            event_id=str(event.get("id", "")),
            created=True,
            html_link=event.get("webLink"),
            detail="end date was before the start; blocked the start day only" if clamped else "",
        )

    @activity.defn(name="calendar_remove")
    async def remove(self, input: CalendarRemoveInput) -> CalendarRemoveResult:
        """Delete every event carrying this key's marker; none left is success."""
        mailbox = input.staff.email
        found = await self._find(mailbox, transaction_id_for(input.event_key))
        deleted = 0
        for event in found:
            url = f"{self._events_url(mailbox)}/{quote(str(event['id']), safe='')}"
            response = await self._call("DELETE", url, "delete event", allow=(404,))
            if response.status_code != 404:
                deleted += 1
        if deleted:
            return CalendarRemoveResult(removed=True, detail=f"deleted {deleted} event(s)")
        return CalendarRemoveResult(removed=True, detail="already gone")

    # --- Graph calls -------------------------------------------------------------------------

    def _events_url(self, mailbox: str) -> str:
        base = self._connector.graph_base_url.rstrip("/")
        return f"{base}/users/{quote(mailbox, safe='@')}/events"

    async def _find(self, mailbox: str, tx: str) -> list[dict[str, Any]]:
        """Events of this mailbox marked with our extended property = ``tx``."""
        url: str | None = self._events_url(mailbox)
        params: dict[str, str] | None = {
            # tx is a UUID: no quote to escape inside the OData string literal.
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{EVENT_KEY_PROPERTY}' "
            f"and ep/value eq '{tx}')",
            "$select": "id,webLink,subject,start,end",
        }
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page = _json(await self._call("GET", url, "find event", params=params))
            found.extend(e for e in page.get("value") or [] if isinstance(e, dict) and "id" in e)
            # The next link carries the whole query already.
            url, params = page.get("@odata.nextLink"), None
        return found

    async def _call(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One Graph request with the cached token; one fresh-token retry on a 401."""
        for fresh in (False, True):
            token = await self._access_token(force_new=fresh)
            headers = {
                "Authorization": f"Bearer {token}",
                # Ids that survive the event being moved between folders [C].
                "Prefer": 'IdType="ImmutableId"',
            }
            try:
                response = await self._client().request(
                    method, url, json=json_body, params=params, headers=headers
                )
            except httpx.TransportError as err:
                raise transport_error(SYSTEM, operation, err) from None
            if response.status_code == 401 and not fresh:
                continue  # revoked or expired early: one more try with a new token
            if response.is_success or response.status_code in allow:
                return response
            raise error_for_status(
                SYSTEM,
                response.status_code,
                response.headers,
                _graph_reason(response),
                operation=operation,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _access_token(self, *, force_new: bool = False) -> str:
        owner = self._credentials()
        async with self._token_lock:
            cached = self._token
            if (
                not force_new
                and cached is not None
                and cached.owner == owner
                and self._clock() < cached.renew_at
            ):
                return cached.value
            self._token = await self._fetch_token(owner)
            return self._token.value

    def _credentials(self) -> tuple[str, str, str]:
        c = self._connector
        try:
            values = tuple(
                secret(env) or "" for env in (c.tenant_id_env, c.client_id_env, c.client_secret_env)
            )
        except FirmConfigError as err:
            raise _config_error(str(err)) from None
        tenant, client_id, client_secret = values
        return tenant, client_id, client_secret

    async def _fetch_token(self, owner: tuple[str, str, str]) -> _Token:
        tenant, client_id, client_secret = owner
        url = self._connector.token_url.replace("{tenant}", quote(tenant, safe=""))
        started = self._clock()
        try:
            response = await self._client().post(
                url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "scope": SCOPE,
                },
            )
        except httpx.TransportError as err:
            raise transport_error(SYSTEM, "token request", err) from None
        data = _json(response)
        if response.status_code in (400, 401):
            # Entra's error and AADSTS code say what is wrong (bad secret, unknown app or
            # tenant); the rest of its description is trace ids. Retrying will not help.
            codes = data.get("error_codes") or []
            code = f" AADSTS{codes[0]}" if codes else ""
            raise ApplicationError(
                f"{SYSTEM} token request: refused with HTTP {response.status_code}: "
                f"{redact(str(data.get('error') or 'unknown error'))}{code}",
                type="GraphAuthError",
                non_retryable=True,
            )
        if not response.is_success:
            raise error_for_status(
                SYSTEM,
                response.status_code,
                response.headers,
                str(data.get("error") or response.reason_phrase),
                operation="token request",
            )
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise ApplicationError(
                f"{SYSTEM} token request: no access_token in the answer", type="ServerError"
            )
        try:
            lifetime = float(data.get("expires_in", 0))
        except (TypeError, ValueError):
            lifetime = 0.0
        return _Token(token, started + lifetime - TOKEN_MARGIN_SECONDS, owner)


def event_body(input: CalendarBlockInput) -> tuple[dict[str, Any], bool]:
    """The Graph event for a block, and whether the end date had to be clamped."""
    last_day, clamped = block_last_day(input)
    tx = transaction_id_for(input.event_key)
    end = last_day + timedelta(days=1)
    return (
        {
            "subject": block_title(input),
            "body": {"contentType": "text", "content": block_description(input)},
            "start": {
                "dateTime": f"{input.start_date.isoformat()}T00:00:00",
                "timeZone": _tz(input),
            },
            "end": {"dateTime": f"{end.isoformat()}T00:00:00", "timeZone": _tz(input)},
            "isAllDay": True,
            "showAs": "busy",
            "isReminderOn": False,
            "responseRequested": False,
            "transactionId": tx,
            "singleValueExtendedProperties": [{"id": EVENT_KEY_PROPERTY, "value": tx}],
        },
        clamped,
    )


def _tz(input: CalendarBlockInput) -> str:
    # The firm's IANA zone; Graph accepts IANA names as well as Windows ones (contract §12).
    return input.time_zone


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _graph_reason(response: httpx.Response) -> str:
    error = _json(response).get("error")
    if isinstance(error, dict):
        return f"{error.get('code', 'error')}: {error.get('message', '')}"
    return response.text[:200] or response.reason_phrase


__all__ = [
    "EVENT_KEY_PROPERTY",
    "OutlookCalendarActivities",
    "event_body",
    "transaction_id_for",
]
