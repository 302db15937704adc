"""Toggl Track: the emulator holds the v9 / Reports v3 contract, and the tracker reads it right.

Activity calls run through ``ActivityEnvironment`` against the sandbox emulator over real HTTP,
so a broken auth header, page walk, pacing or 429/402 decision fails here.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.toggl import TogglActivities
from app.secrets_demo import demo_secret
from dispatch.config import TogglConnector
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
    TrackerStaff,
    TrackerUserHours,
)
from sandbox.seed import SandboxSeed, SeedStaff
from sandbox.toggl import WORKSPACE_ID, TogglStore
from tests.sandbox_server import RunningSandbox, free_port, run_sandbox

TOKEN_ENV = "TOGGL_API_TOKEN"
UNKNOWN_EMAIL = "Nobody.Here@elsewhere.example"
REPORTS = f"/toggl/reports/api/v3/workspace/{WORKSPACE_ID}"
SEARCH = f"{REPORTS}/search/time_entries"
SUMMARY = f"{REPORTS}/summary/time_entries"
USERS = f"/toggl/api/v9/workspaces/{WORKSPACE_ID}/users"


@pytest.fixture(autouse=True)
def toggl_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, demo_secret(TOKEN_ENV))


@pytest.fixture(autouse=True)
def roomy_bucket(sandbox: RunningSandbox) -> None:
    """Unthrottled unless a test says otherwise: the tests below choose when 429s happen."""
    store_of(sandbox).bucket_capacity = 10_000


def connector_of(sandbox: RunningSandbox) -> TogglConnector:
    return TogglConnector(
        kind="toggl", base_url=f"{sandbox.base_url}/toggl", workspace_id=WORKSPACE_ID
    )


def store_of(sandbox: RunningSandbox) -> TogglStore:
    store: TogglStore = sandbox.ctx.stores["toggl"]
    return store


def fast(sandbox: RunningSandbox, **options: Any) -> TogglActivities:
    """No pacing: the tests decide when the emulator's bucket overflows."""
    return TogglActivities(connector_of(sandbox), **{"min_interval": 0.0, **options})


def basic(token: str, password: str = "api_token") -> dict[str, str]:
    raw = base64.b64encode(f"{token}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}", "Content-Type": "application/json"}


def good_auth() -> dict[str, str]:
    return basic(demo_secret(TOKEN_ENV))


def read_input(seed: SandboxSeed, extra: list[TrackerStaff] | None = None) -> TrackerReadInput:
    staff = [TrackerStaff(staff_id=s.id, email=s.email) for s in seed.staff if s.active]
    return TrackerReadInput(
        staff=[*staff, *(extra or [])], start=seed.week_start - timedelta(days=7), end=seed.today
    )


async def run_read(activities: TogglActivities, input: TrackerReadInput) -> TrackerReadResult:
    result: TrackerReadResult = await ActivityEnvironment().run(activities.read, input)
    return result


async def run_job(activities: TogglActivities, input: JobHoursInput) -> JobHours:
    result: JobHours = await ActivityEnvironment().run(activities.job_hours, input)
    return result


async def read_error(activities: TogglActivities, input: TrackerReadInput) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await run_read(activities, input)
    return caught.value


async def inject_faults(sandbox: RunningSandbox, *rules: dict[str, object]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)}
        )
        response.raise_for_status()


def store_sums(store: TogglStore, start: date, end: date) -> dict[str, dict[date, float]]:
    """Hours per user email per day, straight from the emulator's entries."""
    email_of = {u["id"]: u["email"] for u in store.users}
    seconds: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for entry in store.time_entries:
        day = date.fromisoformat(entry["start"][:10])
        if start <= day <= end:
            seconds[email_of[entry["user_id"]]][day] += entry["duration"]
    return {
        email: {d: round(s / 3600, 2) for d, s in days.items()} for email, days in seconds.items()
    }


def assert_matches_seed(user: TrackerUserHours, staff: SeedStaff, seed: SandboxSeed) -> None:
    monday = seed.week_start
    this_week = sum(h for d, h in user.logged_by_date.items() if d >= monday)
    last_week = sum(h for d, h in user.logged_by_date.items() if d < monday)
    assert user.weekly_capacity_hours is None  # Toggl has no capacity: the config's applies
    assert this_week == pytest.approx(staff.logged_this_week, abs=1e-6)
    assert last_week == pytest.approx(staff.logged_last_week, abs=1e-6)


