"""QuickBooks Time (formerly TSheets) emulator: users and timesheets, API v1.

Served under ``/quickbooks_time/api/v1/...``; a connector whose ``base_url`` is
``<sandbox>/quickbooks_time/api/v1`` talks to it as it would to ``https://rest.tsheets.com/api/v1``.

Contract points it holds the client to:

- ``Authorization: Bearer <token>`` on every call (401 otherwise);
- ``results.timesheets`` / ``results.users`` are objects keyed by id, not lists, and an empty
  result is ``[]`` (the PHP-style empty array [A]);
- paging is ``page`` (from 1) and ``limit`` (at most 200), continued while ``"more": true``;
- ``GET /timesheets`` needs a filter (``ids``, ``start_date``, ``modified_before`` or
  ``modified_since``) or it is a 400 [A]; ``on_the_clock`` defaults to ``no``, so a client that
  wants the timers still running must ask for ``both`` [P];
- an on-the-clock timesheet reports the seconds elapsed so far in ``duration`` and has no end;
- a throttle of ``throttle_limit`` requests per ``throttle_window`` seconds answers 429 with
  Retry-After (configurable on the store).

Everything is derived from the sandbox seed, deterministically, so tests can recompute totals.
"""

from __future__ import annotations

import hmac
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
from dispatch.config import QuickBooksTimeConnector
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "quickbooks_time"
PREFIX = f"/{NAME}/api/v1"
MAX_LIMIT = 200
ENTRIES_PER_DAY = 2
WORKDAYS_PER_WEEK = 5

_TOKEN_ENV = QuickBooksTimeConnector.model_fields["access_token_env"].default
_MEDIA_TYPE = "application/json; charset=utf-8"
_USER_ID_BASE = 1_242_500
_TIMESHEET_ID_BASE = 135_288_400
_JOBCODE_ID_BASE = 17_288_200
_OFFSET = "-05:00"
"""[A] The sandbox company works in US Eastern standard time; ``date`` is the local day."""
_REQUIRED_FILTERS = ("ids", "start_date", "modified_before", "modified_since")


# --- store -----------------------------------------------------------------------------------


@dataclass
class QuickBooksTimeStore:
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    jobcodes: dict[int, dict[str, Any]] = field(default_factory=dict)
    timesheets: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Stored as written; an on-the-clock sheet's ``duration`` is filled in when read."""
    throttle_limit: int = 300
    throttle_window: float = 600.0
    """[P] 300 requests per 10 minutes per token (older docs; newer copies say 5 minutes)."""
    clock: Callable[[], float] = field(default=time.monotonic)
    _window_start: float | None = None
    _used: int = 0
    _running_since: dict[int, tuple[float, int]] = field(default_factory=dict)
    """Timesheet id -> (clock reading when the store was made, seconds already on the clock)."""

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        wanted = email.casefold()
        return next((u for u in self.users.values() if u["email"].casefold() == wanted), None)

    def add_timesheet(
        self, email: str, day: date, seconds: int, notes: str = "", *, jobcode_id: int = 0
    ) -> dict[str, Any]:
        """A finished manual timesheet for a seeded user (tests log time against a job)."""
        user = self.user_by_email(email)
        if user is None:
            raise KeyError("no such QuickBooks Time user")
        sheet_id = max(self.timesheets, default=_TIMESHEET_ID_BASE) + 1
        sheet = _timesheet(sheet_id, user["id"], jobcode_id, day, None, seconds, notes)
        self.timesheets[sheet_id] = sheet
        return sheet

    def admit(self) -> float | None:
        """Count one request; the seconds to wait when over the throttle, else None."""
        now = float(self.clock())
        if self._window_start is None or now - self._window_start >= self.throttle_window:
            self._window_start, self._used = now, 0
        if self._used >= self.throttle_limit:
            return self._window_start + self.throttle_window - now
        self._used += 1
        return None

    def view(self, sheet: dict[str, Any]) -> dict[str, Any]:
        """The timesheet as the API shows it now (a running timer's duration keeps growing)."""
        running = self._running_since.get(sheet["id"])
        if running is None:
            return dict(sheet)
        started_at, seconds = running
        elapsed = seconds + int(float(self.clock()) - started_at)
        return {**sheet, "duration": elapsed}

    def dump(self) -> dict[str, Any]:
        seconds: dict[str, int] = defaultdict(int)
        for sheet in self.timesheets.values():
            seconds[str(sheet["user_id"])] += self.view(sheet)["duration"]
        return {
            "users": list(self.users.values()),
            "timesheet_count": len(self.timesheets),
            "on_the_clock": sorted(self._running_since),
            "seconds_by_user": dict(seconds),
        }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + _OFFSET


