"""Karbon: the real activity code against the Karbon emulator.

Covers auth, loading and mapping a work item, write-back (PATCH for the assignee, GET -> PUT
for the status, 409 re-read, idempotency), Karbon's error shapes turned into retry decisions,
``@odata.nextLink`` paging, and the signed webhooks the emulator sends like Karbon does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.karbon import KarbonActivities, KarbonClient, ensure_work_subscription, odata_str
from app.secrets_demo import demo_secret
from dispatch.config import KarbonConnector
from dispatch.models import (
    DispatchStatus,
    EngagementDetails,
    LoadEngagementInput,
    PmDueDateInput,
    PmWriteBackInput,
    PmWriteBackResult,
)
from sandbox.karbon import KarbonStore
from tests.sandbox_server import RunningSandbox

KARBON_ENVS = ("KARBON_BEARER_TOKEN", "KARBON_ACCESS_KEY", "KARBON_WEBHOOK_SIGNING_KEY")
ORG = "cl-bayside-dental"  # seeded as an Organization
HOUSEHOLD = "cl-okafor-family"  # seeded as a Contact (an individual household)


@pytest.fixture(autouse=True)
def karbon_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The activities read their tokens from the environment, like a deployed worker."""
    for name in KARBON_ENVS:
        monkeypatch.setenv(name, demo_secret(name))


@pytest.fixture
def connector(sandbox: RunningSandbox) -> KarbonConnector:
    pm = sandbox.config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    return pm


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def client(connector: KarbonConnector, http: httpx.AsyncClient) -> KarbonClient:
    return KarbonClient(connector, http)


@pytest.fixture
def acts(
    sandbox: RunningSandbox, connector: KarbonConnector, http: httpx.AsyncClient
) -> KarbonActivities:
    return KarbonActivities(sandbox.config, connector, http)


def store(sandbox: RunningSandbox) -> KarbonStore:
    current: KarbonStore = sandbox.ctx.stores["karbon"]
    return current


def auth_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {demo_secret('KARBON_BEARER_TOKEN')}",
        "AccessKey": demo_secret("KARBON_ACCESS_KEY"),
    }


def fault(sandbox: RunningSandbox, **rule: Any) -> None:
    httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": [rule]}).raise_for_status()


async def new_item(client: KarbonClient, **overrides: Any) -> str:
    body: dict[str, Any] = {
        "AssigneeEmailAddress": "ava@harborfinch.example",
        "Title": "2026 S-Corp return",
        "ClientKey": ORG,
        "ClientType": "Organization",
        "StartDate": "2026-11-02T00:00:00Z",
        "DueDate": "2026-12-15T00:00:00Z",
        "WorkType": "1120-S",
        "PrimaryStatus": "Planned",
        "Description": "Federal and state 1120-S with shareholder K-1s",
    }
    body.update(overrides)
    created = await client.create_work_item({k: v for k, v in body.items() if v is not None})
    return str(created["WorkItemKey"])


async def load(acts: KarbonActivities, key: str) -> EngagementDetails:
    result: EngagementDetails = await ActivityEnvironment().run(
        acts.load_engagement, LoadEngagementInput(source="karbon", external_id=key)
    )
    return result


async def write_back(
    acts: KarbonActivities, key: str, email: str | None, status: DispatchStatus
) -> PmWriteBackResult:
    result: PmWriteBackResult = await ActivityEnvironment().run(
        acts.write_back,
        PmWriteBackInput(
            workflow_id=f"engagement-karbon-{key}",
            source="karbon",
            external_id=key,
            assignee_email=email,
            status=status,
        ),
    )
    return result


def writes(sandbox: RunningSandbox) -> list[str]:
    return [
        str(r["method"])
        for r in sandbox.requests(prefix="/karbon/v3/WorkItems/")
        if r["method"] in ("PUT", "PATCH")
    ]


# --- auth -------------------------------------------------------------------------------------