def few_people(sandbox: RunningSandbox, count: int) -> TrackerReadInput:
    """The first few active staff over last week: ten entries each (five days of two).

    Last week, not this one, so the count is the same on any weekday (on a Monday this week
    holds only today's entries).
    """
    full = read_input(sandbox.ctx.seed)
    monday = sandbox.ctx.seed.week_start
    return full.model_copy(
        update={
            "staff": full.staff[:count],
            "start": monday - timedelta(days=7),
            "end": monday - timedelta(days=1),
        }
    )


def search_bodies(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    bodies = []
    for request in sandbox.requests(prefix=SEARCH):
        body = json.loads(str(request["body"]))
        assert isinstance(body, dict)
        bodies.append(body)
    return bodies


def entries_in_range(store: TogglStore, input: TrackerReadInput) -> int:
    return sum(
        1
        for e in store.time_entries
        if input.start.isoformat() <= e["start"][:10] <= input.end.isoformat()
    )


# --- the emulator's contract -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("not-the-token"),
        basic(demo_secret(TOKEN_ENV), password="secret"),
        {"Authorization": f"Bearer {demo_secret(TOKEN_ENV)}"},
    ],
)
def test_bad_auth_is_403(sandbox: RunningSandbox, headers: dict[str, str]) -> None:
    response = httpx.get(f"{sandbox.base_url}{USERS}", headers=headers)
    assert response.status_code == 403
    assert isinstance(response.json(), str)  # Toggl's errors are bare strings


def test_another_workspace_is_403(sandbox: RunningSandbox) -> None:
    response = httpx.get(
        f"{sandbox.base_url}/toggl/api/v9/workspaces/{WORKSPACE_ID + 1}/users",
        headers=good_auth(),
    )
    assert response.status_code == 403


