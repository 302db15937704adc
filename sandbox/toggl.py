"""Toggl Track emulator: API v9 (workspace users, own time entries) and Reports API v3.

Served under ``/toggl/api/v9/...`` and ``/toggl/reports/api/v3/...``; a Toggl connector whose
``base_url`` is ``<sandbox>/toggl`` talks to it as it would to ``https://api.track.toggl.com``.

Contract points it holds the client to:

- HTTP Basic auth with the API token as user name and the literal ``api_token`` as password;
  anything else is a 403 (Toggl's answer to failed authentication), and so is a workspace the
  token cannot see;
- a leaky bucket per token: about one request per second drains it, a burst beyond
  ``bucket_capacity`` is a 429 (configurable on the store);
- the hourly quota per user per organisation: past ``hourly_quota`` requests in the window the
  answer is 402; every answer carries the remaining quota and the seconds until the window
  resets (``X-Toggl-Quota-Remaining`` / ``X-Toggl-Quota-Resets-In``);
- ``summary/time_entries`` groups seconds per user (``groups[].sub_groups[].seconds``);
  ``search/time_entries`` returns one row per time entry, paged by the response headers
  ``X-Next-ID`` / ``X-Next-Row-Number`` that the client sends back as ``first_id`` /
  ``first_row_number``.

Everything is derived from the sandbox seed, deterministically, so tests can recompute totals.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from dispatch.config import TogglConnector
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "toggl"
WORKSPACE_ID = 7_340_512
"""The one workspace of the sandbox organisation; connectors must name it."""
ORGANIZATION_ID = 6_120_044
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 50
"""[A] The detailed report's page-size ceiling is not documented; larger asks are capped."""
MAX_REPORT_DAYS = 366
ENTRIES_PER_DAY = 2
WORKDAYS_PER_WEEK = 5
QUOTA_WINDOW_SECONDS = 3600

_TOKEN_ENV = TogglConnector.model_fields["api_token_env"].default
_MEDIA_TYPE = "application/json; charset=utf-8"
_USER_ID_BASE = 9_100_000
_ENTRY_ID_BASE = 3_800_000_000
_PROJECT_ID_BASE = 201_400_000
_QUOTA_REMAINING = "X-Toggl-Quota-Remaining"
_QUOTA_RESETS_IN = "X-Toggl-Quota-Resets-In"
"""[P] Header names seen in public clients; Toggl's pages say only that headers carry the quota."""
_GROUPINGS = {"users", "projects"}
_SUB_GROUPINGS = {"projects", "time_entries", "users"}


# --- store -----------------------------------------------------------------------------------


