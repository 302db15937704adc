"""Harvest API v2 emulator: users with weekly capacity, time entries, the team time report.

Served under ``/harvest/v2/...``; a Harvest connector whose ``base_url`` is
``<sandbox>/harvest`` talks to it exactly as it would to ``https://api.harvestapp.com``.

Contract points it holds the client to:

- every request carries a ``User-Agent`` (else 400), a bearer token and ``Harvest-Account-Id``
  (else 401); ``?access_token=&account_id=`` works instead of the two headers;
- lists are paged by ``links.next`` (absolute URLs). ``/v2/users`` uses cursor pages whose
  ``page``/``next_page`` are null, ``/v2/time_entries`` uses numbered pages: a client that
  follows ``links.next`` handles both, one that counts pages does not;
- ``per_page`` above 2000 is a 422; time entries come newest ``spent_date`` first.

Everything is derived from the sandbox seed, deterministically, so tests can recompute totals.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from dispatch.config import HarvestConnector
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed, SeedStaff

NAME = "harvest"
PREFIX = f"/{NAME}/v2"
MAX_PER_PAGE = 2000
MAX_REPORT_DAYS = 365
ENTRIES_PER_DAY = 2
WORKDAYS_PER_WEEK = 5

_TOKEN_ENV = HarvestConnector.model_fields["access_token_env"].default
_ACCOUNT_ENV = HarvestConnector.model_fields["account_id_env"].default
_AUTH_PARAMS = {"access_token", "account_id"}
_PAGING_PARAMS = {"page", "per_page", "cursor"}
_MEDIA_TYPE = "application/json; charset=utf-8"

_USER_ID_BASE = 4_100_000
_ENTRY_ID_BASE = 2_300_000_000
_CLIENT_ID_BASE = 10_500_000
_PROJECT_ID_BASE = 31_200_000
_ACCOUNT_CREATED = datetime(2021, 1, 4, 15, 0, tzinfo=UTC)

_TASKS = [
    (8_083_365, "Tax Preparation", True),
    (8_083_366, "Bookkeeping", True),
    (8_083_367, "Review", True),
]
_ADMIN_TASK = (8_083_368, "Firm Administration", False)
_INTERNAL_CLIENT = (_CLIENT_ID_BASE, "Internal")


# --- store -----------------------------------------------------------------------------------


@dataclass
class HarvestStore:
    users: list[dict[str, Any]] = field(default_factory=list)
    """Newest-created first, the order ``GET /v2/users`` returns."""
    time_entries: list[dict[str, Any]] = field(default_factory=list)
    """Newest ``spent_date`` first (ties: newest id first), the order Harvest returns."""

    def user(self, user_id: int) -> dict[str, Any] | None:
        return next((u for u in self.users if u["id"] == user_id), None)

    def dump(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        hours: dict[str, float] = {}
        for entry in self.time_entries:
            key = str(entry["user"]["id"])
            counts[key] = counts.get(key, 0) + 1
            hours[key] = round(hours.get(key, 0.0) + entry["hours"], 2)
        return {
            "users": self.users,
            "time_entry_count": len(self.time_entries),
            "time_entries_by_user": counts,
            "hours_by_user": hours,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock(hours_after_nine: float) -> str:
    """Harvest's ``started_time`` style: ``9:00am``, ``1:30pm``."""
    minutes = 9 * 60 + round(hours_after_nine * 60)
    hour, minute = divmod(minutes, 60)
    suffix = "am" if hour % 24 < 12 else "pm"
    shown = hour % 12 or 12
    return f"{shown}:{minute:02d}{suffix}"


def _half_hour_seconds(hours: float) -> int:
    """Harvest stores weekly capacity in seconds, in half-hour steps."""
    return round(hours * 2) * 1800


def _rounded(hours: float) -> float:
    # [A] Rounding is an account setting; we emulate "round up to the nearest 15 minutes".
    return math.ceil(hours * 4 - 1e-9) / 4


def _split(total_hours: float, parts: int) -> list[float]:
    """Split into ``parts`` amounts of whole hundredths that add up exactly to the total."""
    cents = round(total_hours * 100)
    base, extra = divmod(cents, parts)
    return [(base + (1 if i < extra else 0)) / 100 for i in range(parts)]


