"""Toggl Track as the firm's time tracker: hours logged per person per day, and per job.

Toggl has no weekly capacity per person, so ``weekly_capacity_hours`` is always None and the
firm config's ``weekly_capacity_hours`` supplies it.

``tracker_read`` makes two kinds of calls:

- ``GET /api/v9/workspaces/{wid}/users`` ties a Toggl user to a staff member by email;
- ``POST /reports/api/v3/workspace/{wid}/search/time_entries`` (the detailed report) for the
  matched users and dates, paged by the ``X-Next-ID`` / ``X-Next-Row-Number`` response headers
  sent back as ``first_id`` / ``first_row_number``. The snapshot needs hours per *date*, which
  the summary report does not break down; the detailed report gives every entry's start, and
  its pages cost one request per ``page_size`` entries.

``tracker_job_hours`` makes one summary report (``summary/time_entries``, grouped by user and
sub-grouped by description) over the assignees, narrowed by Toggl's description filter, and
counts the sub-groups whose description names the job's external id (``names_job``).

Toggl limits calls twice, and the two answers mean different things:

- **429** is the leaky bucket (about one request per second per token). This client paces its
  own calls (``min_interval``), waits out a 429 in place a few times (a paged read restarted
  from page one would spend the hourly quota again), and then fails retryably with
  ``next_retry_delay`` from Retry-After, or one second when there is none.
- **402** is the hourly quota per user per organisation. When the answer says when the window
  frees up (``X-Toggl-Quota-Resets-In``, or Retry-After) the failure is retryable with exactly
  that delay, so Temporal's next attempt lands in the new window (and the activity's own
  schedule-to-close bounds how long that may be). Without it, a 402 is Toggl's "your plan does
  not allow this" and no retry helps: non-retryable, "hourly API quota exhausted".

Other failures go through ``activities.errors`` (5xx and transport errors retry, other 4xx,
including Toggl's 403 for a bad token or a workspace it cannot see, stop with Toggl's reason).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import (
    bad_response,
    check_read_window,
    error_for_status,
    redact,
    retry_after,
    transport_error,
)
from activities.harvest import names_job
from activities.roles import TimeTrackerActivities, email_key, match_tracker_users
from dispatch.config import FirmConfigError, TogglConnector, secret
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
)

SYSTEM = "Toggl"
MAX_PAGE_SIZE = 50
"""[A] The detailed report's page-size ceiling is not documented; 50 is its default."""
MAX_PAGES = 400
"""A guard against a report whose paging never ends (20,000 entries at 50 a page)."""
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
SAFE_INTERVAL = 1.0
"""Toggl: "a safe window will be 1 request per second" (per token per IP)."""
BUCKET_WAITS = 2
"""429s waited out in place per request before the failure goes to Temporal."""
MAX_BUCKET_WAIT = timedelta(seconds=5)
"""A longer Retry-After on a 429 is not a leaky bucket draining: let Temporal wait instead."""
DEFAULT_BUCKET_DELAY = timedelta(seconds=1)
QUOTA_WINDOW = timedelta(hours=1)
"""The quota is a 60-minute window, so no honest reset is further away than this."""
_QUOTA_RESETS_IN = "x-toggl-quota-resets-in"
"""[P] Seen in public clients; Toggl's pages only say the quota is reported in headers."""


