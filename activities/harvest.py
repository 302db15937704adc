"""Harvest as the firm's time tracker: weekly capacity and hours logged per person per day.

One ``tracker_read`` makes two paged reads:

- ``GET /v2/users?is_active=true`` gives each person's ``weekly_capacity`` (seconds) and the
  email that ties a Harvest user to a staff member;
- ``GET /v2/time_entries?from=&to=`` gives the hours, summed per user per ``spent_date``.
  Running timers are included: time already on the clock is time not free for new work.

Both lists are walked by following ``links.next`` until it is null. Harvest is moving lists to
cursor pagination, where ``page`` and ``next_page`` are null, so page numbers are never used.
Every failure is mapped by ``activities.errors`` (429 waits for Retry-After, 5xx and transport
errors retry, other 4xx stop with Harvest's reason).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date
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
from activities.roles import TimeTrackerActivities
from dispatch.config import FirmConfigError, HarvestConnector, secret
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
    TrackerUserHours,
)

SYSTEM = "Harvest"
MAX_PER_PAGE = 2000
"""Harvest rejects ``per_page`` above 2000 with a 422."""
MAX_PAGES = 500
"""A guard against a server that never ends a listing; 500 pages of 2000 is a million rows."""
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
"""Per HTTP call; the activity's start-to-close timeout bounds the whole read."""


def names_job(text: object, external_id: str) -> bool:
    """Whether free text (a time entry's notes or description) names a job's external id.

    Trackers that know nothing of the PM's jobs (Harvest, Toggl, QuickBooks Time) attribute
    time to an engagement by this convention. The id must stand alone: ``T-100`` is named by
    "T-100: W-2s" and "#t-100", not by "T-1001". Case is ignored.
    """
    wanted = external_id.strip()
    if not isinstance(text, str) or not wanted:
        return False
    pattern = rf"(?<![0-9A-Za-z]){re.escape(wanted)}(?![0-9A-Za-z])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