def test_summary_groups_seconds_per_user(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    start, end = seed.week_start - timedelta(days=7), seed.today
    response = httpx.post(
        f"{sandbox.base_url}{SUMMARY}",
        headers=good_auth(),
        json={
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "grouping": "users",
            "sub_grouping": "projects",
        },
    )
    assert response.status_code == 200
    email_of = {u["id"]: u["email"] for u in store.users}
    for group in response.json()["groups"]:
        staff = seed.staff_by_email(email_of[group["id"]])
        assert staff is not None
        seconds = sum(sub["seconds"] for sub in group["sub_groups"])
        assert seconds / 3600 == pytest.approx(staff.logged_this_week + staff.logged_last_week)
        assert all(sub["id"] in store.projects for sub in group["sub_groups"])
    bad = httpx.post(
        f"{sandbox.base_url}{SUMMARY}",
        headers=good_auth(),
        json={"start_date": start.isoformat(), "end_date": end.isoformat(), "grouping": "days"},
    )
    assert bad.status_code == 400


def test_search_pages_by_next_row_headers(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    body: dict[str, Any] = {
        "start_date": (seed.week_start - timedelta(days=7)).isoformat(),
        "end_date": seed.today.isoformat(),
        "page_size": 5,
    }
    first = httpx.post(f"{sandbox.base_url}{SEARCH}", headers=good_auth(), json=body)
    rows = first.json()
    assert [r["row_number"] for r in rows] == [1, 2, 3, 4, 5]
    assert first.headers["x-next-row-number"] == "6"
    ordered = sorted(store.time_entries, key=lambda e: (e["start"], e["id"]))
    assert first.headers["x-next-id"] == str(ordered[5]["id"])

    second = httpx.post(
        f"{sandbox.base_url}{SEARCH}",
        headers=good_auth(),
        json={**body, "first_row_number": 6, "first_id": ordered[5]["id"]},
    )
    assert second.json()[0]["time_entries"][0]["id"] == ordered[5]["id"]
    stale = httpx.post(
        f"{sandbox.base_url}{SEARCH}",
        headers=good_auth(),
        json={**body, "first_row_number": 6, "first_id": ordered[4]["id"]},
    )
    assert stale.status_code == 400

    last = httpx.post(
        f"{sandbox.base_url}{SEARCH}",
        headers=good_auth(),
        json={**body, "first_row_number": len(ordered)},
    )
    assert len(last.json()) == 1 and "x-next-row-number" not in last.headers


def test_quota_headers_count_down_then_402(sandbox: RunningSandbox) -> None:
    store_of(sandbox).hourly_quota = 2
    url = f"{sandbox.base_url}{USERS}"
    first = httpx.get(url, headers=good_auth())
    second = httpx.get(url, headers=good_auth())
    assert first.headers["x-toggl-quota-remaining"] == "1"
    assert second.headers["x-toggl-quota-remaining"] == "0"
    over = httpx.get(url, headers=good_auth())
    assert over.status_code == 402
    assert 3590 <= int(over.headers["x-toggl-quota-resets-in"]) <= 3600
    # A bad token is turned away before it can spend anyone's quota.
    assert httpx.get(url, headers=basic("nope")).status_code == 403


def test_quota_window_frees_up_after_an_hour(sandbox: RunningSandbox) -> None:
    store = store_of(sandbox)
    now = [1000.0]
    store.clock = lambda: now[0]
    store.hourly_quota = 1
    url = f"{sandbox.base_url}{USERS}"
    assert httpx.get(url, headers=good_auth()).status_code == 200
    now[0] += 1800
    over = httpx.get(url, headers=good_auth())
    assert over.status_code == 402 and over.headers["x-toggl-quota-resets-in"] == "1800"
    now[0] += 1800
    assert httpx.get(url, headers=good_auth()).status_code == 200


def test_leaky_bucket_throttles_bursts(sandbox: RunningSandbox) -> None:
    store = store_of(sandbox)
    store.bucket_capacity = 2
    url = f"{sandbox.base_url}{USERS}"
    statuses = [httpx.get(url, headers=good_auth()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_me_time_entries_are_the_token_owners_only(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    owner = store.users[0]
    response = httpx.get(
        f"{sandbox.base_url}/toggl/api/v9/me/time_entries",
        headers=good_auth(),
        params={
            "start_date": seed.week_start.isoformat(),
            "end_date": (seed.today + timedelta(days=1)).isoformat(),
        },
    )
    entries = response.json()
    assert isinstance(entries, list) and entries
    assert {e["user_id"] for e in entries} == {owner["id"]}
    assert all(e["start"][:10] >= seed.week_start.isoformat() for e in entries)
    me = httpx.get(f"{sandbox.base_url}/toggl/api/v9/me", headers=good_auth()).json()
    assert me["id"] == owner["id"] and "api_token" not in me


# --- tracker_read --------------------------------------------------------------------------------


async def test_read_sums_hours_per_user_per_day(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed, [TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL)])
    result = await run_read(fast(sandbox), input)

    assert result.unmatched == [UNKNOWN_EMAIL]
    assert [u.staff_id for u in result.users] == [s.staff_id for s in input.staff][:-1]
    expected = store_sums(store_of(sandbox), input.start, input.end)
    for user in result.users:
        staff = next(s for s in seed.staff if s.id == user.staff_id)
        assert_matches_seed(user, staff, seed)
        assert user.logged_by_date == expected.get(staff.email, {})

    sent = sandbox.requests(prefix="/toggl")
    assert sent and all(r["status"] == 200 for r in sent)
    assert sent[0]["path"] == USERS
    body = search_bodies(sandbox)[0]
    assert body["start_date"] == input.start.isoformat()
    assert body["end_date"] == input.end.isoformat()
    assert sorted(body["user_ids"]) == sorted(u["id"] for u in store_of(sandbox).users)


async def test_small_pages_are_all_followed(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed)
    full = await run_read(fast(sandbox), input)
    sandbox.ctx.recorder.clear()

    sent: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        paged = await run_read(fast(sandbox, http=http, page_size=7), input)

    assert paged == full
    bodies = search_bodies(sandbox)
    assert len(bodies) == math.ceil(entries_in_range(store_of(sandbox), input) / 7) > 1
    assert "first_row_number" not in bodies[0]
    # Each later page asks for the row (and id) the previous answer announced in its headers.
    assert [b["first_row_number"] for b in bodies[1:]] == [1 + 7 * i for i in range(1, len(bodies))]
    assert all(isinstance(b["first_id"], int) for b in bodies[1:])
    assert len(sent) == 1 + len(bodies)  # the injected client did the work


async def test_read_counts_only_the_requested_days(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    last_monday = seed.week_start - timedelta(days=7)
    input = read_input(seed).model_copy(update={"start": last_monday, "end": last_monday})
    result = await run_read(fast(sandbox), input)
    for user in result.users:
        staff = next(s for s in seed.staff if s.id == user.staff_id)
        assert set(user.logged_by_date) == ({last_monday} if staff.logged_last_week else set())


async def test_wrong_token_is_not_retried_and_not_echoed(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another variable: the emulator itself checks against TOGGL_API_TOKEN.
    monkeypatch.setenv("TOGGL_TEST_WRONG_TOKEN", "wrong-toggl-token-123")
    connector = connector_of(sandbox).model_copy(update={"api_token_env": "TOGGL_TEST_WRONG_TOKEN"})
    err = await read_error(TogglActivities(connector, min_interval=0), read_input(sandbox.ctx.seed))
    assert err.non_retryable
    assert err.type == "TogglRejected"
    assert "403" in str(err) and "wrong-toggl-token-123" not in str(err)
    assert len(sandbox.requests(prefix="/toggl")) == 1


async def test_unset_secret_fails_before_any_request(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOGGL_TEST_UNSET", raising=False)
    connector = connector_of(sandbox).model_copy(update={"api_token_env": "TOGGL_TEST_UNSET"})
    err = await read_error(TogglActivities(connector, min_interval=0), read_input(sandbox.ctx.seed))
    assert err.non_retryable and "TOGGL_TEST_UNSET" in str(err)
    assert sandbox.requests(prefix="/toggl") == []


async def test_wrong_workspace_is_not_retried(sandbox: RunningSandbox) -> None:
    connector = connector_of(sandbox).model_copy(update={"workspace_id": 1})
    err = await read_error(TogglActivities(connector, min_interval=0), read_input(sandbox.ctx.seed))
    assert err.non_retryable and "403" in str(err)


async def test_pacing_keeps_under_the_leaky_bucket(sandbox: RunningSandbox) -> None:
    store = store_of(sandbox)
    store.bucket_capacity, store.leak_per_second = 1, 5.0  # one call per 0.2 s, no burst
    input = few_people(sandbox, 3)
    await run_read(TogglActivities(connector_of(sandbox), page_size=10, min_interval=0.25), input)
    statuses = [r["status"] for r in sandbox.requests(prefix="/toggl")]
    assert len(statuses) > 2 and set(statuses) == {200}


async def test_429_is_waited_out_in_place(sandbox: RunningSandbox) -> None:
    store = store_of(sandbox)
    store.bucket_capacity, store.leak_per_second = 2, 1.0
    input = few_people(sandbox, 2)
    result = await run_read(fast(sandbox, page_size=15), input)  # 20 entries: two pages
    statuses = [r["status"] for r in sandbox.requests(prefix="/toggl")]
    # The third call overflowed the bucket, waited for Retry-After, and the read went on
    # from the same page instead of starting over.
    assert statuses == [200, 200, 429, 200]
    bodies = search_bodies(sandbox)
    assert bodies[-1] == bodies[-2] and bodies[-1]["first_row_number"] == 16
    assert all(sum(u.logged_by_date.values()) > 0 for u in result.users)


async def test_429_beyond_the_waits_is_retryable_with_a_delay(sandbox: RunningSandbox) -> None:
    store_of(sandbox).bucket_capacity = 1
    err = await read_error(fast(sandbox, bucket_waits=0), read_input(sandbox.ctx.seed))
    assert err.type == "RateLimited" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=1)  # the emulator's Retry-After


async def test_429_without_retry_after_waits_one_second(sandbox: RunningSandbox) -> None:
    await inject_faults(sandbox, {"route": SEARCH, "status": 429, "count": 1})
    err = await read_error(fast(sandbox, bucket_waits=0), read_input(sandbox.ctx.seed))
    assert err.type == "RateLimited" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=1)


async def test_quota_402_is_retryable_after_the_window(sandbox: RunningSandbox) -> None:
    store_of(sandbox).hourly_quota = 2
    err = await read_error(fast(sandbox, page_size=5), read_input(sandbox.ctx.seed))
    assert err.type == "QuotaExhausted" and not err.non_retryable
    assert "hourly API quota exhausted" in str(err)
    assert err.next_retry_delay is not None
    assert timedelta(seconds=3590) <= err.next_retry_delay <= timedelta(hours=1)
    # The 402 is not retried in place: that would only spend more of the quota.
    assert [r["status"] for r in sandbox.requests(prefix="/toggl")] == [200, 200, 402]


async def test_quota_402_with_retry_after_only(sandbox: RunningSandbox) -> None:
    await inject_faults(sandbox, {"route": USERS, "status": 402, "retry_after": 120, "count": 1})
    err = await read_error(fast(sandbox), read_input(sandbox.ctx.seed))
    assert err.type == "QuotaExhausted" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=120)


async def test_402_that_does_not_say_when_is_not_retried(sandbox: RunningSandbox) -> None:
    await inject_faults(sandbox, {"route": SEARCH, "status": 402, "count": 1})
    err = await read_error(fast(sandbox), read_input(sandbox.ctx.seed))
    assert err.type == "QuotaExhausted" and err.non_retryable
    assert "hourly API quota exhausted" in str(err) and "Payment Required" in str(err)
    assert err.next_retry_delay is None


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    await inject_faults(sandbox, {"route": SEARCH, "status": status, "count": 1})
    err = await read_error(fast(sandbox), read_input(sandbox.ctx.seed))
    assert err.type == "ServerError" and not err.non_retryable


async def test_unreachable_toggl_is_a_retryable_transport_error() -> None:
    connector = TogglConnector(
        kind="toggl", base_url=f"http://127.0.0.1:{free_port()}/toggl", workspace_id=1
    )
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id="a", email="a@example.com")],
        start=date(2026, 3, 2),
        end=date(2026, 3, 4),
    )
    err = await read_error(TogglActivities(connector, min_interval=0), input)
    assert err.type == "TransportError" and not err.non_retryable


# --- tracker_job_hours ---------------------------------------------------------------------------


async def test_job_hours_count_the_assignees_entries_that_name_the_job(
    sandbox: RunningSandbox,
) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    preparer, reviewer, other = [s for s in seed.staff if s.active][:3]
    # Last week, wholly past on any weekday: on a Monday this week has no Tuesday yet.
    monday = seed.week_start - timedelta(days=7)
    store.add_entry(preparer.email, monday, 5400, "T-1001 prep: W-2s")
    store.add_entry(preparer.email, monday + timedelta(days=1), 1800, "#t-1001 follow-up")
    store.add_entry(reviewer.email, monday, 2700, "Review (T-1001)")
    store.add_entry(preparer.email, monday, 3600, "T-10012 another job")
    store.add_entry(other.email, monday, 3600, "T-1001 helped out")  # not an assignee
    store.add_entry(preparer.email, monday - timedelta(days=1), 3600, "T-1001 too early")
    input = JobHoursInput(
        source="taxdome",
        external_id="T-1001",
        staff=[
            TrackerStaff(staff_id=preparer.id, email=preparer.email.upper()),
            TrackerStaff(staff_id=reviewer.id, email=reviewer.email),
            TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL),
        ],
        since=monday,
        until=monday + timedelta(days=6),
    )
    result = await run_job(fast(sandbox), input)

    assert result.hours == 2.75  # 1.5 + 0.5 + 0.75
    assert "description" in result.detail and "T-1001" in result.detail
    assert "2 assignee(s)" in result.detail and "1 assignee(s) not found" in result.detail
    assert UNKNOWN_EMAIL not in result.detail
    (report,) = sandbox.requests(prefix=SUMMARY)
    body = json.loads(str(report["body"]))
    ids = {u["email"]: u["id"] for u in store.users}
    assert sorted(body["user_ids"]) == sorted([ids[preparer.email], ids[reviewer.email]])
    assert body["description"] == "T-1001" and body["sub_grouping"] == "time_entries"