class TogglActivities(TimeTrackerActivities):
    def __init__(
        self,
        connector: TogglConnector,
        http: httpx.AsyncClient | None = None,
        *,
        page_size: int = MAX_PAGE_SIZE,
        min_interval: float = SAFE_INTERVAL,
        bucket_waits: int = BUCKET_WAITS,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        if min_interval < 0 or bucket_waits < 0:
            raise ValueError("min_interval and bucket_waits must not be negative")
        self._connector = connector
        self._http = http
        self._page_size = page_size
        self._min_interval = min_interval
        self._bucket_waits = bucket_waits
        base = connector.base_url.rstrip("/")
        self._users_url = f"{base}/api/v9/workspaces/{connector.workspace_id}/users"
        self._reports = f"{base}/reports/api/v3/workspace/{connector.workspace_id}"
        # One pace for every activity this worker runs: Toggl's bucket is per token, not per
        # call, so concurrent reads share it.
        self._pace = asyncio.Lock()
        self._last_call: float | None = None

    # --- activities --------------------------------------------------------------------------

    @activity.defn(name="tracker_read")
    async def read(self, input: TrackerReadInput) -> TrackerReadResult:
        check_read_window(SYSTEM, input.start, input.end)
        headers = self._headers()
        async with self._client() as http:
            users = await self._user_ids(http, headers)
            # Toggl keeps no capacity: the firm config's weekly hours apply.
            results, by_user_id, unmatched = match_tracker_users(input.staff, users)
            if by_user_id:
                seconds = await self._seconds_by_day(http, headers, input, sorted(by_user_id))
                for (user_id, day), total in sorted(seconds.items()):
                    for hours in by_user_id[user_id]:
                        hours.logged_by_date[day] = round(total / 3600, 2)
        return TrackerReadResult(users=results, unmatched=unmatched)

    @activity.defn(name="tracker_job_hours")
    async def job_hours(self, input: JobHoursInput) -> JobHours:
        if input.until < input.since:
            raise ApplicationError(
                f"{SYSTEM} job hours: until {input.until} is before since {input.since}",
                type="InvalidInput",
                non_retryable=True,
            )
        headers = self._headers()
        async with self._client() as http:
            users = await self._user_ids(http, headers)
            found = {users[k] for s in input.staff if (k := email_key(s)) in users}
            missing = sum(1 for s in input.staff if email_key(s) not in users)
            seconds = 0
            entries = 0
            if found:
                body = await self._post_json(
                    http,
                    headers,
                    f"{self._reports}/summary/time_entries",
                    {
                        "start_date": input.since.isoformat(),
                        "end_date": input.until.isoformat(),
                        "user_ids": sorted(found),
                        "grouping": "users",
                        # Sub-groups by description: each one's title is the entry text.
                        "sub_grouping": "time_entries",
                        # Narrows the report server-side; names_job then insists the id
                        # stands alone (the filter is a substring match).
                        "description": input.external_id,
                    },
                    operation="summary report",
                )
                seconds, entries = _job_seconds(body, input.external_id)
        detail = (
            f"{SYSTEM}: {entries} description group(s) of {len(found)} assignee(s) from "
            f"{input.since} to {input.until} whose description names {input.external_id}"
        )
        if missing:
            detail += f"; {missing} assignee(s) not found in the {SYSTEM} workspace"
        return JobHours(hours=round(seconds / 3600, 2), detail=detail)

    # --- calls -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        try:
            token = secret(self._connector.api_token_env)
        except FirmConfigError as err:
            raise ApplicationError(str(err), type="TogglConfig", non_retryable=True) from None
        # Basic auth: the token is the user name, the literal "api_token" the password.
        basic = base64.b64encode(f"{token}:api_token".encode()).decode()
        return {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def _client(self) -> _Borrowed:
        return _Borrowed(self._http)

    async def _user_ids(self, http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
        """Workspace users by lower-cased email."""
        response = await self._send(http, "GET", self._users_url, headers, None, "list users")
        body = _json(response, "list users")
        if not isinstance(body, list):
            raise _bad_response("list users", "the response is not a list")
        users: dict[str, int] = {}
        for user in body:
            if not isinstance(user, dict):
                continue
            email, user_id = user.get("email"), user.get("id")
            if (
                isinstance(email, str)
                and isinstance(user_id, int)
                and not isinstance(user_id, bool)
            ):
                users.setdefault(email.strip().lower(), user_id)
        return users

    async def _seconds_by_day(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        input: TrackerReadInput,
        user_ids: list[int],
    ) -> dict[tuple[int, date], int]:
        """Every detailed-report page for the users and dates, summed per user per day."""
        body: dict[str, Any] = {
            "start_date": input.start.isoformat(),
            "end_date": input.end.isoformat(),
            "user_ids": user_ids,
            "page_size": self._page_size,
            "order_by": "date",
            "order_dir": "ASC",
        }
        wanted = set(user_ids)
        totals: dict[tuple[int, date], int] = defaultdict(int)
        seen_rows: set[int] = set()
        for _ in range(MAX_PAGES):
            response = await self._send(
                http,
                "POST",
                f"{self._reports}/search/time_entries",
                headers,
                body,
                "detailed report",
            )
            rows = _json(response, "detailed report")
            if not isinstance(rows, list):
                raise _bad_response("detailed report", "the response is not a list of rows")
            for row in rows:
                _add_row(row, wanted, input.start, input.end, totals)
            next_row = response.headers.get("x-next-row-number")
            if not next_row:
                return totals
            try:
                first_row = int(next_row)
                next_id = response.headers.get("x-next-id")
                first_id = int(next_id) if next_id else None
            except ValueError:
                raise _bad_response("detailed report", "paging headers are not numbers") from None
            if first_row in seen_rows:
                raise _bad_response("detailed report", "paging points back to a page already read")
            seen_rows.add(first_row)
            body = {**body, "first_row_number": first_row}
            if first_id is not None:
                body["first_id"] = first_id
        raise _bad_response("detailed report", f"more than {MAX_PAGES} pages")

    async def _post_json(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        url: str,
        body: dict[str, Any],
        *,
        operation: str,
    ) -> Any:
        return _json(await self._send(http, "POST", url, headers, body, operation), operation)

    async def _send(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        operation: str,
    ) -> httpx.Response:
        """One call, paced, with the leaky bucket's 429 waited out in place a few times."""
        for waits in range(self._bucket_waits + 1):
            await self._wait_turn()
            try:
                response = await http.request(
                    method,
                    url,
                    headers=headers,
                    content=json.dumps(body) if body is not None else None,
                    timeout=REQUEST_TIMEOUT,
                )
            except httpx.RequestError as err:
                raise transport_error(SYSTEM, operation, err) from None
            if response.status_code == 200:
                return response
            if response.status_code == 429:
                delay = retry_after(response.headers) or DEFAULT_BUCKET_DELAY
                if waits < self._bucket_waits and delay <= MAX_BUCKET_WAIT:
                    activity.logger.info(
                        "Toggl rate limit (429); waiting %.1f s", delay.total_seconds()
                    )
                    await asyncio.sleep(delay.total_seconds())
                    continue
                raise ApplicationError(
                    f"{SYSTEM} {operation}: rate limited (HTTP 429); retry after "
                    f"{delay.total_seconds()} s",
                    type="RateLimited",
                    next_retry_delay=delay,
                )
            if response.status_code == 402:
                raise _quota_error(response, operation)
            raise error_for_status(
                SYSTEM,
                response.status_code,
                response.headers,
                _reason(response),
                operation=operation,
            )
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _wait_turn(self) -> None:
        """Keep calls from this worker at least ``min_interval`` apart."""
        if self._min_interval <= 0:
            return
        async with self._pace:
            now = time.monotonic()
            if self._last_call is not None:
                wait = self._last_call + self._min_interval - now
                if wait > 0:
                    await asyncio.sleep(wait)
            self._last_call = time.monotonic()


class _Borrowed:
    """The injected client as is (never closed here), or a fresh one closed on exit."""

    def __init__(self, http: httpx.AsyncClient | None) -> None:
        self._given = http
        self._own: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        self._own = httpx.AsyncClient(timeout=REQUEST_TIMEOUT)
        return self._own

    async def __aexit__(self, *exc: object) -> None:
        if self._own is not None:
            await self._own.aclose()


def _quota_error(response: httpx.Response, operation: str) -> ApplicationError:
    delay = _quota_reset(response.headers)
    if delay is not None:
        return ApplicationError(
            f"{SYSTEM} {operation}: hourly API quota exhausted (HTTP 402); it resets in "
            f"{round(delay.total_seconds())} s",
            type="QuotaExhausted",
            next_retry_delay=delay,
        )
    return ApplicationError(
        f"{SYSTEM} {operation}: hourly API quota exhausted (HTTP 402) and Toggl did not say "
        f"when it resets: {redact(_reason(response))}. Raise the plan's limit or wait an hour",
        type="QuotaExhausted",
        non_retryable=True,
    )


def _quota_reset(headers: Mapping[str, str]) -> timedelta | None:
    """When the quota window frees up: X-Toggl-Quota-Resets-In, else Retry-After (seconds)."""
    raw = headers.get(_QUOTA_RESETS_IN)
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if seconds >= 0:
            return min(timedelta(seconds=seconds), QUOTA_WINDOW)
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return min(timedelta(seconds=max(float(value), 0.0)), QUOTA_WINDOW)
            except ValueError:
                return None
    return None


def _add_row(
    row: object, wanted: set[int], start: date, end: date, totals: dict[tuple[int, date], int]
) -> None:
    """Add one detailed-report row's entries to the per-user, per-day seconds."""
    if not isinstance(row, dict):
        raise _bad_response("detailed report", "a row is not an object")
    user_id = row.get("user_id")
    entries = row.get("time_entries")
    if not isinstance(user_id, int) or not isinstance(entries, list):
        raise _bad_response("detailed report", "a row has no user_id or time_entries")
    if user_id not in wanted:
        return
    for entry in entries:
        if not isinstance(entry, dict):
            raise _bad_response("detailed report", "a time entry is not an object")
        seconds = entry.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise _bad_response("detailed report", "a time entry has no whole seconds")
        if seconds <= 0:
            continue  # a running timer reads negative: it is counted once it stops
        try:
            # The start is in the token owner's zone: its date is the day the work was done.
            day = datetime.fromisoformat(str(entry.get("start"))).date()
        except ValueError:
            raise _bad_response("detailed report", "a time entry has no valid start") from None
        if start <= day <= end:
            totals[user_id, day] += seconds


def _job_seconds(body: object, external_id: str) -> tuple[int, int]:
    """(seconds, description groups) of the summary's sub-groups that name the job."""
    groups = body.get("groups") if isinstance(body, dict) else None
    if not isinstance(groups, list):
        raise _bad_response("summary report", "no groups in the response")
    seconds = 0
    counted = 0
    for group in groups:
        subs = group.get("sub_groups") if isinstance(group, dict) else None
        if not isinstance(subs, list):
            raise _bad_response("summary report", "a group has no sub_groups")
        for sub in subs:
            if not isinstance(sub, dict):
                continue
            value = sub.get("seconds")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                if names_job(sub.get("title"), external_id):
                    seconds += value
                    counted += 1
    return seconds, counted


def _json(response: httpx.Response, operation: str) -> Any:
    try:
        return response.json()
    except ValueError:
        # Often an HTML page from a proxy in front of Toggl: worth another attempt.
        raise ApplicationError(
            f"{SYSTEM} {operation}: response is not JSON", type="TogglBadResponse"
        ) from None


def _reason(response: httpx.Response) -> str:
    """Toggl's own words: its error bodies are bare JSON strings (or plain text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, str) and body:
        return body
    if isinstance(body, dict):
        for field in ("message", "error", "error_message"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
    return response.reason_phrase or f"HTTP {response.status_code}"


def _bad_response(operation: str, why: str) -> ApplicationError:
    return bad_response(SYSTEM, operation, why, "TogglBadResponse")