def _timesheet(
    sheet_id: int,
    user_id: int,
    jobcode_id: int,
    day: date,
    start: datetime | None,
    seconds: int,
    notes: str,
    *,
    running: bool = False,
) -> dict[str, Any]:
    """``regular`` sheets have a start and end; ``manual`` ones only a date and duration."""
    end = None if start is None or running else start + timedelta(seconds=seconds)
    modified = datetime(day.year, day.month, day.day, 23, tzinfo=UTC)
    return {
        "id": sheet_id,
        "user_id": user_id,
        "jobcode_id": jobcode_id,
        "locked": 0,
        "notes": notes,
        "customfields": {},
        "last_modified": modified.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "type": "manual" if start is None else "regular",
        "on_the_clock": running,
        "attached_files": [],
        "created_by_user_id": user_id,
        "duration": seconds,
        "date": day.isoformat(),
        "start": _stamp(start) if start is not None else "",
        "end": _stamp(end) if end is not None else "",
        "origin_hint": "",
    }


def _split_cents(total_hours: float, parts: int) -> list[int]:
    cents = round(total_hours * 100)
    base, extra = divmod(cents, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def create_store(seed: SandboxSeed) -> QuickBooksTimeStore:
    store = QuickBooksTimeStore()
    for idx, staff in enumerate(seed.staff):
        first, _, last = staff.name.partition(" ")
        user_id = _USER_ID_BASE + idx + 1
        store.users[user_id] = {
            "id": user_id,
            "first_name": first,
            "last_name": last,
            "group_id": 0,
            "active": staff.active,
            "employee_number": idx + 1,
            "salaried": False,
            "exempt": False,
            "username": staff.email.split("@")[0],
            "email": staff.email,
            "email_verified": True,
            "payroll_id": "",
            "hire_date": "2021-01-04",
            "term_date": "0000-00-00" if staff.active else "2026-01-31",
            "last_modified": "2026-01-04T15:00:00+00:00",
            "created": "2021-01-04T15:00:00+00:00",
        }
    clients = [c.name for c in seed.clients] or ["Internal"]
    for idx, name in enumerate(clients):
        jobcode_id = _JOBCODE_ID_BASE + idx + 1
        store.jobcodes[jobcode_id] = {
            "id": jobcode_id,
            "parent_id": 0,
            "name": name,
            "type": "regular",
            "active": True,
        }
    jobcode_ids = sorted(store.jobcodes)
    monday = seed.week_start
    this_week = [monday + timedelta(days=i) for i in range(min(seed.today.weekday() + 1, 5))]
    last_week = [monday - timedelta(days=7 - i) for i in range(WORKDAYS_PER_WEEK)]
    today_logged = seed.today in this_week
    now = float(store.clock())
    sheet_id = _TIMESHEET_ID_BASE
    for idx, staff in enumerate(seed.staff):
        user_id = _USER_ID_BASE + idx + 1
        weeks = ((last_week, staff.logged_last_week), (this_week, staff.logged_this_week))
        for days, total in weeks:
            if total <= 0 or not days:
                continue
            for day_no, (day, cents) in enumerate(
                zip(days, _split_cents(total, len(days)), strict=True)
            ):
                seconds = cents * 36
                halves = (seconds - seconds // ENTRIES_PER_DAY, seconds // ENTRIES_PER_DAY)
                start = datetime(day.year, day.month, day.day, 9)
                for slot, part in enumerate(halves):
                    if part <= 0:
                        continue
                    sheet_id += 1
                    # Today's last sheet is a timer still running: what has elapsed counts.
                    running = today_logged and day == seed.today and slot == ENTRIES_PER_DAY - 1
                    jobcode = jobcode_ids[(idx + day_no + slot) % len(jobcode_ids)]
                    # Odd days are typed in by hand (manual: no start or end).
                    manual = day_no % 2 == 1 and not running
                    store.timesheets[sheet_id] = _timesheet(
                        sheet_id,
                        user_id,
                        jobcode,
                        day,
                        None if manual else start,
                        part,
                        "",
                        running=running,
                    )
                    if running:
                        store._running_since[sheet_id] = (now, part)
                    start += timedelta(seconds=part)
    return store


# --- wire helpers ----------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=_MEDIA_TYPE, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # [A] TSheets' error body shape is not documented; this mirrors its result envelope.
    return _json(status, {"error": {"code": status, "message": message}}, headers)


def _keyed(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | list[Any]:
    """Objects keyed by id; an empty result is ``[]`` [A], as PHP encodes an empty array."""
    if not items:
        return []
    return {str(item["id"]): item for item in items}


def _ids(raw: str | None, name: str) -> set[int] | None:
    if raw is None or raw == "":
        return None
    try:
        return {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list of ids") from None


def _choice(raw: str | None, name: str, default: str) -> str:
    value = (raw or default).lower()
    if value not in ("yes", "no", "both"):
        raise ValueError(f"{name} must be yes, no or both")
    return value


def _date(raw: str | None, name: str) -> date | None:
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} must be a date (YYYY-MM-DD)") from None


def _paged(request: Request, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    try:
        page = int(request.query_params.get("page", "1"))
        limit = int(request.query_params.get("limit", str(MAX_LIMIT)))
    except ValueError:
        raise ValueError("page and limit must be whole numbers") from None
    if page < 1:
        raise ValueError("page must be 1 or greater")
    if not 1 <= limit <= MAX_LIMIT:
        # [A] TSheets caps limit at 200; we reject larger values rather than cap silently.
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    chunk = items[(page - 1) * limit : page * limit]
    return chunk, page * limit < len(items)


# --- routes ----------------------------------------------------------------------------------


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["quickbooks_time"])

    def store() -> QuickBooksTimeStore:
        current: QuickBooksTimeStore = ctx.stores[NAME]
        return current

    def gate(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), demo_secret(_TOKEN_ENV).encode()):
            return _error(401, "Unauthorized: the access token is missing, invalid or expired")
        wait = store().admit()
        if wait is not None:
            # [A] Retry-After is not documented for TSheets; we send the window's remainder.
            return _error(429, "Too Many Requests", {"Retry-After": str(max(1, math.ceil(wait)))})
        return None

    @router.get("/users")
    async def list_users(request: Request) -> JSONResponse:
        if (denied := gate(request)) is not None:
            return denied
        s = store()
        try:
            ids = _ids(request.query_params.get("ids"), "ids")
            active = _choice(request.query_params.get("active"), "active", "yes")
            found = [
                u
                for _, u in sorted(s.users.items())
                if (ids is None or u["id"] in ids)
                and (active == "both" or u["active"] is (active == "yes"))
            ]
            chunk, more = _paged(request, found)
        except ValueError as err:
            return _error(400, str(err))
        return _json(
            200,
            {
                "results": {"users": _keyed(chunk)},
                "more": more,
                "supplemental_data": {"jobcodes": _keyed(list(s.jobcodes.values()))},
            },
        )

    @router.get("/timesheets")
    async def list_timesheets(request: Request) -> JSONResponse:
        if (denied := gate(request)) is not None:
            return denied
        s = store()
        query = request.query_params
        if not any(query.get(name) for name in _REQUIRED_FILTERS):
            return _error(
                400,
                "Missing required parameter: one of ids, start_date, modified_before or "
                "modified_since",
            )
        try:
            ids = _ids(query.get("ids"), "ids")
            user_ids = _ids(query.get("user_ids"), "user_ids")
            jobcode_ids = _ids(query.get("jobcode_ids"), "jobcode_ids")
            start = _date(query.get("start_date"), "start_date")
            end = _date(query.get("end_date"), "end_date")
            on_the_clock = _choice(query.get("on_the_clock"), "on_the_clock", "no")
            supplemental = _choice(query.get("supplemental_data"), "supplemental_data", "yes")
            found = [
                s.view(sheet)
                for _, sheet in sorted(s.timesheets.items())
                if (ids is None or sheet["id"] in ids)
                and (user_ids is None or sheet["user_id"] in user_ids)
                and (jobcode_ids is None or sheet["jobcode_id"] in jobcode_ids)
                and (start is None or sheet["date"] >= start.isoformat())
                and (end is None or sheet["date"] <= end.isoformat())
                and (on_the_clock == "both" or sheet["on_the_clock"] is (on_the_clock == "yes"))
            ]
            chunk, more = _paged(request, found)
        except ValueError as err:
            return _error(400, str(err))
        body: dict[str, Any] = {"results": {"timesheets": _keyed(chunk)}, "more": more}
        if supplemental != "no":
            users = [s.users[uid] for uid in sorted({t["user_id"] for t in chunk})]
            jobcodes = [s.jobcodes[jid] for jid in sorted({t["jobcode_id"] for t in chunk}) if jid]
            body["supplemental_data"] = {"users": _keyed(users), "jobcodes": _keyed(jobcodes)}
        return _json(200, body)

    return router


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"error": {"code": status, "message": phrase}}, _MEDIA_TYPE