def _user(staff: SeedStaff, idx: int, owner: bool) -> dict[str, Any]:
    first, _, last = staff.name.partition(" ")
    created = _ACCOUNT_CREATED + timedelta(days=30 * idx)
    return {
        "id": _USER_ID_BASE + idx + 1,
        "first_name": first,
        "last_name": last,
        "email": staff.email,
        "telephone": "",
        "timezone": "Eastern Time (US & Canada)",
        "weekly_capacity": _half_hour_seconds(staff.weekly_capacity_hours),
        "has_access_to_all_future_projects": owner,
        "is_contractor": False,
        "is_active": staff.active,
        "calendar_integration_enabled": False,
        "calendar_integration_source": None,
        "can_create_projects": owner,
        "default_hourly_rate": 150.0,
        "cost_rate": 60.0,
        "roles": [],
        "access_roles": ["administrator"] if owner else ["member"],
        "permissions_claims": ["expenses:read:own", "timers:read:own", "timers:write:own"],
        "avatar_url": "https://d3s3969qhosaug.cloudfront.net/v2/user.png",
        "created_at": _iso(created),
        "updated_at": _iso(created + timedelta(days=1)),
    }


def _projects(seed: SandboxSeed) -> list[dict[str, Any]]:
    clients = [(c.id, c.name) for c in seed.clients] or [("internal", "Internal")]
    projects = []
    for idx, (_, client_name) in enumerate(clients):
        projects.append(
            {
                "client": {"id": _CLIENT_ID_BASE + idx + 1, "name": client_name, "currency": "USD"},
                "project": {
                    "id": _PROJECT_ID_BASE + idx + 1,
                    "name": f"{client_name} engagement",
                    "code": f"E{idx + 1:03d}",
                },
            }
        )
    return projects


def _week_days(monday: date, count: int) -> list[date]:
    return [monday + timedelta(days=i) for i in range(count)]


def create_store(seed: SandboxSeed) -> HarvestStore:
    users = [_user(s, idx, owner=idx == 0) for idx, s in enumerate(seed.staff)]
    projects = _projects(seed)
    monday = seed.week_start
    # The seed logs Mon..today, capped at Friday; weekends log nothing.
    this_week = _week_days(monday, min(seed.today.weekday() + 1, WORKDAYS_PER_WEEK))
    last_week = _week_days(monday - timedelta(days=7), WORKDAYS_PER_WEEK)
    today_is_logged = seed.today in this_week

    entries: list[dict[str, Any]] = []
    next_id = _ENTRY_ID_BASE
    for idx, (staff, user) in enumerate(zip(seed.staff, users, strict=True)):
        weeks = ((last_week, staff.logged_last_week), (this_week, staff.logged_this_week))
        for days, total in weeks:
            if total <= 0 or not days:
                continue
            amounts = _split(total, len(days) * ENTRIES_PER_DAY)
            for day_no, day in enumerate(days):
                started = 0.0
                for slot in range(ENTRIES_PER_DAY):
                    hours = amounts[day_no * ENTRIES_PER_DAY + slot]
                    # The last entry of today is a running timer: it still counts as logged.
                    running = today_is_logged and day == seed.today and slot == ENTRIES_PER_DAY - 1
                    next_id += 1
                    entries.append(
                        _entry(
                            entry_id=next_id,
                            day=day,
                            user=user,
                            hours=hours,
                            started=started,
                            running=running,
                            work=projects[(idx + day_no + slot) % len(projects)],
                            task=_ADMIN_TASK
                            if slot == 1 and day_no % 2 == 1
                            else _TASKS[(idx + day_no) % len(_TASKS)],
                        )
                    )
                    started += hours
    entries.sort(key=lambda e: (e["spent_date"], e["id"]), reverse=True)
    users.sort(key=lambda u: (u["created_at"], u["id"]), reverse=True)
    return HarvestStore(users=users, time_entries=entries)


def _entry(
    *,
    entry_id: int,
    day: date,
    user: dict[str, Any],
    hours: float,
    started: float,
    running: bool,
    work: dict[str, Any],
    task: tuple[int, str, bool],
) -> dict[str, Any]:
    task_id, task_name, billable = task
    client, project = work["client"], work["project"]
    if not billable:
        client = {"id": _INTERNAL_CLIENT[0], "name": _INTERNAL_CLIENT[1], "currency": "USD"}
        project = {"id": _PROJECT_ID_BASE, "name": "Firm operations", "code": "OPS"}
    start_clock = datetime.combine(day, time(14, 0), tzinfo=UTC) + timedelta(hours=started)
    logged_at = start_clock if running else datetime.combine(day, time(23, 0), tzinfo=UTC)
    return {
        "id": entry_id,
        "spent_date": day.isoformat(),
        "user": {"id": user["id"], "name": f"{user['first_name']} {user['last_name']}".strip()},
        "client": client,
        "project": project,
        "task": {"id": task_id, "name": task_name},
        "user_assignment": {
            "id": project["id"] * 10 + user["id"] % 10,
            "is_project_manager": False,
            "is_active": True,
            "budget": None,
            "hourly_rate": 150.0,
        },
        "task_assignment": {
            "id": project["id"] * 100 + task_id % 100,
            "billable": billable,
            "is_active": True,
            "budget": None,
            "hourly_rate": 150.0,
        },
        "hours": hours,
        "hours_without_timer": hours,
        "rounded_hours": _rounded(hours),
        "notes": None,
        "is_locked": False,
        "locked_reason": None,
        "approval_status": "unsubmitted",
        "is_closed": False,
        "is_billed": False,
        "timer_started_at": _iso(start_clock) if running else None,
        "started_time": _clock(started),
        "ended_time": None if running else _clock(started + hours),
        "is_running": running,
        "invoice": None,
        "external_reference": None,
        "billable": billable,
        "budgeted": False,
        "billable_rate": 150.0 if billable else None,
        "cost_rate": 60.0,
        "created_at": _iso(logged_at),
        "updated_at": _iso(logged_at),
    }