def test_both_credentials_are_required(sandbox: RunningSandbox) -> None:
    url = f"{sandbox.base_url}/karbon/v3/TenantSettings"
    only_bearer = {"Authorization": auth_headers()["Authorization"]}
    denied = httpx.get(url, headers=only_bearer)
    assert denied.status_code == 401
    assert denied.json() == {"error": {"statusCode": "401", "message": "JWT not present."}}
    assert httpx.get(url, headers={**auth_headers(), "AccessKey": "eyJnope"}).status_code == 401

    ok = httpx.get(url, headers=auth_headers())
    assert ok.status_code == 200
    statuses = {s["Name"]: s for s in ok.json()["WorkStatuses"]}
    assert set(statuses) == {"Planned", "ReadyToStart", "InProgress", "Waiting", "Completed"}
    assert [c["Name"] for c in statuses["ReadyToStart"]["Children"]] == ["Assigned"]


async def test_a_wrong_access_key_fails_for_good(
    sandbox: RunningSandbox,
    connector: KarbonConnector,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KARBON_TEST_WRONG_ACCESS_KEY", "eyJ3cm9uZyI6dHJ1ZX0.d3Jvbmc.c2ln")
    wrong = connector.model_copy(update={"access_key_env": "KARBON_TEST_WRONG_ACCESS_KEY"})
    acts = KarbonActivities(sandbox.config, wrong, http)
    with pytest.raises(ApplicationError) as caught:
        await load(acts, "anything")
    assert caught.value.non_retryable
    assert caught.value.type == "KarbonRejected"
    assert "401" in str(caught.value)
    assert "eyJ" not in str(caught.value)


async def test_a_missing_secret_is_a_clear_non_retryable_error(
    sandbox: RunningSandbox, acts: KarbonActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KARBON_ACCESS_KEY")
    with pytest.raises(ApplicationError) as caught:
        await load(acts, "anything")
    assert caught.value.type == "MissingSecret" and caught.value.non_retryable
    assert "KARBON_ACCESS_KEY" in str(caught.value)
    assert sandbox.requests(prefix="/karbon") == []


# --- load engagement --------------------------------------------------------------------------


async def test_load_engagement_maps_the_work_item(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    store(sandbox).clients[ORG]["EmailAddress"] = "books@baysidedental.example"
    key = await new_item(client)

    details = await load(acts, key)

    assert details.source == "karbon" and details.external_id == key
    assert details.service_type == "s_corp_return"
    assert details.due_date == date(2026, 12, 15)
    assert details.start_date == date(2026, 11, 2)
    assert details.estimated_hours == 12
    assert details.required_skills == ["s_corp"]
    assert details.documents_needed[0] == "Year-end trial balance"
    assert details.client_id == ORG
    assert details.client_name == "Bayside Dental Group"
    assert details.client_email == "books@baysidedental.example"  # from the business card
    assert details.scope_summary == "Federal and state 1120-S with shareholder K-1s"
    assert details.pm_url == f"https://app2.karbonhq.com/harbor-finch#/work/{key}"
    assert details.pm_work_type == "1120-S"
    assert details.pm_status == "Planned"
    assert details.pm_assignee_email == "ava@harborfinch.example"
    expands = [r["query"] for r in sandbox.requests(prefix=f"/karbon/v3/Organizations/{ORG}")]
    assert expands == ["%24expand=BusinessCards"]
    encodings = {r.headers.get("accept-encoding") for r in sandbox.ctx.recorder.select("/karbon")}
    assert encodings == {"gzip"}


async def test_load_engagement_of_an_individual_reads_the_contact(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(
        client, ClientKey=HOUSEHOLD, ClientType="Contact", WorkType="Tax Return - Individual"
    )
    details = await load(acts, key)
    assert details.service_type == "individual_tax"
    assert details.client_email == "eze.household@mail.example"
    assert details.client_contact_name == "Chidi & Ngozi Eze"


async def test_load_engagement_fallbacks(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(
        client, DueDate=None, DeadlineDate="2027-01-31T00:00:00Z", Description=None
    )
    del store(sandbox).clients[ORG]  # the client record is gone: the firm config has the email

    details = await load(acts, key)

    assert details.due_date == date(2027, 1, 31)  # DeadlineDate when there is no DueDate
    assert details.scope_summary == "S-Corporation return (1120-S)"  # the service type's name
    assert details.client_email == "office@baysidedental.example"
    assert details.client_name == "Bayside Dental Group"


async def test_unmapped_work_type_is_non_retryable_and_named(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client, WorkType="Advisory Retainer")
    with pytest.raises(ApplicationError) as caught:
        await load(acts, key)
    assert caught.value.type == "UnmappedWorkType" and caught.value.non_retryable
    assert "Advisory Retainer" in str(caught.value)


async def test_missing_due_date_is_non_retryable(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client, DueDate=None)
    with pytest.raises(ApplicationError) as caught:
        await load(acts, key)
    assert caught.value.type == "MissingDueDate" and caught.value.non_retryable


async def test_unknown_work_item(
    sandbox: RunningSandbox, acts: KarbonActivities, http: httpx.AsyncClient
) -> None:
    raw = await http.get(f"{sandbox.base_url}/karbon/v3/WorkItems/nope", headers=auth_headers())
    assert raw.status_code == 404
    assert raw.json() == {
        "error": {"code": "4004", "message": "No Work Item found for provided key"}
    }
    with pytest.raises(ApplicationError) as caught:
        await load(acts, "nope")
    assert caught.value.type == "EngagementNotFound" and caught.value.non_retryable


# --- write-back -------------------------------------------------------------------------------


async def test_assign_writes_assignee_and_status_once(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)

    first = await write_back(acts, key, "priya@harborfinch.example", DispatchStatus.ASSIGNED)

    assert first.written
    item = await client.get_work_item(key)
    assert item is not None
    assert item["AssigneeEmailAddress"] == "priya@harborfinch.example"
    assert (item["PrimaryStatus"], item["SecondaryStatus"]) == ("ReadyToStart", "Assigned")
    assert item["WorkStatus"] == "Ready To Start - Assigned"
    assert item["Description"] == "Federal and state 1120-S with shareholder K-1s"  # kept by PUT
    assert writes(sandbox) == ["PUT"]  # assignee and status together: one full PUT

    again = await write_back(acts, key, "Priya@HarborFinch.example", DispatchStatus.ASSIGNED)

    assert not again.written
    assert writes(sandbox) == ["PUT"]  # nothing new: our own write is never repeated


async def test_assignee_only_change_is_a_patch(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    result = await write_back(
        acts, key, "noah@harborfinch.example", DispatchStatus.READY_FOR_REVIEW
    )  # status left as Karbon has it
    assert result.written
    patches = sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}", method="PATCH")
    assert [json.loads(str(p["body"])) for p in patches] == [
        {"AssigneeEmailAddress": "noah@harborfinch.example"}
    ]
    assert writes(sandbox) == ["PATCH"]
    await write_back(acts, key, "noah@harborfinch.example", DispatchStatus.READY_FOR_REVIEW)
    assert writes(sandbox) == ["PATCH"]


async def move_due(acts: KarbonActivities, key: str, due: date, source: str = "karbon") -> Any:
    return await ActivityEnvironment().run(
        acts.move_due_date,
        PmDueDateInput(
            workflow_id=f"engagement-{source}-{key}", source=source, external_id=key, due_date=due
        ),
    )


async def test_a_partners_due_date_is_one_patch_of_the_due_date_only(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)

    moved = await move_due(acts, key, date(2027, 1, 20))

    assert moved.written and not moved.manual_update_required
    patches = sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}", method="PATCH")
    assert [json.loads(str(p["body"])) for p in patches] == [{"DueDate": "2027-01-20T00:00:00Z"}]
    item = await client.get_work_item(key)
    assert item is not None and item["DueDate"] == "2027-01-20T00:00:00Z"
    # Karbon's next read gives the engagement the new date: the echo does not move it back.
    loaded = await load(acts, key)
    assert loaded.due_date == date(2027, 1, 20)
    assert item["Description"] == "Federal and state 1120-S with shareholder K-1s"
    # A retry after a lost answer writes nothing.
    again = await move_due(acts, key, date(2027, 1, 20))
    assert not again.written and writes(sandbox) == ["PATCH"]


async def test_a_due_date_is_never_written_to_another_sources_item(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    refused = await move_due(acts, key, date(2027, 1, 20), source="canopy")
    assert not refused.written and refused.manual_update_required
    assert sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}") == []
    with pytest.raises(ApplicationError) as caught:
        await move_due(acts, "nope", date(2027, 1, 20))
    assert caught.value.type == "EngagementNotFound" and caught.value.non_retryable


async def test_completed_clears_the_secondary_status(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client, PrimaryStatus="ReadyToStart", SecondaryStatus="Assigned")
    await write_back(acts, key, None, DispatchStatus.COMPLETED)
    item = await client.get_work_item(key)
    assert item is not None
    assert (item["PrimaryStatus"], item["SecondaryStatus"], item["WorkStatus"]) == (
        "Completed",
        None,
        "Completed",
    )
    assert item["CompletedDate"] is not None
    assert item["AssigneeEmailAddress"] == "ava@harborfinch.example"


async def test_conflict_on_put_is_retried_after_a_fresh_read(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    fault(sandbox, route=f"/karbon/v3/WorkItems/{key}", method="PUT", status=409, count=1)

    result = await write_back(acts, key, "priya@harborfinch.example", DispatchStatus.ASSIGNED)

    assert result.written
    log = sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}")
    calls = [(r["method"], r["status"]) for r in log]
    assert calls == [("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 204)]
    conflict = sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}", method="PUT")[0]
    assert conflict["fault"] == f"409@/karbon/v3/WorkItems/{key}"


async def test_persistent_conflict_surfaces_as_retryable(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities, http: httpx.AsyncClient
) -> None:
    key = await new_item(client)
    fault(sandbox, route=f"/karbon/v3/WorkItems/{key}", method="PUT", status=409)
    raw = await http.put(
        f"{sandbox.base_url}/karbon/v3/WorkItems/{key}", headers=auth_headers(), json={}
    )
    assert raw.json()["error"]["code"] == "4020"

    with pytest.raises(ApplicationError) as caught:
        await write_back(acts, key, "priya@harborfinch.example", DispatchStatus.ASSIGNED)

    assert caught.value.type == "Conflict" and not caught.value.non_retryable
    assert writes(sandbox) == ["PUT"] * 5  # the raw probe + 1 try + 3 re-reads and retries


async def test_rate_limit_carries_retry_after(
    sandbox: RunningSandbox, acts: KarbonActivities
) -> None:
    fault(sandbox, route="/karbon/v3/WorkItems", method="GET", status=429, retry_after=7, count=1)
    with pytest.raises(ApplicationError) as caught:
        await load(acts, "any-key")
    assert caught.value.type == "RateLimited" and not caught.value.non_retryable
    assert caught.value.next_retry_delay == timedelta(seconds=7)
    limited = sandbox.requests(prefix="/karbon/v3/WorkItems")[0]
    assert limited["status"] == 429


def test_fault_bodies_speak_karbon(sandbox: RunningSandbox) -> None:
    fault(sandbox, route="/karbon/v3/Users", status=429, retry_after=12, count=1)
    limited = httpx.get(f"{sandbox.base_url}/karbon/v3/Users", headers=auth_headers())
    assert limited.headers["retry-after"] == "12"
    assert limited.json() == {
        "statusCode": "429",
        "message": "Rate limit is exceeded. Try again in 12 seconds.",
    }
    fault(sandbox, route="/karbon/v3/Users", status=503, count=1)
    assert (
        httpx.get(f"{sandbox.base_url}/karbon/v3/Users", headers=auth_headers()).json()["error"][
            "code"
        ]
        == "5001"
    )


async def test_server_error_is_retryable(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    fault(sandbox, route=f"/karbon/v3/WorkItems/{key}", method="GET", status=500, count=1)
    with pytest.raises(ApplicationError) as caught:
        await write_back(acts, key, "priya@harborfinch.example", DispatchStatus.ASSIGNED)
    assert caught.value.type == "ServerError" and not caught.value.non_retryable
    assert "5001" in str(caught.value)
    assert writes(sandbox) == []


async def test_patch_outside_the_whitelist_is_rejected_with_karbons_reason(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    with pytest.raises(ApplicationError) as caught:
        await client.patch_work_item(key, {"PrimaryStatus": "Completed"})
    assert caught.value.non_retryable and caught.value.type == "KarbonRejected"
    assert "Invalid property to update" in str(caught.value)
    assert "HTTP 400" in str(caught.value)


async def test_unknown_assignee_is_rejected_without_leaking_the_address(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    with pytest.raises(ApplicationError) as caught:
        await write_back(acts, key, "stranger@elsewhere.example", DispatchStatus.READY_FOR_REVIEW)
    assert caught.value.non_retryable
    assert "not an active Karbon user" in str(caught.value)
    assert "stranger@" not in str(caught.value)


async def test_create_validates_required_fields(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{sandbox.base_url}/karbon/v3/WorkItems",
        headers=auth_headers(),
        json={"Title": "No client", "AssigneeEmailAddress": "ava@harborfinch.example"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["target"] == "workItem.ClientKey"


# --- lists and paging -------------------------------------------------------------------------


async def test_users_page_through_next_link(
    sandbox: RunningSandbox, client: KarbonClient, http: httpx.AsyncClient
) -> None:
    store(sandbox).page_size = 4

    users = await client.list_users()

    assert len(users) == len(sandbox.config.staff) == 15
    assert len({u["Id"] for u in users}) == 15
    pages = sandbox.requests(prefix="/karbon/v3/Users")
    assert len(pages) == 4
    assert "$skip=12" in str(pages[-1]["query"])  # nextLink followed verbatim
    first = (await http.get(f"{sandbox.base_url}/karbon/v3/Users", headers=auth_headers())).json()
    assert first["@odata.count"] == 15 and "@odata.nextLink" in first
    capped = (
        await http.get(
            f"{sandbox.base_url}/karbon/v3/Users", headers=auth_headers(), params={"$top": "2"}
        )
    ).json()
    assert len(capped["value"]) == 2 and "@odata.nextLink" not in capped


async def test_user_capacity(sandbox: RunningSandbox, client: KarbonClient) -> None:
    [mia] = await client.list_users(f"EmailAddress eq {odata_str('mia@harborfinch.example')}")
    user = await client.get_user(mia["Id"])
    assert user["CapacityMinutesPerWeek"] == 40 * 60
    assert user["Name"] == "Mia Chen"


async def test_work_items_filter_and_paging(
    sandbox: RunningSandbox, client: KarbonClient, http: httpx.AsyncClient
) -> None:
    for n in range(5):
        await new_item(
            client,
            Title=f"Payroll {n}",
            WorkType="Payroll",
            AssigneeEmailAddress="ethan@harborfinch.example",
        )
    for n in range(2):
        await new_item(client, Title=f"Close {n}", WorkType="Month-End Close")
    store(sandbox).page_size = 2

    mine = await client.list_work_items(
        "AssigneeEmailAddress eq 'ethan@harborfinch.example' and WorkType eq 'Payroll'"
    )

    assert sorted(i["Title"] for i in mine) == [f"Payroll {n}" for n in range(5)]
    assert len(sandbox.requests(prefix="/karbon/v3/WorkItems", method="GET")) == 3
    bad = await http.get(
        f"{sandbox.base_url}/karbon/v3/WorkItems",
        headers=auth_headers(),
        params={"$filter": "Colour eq 'blue'"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "4002"
    either = await http.get(
        f"{sandbox.base_url}/karbon/v3/WorkItems",
        headers=auth_headers(),
        params={"$filter": "WorkType eq 'Payroll' or WorkType eq 'X'"},
    )
    assert either.status_code == 400 and "'Or'" in either.json()["error"]["message"]


async def test_time_entries_add_up_to_the_seed(
    sandbox: RunningSandbox, client: KarbonClient
) -> None:
    seed = sandbox.ctx.seed
    member = seed.staff[0]
    [user] = await client.list_users(f"EmailAddress eq {odata_str(member.email)}")
    this_week = await client.list_time_entries(seed.week_start, seed.today, user["Id"])
    last_week = await client.list_time_entries(
        seed.week_start - timedelta(days=7), seed.week_start - timedelta(days=1), user["Id"]
    )
    assert sum(e["Minutes"] for e in this_week) == round(member.logged_this_week * 60)
    assert sum(e["Minutes"] for e in last_week) == round(member.logged_last_week * 60)
    assert {e["UserKey"] for e in this_week + last_week} == {user["Id"]}


# --- webhooks ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while len(self.calls) < count:
            assert asyncio.get_running_loop().time() < deadline, f"got {len(self.calls)} webhooks"
            await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A tiny HTTP server standing in for our webhook endpoint."""
    calls: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/webhooks/karbon", calls)
    finally:
        server.shutdown()
        server.server_close()


def signed_by(key: str, headers: dict[str, str], body: bytes) -> bool:
    expected = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("signature", ""), expected)


async def test_signed_inserted_then_updated_webhooks(
    sandbox: RunningSandbox,
    connector: KarbonConnector,
    client: KarbonClient,
    acts: KarbonActivities,
    receiver: Receiver,
) -> None:
    assert await ensure_work_subscription(connector, receiver.url) is True
    key = await new_item(client)

    await receiver.wait_for(1)
    headers, body = receiver.calls[0]
    assert signed_by(demo_secret("KARBON_WEBHOOK_SIGNING_KEY"), headers, body)
    assert not signed_by("some-other-signing-key", headers, body)
    event = json.loads(body)
    assert {k: event[k] for k in ("ResourcePermaKey", "ResourceType", "ActionType")} == {
        "ResourcePermaKey": key,
        "ResourceType": "Work",
        "ActionType": "Inserted",
    }
    assert event["TimeStamp"].endswith("Z")

    await write_back(acts, key, "priya@harborfinch.example", DispatchStatus.ASSIGNED)
    await receiver.wait_for(2)
    assert json.loads(receiver.calls[1][1])["ActionType"] == "Updated"  # our write echoes back

    await write_back(acts, key, "priya@harborfinch.example", DispatchStatus.ASSIGNED)
    await asyncio.sleep(0.3)
    assert len(receiver.calls) == 2  # a no-op write-back causes no echo
    deliveries = store(sandbox).dump()["deliveries"]
    assert [(d["ActionType"], d["delivered"]) for d in deliveries] == [
        ("Inserted", True),
        ("Updated", True),
    ]


async def test_coalescing_sends_one_notification(
    sandbox: RunningSandbox, connector: KarbonConnector, client: KarbonClient, receiver: Receiver
) -> None:
    store(sandbox).coalesce_seconds = 0.3
    await ensure_work_subscription(connector, receiver.url)
    key = await new_item(client)
    await client.patch_work_item(key, {"Description": "first edit"})
    await client.patch_work_item(key, {"DueDate": "2026-12-20T00:00:00Z"})
    await receiver.wait_for(1)
    await asyncio.sleep(0.4)
    assert [json.loads(b)["ActionType"] for _, b in receiver.calls] == ["Inserted"]


async def test_failed_deliveries_cancel_the_subscription(
    sandbox: RunningSandbox, connector: KarbonConnector, client: KarbonClient
) -> None:
    s = store(sandbox)
    s.delivery_attempts, s.retry_base_delay = 2, 0.01
    await ensure_work_subscription(connector, "http://127.0.0.1:9/nobody-listens")
    await new_item(client)
    for _ in range(250):
        if "Work" not in s.subscriptions:
            break
        await asyncio.sleep(0.02)
    assert "Work" not in s.subscriptions
    assert s.deliveries[0]["attempts"] == 2 and not s.deliveries[0]["delivered"]
    assert await client.get_subscription("Work") is None


async def test_ensure_subscription_creates_once(
    sandbox: RunningSandbox,
    connector: KarbonConnector,
    client: KarbonClient,
    http: httpx.AsyncClient,
) -> None:
    target = "https://dispatch.harborfinch.example/webhooks/karbon"

    assert await ensure_work_subscription(connector, target) is True
    assert await ensure_work_subscription(connector, target) is False

    posts = sandbox.requests(prefix="/karbon/v3/WebhookSubscriptions", method="POST")
    assert len(posts) == 1
    sent = json.loads(str(posts[0]["body"]))
    assert sent == {
        "TargetUrl": target,
        "WebhookType": "Work",
        "SigningKey": demo_secret("KARBON_WEBHOOK_SIGNING_KEY"),
    }
    existing = await client.get_subscription("Work")
    assert existing is not None and existing["TargetUrl"] == target
    again = await http.post(
        f"{sandbox.base_url}/karbon/v3/WebhookSubscriptions",
        headers=auth_headers(),
        json={"TargetUrl": target, "WebhookType": "Work"},
    )
    assert again.status_code == 400  # one subscription per type

    deleted = await http.delete(
        f"{sandbox.base_url}/karbon/v3/WebhookSubscriptions/Work", headers=auth_headers()
    )
    assert deleted.status_code == 204
    assert await ensure_work_subscription(connector, target) is True  # re-created after a 404


# --- source isolation and limits at load ------------------------------------------------------


async def test_a_relay_engagement_never_writes_to_a_karbon_item_with_the_same_key(
    sandbox: RunningSandbox, client: KarbonClient, acts: KarbonActivities
) -> None:
    """External ids are unique per source only: a Canopy ``external_id`` equal to a Karbon
    key must not reassign that Karbon work item."""
    key = await new_item(client)
    result: PmWriteBackResult = await ActivityEnvironment().run(
        acts.write_back,
        PmWriteBackInput(
            workflow_id=f"engagement-canopy-{key}",
            source="canopy",
            external_id=key,
            assignee_email="priya@harborfinch.example",
            status=DispatchStatus.ASSIGNED,
        ),
    )
    assert not result.written and result.manual_update_required
    assert "canopy" in result.detail and "Karbon" in result.detail
    assert writes(sandbox) == []
    assert sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}") == []  # not even read
    item = await client.get_work_item(key)
    assert item is not None and item["AssigneeEmailAddress"] == "ava@harborfinch.example"


async def test_loading_another_sources_engagement_is_refused(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(client)
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(
            acts.load_engagement, LoadEngagementInput(source="taxdome", external_id=key)
        )
    assert caught.value.type == "ForeignSource" and caught.value.non_retryable


@pytest.mark.parametrize(
    ("dates", "said"),
    [
        ({"DueDate": "9999-12-31T00:00:00Z"}, "due date 9999-12-31 is more than 3 years ahead"),
        (
            {"DueDate": "1970-01-02T00:00:00Z", "StartDate": "1970-01-01T00:00:00Z"},
            "due date is before 1990",
        ),
        ({"StartDate": "1970-01-01T00:00:00Z"}, "start date 1970-01-01 is before 1990"),
        ({"StartDate": "2027-06-01T00:00:00Z"}, "start date is after the due date"),
    ],
)
async def test_impossible_dates_cannot_be_dispatched(
    client: KarbonClient, acts: KarbonActivities, dates: dict[str, Any], said: str
) -> None:
    key = await new_item(client, **dates)
    with pytest.raises(ApplicationError) as caught:
        await load(acts, key)
    assert caught.value.type == "ImpossibleDate" and caught.value.non_retryable
    assert said in caught.value.message


async def test_over_long_and_control_text_is_clipped_at_load(
    client: KarbonClient, acts: KarbonActivities
) -> None:
    key = await new_item(
        client,
        Title="Return\x00 " + "T" * 1000,
        Description="Scope line one\nline two\x07 " + "S" * 990_000,
    )
    details = await load(acts, key)
    assert len(details.title) == 300 and "\x00" not in details.title
    assert details.title.startswith("Return T") and details.title.endswith("…")
    assert len(details.scope_summary) == 4000
    assert details.scope_summary.startswith("Scope line one\nline two S")
