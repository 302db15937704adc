"""QuickBooks Time: the emulator holds the TSheets v1 contract, and the tracker reads it right.

Activity calls run through ``ActivityEnvironment`` against the sandbox emulator over real HTTP,
so a broken header, page walk, keyed-object parse or running-timer rule fails here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.quickbooks_time import QuickBooksTimeActivities
from app.secrets_demo import demo_secret
from dispatch.config import QuickBooksTimeConnector
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
    TrackerStaff,
    TrackerUserHours,
)
from sandbox.quickbooks_time import QuickBooksTimeStore
from sandbox.seed import SandboxSeed, SeedStaff
from tests.sandbox_server import RunningSandbox, free_port, run_sandbox

TOKEN_ENV = "QBTIME_ACCESS_TOKEN"
UNKNOWN_EMAIL = "Nobody.Here@elsewhere.example"
API = "/quickbooks_time/api/v1"


@pytest.fixture(autouse=True)
def qbtime_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, demo_secret(TOKEN_ENV))


def connector_of(sandbox: RunningSandbox) -> QuickBooksTimeConnector:
    return QuickBooksTimeConnector(kind="quickbooks_time", base_url=f"{sandbox.base_url}{API}")


def store_of(sandbox: RunningSandbox) -> QuickBooksTimeStore:
    store: QuickBooksTimeStore = sandbox.ctx.stores["quickbooks_time"]
    return store


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {demo_secret(TOKEN_ENV)}"}


def read_input(seed: SandboxSeed, extra: list[TrackerStaff] | None = None) -> TrackerReadInput:
    staff = [TrackerStaff(staff_id=s.id, email=s.email) for s in seed.staff if s.active]
    return TrackerReadInput(
        staff=[*staff, *(extra or [])], start=seed.week_start - timedelta(days=7), end=seed.today
    )


async def run_read(
    activities: QuickBooksTimeActivities, input: TrackerReadInput
) -> TrackerReadResult:
    result: TrackerReadResult = await ActivityEnvironment().run(activities.read, input)
    return result


async def run_job(activities: QuickBooksTimeActivities, input: JobHoursInput) -> JobHours:
    result: JobHours = await ActivityEnvironment().run(activities.job_hours, input)
    return result


async def read_error(
    activities: QuickBooksTimeActivities, input: TrackerReadInput
) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await run_read(activities, input)
    return caught.value


async def inject_faults(sandbox: RunningSandbox, *rules: dict[str, object]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)}
        )
        response.raise_for_status()


def assert_matches_seed(user: TrackerUserHours, staff: SeedStaff, seed: SandboxSeed) -> None:
    monday = seed.week_start
    this_week = sum(h for d, h in user.logged_by_date.items() if d >= monday)
    last_week = sum(h for d, h in user.logged_by_date.items() if d < monday)
    assert user.weekly_capacity_hours is None  # no capacity in QuickBooks Time
    assert this_week == pytest.approx(staff.logged_this_week, abs=1e-6)
    assert last_week == pytest.approx(staff.logged_last_week, abs=1e-6)


def store_sums(store: QuickBooksTimeStore, start: date, end: date) -> dict[str, dict[date, float]]:
    email_of = {u["id"]: u["email"] for u in store.users.values()}
    seconds: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for sheet in store.timesheets.values():
        day = date.fromisoformat(sheet["date"])
        if start <= day <= end:
            seconds[email_of[sheet["user_id"]]][day] += store.view(sheet)["duration"]
    return {
        email: {d: round(s / 3600, 2) for d, s in days.items()} for email, days in seconds.items()
    }


def queries(sandbox: RunningSandbox, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(str(r["query"])) for r in sandbox.requests(prefix=f"{API}/{path}")]


# --- the emulator's contract -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic x"}]
)
def test_bad_auth_is_401(sandbox: RunningSandbox, headers: dict[str, str]) -> None:
    response = httpx.get(f"{sandbox.base_url}{API}/users", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401


def test_timesheets_need_a_filter(sandbox: RunningSandbox) -> None:
    url = f"{sandbox.base_url}{API}/timesheets"
    assert httpx.get(url, headers=auth()).status_code == 400
    assert httpx.get(url, headers=auth(), params={"user_ids": "1"}).status_code == 400
    today = sandbox.ctx.seed.today.isoformat()
    assert httpx.get(url, headers=auth(), params={"start_date": today}).status_code == 200


def test_results_are_keyed_by_id_and_paged_by_more(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    url = f"{sandbox.base_url}{API}/timesheets"
    params: dict[str, Any] = {
        "start_date": (seed.week_start - timedelta(days=7)).isoformat(),
        "on_the_clock": "both",
        "limit": 10,
    }
    first = httpx.get(url, headers=auth(), params={**params, "page": 1}).json()
    sheets = first["results"]["timesheets"]
    assert isinstance(sheets, dict) and len(sheets) == 10
    assert all(key == str(sheet["id"]) for key, sheet in sheets.items())
    assert first["more"] is True
    users = first["supplemental_data"]["users"]
    assert {str(s["user_id"]) for s in sheets.values()} == set(users)

    total = len(store_of(sandbox).timesheets)
    last_page = math.ceil(total / 10)
    last = httpx.get(url, headers=auth(), params={**params, "page": last_page}).json()
    assert last["more"] is False
    beyond = httpx.get(url, headers=auth(), params={**params, "page": last_page + 1}).json()
    assert beyond["results"]["timesheets"] == [] and beyond["more"] is False  # PHP's empty array
    too_big = httpx.get(url, headers=auth(), params={**params, "limit": 201})
    assert too_big.status_code == 400


def test_running_timers_only_when_asked_and_still_counting(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    if seed.today.weekday() >= 5:
        pytest.skip("nobody is on the clock at the weekend")
    store = store_of(sandbox)
    now = [10_000.0]
    store.clock = lambda: now[0]
    store._running_since = {k: (10_000.0, secs) for k, (_, secs) in store._running_since.items()}
    url = f"{sandbox.base_url}{API}/timesheets"
    params = {"start_date": seed.today.isoformat()}
    default = httpx.get(url, headers=auth(), params=params).json()["results"]["timesheets"]
    assert all(not s["on_the_clock"] for s in default.values())
    running = httpx.get(url, headers=auth(), params={**params, "on_the_clock": "yes"}).json()
    sheets = list(running["results"]["timesheets"].values())
    assert sheets and all(s["on_the_clock"] and s["end"] == "" for s in sheets)
    now[0] += 600
    later = httpx.get(url, headers=auth(), params={**params, "on_the_clock": "yes"}).json()
    for sheet in sheets:
        assert later["results"]["timesheets"][str(sheet["id"])]["duration"] == (
            sheet["duration"] + 600
        )


def test_inactive_users_only_when_asked(sandbox: RunningSandbox) -> None:
    store = store_of(sandbox)
    store.users[min(store.users)]["active"] = False
    url = f"{sandbox.base_url}{API}/users"
    active = httpx.get(url, headers=auth()).json()["results"]["users"]
    every = httpx.get(url, headers=auth(), params={"active": "both"}).json()["results"]["users"]
    assert str(min(store.users)) not in active and str(min(store.users)) in every


def test_throttle_answers_429_with_retry_after(sandbox: RunningSandbox) -> None:
    store_of(sandbox).throttle_limit = 2
    url = f"{sandbox.base_url}{API}/users"
    statuses = [httpx.get(url, headers=auth()).status_code for _ in range(2)]
    over = httpx.get(url, headers=auth())
    assert statuses == [200, 200] and over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 600


# --- tracker_read --------------------------------------------------------------------------------


async def test_read_sums_durations_per_user_per_date(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed, [TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL)])
    result = await run_read(QuickBooksTimeActivities(connector_of(sandbox)), input)

    assert result.unmatched == [UNKNOWN_EMAIL]
    assert [u.staff_id for u in result.users] == [s.staff_id for s in input.staff][:-1]
    expected = store_sums(store_of(sandbox), input.start, input.end)
    for user in result.users:
        staff = next(s for s in seed.staff if s.id == user.staff_id)
        assert_matches_seed(user, staff, seed)
        assert user.logged_by_date == expected.get(staff.email, {})

    sheets_query = queries(sandbox, "timesheets")[0]
    assert sheets_query["on_the_clock"] == ["both"]  # the running timers count
    assert sheets_query["start_date"] == [input.start.isoformat()]
    assert sheets_query["end_date"] == [input.end.isoformat()]
    sent = sandbox.requests(prefix=API)
    assert all(r["status"] == 200 for r in sent)


async def test_small_pages_are_all_followed(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed)
    full = await run_read(QuickBooksTimeActivities(connector_of(sandbox)), input)
    sandbox.ctx.recorder.clear()

    sent: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        activities = QuickBooksTimeActivities(connector_of(sandbox), http=http, page_size=4)
        paged = await run_read(activities, input)

    assert paged == full
    store = store_of(sandbox)
    active_users = sum(1 for u in store.users.values() if u["active"])
    in_range = sum(
        1
        for t in store.timesheets.values()
        if input.start.isoformat() <= t["date"] <= input.end.isoformat()
    )
    user_pages = queries(sandbox, "users")
    sheet_pages = queries(sandbox, "timesheets")
    assert [q["page"] for q in user_pages] == [
        [str(n)] for n in range(1, math.ceil(active_users / 4) + 1)
    ]
    assert [q["page"] for q in sheet_pages] == [
        [str(n)] for n in range(1, math.ceil(in_range / 4) + 1)
    ]
    assert len(sheet_pages) > 1 and all(q["limit"] == ["4"] for q in sheet_pages)
    assert len(sent) == len(user_pages) + len(sheet_pages)


async def test_running_timer_counts_what_has_elapsed(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    if seed.today.weekday() >= 5:
        pytest.skip("nobody is on the clock at the weekend")
    store = store_of(sandbox)
    running_id = min(store._running_since)
    started_at, seconds = store._running_since[running_id]
    store._running_since[running_id] = (started_at - 1800, seconds)  # on the clock 30 min more
    email = next(
        u["email"]
        for u in store.users.values()
        if u["id"] == store.timesheets[running_id]["user_id"]
    )
    staff = seed.staff_by_email(email)
    assert staff is not None
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id=staff.id, email=email)], start=seed.today, end=seed.today
    )
    result = await run_read(QuickBooksTimeActivities(connector_of(sandbox)), input)
    daily = round(staff.logged_this_week / min(seed.today.weekday() + 1, 5), 2)
    assert result.users[0].logged_by_date[seed.today] == pytest.approx(daily + 0.5, abs=0.011)


async def test_running_timer_reported_as_zero_uses_its_start(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    user = next(iter(store.users.values()))
    store.timesheets[1] = {
        **store.timesheets[max(store.timesheets)],
        "id": 1,
        "user_id": user["id"],
        "date": seed.today.isoformat(),
        "on_the_clock": True,
        "duration": 0,
        "start": f"{seed.today.isoformat()}T09:00:00-05:00",
        "end": "",
    }
    store.timesheets = {1: store.timesheets[1]}
    store._running_since = {}
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id="x", email=user["email"])], start=seed.today, end=seed.today
    )
    # 2.5 h after 09:00 at UTC-5
    clock = datetime.combine(seed.today, time(16, 30), tzinfo=UTC)
    activities = QuickBooksTimeActivities(connector_of(sandbox), clock=lambda: clock)
    result = await run_read(activities, input)
    assert result.users[0].logged_by_date == {seed.today: 2.5}


async def test_wrong_token_is_not_retried_and_not_echoed(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another variable: the emulator itself checks against QBTIME_ACCESS_TOKEN.
    monkeypatch.setenv("QBTIME_TEST_WRONG", "S.wrong-token-123")
    connector = connector_of(sandbox).model_copy(update={"access_token_env": "QBTIME_TEST_WRONG"})
    err = await read_error(QuickBooksTimeActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable and err.type == "QuickBooksTimeRejected"
    assert "401" in str(err) and "wrong-token-123" not in str(err)
    assert len(sandbox.requests(prefix=API)) == 1


async def test_unset_secret_fails_before_any_request(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QBTIME_TEST_UNSET", raising=False)
    connector = connector_of(sandbox).model_copy(update={"access_token_env": "QBTIME_TEST_UNSET"})
    err = await read_error(QuickBooksTimeActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable and "QBTIME_TEST_UNSET" in str(err)
    assert sandbox.requests(prefix=API) == []


async def test_429_waits_for_retry_after_then_succeeds(sandbox: RunningSandbox) -> None:
    store_of(sandbox).throttle_limit = 1
    activities = QuickBooksTimeActivities(connector_of(sandbox))
    input = read_input(sandbox.ctx.seed)
    err = await read_error(activities, input)
    assert err.type == "RateLimited" and not err.non_retryable
    assert err.next_retry_delay is not None
    assert timedelta(seconds=1) <= err.next_retry_delay <= timedelta(minutes=5)
    store_of(sandbox).throttle_limit = 300
    assert (await run_read(activities, input)).unmatched == []


async def test_injected_429_honours_retry_after(sandbox: RunningSandbox) -> None:
    await inject_faults(
        sandbox, {"route": f"{API}/timesheets", "status": 429, "retry_after": 9, "count": 1}
    )
    err = await read_error(
        QuickBooksTimeActivities(connector_of(sandbox)), read_input(sandbox.ctx.seed)
    )
    assert err.type == "RateLimited" and err.next_retry_delay == timedelta(seconds=9)


async def test_failure_mid_listing_returns_no_partial_sums(sandbox: RunningSandbox) -> None:
    await inject_faults(
        sandbox, {"route": f"{API}/timesheets", "status": 502, "rate": 0.5, "count": 1}
    )
    activities = QuickBooksTimeActivities(connector_of(sandbox), page_size=20)
    err = await read_error(activities, read_input(sandbox.ctx.seed))
    assert err.type == "ServerError" and not err.non_retryable
    statuses = [r["status"] for r in sandbox.requests(prefix=f"{API}/timesheets")]
    assert statuses == [200, 502]


async def test_unreachable_is_a_retryable_transport_error() -> None:
    connector = QuickBooksTimeConnector(
        kind="quickbooks_time", base_url=f"http://127.0.0.1:{free_port()}{API}"
    )
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id="a", email="a@example.com")],
        start=date(2026, 3, 2),
        end=date(2026, 3, 4),
    )
    err = await read_error(QuickBooksTimeActivities(connector), input)
    assert err.type == "TransportError" and not err.non_retryable


# --- tracker_job_hours ---------------------------------------------------------------------------


async def test_job_hours_count_the_assignees_notes_that_name_the_job(
    sandbox: RunningSandbox,
) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    preparer, reviewer, other = [s for s in seed.staff if s.active][:3]
    # Last week, wholly past on any weekday: on a Monday this week has no Tuesday yet.
    monday = seed.week_start - timedelta(days=7)
    store.add_timesheet(preparer.email, monday, 5400, "KB-77 prep: W-2s")
    store.add_timesheet(reviewer.email, monday + timedelta(days=1), 2700, "review kb-77")
    store.add_timesheet(preparer.email, monday, 3600, "KB-770 another job")
    store.add_timesheet(other.email, monday, 3600, "KB-77 helped out")  # not an assignee
    store.add_timesheet(preparer.email, monday - timedelta(days=1), 3600, "KB-77 too early")
    input = JobHoursInput(
        source="karbon",
        external_id="KB-77",
        staff=[
            TrackerStaff(staff_id=preparer.id, email=preparer.email),
            TrackerStaff(staff_id=reviewer.id, email=reviewer.email),
            TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL),
        ],
        since=monday,
        until=monday + timedelta(days=6),
    )
    result = await run_job(QuickBooksTimeActivities(connector_of(sandbox)), input)
    assert result.hours == 2.25
    assert "notes name KB-77" in result.detail and "2 timesheet(s)" in result.detail
    assert "1 assignee(s) not found" in result.detail
    (query,) = queries(sandbox, "timesheets")
    ids = {u["email"]: str(u["id"]) for u in store.users.values()}
    assert set(query["user_ids"][0].split(",")) == {ids[preparer.email], ids[reviewer.email]}
    assert query["on_the_clock"] == ["both"]


# --- uneven hours, a mid-week "today", someone deactivated ----------------------------------------


UNEVEN_SEED = SandboxSeed(
    today=date(2026, 3, 4),
    staff=[
        SeedStaff(
            id="rae",
            name="Rae Lindqvist",
            email="Rae@Firm.example",
            logged_this_week=13.37,
            logged_last_week=31.13,
        ),
        SeedStaff(id="tom", name="Tom Ek", email="tom@firm.example", logged_this_week=0.05),
        SeedStaff(id="ida", name="Ida Berg", email="ida@firm.example"),
        SeedStaff(
            id="old",
            name="Olle Gammal",
            email="old@firm.example",
            logged_this_week=5,
            logged_last_week=20,
            active=False,
        ),
    ],
)


@pytest.fixture(scope="module")
def uneven_sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox(seed=UNEVEN_SEED) as running:
        yield running


async def test_uneven_hours_add_up_exactly(uneven_sandbox: RunningSandbox) -> None:
    seed = uneven_sandbox.ctx.seed
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id=s.id, email=s.email.lower()) for s in seed.staff],
        start=seed.week_start - timedelta(days=7),
        end=seed.today,
    )
    activities = QuickBooksTimeActivities(connector_of(uneven_sandbox), page_size=3)
    result = await run_read(activities, input)
    assert result.unmatched == ["old@firm.example"]  # deactivated in QuickBooks Time
    by_id = {u.staff_id: u for u in result.users}
    for staff_id, user in by_id.items():
        assert_matches_seed(user, next(s for s in seed.staff if s.id == staff_id), seed)
    assert by_id["ida"].logged_by_date == {}