# --- wire helpers ----------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=_MEDIA_TYPE, headers=headers)


def _unprocessable(message: str) -> JSONResponse:
    # [A] Harvest's 4xx body shape is undocumented; 422s carry {"message": ...}.
    return _json(422, {"message": message})


def _not_found() -> JSONResponse:
    # [A] body shape for 404.
    return _json(404, {"status": 404, "error": "Not Found"})


def _check_auth(request: Request) -> JSONResponse | None:
    if not request.headers.get("user-agent", "").strip():
        # [A] Harvest documents the 400 for a missing User-Agent, not its body.
        return _json(
            400,
            {"error": "invalid_request", "error_description": "A User-Agent header is required."},
        )
    token = ""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
    token = token or request.query_params.get("access_token", "")
    account = (
        request.headers.get("harvest-account-id") or request.query_params.get("account_id", "")
    ).strip()
    token_ok = hmac.compare_digest(token.encode(), demo_secret(_TOKEN_ENV).encode())
    account_ok = hmac.compare_digest(account.encode(), demo_secret(_ACCOUNT_ENV).encode())
    if token_ok and account_ok:
        return None
    # [A] 401 with an OAuth-style body for a missing/wrong token or account id.
    return _json(
        401,
        {
            "error": "invalid_token",
            "error_description": "The access token provided is expired, revoked, malformed or "
            "invalid for other reasons.",
        },
    )


def _int_param(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)  # ValueError is turned into a 422 by the caller


def _per_page(request: Request) -> int:
    per_page = _int_param(request, "per_page", MAX_PER_PAGE)
    assert per_page is not None
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
    return per_page


def _bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ValueError(f"{name} must be true or false")