@dataclass
class TogglStore:
    users: list[dict[str, Any]] = field(default_factory=list)
    projects: dict[int, str] = field(default_factory=dict)
    time_entries: list[dict[str, Any]] = field(default_factory=list)
    """Stopped entries, v9 shape (``user_id``, ``project_id``, ``description``, ``start``,
    ``stop``, ``duration`` seconds). The reports only ever see stopped entries."""
    workspace_id: int = WORKSPACE_ID
    bucket_capacity: float = 10.0
    """[A] Burst the leaky bucket allows; Toggl says only that ~1 request/second is safe."""
    leak_per_second: float = 1.0
    hourly_quota: int = 240
    """Toggl's Starter plan: 240 workspace requests per user per organisation per hour."""
    clock: Callable[[], float] = field(default=time.monotonic)
    """Seconds, monotonic; tests may replace it to move the quota window."""
    _level: float = 0.0
    _leaked_at: float | None = None
    _window_start: float | None = None
    _used: int = 0
    _next_id: int = _ENTRY_ID_BASE

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        wanted = email.casefold()
        return next((u for u in self.users if u["email"].casefold() == wanted), None)

    def add_entry(
        self,
        email: str,
        day: date,
        seconds: int,
        description: str = "",
        *,
        start_hour: int = 14,
    ) -> dict[str, Any]:
        """A stopped time entry for a seeded user (tests use it to log time against a job)."""
        user = self.user_by_email(email)
        if user is None:
            raise KeyError("no such Toggl user")
        self._next_id += 1
        start = datetime(day.year, day.month, day.day, start_hour, tzinfo=UTC)
        entry = _entry(
            self._next_id, self.workspace_id, user["id"], None, description, start, seconds
        )
        self.time_entries.append(entry)
        return entry

    def admit(self) -> tuple[int, dict[str, str]]:
        """Count one authenticated request: (status, headers); 200 means go ahead.

        The bucket is checked first: a throttled request never reaches the quota. [A] Whether
        Toggl counts 429s against the hourly quota is not documented; we do not.
        """
        now = float(self.clock())
        if self._leaked_at is not None:
            self._level = max(0.0, self._level - (now - self._leaked_at) * self.leak_per_second)
        self._leaked_at = now
        if self._level + 1 > self.bucket_capacity:
            wait = (self._level + 1 - self.bucket_capacity) / self.leak_per_second
            # [A] Toggl does not document a Retry-After on its 429; we send one.
            return 429, {"Retry-After": str(max(1, math.ceil(wait)))}
        self._level += 1
        if self._window_start is None or now - self._window_start >= QUOTA_WINDOW_SECONDS:
            self._window_start, self._used = now, 0
        resets_in = max(1, math.ceil(self._window_start + QUOTA_WINDOW_SECONDS - now))
        if self._used >= self.hourly_quota:
            return 402, {_QUOTA_REMAINING: "0", _QUOTA_RESETS_IN: str(resets_in)}
        self._used += 1
        return 200, {
            _QUOTA_REMAINING: str(self.hourly_quota - self._used),
            _QUOTA_RESETS_IN: str(resets_in),
        }

    def dump(self) -> dict[str, Any]:
        seconds: dict[str, int] = defaultdict(int)
        for entry in self.time_entries:
            seconds[str(entry["user_id"])] += entry["duration"]
        return {
            "workspace_id": self.workspace_id,
            "users": self.users,
            "time_entry_count": len(self.time_entries),
            "seconds_by_user": dict(seconds),
            "quota_used": self._used,
            "hourly_quota": self.hourly_quota,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _split_cents(total_hours: float, parts: int) -> list[int]:
    """Whole hundredths of an hour per part, adding up exactly to the total."""
    cents = round(total_hours * 100)
    base, extra = divmod(cents, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _split_seconds(seconds: int, parts: int) -> list[int]:
    base, extra = divmod(seconds, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _entry(
    entry_id: int,
    workspace_id: int,
    user_id: int,
    project_id: int | None,
    description: str,
    start: datetime,
    seconds: int,
) -> dict[str, Any]:
    stop = start + timedelta(seconds=seconds)
    return {
        "id": entry_id,
        "workspace_id": workspace_id,
        "project_id": project_id,
        "task_id": None,
        "user_id": user_id,
        "billable": project_id is not None,
        "start": _iso(start),
        "stop": _iso(stop),
        "duration": seconds,
        "description": description,
        "tags": [],
        "tag_ids": [],
        "at": _iso(stop),
    }


def create_store(seed: SandboxSeed) -> TogglStore:
    # [A] People who left the firm are removed from the workspace, so the list omits them.
    users: list[dict[str, Any]] = [
        {
            "id": _USER_ID_BASE + idx + 1,
            "email": staff.email,
            "fullname": staff.name,
            "timezone": "UTC",
            "admin": idx == 0,
            "inactive": False,
        }
        for idx, staff in enumerate(seed.staff)
        if staff.active
    ]
    clients = [c.name for c in seed.clients] or ["Internal"]
    projects = {_PROJECT_ID_BASE + i + 1: f"{name} engagement" for i, name in enumerate(clients)}
    project_ids = sorted(projects)
    monday = seed.week_start
    this_week = [monday + timedelta(days=i) for i in range(min(seed.today.weekday() + 1, 5))]
    last_week = [monday - timedelta(days=7 - i) for i in range(WORKDAYS_PER_WEEK)]
    store = TogglStore(users=users, projects=projects)
    entries: list[dict[str, Any]] = []
    for idx, staff in enumerate(s for s in seed.staff if s.active):
        user = users[idx]
        for days, total in (
            (last_week, staff.logged_last_week),
            (this_week, staff.logged_this_week),
        ):
            if total <= 0 or not days:
                continue
            # Whole hundredths per day, so a day's total is exactly what the seed implies.
            for day_no, (day, cents) in enumerate(
                zip(days, _split_cents(total, len(days)), strict=True)
            ):
                start = datetime(day.year, day.month, day.day, 14, tzinfo=UTC)
                for slot, seconds in enumerate(_split_seconds(cents * 36, ENTRIES_PER_DAY)):
                    if seconds <= 0:
                        continue
                    store._next_id += 1
                    entries.append(
                        _entry(
                            store._next_id,
                            store.workspace_id,
                            user["id"],
                            project_ids[(idx + day_no + slot) % len(project_ids)],
                            "Client work" if slot == 0 else "Bookkeeping",
                            start,
                            seconds,
                        )
                    )
                    start += timedelta(seconds=seconds)
    store.time_entries = entries
    return store


# --- wire helpers ----------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=_MEDIA_TYPE, headers=headers)


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # [A] Toggl's error bodies are a bare JSON string, not an object.
    return _json(status, text, headers)


def _authorized(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    token_ok = hmac.compare_digest(user.encode(), demo_secret(_TOKEN_ENV).encode())
    return token_ok and password == "api_token"


def _parse_date(value: Any, name: str) -> date:
    if not isinstance(value, str):
        raise ValueError(f"{name} is required (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise ValueError(f"{name} is not a valid date") from None


def _int_list(value: Any, name: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{name} must be a list of integers")
    return list(value)


def _entry_day(entry: dict[str, Any]) -> date:
    return datetime.fromisoformat(entry["start"]).date()


def _selected(store: TogglStore, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Stopped entries matching the report filters common to summary and search."""
    start = _parse_date(body.get("start_date"), "start_date")
    end = _parse_date(body.get("end_date"), "end_date")
    if end < start:
        raise ValueError("end_date must not be earlier than start_date")
    if (end - start).days + 1 > MAX_REPORT_DAYS:
        raise ValueError(f"the range can be at most {MAX_REPORT_DAYS} days")
    user_ids = _int_list(body.get("user_ids"), "user_ids")
    project_ids = _int_list(body.get("project_ids"), "project_ids")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError("description must be a string")
    found = []
    for entry in store.time_entries:
        # [A] Both ends are inclusive dates, compared in the entry's returned zone.
        if not start <= _entry_day(entry) <= end:
            continue
        if user_ids is not None and entry["user_id"] not in user_ids:
            continue
        if project_ids is not None and entry["project_id"] not in project_ids:
            continue
        # [A] The description filter is a case-insensitive substring match.
        if description and description.casefold() not in (entry["description"] or "").casefold():
            continue
        found.append(entry)
    found.sort(key=lambda e: (e["start"], e["id"]))
    return found


def _summary(store: TogglStore, body: dict[str, Any]) -> dict[str, Any]:
    grouping = body.get("grouping", "projects")
    sub_grouping = body.get("sub_grouping", "time_entries")
    if grouping not in _GROUPINGS:
        raise ValueError(f"grouping must be one of {sorted(_GROUPINGS)}")
    if sub_grouping not in _SUB_GROUPINGS or sub_grouping == grouping:
        raise ValueError(f"sub_grouping must be one of {sorted(_SUB_GROUPINGS - {grouping})}")
    entries = _selected(store, body)
    with_ids = bool(body.get("include_time_entry_ids"))

    def key(entry: dict[str, Any], by: str) -> tuple[Any, str | None]:
        if by == "users":
            return entry["user_id"], None
        if by == "projects":
            project = entry["project_id"]
            return project, store.projects.get(project) if project else None
        # time_entries: grouped by description, which is the sub-group's title
        return None, entry["description"]

    groups: dict[Any, dict[tuple[Any, str | None], list[dict[str, Any]]]] = {}
    for entry in entries:
        group_id = key(entry, grouping)[0]
        groups.setdefault(group_id, {}).setdefault(key(entry, sub_grouping), []).append(entry)
    out = []
    for group_id, subs in groups.items():
        sub_groups = []
        for (sub_id, title), members in subs.items():
            sub: dict[str, Any] = {
                "id": sub_id,
                "title": title,
                "seconds": sum(e["duration"] for e in members),
            }
            if with_ids:
                sub["ids"] = [e["id"] for e in members]
            sub_groups.append(sub)
        out.append({"id": group_id, "sub_groups": sub_groups})
    return {"groups": out}


def _row(store: TogglStore, entry: dict[str, Any], row_number: int) -> dict[str, Any]:
    user = next((u for u in store.users if u["id"] == entry["user_id"]), None)
    return {
        "user_id": entry["user_id"],
        "username": user["fullname"] if user else "",
        "project_id": entry["project_id"],
        "task_id": entry["task_id"],
        "billable": entry["billable"],
        "description": entry["description"],
        "tag_ids": entry["tag_ids"],
        "billable_amount_in_cents": None,
        "hourly_rate_in_cents": None,
        "currency": "USD",
        "row_number": row_number,
        "time_entries": [
            {
                "id": entry["id"],
                "seconds": entry["duration"],
                "start": entry["start"],
                "stop": entry["stop"],
                "at": entry["at"],
            }
        ],
    }


def _search(store: TogglStore, body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One page of the detailed report, one row per entry [A], and the next page's headers."""
    entries = _selected(store, body)
    page_size = body.get("page_size", DEFAULT_PAGE_SIZE)
    first_row = body.get("first_row_number", 1)
    for name, value in (("page_size", page_size), ("first_row_number", first_row)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer")
    size = min(page_size, MAX_PAGE_SIZE)
    first_id = body.get("first_id")
    if first_id is not None and first_row <= len(entries):
        # The id pins the page to the row the previous page announced: a list that moved
        # under the client is an error, not a silently skipped or repeated row.
        if entries[first_row - 1]["id"] != first_id:
            raise ValueError("first_id does not match first_row_number")
    chunk = entries[first_row - 1 : first_row - 1 + size]
    rows = [_row(store, e, first_row + i) for i, e in enumerate(chunk)]
    headers: dict[str, str] = {}
    following = first_row - 1 + size
    if following < len(entries):
        headers = {
            "X-Next-ID": str(entries[following]["id"]),
            "X-Next-Row-Number": str(following + 1),
        }
    return rows, headers


# --- routes ----------------------------------------------------------------------------------


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(prefix=f"/{NAME}", tags=["toggl"])

    def store() -> TogglStore:
        current: TogglStore = ctx.stores[NAME]
        return current

    def gate(request: Request, workspace_id: int | None) -> JSONResponse | dict[str, str]:
        """Auth, then the bucket, then the quota: a response to return, or headers to add."""
        if not _authorized(request):
            return _message(403, "Incorrect username and/or password")
        s = store()
        if workspace_id is not None and workspace_id != s.workspace_id:
            return _message(403, "User does not have access to this resource.")
        status, headers = s.admit()
        if status == 429:
            return _message(429, "Too Many Requests", headers)
        if status == 402:
            # [A] Toggl's wording; what matters is the 402 and the reset header.
            return _message(
                402,
                "You have hit your hourly limit for API calls. Your quota will reset in "
                f"{headers[_QUOTA_RESETS_IN]} seconds.",
                headers,
            )
        return headers

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise ValueError("JSON is not valid") from None
        if not isinstance(body, dict):
            raise ValueError("JSON is not valid")
        return body

    @router.get("/api/v9/me")
    async def me(request: Request) -> JSONResponse:
        admitted = gate(request, None)
        if isinstance(admitted, JSONResponse):
            return admitted
        owner = store().users[0] if store().users else None
        if owner is None:
            return _message(404, "Not Found", admitted)
        return _json(
            200,
            {
                "id": owner["id"],
                "email": owner["email"],
                "fullname": owner["fullname"],
                "timezone": owner["timezone"],
                "default_workspace_id": store().workspace_id,
            },
            admitted,
        )

    @router.get("/api/v9/me/time_entries")
    async def my_time_entries(request: Request) -> JSONResponse:
        admitted = gate(request, None)
        if isinstance(admitted, JSONResponse):
            return admitted
        s = store()
        owner = s.users[0]["id"] if s.users else None
        try:
            start = _parse_date(request.query_params.get("start_date"), "start_date")
            end = _parse_date(request.query_params.get("end_date"), "end_date")
        except ValueError as err:
            return _message(400, str(err), admitted)
        # [A] v9's end_date is taken as exclusive, unlike the reports' inclusive end.
        mine = [e for e in s.time_entries if e["user_id"] == owner and start <= _entry_day(e) < end]
        mine.sort(key=lambda e: (e["start"], e["id"]), reverse=True)
        return _json(
            200, [{**e, "wid": e["workspace_id"], "pid": e["project_id"]} for e in mine], admitted
        )

    @router.get("/api/v9/workspaces/{workspace_id}/users")
    async def workspace_users(workspace_id: int, request: Request) -> JSONResponse:
        admitted = gate(request, workspace_id)
        if isinstance(admitted, JSONResponse):
            return admitted
        return _json(200, store().users, admitted)

    @router.post("/reports/api/v3/workspace/{workspace_id}/summary/time_entries")
    async def summary(workspace_id: int, request: Request) -> JSONResponse:
        admitted = gate(request, workspace_id)
        if isinstance(admitted, JSONResponse):
            return admitted
        try:
            return _json(200, _summary(store(), await json_body(request)), admitted)
        except ValueError as err:
            return _message(400, str(err), admitted)

    @router.post("/reports/api/v3/workspace/{workspace_id}/search/time_entries")
    async def search(workspace_id: int, request: Request) -> JSONResponse:
        admitted = gate(request, workspace_id)
        if isinstance(admitted, JSONResponse):
            return admitted
        try:
            rows, paging = _search(store(), await json_body(request))
        except ValueError as err:
            return _message(400, str(err), admitted)
        return _json(200, rows, {**admitted, **paging})

    return router


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    """Toggl's error bodies are bare strings; an injected 402 carries no quota headers."""
    if status == 429:
        phrase = "Too Many Requests"
    elif status == 402:
        phrase = "Payment Required"
    else:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
    return json.dumps(phrase), _MEDIA_TYPE
