"""Karbon as the time tracker: capacity from Users, hours from IndividualTimeEntries.

The Karbon emulator is the PM's (sandbox/karbon.py); these tests drive the tracker activity
against it over real HTTP. The last test reads one seed through every tracker and checks the
dispatcher gets the same snapshot whichever one the firm uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.harvest import HarvestActivities
from activities.karbon_tracker import KarbonTrackerActivities
from activities.quickbooks_time import QuickBooksTimeActivities
from activities.roles import TimeTrackerActivities
from activities.toggl import TogglActivities
from app.secrets_demo import DEMO_SECRETS, demo_secret
from dispatch.config import (
    HarvestConnector,
    KarbonTimeTracker,
    QuickBooksTimeConnector,
    TogglConnector,
)
from dispatch.models import (
    JobHours,
    JobHoursInput,
    TrackerReadInput,
    TrackerReadResult,
    TrackerStaff,
)
from sandbox.karbon import KarbonStore, user_id_for
from sandbox.seed import SandboxSeed, SeedStaff
from sandbox.toggl import WORKSPACE_ID, TogglStore
from tests.sandbox_server import RunningSandbox, free_port, run_sandbox

UNKNOWN_EMAIL = "Nobody.Here@elsewhere.example"
ENTRIES = "/karbon/v3/IndividualTimeEntries"


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEMO_SECRETS:
        monkeypatch.setenv(name, demo_secret(name))


def connector_of(sandbox: RunningSandbox) -> KarbonTimeTracker:
    return KarbonTimeTracker(kind="karbon", base_url=f"{sandbox.base_url}/karbon")


def store_of(sandbox: RunningSandbox) -> KarbonStore:
    store: KarbonStore = sandbox.ctx.stores["karbon"]
    return store


def read_input(seed: SandboxSeed, extra: list[TrackerStaff] | None = None) -> TrackerReadInput:
    staff = [TrackerStaff(staff_id=s.id, email=s.email) for s in seed.staff if s.active]
    return TrackerReadInput(
        staff=[*staff, *(extra or [])], start=seed.week_start - timedelta(days=7), end=seed.today
    )


async def run_read(activities: TimeTrackerActivities, input: TrackerReadInput) -> TrackerReadResult:
    result: TrackerReadResult = await ActivityEnvironment().run(activities.read, input)
    return result


async def run_job(activities: TimeTrackerActivities, input: JobHoursInput) -> JobHours:
    result: JobHours = await ActivityEnvironment().run(activities.job_hours, input)
    return result


async def read_error(
    activities: KarbonTrackerActivities, input: TrackerReadInput
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


def filters(sandbox: RunningSandbox) -> list[str]:
    return [
        parse_qs(str(r["query"]))["$filter"][0]
        for r in sandbox.requests(prefix=ENTRIES)
        if "$filter" in parse_qs(str(r["query"]))
    ]


def entry(user_email: str, day: date, minutes: int, work_item: str | None) -> dict[str, Any]:
    key = user_id_for(user_email)
    return {
        "IndividualTimeEntryKey": f"test-{key[:8]}-{day}-{minutes}-{work_item}",
        "TimesheetKey": "test-sheet",
        "EntityKey": work_item,
        "WorkItemKey": work_item,
        "ClientKey": None,
        "ClientType": None,
        "UserKey": key,
        "RoleName": None,
        "TaskTypeName": "Client Work",
        "TaskTypeIsBillable": True,
        "Date": f"{day.isoformat()}T00:00:00Z",
        "Minutes": minutes,
        "Description": None,
        "HourlyRate": None,
        "TotalCost": None,
        "BilledStatus": "Unbilled",
        "CreatedDate": f"{day.isoformat()}T17:00:00Z",
        "ModifiedDate": f"{day.isoformat()}T17:00:00Z",
        "FeeType": "TimeAndMaterials",
    }


# --- tracker_read --------------------------------------------------------------------------------


async def test_read_gives_capacity_and_hours_per_day(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed, [TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL)])
    result = await run_read(KarbonTrackerActivities(connector_of(sandbox)), input)

    assert result.unmatched == [UNKNOWN_EMAIL]
    assert [u.staff_id for u in result.users] == [s.staff_id for s in input.staff][:-1]
    monday = seed.week_start
    elapsed = min(seed.today.weekday() + 1, 5)
    for user in result.users:
        staff = next(s for s in seed.staff if s.id == user.staff_id)
        assert user.weekly_capacity_hours == staff.weekly_capacity_hours
        this_week = {d: h for d, h in user.logged_by_date.items() if d >= monday}
        last_week = {d: h for d, h in user.logged_by_date.items() if d < monday}
        assert sum(this_week.values()) == pytest.approx(staff.logged_this_week, abs=0.02)
        assert sum(last_week.values()) == pytest.approx(staff.logged_last_week, abs=0.02)
        if staff.logged_this_week:
            assert len(this_week) == elapsed

    (date_filter,) = filters(sandbox)
    assert f"Date ge {input.start}T00:00:00Z" in date_filter
    assert f"Date le {input.end}T00:00:00Z" in date_filter
    # Capacity is read once per matched person, from the user record.
    gets = [r["path"] for r in sandbox.requests(prefix="/karbon/v3/Users/")]
    assert sorted(gets) == sorted(
        f"/karbon/v3/Users/{user_id_for(s.email)}" for s in input.staff[:-1]
    )


async def test_small_pages_are_all_followed(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    input = read_input(seed)
    full = await run_read(KarbonTrackerActivities(connector_of(sandbox)), input)
    sandbox.ctx.recorder.clear()
    store = store_of(sandbox)
    store.page_size, store.time_entry_page_size = 4, 9

    paged = await run_read(KarbonTrackerActivities(connector_of(sandbox)), input)
    assert paged == full
    user_pages = sandbox.requests(prefix="/karbon/v3/Users")
    list_pages = [r for r in user_pages if r["path"] == "/karbon/v3/Users"]
    entry_pages = sandbox.requests(prefix=ENTRIES)
    in_range = [
        e
        for e in store.time_entries
        if input.start.isoformat() <= e["Date"][:10] <= input.end.isoformat()
    ]
    assert len(list_pages) == math.ceil(len(store.users) / 4) > 1
    assert len(entry_pages) == math.ceil(len(in_range) / 9) > 1
    # Later pages came from @odata.nextLink: the same filter, moved on by $skip.
    skips = [parse_qs(str(r["query"])).get("$skip") for r in entry_pages]
    assert skips == [None, *([str(9 * i)] for i in range(1, len(entry_pages)))]
    assert len(set(filters(sandbox))) == 1


async def test_capacity_not_set_is_none(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    first = next(s for s in seed.staff if s.active)
    user = store_of(sandbox).user_by_email(first.email)
    assert user is not None
    user["CapacityMinutesPerWeek"] = 0  # never set in Karbon
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id=first.id, email=first.email)],
        start=seed.week_start,
        end=seed.today,
    )
    result = await run_read(KarbonTrackerActivities(connector_of(sandbox)), input)
    assert result.users[0].weekly_capacity_hours is None


async def test_user_gone_between_list_and_read_is_unmatched(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    gone, kept = [s for s in seed.staff if s.active][:2]
    await inject_faults(
        sandbox, {"route": f"/karbon/v3/Users/{user_id_for(gone.email)}", "status": 404}
    )
    input = TrackerReadInput(
        staff=[
            TrackerStaff(staff_id=gone.id, email=gone.email),
            TrackerStaff(staff_id=kept.id, email=kept.email),
        ],
        start=seed.week_start,
        end=seed.today,
    )
    result = await run_read(KarbonTrackerActivities(connector_of(sandbox)), input)
    assert result.unmatched == [gone.email]
    assert [u.staff_id for u in result.users] == [kept.id]


async def test_wrong_access_key_is_not_retried(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KARBON_TEST_WRONG_KEY", "eyJ3cm9uZyI6dHJ1ZX0.d3Jvbmc.c2ln")
    connector = connector_of(sandbox).model_copy(update={"access_key_env": "KARBON_TEST_WRONG_KEY"})
    err = await read_error(KarbonTrackerActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable and err.type == "KarbonRejected" and "401" in str(err)
    assert "eyJ3cm9uZyI6dHJ1ZX0" not in str(err)


async def test_unset_secret_fails_before_any_request(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KARBON_TEST_UNSET", raising=False)
    connector = connector_of(sandbox).model_copy(update={"bearer_token_env": "KARBON_TEST_UNSET"})
    err = await read_error(KarbonTrackerActivities(connector), read_input(sandbox.ctx.seed))
    assert err.non_retryable and "KARBON_TEST_UNSET" in str(err)
    assert sandbox.requests(prefix="/karbon") == []


async def test_429_waits_for_retry_after(sandbox: RunningSandbox) -> None:
    await inject_faults(sandbox, {"route": ENTRIES, "status": 429, "retry_after": 10, "count": 1})
    activities = KarbonTrackerActivities(connector_of(sandbox))
    input = read_input(sandbox.ctx.seed)
    err = await read_error(activities, input)
    assert err.type == "RateLimited" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=10)
    assert (await run_read(activities, input)).unmatched == []


async def test_unreachable_karbon_is_a_retryable_transport_error() -> None:
    connector = KarbonTimeTracker(kind="karbon", base_url=f"http://127.0.0.1:{free_port()}/karbon")
    input = TrackerReadInput(
        staff=[TrackerStaff(staff_id="a", email="a@example.com")],
        start=date(2026, 3, 2),
        end=date(2026, 3, 4),
    )
    err = await read_error(KarbonTrackerActivities(connector), input)
    assert err.type == "TransportError" and not err.non_retryable


# --- tracker_job_hours ---------------------------------------------------------------------------


async def test_job_hours_are_the_time_entries_on_the_work_item(sandbox: RunningSandbox) -> None:
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    a, b = [s for s in seed.staff if s.active][:2]
    # Last week, wholly past on any weekday: on a Monday this week has no Tuesday yet.
    monday = seed.week_start - timedelta(days=7)
    store.time_entries += [
        entry(a.email, monday, 90, "WI-7Q2"),
        entry(b.email, monday + timedelta(days=1), 45, "WI-7Q2"),  # not an assignee: counts
        entry(a.email, monday, 600, "WI-OTHER"),
        entry(a.email, monday - timedelta(days=1), 600, "WI-7Q2"),  # before the window
    ]
    input = JobHoursInput(
        source="karbon",
        external_id="WI-7Q2",
        staff=[TrackerStaff(staff_id=a.id, email=a.email)],
        since=monday,
        until=monday + timedelta(days=6),
    )
    result = await run_job(KarbonTrackerActivities(connector_of(sandbox)), input)
    assert result.hours == 2.25
    assert "2 time entries on work item WI-7Q2" in result.detail
    assert "2 person(s)" in result.detail
    (job_filter,) = filters(sandbox)
    assert "WorkItemKey eq 'WI-7Q2'" in job_filter and f"Date ge {monday}" in job_filter


async def test_job_hours_of_another_source_are_never_read_from_karbon(
    sandbox: RunningSandbox,
) -> None:
    """A relay's id may equal a Karbon key: its hours are not that work item's."""
    seed = sandbox.ctx.seed
    store = store_of(sandbox)
    a = next(s for s in seed.staff if s.active)
    store.time_entries += [entry(a.email, seed.week_start, 90, "WI-7Q2")]
    input = JobHoursInput(
        source="canopy",
        external_id="WI-7Q2",
        staff=[TrackerStaff(staff_id=a.id, email=a.email)],
        since=seed.week_start,
        until=seed.today,
    )
    result = await run_job(KarbonTrackerActivities(connector_of(sandbox)), input)
    assert result.hours == 0.0 and "canopy" in result.detail
    assert filters(sandbox) == []


# --- the same snapshot whichever tracker ----------------------------------------------------------


PARITY_SEED = SandboxSeed(
    today=date(2026, 3, 4),
    staff=[
        SeedStaff(
            id="rae",
            name="Rae Lindqvist",
            email="rae@firm.example",
            weekly_capacity_hours=37.5,
            logged_this_week=13.2,
            logged_last_week=31.5,
        ),
        SeedStaff(id="tom", name="Tom Ek", email="tom@firm.example", logged_this_week=6),
        SeedStaff(id="ida", name="Ida Berg", email="ida@firm.example", weekly_capacity_hours=22),
    ],
)


@pytest.fixture(scope="module")
def parity_sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox(seed=PARITY_SEED) as running:
        yield running


async def test_every_tracker_gives_the_same_snapshot(parity_sandbox: RunningSandbox) -> None:
    base = parity_sandbox.base_url
    toggl_store: TogglStore = parity_sandbox.ctx.stores["toggl"]
    toggl_store.bucket_capacity = 1000
    seed = parity_sandbox.ctx.seed
    input = TrackerReadInput(
        staff=[
            *(TrackerStaff(staff_id=s.id, email=s.email) for s in seed.staff),
            TrackerStaff(staff_id="ghost", email=UNKNOWN_EMAIL),
        ],
        start=seed.week_start - timedelta(days=7),
        end=seed.today,
    )
    trackers: dict[str, TimeTrackerActivities] = {
        "harvest": HarvestActivities(HarvestConnector(kind="harvest", base_url=f"{base}/harvest")),
        "karbon": KarbonTrackerActivities(
            KarbonTimeTracker(kind="karbon", base_url=f"{base}/karbon")
        ),
        "toggl": TogglActivities(
            TogglConnector(kind="toggl", base_url=f"{base}/toggl", workspace_id=WORKSPACE_ID),
            min_interval=0,
        ),
        "quickbooks_time": QuickBooksTimeActivities(
            QuickBooksTimeConnector(
                kind="quickbooks_time", base_url=f"{base}/quickbooks_time/api/v1"
            )
        ),
    }
    results = {name: await run_read(t, input) for name, t in trackers.items()}
    harvest = results["harvest"]
    assert harvest.unmatched == [UNKNOWN_EMAIL]
    for name, result in results.items():
        assert result.unmatched == harvest.unmatched, name
        assert [u.staff_id for u in result.users] == [u.staff_id for u in harvest.users], name
        for user, expected in zip(result.users, harvest.users, strict=True):
            assert user.logged_by_date == expected.logged_by_date, (name, user.staff_id)
            # Capacity where the system keeps one; otherwise the firm config's applies.
            capacity = expected.weekly_capacity_hours if name in ("harvest", "karbon") else None
            assert user.weekly_capacity_hours == capacity, (name, user.staff_id)
    assert {u.staff_id: u.weekly_capacity_hours for u in results["karbon"].users} == {
        "rae": 37.5,
        "tom": 40.0,
        "ida": 22.0,
    }
