"""Harvest: the emulator holds the v2 contract, and the tracker activity reads it correctly.

Activity calls run through ``ActivityEnvironment`` (no worker, no server) against the sandbox
emulator over real HTTP, so a broken header, page walk or error mapping fails here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.firm import FirmActivities
from activities.harvest import HarvestActivities, names_job
from app.secrets_demo import demo_secret
from dispatch.config import HarvestConnector
from dispatch.models import (
    JobHours,
    JobHoursInput,
    SnapshotInput,
    TrackerReadInput,
    TrackerReadResult,
    TrackerStaff,
    TrackerUserHours,
)
from sandbox.harvest import HarvestStore
from sandbox.seed import SandboxSeed, SeedStaff
from tests.sandbox_server import RunningSandbox, free_port, run_sandbox

TOKEN_ENV = "HARVEST_ACCESS_TOKEN"
ACCOUNT_ENV = "HARVEST_ACCOUNT_ID"
UNKNOWN_EMAIL = "Nobody.Here@elsewhere.example"


@pytest.fixture(autouse=True)
def harvest_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The activity reads real env vars; give it what the emulator expects."""
    for name in (TOKEN_ENV, ACCOUNT_ENV):
        monkeypatch.setenv(name, demo_secret(name))


def connector_of(sandbox: RunningSandbox) -> HarvestConnector:
    tracker = sandbox.config.connectors.time_tracker
    assert isinstance(tracker, HarvestConnector)
    return tracker


def store_of(sandbox: RunningSandbox) -> HarvestStore:
    store: HarvestStore = sandbox.ctx.stores["harvest"]
    return store


def auth_headers(user_agent: str = "Contract Tests (tests@example.com)") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {demo_secret(TOKEN_ENV)}",
        "Harvest-Account-Id": demo_secret(ACCOUNT_ENV),
        "User-Agent": user_agent,
    }


def two_weeks(seed: SandboxSeed) -> tuple[date, date]:
    return seed.week_start - timedelta(days=7), seed.today


def read_input(seed: SandboxSeed, extra: list[TrackerStaff] | None = None) -> TrackerReadInput:
    start, end = two_weeks(seed)
    staff = [TrackerStaff(staff_id=s.id, email=s.email) for s in seed.staff if s.active]
    return TrackerReadInput(staff=[*staff, *(extra or [])], start=start, end=end)


async def run_read(activities: HarvestActivities, input: TrackerReadInput) -> TrackerReadResult:
    result: TrackerReadResult = await ActivityEnvironment().run(activities.read, input)
    return result


async def inject_faults(sandbox: RunningSandbox, *rules: dict[str, object]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)}
        )
        response.raise_for_status()


async def read_error(activities: HarvestActivities, input: TrackerReadInput) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await run_read(activities, input)
    return caught.value


def store_sums(store: HarvestStore, start: date, end: date) -> dict[str, dict[date, float]]:
    """Hours per user email per day, straight from the emulator's entries."""
    email_of = {u["id"]: u["email"] for u in store.users}
    sums: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for entry in store.time_entries:
        day = date.fromisoformat(entry["spent_date"])
        if start <= day <= end:
            sums[email_of[entry["user"]["id"]]][day] += entry["hours"]
    return {email: {d: round(h, 2) for d, h in days.items()} for email, days in sums.items()}


def workdays(monday: date, count: int) -> list[date]:
    return [monday + timedelta(days=i) for i in range(count)]


def assert_matches_seed(user: TrackerUserHours, staff: SeedStaff, seed: SandboxSeed) -> None:
    monday = seed.week_start
    this_week = {d: h for d, h in user.logged_by_date.items() if d >= monday}
    last_week = {d: h for d, h in user.logged_by_date.items() if d < monday}
    assert user.weekly_capacity_hours == staff.weekly_capacity_hours
    assert sum(this_week.values()) == pytest.approx(staff.logged_this_week, abs=1e-6)
    assert sum(last_week.values()) == pytest.approx(staff.logged_last_week, abs=1e-6)
    elapsed = min(seed.today.weekday() + 1, 5)
    if staff.logged_this_week:
        assert sorted(this_week) == workdays(monday, elapsed)
    if staff.logged_last_week:
        assert sorted(last_week) == workdays(monday - timedelta(days=7), 5)


