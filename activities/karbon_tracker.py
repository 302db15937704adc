"""Karbon as the firm's time tracker: capacity from the user record, hours from time entries.

``tracker_read``:

- ``GET /v3/Users`` (paged by ``@odata.nextLink``) ties a Karbon user to a staff member by
  ``EmailAddress``; the list carries no capacity, so each matched user is read once with
  ``GET /v3/Users/{Id}`` for ``CapacityMinutesPerWeek``;
- ``GET /v3/IndividualTimeEntries?$filter=Date ge … and Date le …`` (up to 1000 a page,
  following ``@odata.nextLink``) gives ``Minutes`` per ``UserKey`` per ``Date``. One listing
  for the whole firm rather than one per person (``UserKey eq …``): the per-user read is
  already one request per person, and Karbon asks for at most ~120 requests a minute.

[A] Karbon does not say whether a time entry's ``UserKey`` equals the Users ``Id``; we rely on
it (the only user key time entries carry).

``tracker_job_hours`` filters time entries by ``WorkItemKey eq <external id>`` and the dates:
Karbon knows which work item time was logged against, so everyone's time on it counts, not
only the assignees'.

Failures are mapped by ``KarbonClient`` through ``activities.errors``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import bad_response, check_read_window
from activities.karbon import KarbonClient, odata_str
from activities.roles import TimeTrackerActivities
from dispatch.config import KarbonConnector, KarbonTimeTracker
from dispatch.ids import foreign_source
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
    TrackerUserHours,
)

SYSTEM = "Karbon"
MAX_TOP = 1000
"""Karbon's page ceiling for time entries."""


class KarbonTrackerActivities(TimeTrackerActivities):
    def __init__(self, connector: KarbonTimeTracker, http: httpx.AsyncClient | None = None) -> None:
        self.connector = connector
        # The PM client already speaks Karbon (auth headers, nextLink paging, error mapping);
        # as a tracker it needs only the base URL and the two credentials.
        self.client = KarbonClient(
            KarbonConnector(
                kind="karbon",
                base_url=connector.base_url,
                bearer_token_env=connector.bearer_token_env,
                access_key_env=connector.access_key_env,
            ),
            http,
        )

    async def aclose(self) -> None:
        """Close the HTTP pool if this instance created it (not when one was injected)."""
        await self.client.aclose()

    @activity.defn(name="tracker_read")
    async def read(self, input: TrackerReadInput) -> TrackerReadResult:
        check_read_window(SYSTEM, input.start, input.end)
        ids_by_email: dict[str, str] = {}
        for user in await self.client.list_users():
            email, user_id = user.get("EmailAddress"), user.get("Id")
            if isinstance(email, str) and email.strip() and isinstance(user_id, str):
                ids_by_email.setdefault(email.strip().lower(), user_id)

        results: list[TrackerUserHours] = []
        by_user_key: dict[str, list[TrackerUserHours]] = defaultdict(list)
        unmatched: list[str] = []
        capacity: dict[str, float | None] = {}
        for staff in input.staff:
            user_id = ids_by_email.get(staff.email.strip().lower())
            if user_id is not None and user_id not in capacity:
                record = await self._user(user_id)
                if record is None:
                    # Listed a moment ago, gone now (removed from the tenant): not known.
                    ids_by_email.pop(staff.email.strip().lower(), None)
                    user_id = None
                else:
                    capacity[user_id] = _capacity_hours(record)
            if user_id is None:
                unmatched.append(staff.email)
                continue
            hours = TrackerUserHours(
                staff_id=staff.staff_id, weekly_capacity_hours=capacity[user_id]
            )
            results.append(hours)
            by_user_key[user_id.casefold()].append(hours)

        if by_user_key:
            minutes: dict[tuple[str, date], float] = defaultdict(float)
            for entry in await self._entries(input.start, input.end):
                key = entry.get("UserKey")
                if not isinstance(key, str) or key.casefold() not in by_user_key:
                    continue
                day = _entry_date(entry)
                if input.start <= day <= input.end:
                    minutes[key.casefold(), day] += _minutes(entry)
            for (key, day), total in sorted(minutes.items()):
                for hours in by_user_key[key]:
                    hours.logged_by_date[day] = round(total / 60, 2)
        return TrackerReadResult(users=results, unmatched=unmatched)

    @activity.defn(name="tracker_job_hours")
    async def job_hours(self, input: JobHoursInput) -> JobHours:
        if foreign_source(SYSTEM, "karbon", input.source):
            # A relay's id may equal a Karbon key: never read another record's hours.
            return JobHours(
                hours=0.0,
                detail=f"no hours read: this engagement came from {input.source!r}, not {SYSTEM}",
            )
        if input.until < input.since:
            raise ApplicationError(
                f"{SYSTEM} job hours: until {input.until} is before since {input.since}",
                type="InvalidInput",
                non_retryable=True,
            )
        entries = await self._entries(
            input.since, input.until, f"WorkItemKey eq {odata_str(input.external_id)}"
        )
        total = sum(_minutes(e) for e in entries)
        people = {e.get("UserKey") for e in entries if e.get("UserKey")}
        return JobHours(
            hours=round(total / 60, 2),
            detail=(
                f"{SYSTEM}: {len(entries)} time entries on work item {input.external_id} from "
                f"{input.since} to {input.until}, by {len(people)} person(s)"
            ),
        )

    async def _user(self, user_id: str) -> dict[str, Any] | None:
        response = await self.client.send(
            "GET", self.client.url(f"Users/{user_id}"), operation="get user", tolerate=(404,)
        )
        if response.status_code == 404:
            return None
        body = response.json()
        if not isinstance(body, dict):
            raise _bad_response("get user", "the user is not a JSON object")
        return body

    async def _entries(
        self, start: date, end: date, extra: str | None = None
    ) -> list[dict[str, Any]]:
        clauses = [f"Date ge {start.isoformat()}T00:00:00Z", f"Date le {end.isoformat()}T00:00:00Z"]
        if extra:
            clauses.append(extra)
        entries = await self.client.list_all(
            "IndividualTimeEntries",
            operation="list time entries",
            params={"$filter": " and ".join(clauses), "$top": str(MAX_TOP)},
        )
        return [e for e in entries if isinstance(e, dict)]


def _capacity_hours(user: dict[str, Any]) -> float | None:
    """Weekly hours from ``CapacityMinutesPerWeek``; None when Karbon has none.

    [A] Karbon shows 0 for a user whose capacity was never set; we read 0 as "not set", so
    the firm config's hours apply (and the snapshot warns when it has none) instead of
    treating the person as having no room at all.
    """
    minutes = user.get("CapacityMinutesPerWeek")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        return None
    return round(minutes / 60, 2)


def _entry_date(entry: dict[str, Any]) -> date:
    raw = entry.get("Date")
    try:
        # Karbon dates are midnight timestamps of the day the time was logged for.
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).date()
    except ValueError:
        raise _bad_response("list time entries", "a time entry has no valid Date") from None


def _minutes(entry: dict[str, Any]) -> float:
    value = entry.get("Minutes")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_response("list time entries", "a time entry has no numeric Minutes")
    return float(value)


def _bad_response(operation: str, why: str) -> ApplicationError:
    return bad_response(SYSTEM, operation, why, "KarbonBadResponse")