def _date_param(request: Request, name: str, *, required: bool = False) -> date | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise ValueError(f"{name} is required")
        return None
    try:
        # Reports take YYYYMMDD, the other endpoints ISO dates; both forms are accepted.
        return date.fromisoformat(raw) if "-" in raw else datetime.strptime(raw, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{name} is not a valid date") from None


def _link(ctx: SandboxContext, request: Request, **paging: int | str) -> str:
    """An absolute link to another page, keeping the caller's filters.

    [A] Whether Harvest echoes query-string credentials into ``links`` is not documented; we
    leave them out so a token never travels inside a URL we hand out.
    """
    kept = [
        (k, v)
        for k, v in request.query_params.multi_items()
        if k not in _AUTH_PARAMS and k not in _PAGING_PARAMS
    ]
    query = urlencode([*((k, str(v)) for k, v in paging.items()), *kept])
    return f"{ctx.base_url}{request.url.path}?{query}"


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> int:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        kind, _, number = text.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("cursor is invalid") from None
    if kind != "o" or offset < 0:
        raise ValueError("cursor is invalid")
    return offset


def _numbered_page(
    ctx: SandboxContext, request: Request, key: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    per_page = _per_page(request)
    page = _int_param(request, "page", 1)
    assert page is not None
    if page < 1:
        raise ValueError("page must be 1 or greater")
    total_pages = max(1, math.ceil(len(items) / per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    next_page = page + 1 if page < total_pages else None
    previous_page = page - 1 if page > 1 else None
    return {
        key: chunk,
        "per_page": per_page,
        "total_pages": total_pages,
        "total_entries": len(items),
        "next_page": next_page,
        "previous_page": previous_page,
        "page": page,
        "links": {
            "first": _link(ctx, request, page=1, per_page=per_page),
            "next": _link(ctx, request, page=next_page, per_page=per_page) if next_page else None,
            "previous": (
                _link(ctx, request, page=previous_page, per_page=per_page)
                if previous_page
                else None
            ),
            "last": _link(ctx, request, page=total_pages, per_page=per_page),
        },
    }


def _cursor_page(
    ctx: SandboxContext, request: Request, key: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """Cursor pagination: page numbers are null, only ``links`` move through the list."""
    per_page = _per_page(request)
    raw = request.query_params.get("cursor")
    offset = _decode_cursor(raw) if raw else 0
    chunk = items[offset : offset + per_page]
    after = offset + per_page
    last_offset = max(0, (math.ceil(len(items) / per_page) - 1) * per_page)

    def at(position: int) -> str:
        return _link(ctx, request, cursor=_encode_cursor(position), per_page=per_page)

    return {
        key: chunk,
        "per_page": per_page,
        "total_pages": max(1, math.ceil(len(items) / per_page)),
        "total_entries": len(items),
        "next_page": None,
        "previous_page": None,
        "page": None,
        "links": {
            "first": _link(ctx, request, per_page=per_page),
            "next": at(after) if after < len(items) else None,
            "previous": at(max(0, offset - per_page)) if offset > 0 else None,
            "last": at(last_offset),
        },
    }


# --- routes ----------------------------------------------------------------------------------


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["harvest"])

    def store() -> HarvestStore:
        current: HarvestStore = ctx.stores[NAME]
        return current

    @router.get("/users")
    async def list_users(request: Request) -> JSONResponse:
        if (denied := _check_auth(request)) is not None:
            return denied
        try:
            active = _bool_param(request, "is_active")
            users = [u for u in store().users if active is None or u["is_active"] is active]
            return _json(200, _cursor_page(ctx, request, "users", users))
        except ValueError as err:
            return _unprocessable(str(err))

    @router.get("/users/me")
    async def me(request: Request) -> JSONResponse:
        if (denied := _check_auth(request)) is not None:
            return denied
        # The personal access token belongs to the account's first (administrator) user.
        owner = next((u for u in store().users if "administrator" in u["access_roles"]), None)
        return _json(200, owner) if owner is not None else _not_found()

    @router.get("/users/{user_id}")
    async def get_user(user_id: str, request: Request) -> JSONResponse:
        if (denied := _check_auth(request)) is not None:
            return denied
        user = store().user(int(user_id)) if user_id.isdigit() else None
        return _json(200, user) if user is not None else _not_found()

    @router.get("/time_entries")
    async def list_time_entries(request: Request) -> JSONResponse:
        if (denied := _check_auth(request)) is not None:
            return denied
        try:
            user_id = _int_param(request, "user_id")
            start = _date_param(request, "from")
            end = _date_param(request, "to")
            running = _bool_param(request, "is_running")
            found = [
                e
                for e in store().time_entries
                if (user_id is None or e["user"]["id"] == user_id)
                and (start is None or e["spent_date"] >= start.isoformat())
                and (end is None or e["spent_date"] <= end.isoformat())
                and (running is None or e["is_running"] is running)
            ]
            return _json(200, _numbered_page(ctx, request, "time_entries", found))
        except ValueError as err:
            return _unprocessable(str(err))

    @router.get("/reports/time/team")
    async def team_report(request: Request) -> JSONResponse:
        if (denied := _check_auth(request)) is not None:
            return denied
        try:
            start = _date_param(request, "from", required=True)
            end = _date_param(request, "to", required=True)
            assert start is not None and end is not None
            if end < start:
                raise ValueError("to must be on or after from")
            if (end - start).days + 1 > MAX_REPORT_DAYS:
                raise ValueError(f"the range can be at most {MAX_REPORT_DAYS} days")
            results = _team_results(store(), start, end)
            return _json(200, _numbered_page(ctx, request, "results", results))
        except ValueError as err:
            return _unprocessable(str(err))

    return router


def _team_results(store: HarvestStore, start: date, end: date) -> list[dict[str, Any]]:
    totals: dict[int, dict[str, float]] = {}
    for entry in store.time_entries:
        if not start.isoformat() <= entry["spent_date"] <= end.isoformat():
            continue
        sums = totals.setdefault(entry["user"]["id"], {"total": 0.0, "billable": 0.0})
        sums["total"] += entry["hours"]
        if entry["billable"]:
            sums["billable"] += entry["hours"]
    results = []
    for user in store.users:
        if user["id"] not in totals:
            continue
        sums = totals[user["id"]]
        billable = round(sums["billable"], 2)
        results.append(
            {
                "user_id": user["id"],
                "user_name": f"{user['first_name']} {user['last_name']}".strip(),
                "is_contractor": user["is_contractor"],
                "total_hours": round(sums["total"], 2),
                "billable_hours": billable,
                "currency": "USD",
                "billable_amount": round(billable * user["default_hourly_rate"], 2),
                "weekly_capacity": user["weekly_capacity"],
                "avatar_url": user["avatar_url"],
            }
        )
    return results


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    """Harvest's throttling body; Retry-After is added by the fault middleware."""
    if status == 429:
        return {"message": "Too Many Requests"}, _MEDIA_TYPE
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"message": phrase}, _MEDIA_TYPE