# --- the emulator's contract -------------------------------------------------------------------


def test_missing_user_agent_is_400_even_with_good_credentials(sandbox: RunningSandbox) -> None:
    response = httpx.get(
        f"{sandbox.base_url}/harvest/v2/users", headers=auth_headers(user_agent="")
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "drop, override",
    [
        ("Authorization", {}),
        ("Harvest-Account-Id", {}),
        (None, {"Authorization": "Bearer not-the-token"}),
        (None, {"Harvest-Account-Id": "999"}),
    ],
)
def test_missing_or_wrong_credentials_are_401(
    sandbox: RunningSandbox, drop: str | None, override: dict[str, str]
) -> None:
    headers = {**auth_headers(), **override}
    if drop:
        del headers[drop]
    response = httpx.get(f"{sandbox.base_url}/harvest/v2/time_entries", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_query_string_credentials_work_and_stay_out_of_links(sandbox: RunningSandbox) -> None:
    response = httpx.get(
        f"{sandbox.base_url}/harvest/v2/users",
        params={
            "access_token": demo_secret(TOKEN_ENV),
            "account_id": demo_secret(ACCOUNT_ENV),
            "per_page": "2",
        },
        headers={"User-Agent": "Contract Tests"},
    )
    assert response.status_code == 200
    assert "access_token" not in str(response.json()["links"])


def test_per_page_above_2000_is_422(sandbox: RunningSandbox) -> None:
    for path in ("users", "time_entries"):
        url = f"{sandbox.base_url}/harvest/v2/{path}"
        assert httpx.get(url, params={"per_page": 2001}, headers=auth_headers()).status_code == 422
        assert httpx.get(url, params={"per_page": 2000}, headers=auth_headers()).status_code == 200


def test_users_are_cursor_paged_with_absolute_links(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    url: str | None = f"{sandbox.base_url}/harvest/v2/users?is_active=true&per_page=4"
    users: list[dict[str, Any]] = []
    while url:
        body = httpx.get(url, headers=auth_headers()).json()
        assert body["page"] is None and body["next_page"] is None  # cursor pages: links only
        users.extend(body["users"])
        url = body["links"]["next"]
        assert url is None or url.startswith(f"{sandbox.base_url}/harvest/v2/users?")
    assert len(users) == len([s for s in seed.staff if s.active])
    created = [u["created_at"] for u in users]
    assert created == sorted(created, reverse=True)
    for user in users:
        staff = seed.staff_by_email(user["email"])
        assert staff is not None
        assert user["weekly_capacity"] == staff.weekly_capacity_hours * 3600
        assert f"{user['first_name']} {user['last_name']}" == staff.name


def test_user_lookup_and_me(sandbox: RunningSandbox) -> None:
    base = f"{sandbox.base_url}/harvest/v2/users"
    me = httpx.get(f"{base}/me", headers=auth_headers()).json()
    assert "administrator" in me["access_roles"]
    one = httpx.get(f"{base}/{me['id']}", headers=auth_headers())
    assert one.status_code == 200 and one.json()["email"] == me["email"]
    assert httpx.get(f"{base}/1", headers=auth_headers()).status_code == 404


def test_time_entries_filter_on_spent_date_and_user_newest_first(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    user = store.users[0]
    monday = seed.week_start
    response = httpx.get(
        f"{sandbox.base_url}/harvest/v2/time_entries",
        headers=auth_headers(),
        params={"user_id": user["id"], "from": monday.isoformat(), "to": seed.today.isoformat()},
    )
    body = response.json()
    entries = body["time_entries"]
    assert entries and body["total_entries"] == len(entries) and body["links"]["next"] is None
    assert {e["user"]["id"] for e in entries} == {user["id"]}
    days = [e["spent_date"] for e in entries]
    assert days == sorted(days, reverse=True)
    assert min(days) >= monday.isoformat()
    staff = seed.staff_by_email(user["email"])
    assert staff is not None
    assert sum(e["hours"] for e in entries) == pytest.approx(staff.logged_this_week)

    running = httpx.get(
        f"{sandbox.base_url}/harvest/v2/time_entries",
        headers=auth_headers(),
        params={"is_running": "true"},
    ).json()["time_entries"]
    assert all(e["is_running"] and e["ended_time"] is None for e in running)
    if seed.today.weekday() < 5:
        assert {e["spent_date"] for e in running} == {seed.today.isoformat()}


def test_time_entries_pages_are_numbered_and_linked(sandbox: RunningSandbox) -> None:
    first = httpx.get(
        f"{sandbox.base_url}/harvest/v2/time_entries",
        headers=auth_headers(),
        params={"per_page": 10},
    ).json()
    total = len(store_of(sandbox).time_entries)
    assert first["total_entries"] == total
    assert first["total_pages"] == math.ceil(total / 10)
    assert first["page"] == 1 and first["next_page"] == 2
    query = parse_qs(urlparse(first["links"]["next"]).query)
    assert query["page"] == ["2"] and query["per_page"] == ["10"]


def test_team_report_totals_match_the_seed(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    start, end = two_weeks(seed)
    response = httpx.get(
        f"{sandbox.base_url}/harvest/v2/reports/time/team",
        headers=auth_headers(),
        params={"from": start.strftime("%Y%m%d"), "to": end.strftime("%Y%m%d")},
    )
    assert response.status_code == 200
    by_name = {r["user_name"]: r for r in response.json()["results"]}
    for staff in seed.staff:
        expected = staff.logged_this_week + staff.logged_last_week
        if expected:
            assert by_name[staff.name]["total_hours"] == pytest.approx(expected)
            assert by_name[staff.name]["weekly_capacity"] == staff.weekly_capacity_hours * 3600
    too_long = httpx.get(
        f"{sandbox.base_url}/harvest/v2/reports/time/team",
        headers=auth_headers(),
        params={"from": "20250101", "to": "20260102"},
    )
    assert too_long.status_code == 422


def test_injected_429_reads_like_harvest(sandbox: RunningSandbox) -> None:
    httpx.post(
        f"{sandbox.base_url}/_sandbox/faults",
        json={
            "rules": [{"route": "/harvest/v2/users", "status": 429, "retry_after": 15, "count": 1}]
        },
    )
    response = httpx.get(f"{sandbox.base_url}/harvest/v2/users", headers=auth_headers())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "15"
    assert response.json() == {"message": "Too Many Requests"}


# --- the activity ------------------------------------------------------------------------------


async def test_read_sums_hours_per_user_per_day(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    connector = connector_of(sandbox)
    input = read_input(seed)
    result = await run_read(HarvestActivities(connector), input)

    assert result.unmatched == []
    assert [u.staff_id for u in result.users] == [s.staff_id for s in input.staff]
    expected = store_sums(store_of(sandbox), input.start, input.end)
    for user in result.users:
        staff = next(s for s in seed.staff if s.id == user.staff_id)
        assert_matches_seed(user, staff, seed)
        assert user.logged_by_date == expected.get(staff.email, {})

    sent = sandbox.requests(prefix="/harvest")
    assert sent and all(r["status"] == 200 for r in sent)
    headers = [r["headers"] for r in sent]
    assert all(isinstance(h, dict) and h["user-agent"] == connector.user_agent for h in headers)
    assert all(
        isinstance(h, dict) and h["harvest-account-id"] == demo_secret(ACCOUNT_ENV) for h in headers
    )


async def test_read_counts_only_the_requested_days(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    last_monday = seed.week_start - timedelta(days=7)
    input = read_input(seed).model_copy(update={"start": last_monday, "end": last_monday})
    result = await run_read(HarvestActivities(connector_of(sandbox)), input)
    for user in result.users:
        staff = next(s for s in seed.staff if s.id == user.staff_id)
        assert set(user.logged_by_date) == ({last_monday} if staff.logged_last_week else set())
    query = [r["query"] for r in sandbox.requests(prefix="/harvest/v2/time_entries")]
    assert query and all(
        f"from={last_monday}" in str(q) and f"to={last_monday}" in str(q) for q in query
    )


async def test_small_pages_are_all_followed(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed)
    full = await run_read(HarvestActivities(connector_of(sandbox)), input)
    sandbox.ctx.recorder.clear()

    sent: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        paged = await run_read(
            HarvestActivities(connector_of(sandbox), http=http, page_size=7), input
        )

    assert paged == full
    store = store_of(sandbox)
    active_users = [u for u in store.users if u["is_active"]]
    in_range = [
        e
        for e in store.time_entries
        if input.start.isoformat() <= e["spent_date"] <= input.end.isoformat()
    ]
    user_pages = sandbox.requests(prefix="/harvest/v2/users")
    entry_pages = sandbox.requests(prefix="/harvest/v2/time_entries")
    assert len(user_pages) == math.ceil(len(active_users) / 7) > 1
    assert len(entry_pages) == math.ceil(len(in_range) / 7) > 1
    # Later pages were reached through links.next: a cursor for users, a page for entries.
    assert all("cursor=" in str(r["query"]) for r in user_pages[1:])
    assert all("page=" in str(r["query"]) for r in entry_pages[1:])
    assert len(sent) == len(user_pages) + len(entry_pages)  # the injected client did the work


async def test_unknown_email_is_reported_and_matching_ignores_case(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    known = seed.staff[0]
    input = TrackerReadInput(
        staff=[
            TrackerStaff(staff_id=known.id, email=known.email.upper()),
            TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL),
        ],
        start=two_weeks(seed)[0],
        end=seed.today,
    )
    result = await run_read(HarvestActivities(connector_of(sandbox)), input)
    assert result.unmatched == [UNKNOWN_EMAIL]
    assert [u.staff_id for u in result.users] == [known.id]
    assert_matches_seed(result.users[0], known, seed)


async def test_missing_user_agent_is_not_retried(sandbox: RunningSandbox) -> None:
    connector = connector_of(sandbox).model_copy(update={"user_agent": ""})
    err = await read_error(HarvestActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable
    assert err.type == "HarvestRejected"
    assert "400" in str(err) and "User-Agent" in str(err)
    sent = sandbox.requests(prefix="/harvest")
    assert len(sent) == 1 and isinstance(sent[0]["headers"], dict)
    assert "user-agent" not in sent[0]["headers"]


async def test_wrong_token_is_not_retried_and_not_echoed(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARVEST_TEST_WRONG_TOKEN", "wrong-personal-token-123")
    connector = connector_of(sandbox).model_copy(
        update={"access_token_env": "HARVEST_TEST_WRONG_TOKEN"}
    )
    err = await read_error(HarvestActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable
    assert err.type == "HarvestRejected"
    assert "401" in str(err)
    assert "wrong-personal-token-123" not in str(err)


async def test_unset_secret_fails_before_any_request(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARVEST_TEST_UNSET_ACCOUNT", raising=False)
    connector = connector_of(sandbox).model_copy(
        update={"account_id_env": "HARVEST_TEST_UNSET_ACCOUNT"}
    )
    err = await read_error(HarvestActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable and "HARVEST_TEST_UNSET_ACCOUNT" in str(err)
    assert sandbox.requests(prefix="/harvest") == []


async def test_429_waits_for_retry_after_then_succeeds(sandbox: RunningSandbox) -> None:
    await inject_faults(
        sandbox, {"route": "/harvest/v2/time_entries", "status": 429, "retry_after": 7, "count": 1}
    )
    activities = HarvestActivities(connector_of(sandbox))
    input = read_input(sandbox.ctx.seed)
    err = await read_error(activities, input)
    assert err.type == "RateLimited"
    assert not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=7)
    # The next attempt (what Temporal would run after the delay) gets the data.
    assert (await run_read(activities, input)).unmatched == []


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    await inject_faults(sandbox, {"route": "/harvest/v2/users", "status": status, "count": 1})
    err = await read_error(HarvestActivities(connector_of(sandbox)), read_input(sandbox.ctx.seed))
    assert not err.non_retryable
    assert err.type == "ServerError" and str(status) in str(err)
    assert err.next_retry_delay is None


async def test_failure_mid_listing_returns_no_partial_sums(sandbox: RunningSandbox) -> None:
    # Every second time-entries request fails once: page 1 succeeds, page 2 does not.
    await inject_faults(
        sandbox, {"route": "/harvest/v2/time_entries", "status": 502, "rate": 0.5, "count": 1}
    )
    activities = HarvestActivities(connector_of(sandbox), page_size=50)
    err = await read_error(activities, read_input(sandbox.ctx.seed))
    assert not err.non_retryable
    statuses = [r["status"] for r in sandbox.requests(prefix="/harvest/v2/time_entries")]
    assert statuses == [200, 502]


async def test_unreachable_harvest_is_a_retryable_transport_error() -> None:
    connector = HarvestConnector(kind="harvest", base_url=f"http://127.0.0.1:{free_port()}/harvest")
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id="a", email="a@example.com")],
        start=date(2026, 3, 2),
        end=date(2026, 3, 4),
    )
    err = await read_error(HarvestActivities(connector), input)
    assert err.type == "TransportError" and not err.non_retryable


# --- tracker_job_hours -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, named",
    [
        ("T-1001", True),
        ("T-1001 prep: W-2s", True),
        ("follow-up on #t-1001.", True),
        ("Review (T-1001)", True),
        ("T-10012 another job", False),
        ("XT-1001", False),
        ("T-100", False),
        ("", False),
        (None, False),
    ],
)
def test_names_job_wants_the_id_standing_alone(text: str | None, named: bool) -> None:
    assert names_job(text, "T-1001") is named


def test_names_job_needs_an_id() -> None:
    assert not names_job("anything", "  ")


def log_time(store: HarvestStore, email: str, day: date, hours: float, notes: str) -> None:
    """A copy of one of the user's seeded entries, moved to ``day`` with these hours and notes."""
    user = next(u for u in store.users if u["email"] == email)
    template = next(e for e in store.time_entries if e["user"]["id"] == user["id"])
    entry_id = max(e["id"] for e in store.time_entries) + 1
    store.time_entries.append(
        {**template, "id": entry_id, "spent_date": day.isoformat(), "hours": hours, "notes": notes}
    )


async def run_job(activities: HarvestActivities, input: JobHoursInput) -> JobHours:
    result: JobHours = await ActivityEnvironment().run(activities.job_hours, input)
    return result


async def test_job_hours_count_the_assignees_notes_that_name_the_job(
    sandbox: RunningSandbox,
) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    preparer, reviewer, other = [s for s in seed.staff if s.active][:3]
    # Last week, wholly past on any weekday: on a Monday this week has no Tuesday yet.
    monday = seed.week_start - timedelta(days=7)
    log_time(store, preparer.email, monday, 1.5, "T-1001 prep: W-2s")
    log_time(store, preparer.email, monday + timedelta(days=1), 0.25, "#t-1001 follow-up")
    log_time(store, reviewer.email, monday, 0.75, "Review (T-1001)")
    log_time(store, preparer.email, monday, 1.0, "T-10012 another job")
    log_time(store, other.email, monday, 1.0, "T-1001 helped out")  # not an assignee
    log_time(store, preparer.email, monday - timedelta(days=1), 1.0, "T-1001 too early")
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
    result = await run_job(HarvestActivities(connector_of(sandbox), page_size=5), input)

    assert result.hours == 2.5
    assert "3 time entries of 2 assignee(s)" in result.detail
    assert "notes name T-1001" in result.detail and "1 assignee(s) not found" in result.detail
    assert UNKNOWN_EMAIL not in result.detail
    # One listing per assignee, filtered by user and dates, every page followed.
    ids = {u["email"]: str(u["id"]) for u in store.users}
    queried = {
        parse_qs(str(r["query"]))["user_id"][0]
        for r in sandbox.requests(prefix="/harvest/v2/time_entries")
    }
    assert queried == {ids[preparer.email], ids[reviewer.email]}
    assert len(sandbox.requests(prefix="/harvest/v2/time_entries")) > 2


async def test_job_hours_without_known_assignees_list_no_entries(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = JobHoursInput(
        source="taxdome",
        external_id="T-1001",
        staff=[TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL)],
        since=seed.week_start,
        until=seed.today,
    )
    result = await run_job(HarvestActivities(connector_of(sandbox)), input)
    assert result.hours == 0 and "not found" in result.detail
    assert sandbox.requests(prefix="/harvest/v2/time_entries") == []


async def test_job_hours_reject_an_inverted_window(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = JobHoursInput(
        source="taxdome",
        external_id="T-1001",
        staff=[],
        since=seed.today,
        until=seed.today - timedelta(days=1),
    )
    with pytest.raises(ApplicationError) as caught:
        await run_job(HarvestActivities(connector_of(sandbox)), input)
    assert caught.value.non_retryable and caught.value.type == "InvalidInput"


# --- uneven hours, a mid-week "today", an inactive user ----------------------------------------


UNEVEN_SEED = SandboxSeed(
    today=date(2026, 3, 4),  # a Wednesday: three logged days this week
    staff=[
        SeedStaff(
            id="rae",
            name="Rae Lindqvist",
            email="Rae@Firm.example",
            weekly_capacity_hours=37.5,
            logged_this_week=13.37,
            logged_last_week=31.13,
        ),
        SeedStaff(
            id="tom",
            name="Tom Ek",
            email="tom@firm.example",
            weekly_capacity_hours=22,
            logged_this_week=0.05,
            logged_last_week=0,
        ),
        SeedStaff(
            id="ida",
            name="Ida Berg",
            email="ida@firm.example",
            weekly_capacity_hours=40,
            logged_this_week=0,
            logged_last_week=0,
        ),
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
    result = await run_read(HarvestActivities(connector_of(uneven_sandbox), page_size=4), input)

    # A user deactivated in Harvest is not silently counted as zero hours.
    assert result.unmatched == ["old@firm.example"]
    by_id = {u.staff_id: u for u in result.users}
    assert set(by_id) == {"rae", "tom", "ida"}
    for staff_id, user in by_id.items():
        assert_matches_seed(user, next(s for s in seed.staff if s.id == staff_id), seed)
    assert by_id["ida"].logged_by_date == {}
    assert set(by_id["tom"].logged_by_date) == set(workdays(seed.week_start, 3))
    expected = store_sums(store_of(uneven_sandbox), input.start, input.end)
    assert by_id["rae"].logged_by_date == expected["Rae@Firm.example"]


@pytest.mark.parametrize(("asked", "believed"), [(30, 30.0), (86_400, 300.0)])
async def test_the_snapshot_keeps_how_long_a_refusing_harvest_asked_to_wait(
    sandbox: RunningSandbox, asked: int, believed: float
) -> None:
    """Harvest's Retry-After on a refusal reaches the capacity snapshot, so the dispatcher does
    not ask again sooner; a day is cut to the connectors' five-minute cap. A plain 5xx says
    nothing, and the dispatcher keeps its own interval."""
    firm = FirmActivities(sandbox.config, HarvestActivities(connector_of(sandbox)))
    sandbox.faults([{"route": "/harvest", "status": 503, "retry_after": asked}])
    snapshot = await firm.capacity_snapshot(SnapshotInput(firm_id="f"))
    assert not snapshot.tracker_ok
    assert snapshot.tracker_retry_after_seconds == believed
    sandbox.faults([{"route": "/harvest", "status": 503}])
    snapshot = await firm.capacity_snapshot(SnapshotInput(firm_id="f"))
    assert not snapshot.tracker_ok and snapshot.tracker_retry_after_seconds is None
    sandbox.faults([])
    snapshot = await firm.capacity_snapshot(SnapshotInput(firm_id="f"))
    assert snapshot.tracker_ok and snapshot.tracker_retry_after_seconds is None
