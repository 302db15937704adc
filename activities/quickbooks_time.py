"""QuickBooks Time (formerly TSheets) as the firm's time tracker.

QuickBooks Time keeps no weekly capacity per person, so ``weekly_capacity_hours`` is always
None and the firm config's ``weekly_capacity_hours`` supplies it.

``tracker_read``:

- ``GET /users?active=yes`` ties a QuickBooks Time user to a staff member by email;
- ``GET /timesheets?start_date=&end_date=&user_ids=&on_the_clock=both`` gives the time, summed
  per user per ``date`` (the company's local day). ``on_the_clock`` defaults to ``no`` on the
  server, which would leave out a timer that is still running; time already on the clock is
  time not free for new work, so we ask for ``both`` and count what has elapsed.

Both lists are objects keyed by id (not lists) and are paged with ``page``/``limit`` while the
response says ``"more": true``. Failures go through ``activities.errors``: 429 waits for
Retry-After, 5xx and transport errors retry, other 4xx stop with QuickBooks Time's reason.

``tracker_job_hours``: QuickBooks Time knows jobcodes, not the PM's job ids, so time counts
for an engagement when the assignees' timesheet notes name its external id (``names_job``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import (
    bad_response,
    check_read_window,
    error_for_status,
    transport_error,
)
from activities.harvest import names_job
from activities.roles import TimeTrackerActivities, email_key, match_tracker_users
from dispatch.config import FirmConfigError, QuickBooksTimeConnector, secret
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
)

SYSTEM = "QuickBooks Time"
MAX_LIMIT = 200
"""The API's largest page (``limit``)."""
MAX_PAGES = 500
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class QuickBooksTimeActivities(TimeTrackerActivities):
    def __init__(
        self,
        connector: QuickBooksTimeConnector,
        http: httpx.AsyncClient | None = None,
        *,
        page_size: int = MAX_LIMIT,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be between 1 and {MAX_LIMIT}, got {page_size}")
        self._connector = connector
        self._http = http
        self._page_size = page_size
        self._clock = clock
        self._base = connector.base_url.rstrip("/")

    @activity.defn(name="tracker_read")
    async def read(self, input: TrackerReadInput) -> TrackerReadResult:
        check_read_window(SYSTEM, input.start, input.end)
        headers = self._headers()
        if self._http is not None:
            return await self._read(self._http, headers, input)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
            return await self._read(http, headers, input)

    @activity.defn(name="tracker_job_hours")
    async def job_hours(self, input: JobHoursInput) -> JobHours:
        if input.until < input.since:
            raise ApplicationError(
                f"{SYSTEM} job hours: until {input.until} is before since {input.since}",
                type="InvalidInput",
                non_retryable=True,
            )
        headers = self._headers()
        if self._http is not None:
            return await self._job_hours(self._http, headers, input)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
            return await self._job_hours(http, headers, input)

    # --- the reads ---------------------------------------------------------------------------

    async def _read(
        self, http: httpx.AsyncClient, headers: dict[str, str], input: TrackerReadInput
    ) -> TrackerReadResult:
        users = await self._user_ids(http, headers)
        # No capacity in QuickBooks Time: the firm config's weekly hours apply.
        results, by_user_id, unmatched = match_tracker_users(input.staff, users)
        if by_user_id:
            sheets = await self._timesheets(
                http, headers, sorted(by_user_id), input.start, input.end
            )
            totals: dict[tuple[int, date], float] = defaultdict(float)
            for sheet in sheets:
                user_id = _int(sheet.get("user_id"), "timesheet user_id")
                day = _day(sheet)
                if user_id in by_user_id and input.start <= day <= input.end:
                    totals[user_id, day] += self._seconds(sheet)
            for (user_id, day), seconds in sorted(totals.items()):
                for hours in by_user_id[user_id]:
                    hours.logged_by_date[day] = round(seconds / 3600, 2)
        return TrackerReadResult(users=results, unmatched=unmatched)

    async def _job_hours(
        self, http: httpx.AsyncClient, headers: dict[str, str], input: JobHoursInput
    ) -> JobHours:
        users = await self._user_ids(http, headers)
        found = sorted({users[k] for s in input.staff if (k := email_key(s)) in users})
        missing = sum(1 for s in input.staff if email_key(s) not in users)
        seconds = 0.0
        counted = 0
        if found:
            for sheet in await self._timesheets(http, headers, found, input.since, input.until):
                if names_job(sheet.get("notes"), input.external_id):
                    seconds += self._seconds(sheet)
                    counted += 1
        detail = (
            f"{SYSTEM}: {counted} timesheet(s) of {len(found)} assignee(s) from {input.since} "
            f"to {input.until} whose notes name {input.external_id}"
        )
        if missing:
            detail += f"; {missing} assignee(s) not found in {SYSTEM}"
        return JobHours(hours=round(seconds / 3600, 2), detail=detail)

    async def _user_ids(self, http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
        """Active users by lower-cased email (someone deactivated is reported unmatched)."""
        users = await self._collect(
            http, headers, "users", {"active": "yes"}, key="users", operation="list users"
        )
        by_email: dict[str, int] = {}
        for user in users:
            email = user.get("email")
            if isinstance(email, str) and email.strip():
                by_email.setdefault(email.strip().lower(), _int(user.get("id"), "user id"))
        return by_email

    async def _timesheets(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        user_ids: list[int],
        start: date,
        end: date,
    ) -> list[dict[str, Any]]:
        return await self._collect(
            http,
            headers,
            "timesheets",
            {
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "user_ids": ",".join(str(u) for u in user_ids),
                "on_the_clock": "both",
                # The users are already known; the supplement would only repeat them.
                "supplemental_data": "no",
            },
            key="timesheets",
            operation="list timesheets",
        )

    def _seconds(self, sheet: dict[str, Any]) -> float:
        """The sheet's seconds; for a timer still running, what has elapsed so far."""
        duration = sheet.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise _bad_response("list timesheets", "a timesheet has no numeric duration")
        if sheet.get("on_the_clock") is True and duration <= 0:
            # The API reports the time so far in ``duration``; should it ever say 0 for a
            # running timer, the start tells how long it has been going.
            try:
                started = datetime.fromisoformat(str(sheet.get("start")))
            except ValueError:
                return 0.0
            if started.tzinfo is None:
                return 0.0
            return max(0.0, (self._clock() - started).total_seconds())
        return float(max(duration, 0))

    # --- transport ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        try:
            token = secret(self._connector.access_token_env)
        except FirmConfigError as err:
            raise ApplicationError(
                str(err), type="QuickBooksTimeConfig", non_retryable=True
            ) from None
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def _collect(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        path: str,
        params: dict[str, str],
        *,
        key: str,
        operation: str,
    ) -> list[dict[str, Any]]:
        """Every page of a listing: ``page`` goes up while the response says ``more``."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            query = {**params, "page": str(page), "limit": str(self._page_size)}
            body = await self._get(http, headers, f"{self._base}/{path}", query, operation)
            results = body.get("results")
            found = results.get(key) if isinstance(results, dict) else None
            # Keyed by id; an empty result arrives as [] (an empty PHP array).
            if isinstance(found, dict):
                items.extend(v for v in found.values() if isinstance(v, dict))
            elif found != []:
                raise _bad_response(operation, f"no results.{key} in the response")
            more = body.get("more")
            if not isinstance(more, bool):
                raise _bad_response(operation, "no 'more' flag in the response")
            if not more:
                return items
        raise _bad_response(operation, f"more than {MAX_PAGES} pages")

    async def _get(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        url: str,
        params: dict[str, str],
        operation: str,
    ) -> dict[str, Any]:
        try:
            response = await http.get(url, params=params, headers=headers, timeout=REQUEST_TIMEOUT)
        except httpx.RequestError as err:
            raise transport_error(SYSTEM, operation, err) from None
        if response.status_code != 200:
            raise error_for_status(
                SYSTEM,
                response.status_code,
                response.headers,
                _reason(response),
                operation=operation,
            )
        try:
            body = response.json()
        except ValueError:
            raise ApplicationError(
                f"{SYSTEM} {operation}: response is not JSON", type="QuickBooksTimeBadResponse"
            ) from None
        if not isinstance(body, dict):
            raise _bad_response(operation, "response is not a JSON object")
        return body


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_response("read", f"{what} is not a number")
    return value


def _day(sheet: dict[str, Any]) -> date:
    try:
        return date.fromisoformat(str(sheet.get("date")))
    except ValueError:
        raise _bad_response("list timesheets", "a timesheet has no valid date") from None


def _reason(response: httpx.Response) -> str:
    """QuickBooks Time's words: ``error.message`` (undocumented shape, so be lenient)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return response.reason_phrase or f"HTTP {response.status_code}"


def _bad_response(operation: str, why: str) -> ApplicationError:
    return bad_response(SYSTEM, operation, why, "QuickBooksTimeBadResponse")