class HarvestActivities(TimeTrackerActivities):
    def __init__(
        self,
        connector: HarvestConnector,
        http: httpx.AsyncClient | None = None,
        page_size: int = MAX_PER_PAGE,
    ) -> None:
        if not 1 <= page_size <= MAX_PER_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_PER_PAGE}, got {page_size}")
        self._connector = connector
        self._http = http
        self._page_size = page_size
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
        """Hours the assignees logged between the dates on entries whose notes name the job.

        Harvest has no notion of the PM's job id, so attribution is by convention: an entry
        counts when its notes name the external id (see ``names_job``). One
        ``/v2/time_entries`` listing per assignee, filtered by ``user_id`` and the dates.
        """
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

    async def _job_hours(
        self, http: httpx.AsyncClient, headers: dict[str, str], input: JobHoursInput
    ) -> JobHours:
        users = await self._collect(
            http,
            headers,
            f"{self._base}/v2/users",
            {"is_active": "true", "per_page": str(self._page_size)},
            key="users",
            operation="list users",
        )
        ids_by_email = {
            str(u["email"]).strip().lower(): _user_id(u, "user")
            for u in users
            if isinstance(u.get("email"), str)
        }
        user_ids: list[int] = []
        missing = 0
        for staff in input.staff:
            user_id = ids_by_email.get(staff.email.strip().lower())
            if user_id is None:
                missing += 1
            elif user_id not in user_ids:
                user_ids.append(user_id)
        total = 0.0
        counted = 0
        for user_id in user_ids:
            entries = await self._collect(
                http,
                headers,
                f"{self._base}/v2/time_entries",
                {
                    "user_id": str(user_id),
                    "from": input.since.isoformat(),
                    "to": input.until.isoformat(),
                    "per_page": str(self._page_size),
                },
                key="time_entries",
                operation="list time entries",
            )
            for entry in entries:
                if names_job(entry.get("notes"), input.external_id):
                    total += _hours(entry)
                    counted += 1
        detail = (
            f"{SYSTEM}: {counted} time entries of {len(user_ids)} assignee(s) from "
            f"{input.since} to {input.until} whose notes name {input.external_id}"
        )
        if missing:
            detail += f"; {missing} assignee(s) not found in {SYSTEM}"
        return JobHours(hours=round(total, 2), detail=detail)

    def _headers(self) -> dict[str, str]:
        # Read at call time: a missing variable fails this call with a clear, non-retryable
        # error naming the variable, instead of keeping the worker from starting.
        try:
            token = secret(self._connector.access_token_env)
            account = secret(self._connector.account_id_env)
        except FirmConfigError as err:
            raise ApplicationError(str(err), type="HarvestConfig", non_retryable=True) from None
        return {
            "Authorization": f"Bearer {token}",
            "Harvest-Account-Id": str(account),
            "User-Agent": self._connector.user_agent,
            "Accept": "application/json",
        }

    async def _read(
        self, http: httpx.AsyncClient, headers: dict[str, str], input: TrackerReadInput
    ) -> TrackerReadResult:
        users = await self._collect(
            http,
            headers,
            f"{self._base}/v2/users",
            {"is_active": "true", "per_page": str(self._page_size)},
            key="users",
            operation="list users",
        )
        by_email: dict[str, dict[str, Any]] = {}
        for user in users:
            email = user.get("email")
            if isinstance(email, str) and email.strip():
                by_email.setdefault(email.strip().lower(), user)

        results: list[TrackerUserHours] = []
        by_user_id: dict[int, list[TrackerUserHours]] = defaultdict(list)
        unmatched: list[str] = []
        for staff in input.staff:
            found = by_email.get(staff.email.strip().lower())
            if found is None:
                unmatched.append(staff.email)
                continue
            hours = TrackerUserHours(
                staff_id=staff.staff_id, weekly_capacity_hours=_capacity_hours(found)
            )
            results.append(hours)
            by_user_id[_user_id(found, "user")].append(hours)

        if by_user_id:
            entries = await self._collect(
                http,
                headers,
                f"{self._base}/v2/time_entries",
                {
                    "from": input.start.isoformat(),
                    "to": input.end.isoformat(),
                    "per_page": str(self._page_size),
                },
                key="time_entries",
                operation="list time entries",
            )
            totals: dict[tuple[int, date], float] = defaultdict(float)
            for entry in entries:
                user_id = _user_id(entry.get("user"), "time entry user")
                if user_id in by_user_id:
                    totals[user_id, _spent_date(entry)] += _hours(entry)
            for (user_id, day), total in sorted(totals.items()):
                for hours in by_user_id[user_id]:
                    hours.logged_by_date[day] = round(total, 2)
        return TrackerReadResult(users=results, unmatched=unmatched)

    async def _collect(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        url: str,
        params: dict[str, str],
        *,
        key: str,
        operation: str,
    ) -> list[dict[str, Any]]:
        """Every item of a listing, following ``links.next`` verbatim until it is null."""
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        query: dict[str, str] | None = params
        visited: set[str] = set()
        for _ in range(MAX_PAGES):
            assert next_url is not None
            body = await self._get(http, headers, next_url, query, operation)
            page = body.get(key)
            if not isinstance(page, list):
                raise _bad_response(operation, f"no {key!r} list in the response")
            items.extend(item for item in page if isinstance(item, dict))
            links = body.get("links")
            link = links.get("next") if isinstance(links, dict) else None
            if not link:
                return items
            if not isinstance(link, str):
                raise _bad_response(operation, "links.next is not a URL")
            # The next link already carries the filters; relative links resolve against the page.
            resolved = str(httpx.URL(next_url).join(link))
            if resolved in visited:
                raise _bad_response(operation, "links.next points back to a page already read")
            visited.add(resolved)
            next_url, query = resolved, None
        raise _bad_response(operation, f"more than {MAX_PAGES} pages")

    async def _get(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        url: str,
        params: dict[str, str] | None,
        operation: str,
    ) -> dict[str, Any]:
        request = http.build_request(
            "GET", url, params=params, headers=headers, timeout=REQUEST_TIMEOUT
        )
        if not self._connector.user_agent.strip():
            # Send what is configured: without this, httpx's default agent would hide a missing
            # one until production, where Harvest answers 400.
            request.headers.pop("User-Agent", None)
        try:
            response = await http.send(request)
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
            # Often an HTML page from a proxy in front of Harvest: worth another attempt.
            raise ApplicationError(
                f"{SYSTEM} {operation}: response is not JSON", type="HarvestBadResponse"
            ) from None
        if not isinstance(body, dict):
            raise _bad_response(operation, "response is not a JSON object")
        return body


def _reason(response: httpx.Response) -> str:
    """Harvest's own words for a failure (the 4xx body shape is not documented, so try both)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for field in ("error_description", "message", "error"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
    return response.reason_phrase or f"HTTP {response.status_code}"


def _bad_response(operation: str, why: str) -> ApplicationError:
    return bad_response(SYSTEM, operation, why, "HarvestBadResponse")


def _user_id(node: object, what: str) -> int:
    value = node.get("id") if isinstance(node, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_response("read", f"{what} has no numeric id")
    return value


def _capacity_hours(user: dict[str, Any]) -> float | None:
    seconds = user.get("weekly_capacity")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    return round(seconds / 3600, 2)


def _spent_date(entry: dict[str, Any]) -> date:
    raw = entry.get("spent_date")
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise _bad_response("list time entries", "a time entry has no valid spent_date") from None


def _hours(entry: dict[str, Any]) -> float:
    value = entry.get("hours")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_response("list time entries", "a time entry has no numeric hours")
    return float(value)