async def test_job_hours_without_known_assignees_read_no_report(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = JobHoursInput(
        source="taxdome",
        external_id="T-1001",
        staff=[TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL)],
        since=seed.week_start,
        until=seed.today,
    )
    result = await run_job(fast(sandbox), input)
    assert result.hours == 0 and "not found" in result.detail
    assert sandbox.requests(prefix=REPORTS) == []


# --- uneven hours, a mid-week "today", someone who left -------------------------------------------


UNEVEN_SEED = SandboxSeed(
    today=date(2026, 3, 4),  # a Wednesday: three logged days this week
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
        store_of(running).bucket_capacity = 10_000
        yield running


async def test_uneven_hours_add_up_exactly(uneven_sandbox: RunningSandbox) -> None:
    seed = uneven_sandbox.ctx.seed
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id=s.id, email=s.email.lower()) for s in seed.staff],
        start=seed.week_start - timedelta(days=7),
        end=seed.today,
    )
    result = await run_read(fast(uneven_sandbox, page_size=4), input)
    # Someone removed from the workspace is reported, not silently counted as zero hours.
    assert result.unmatched == ["old@firm.example"]
    by_id = {u.staff_id: u for u in result.users}
    for staff_id, user in by_id.items():
        assert_matches_seed(user, next(s for s in seed.staff if s.id == staff_id), seed)
    assert by_id["ida"].logged_by_date == {}
    assert set(by_id["tom"].logged_by_date) <= {
        seed.week_start + timedelta(days=i) for i in range(3)
    }
