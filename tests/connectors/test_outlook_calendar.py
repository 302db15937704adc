"""Outlook calendars through Microsoft Graph: the emulator's contract, and the activities on it.

Activities run through ``ActivityEnvironment`` and talk real HTTP (httpx) to the sandbox's Entra
token endpoint and Graph routes, so a wrong path, body, token handling or error mapping fails
here.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.outlook_calendar import (
    EVENT_KEY_PROPERTY,
    OutlookCalendarActivities,
    event_body,
    transaction_id_for,
)
from app.secrets_demo import demo_secret
from dispatch.config import OutlookCalendarConnector
from dispatch.models import (
    CalendarBlockInput,
    CalendarBlockResult,
    CalendarRemoveInput,
    CalendarRemoveResult,
    EngagementSummary,
    Role,
    StaffRef,
)
from sandbox.graph import GraphStore
from tests.sandbox_server import RunningSandbox, free_port

WORKFLOW_ID = "engagement-karbon-4kTq9bQ2"
MAILBOX = "priya@harborfinch.example"
START = date(2026, 12, 1)
END = date(2026, 12, 4)
TENANT = demo_secret("MS_TENANT_ID")


def connector_for(base: str) -> OutlookCalendarConnector:
    return OutlookCalendarConnector(
        kind="outlook",
        graph_base_url=f"{base}/graph/v1.0",
        token_url=f"{base}/graph/{{tenant}}/oauth2/v2.0/token",
    )


def activities_for(sandbox: RunningSandbox, **kwargs: Any) -> OutlookCalendarActivities:
    return OutlookCalendarActivities(connector_for(sandbox.base_url), **kwargs)


def store_of(sandbox: RunningSandbox) -> GraphStore:
    store: GraphStore = sandbox.ctx.stores["graph"]
    return store


def events_of(sandbox: RunningSandbox, mailbox: str = MAILBOX) -> list[dict[str, Any]]:
    return list(store_of(sandbox).events.get(mailbox, {}).values())


def staff(sandbox: RunningSandbox, staff_id: str = "priya") -> StaffRef:
    m = sandbox.config.staff_by_id(staff_id)
    return StaffRef(id=m.id, name=m.name, email=m.email, tier=m.tier)


def block_input(
    sandbox: RunningSandbox,
    *,
    seq: int = 1,
    role: Role = Role.PREPARER,
    start: date = START,
    end: date = END,
    staff_id: str = "priya",
) -> CalendarBlockInput:
    summary = EngagementSummary(
        workflow_id=WORKFLOW_ID,
        title="2026 S-Corp return",
        client_id="cl-bayside-dental",
        client_name="Bayside Dental Group",
        service_type="s_corp_return",
        service_name="S-Corporation return (1120-S)",
        due_date=date(2026, 12, 11),
        estimated_hours=12,
        pm_url="https://app2.karbonhq.com/harbor-finch/work/4kTq9bQ2",
    )
    return CalendarBlockInput(
        workflow_id=WORKFLOW_ID,
        event_key=f"{WORKFLOW_ID}:{role.value}:{seq}",
        staff=staff(sandbox, staff_id),
        summary=summary,
        role=role,
        start_date=start,
        end_date=end,
        hours=12,
        time_zone="America/New_York",
    )


def remove_input(sandbox: RunningSandbox, seq: int = 1) -> CalendarRemoveInput:
    return CalendarRemoveInput(
        workflow_id=WORKFLOW_ID,
        event_key=f"{WORKFLOW_ID}:preparer:{seq}",
        staff=staff(sandbox),
        time_zone="America/New_York",
    )


async def block(
    activities: OutlookCalendarActivities, input: CalendarBlockInput
) -> CalendarBlockResult:
    result: CalendarBlockResult = await ActivityEnvironment().run(activities.block, input)
    return result


async def remove(
    activities: OutlookCalendarActivities, input: CalendarRemoveInput
) -> CalendarRemoveResult:
    result: CalendarRemoveResult = await ActivityEnvironment().run(activities.remove, input)
    return result


def calls(sandbox: RunningSandbox) -> list[tuple[str, str, int]]:
    out = []
    for r in sandbox.requests(prefix="/graph"):
        path = str(r["path"])
        kind = "token" if path.endswith("/token") else "event" if "/events/" in path else "events"
        out.append((str(r["method"]), kind, int(r["status"])))
    return out


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    answer = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)})
    answer.raise_for_status()


def get_token(sandbox: RunningSandbox) -> str:
    answer = httpx.post(
        f"{sandbox.base_url}/graph/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": demo_secret("MS_CLIENT_ID"),
            "client_secret": demo_secret("MS_CLIENT_SECRET"),
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def events_api(sandbox: RunningSandbox, mailbox: str = MAILBOX) -> str:
    return f"{sandbox.base_url}/graph/v1.0/users/{mailbox}/events"


# --- the activity ----------------------------------------------------------------------------


def test_transaction_id_is_a_stable_uuid5_of_the_key() -> None:
    first = transaction_id_for("engagement-karbon-1:preparer:1")
    assert first == transaction_id_for("engagement-karbon-1:preparer:1")
    assert first != transaction_id_for("engagement-karbon-1:preparer:2")
    assert uuid.UUID(first).version == 5


async def test_block_creates_a_busy_all_day_event_without_attendees(
    sandbox: RunningSandbox,
) -> None:
    input = block_input(sandbox)
    result = await block(activities_for(sandbox), input)

    assert result.created is True
    [event] = events_of(sandbox)
    assert result.event_id == event["id"]
    assert event["subject"] == "Engagement: S-Corporation return (1120-S) — Bayside Dental Group"
    assert "Estimated hours: 12" in event["body"]["content"]
    assert event["body"]["contentType"] == "text"
    assert event["isAllDay"] is True and event["showAs"] == "busy"
    assert event["start"] == {"dateTime": "2026-12-01T00:00:00", "timeZone": "America/New_York"}
    # Graph's end is exclusive: the 4th is still blocked.
    assert event["end"] == {"dateTime": "2026-12-05T00:00:00", "timeZone": "America/New_York"}
    assert event["attendees"] == [] and event["isReminderOn"] is False
    assert event["transactionId"] == transaction_id_for(input.event_key)
    assert store_of(sandbox).extended[event["id"]] == [
        {"id": EVENT_KEY_PROPERTY, "value": transaction_id_for(input.event_key)}
    ]

    assert calls(sandbox) == [
        ("POST", "token", 200),
        ("GET", "events", 200),
        ("POST", "events", 201),
    ]
    token_call, find_call, create_call = sandbox.requests(prefix="/graph")
    assert token_call["path"] == f"/graph/{TENANT}/oauth2/v2.0/token"
    assert "grant_type=client_credentials" in str(token_call["body"])
    assert create_call["path"] == f"/graph/v1.0/users/{MAILBOX}/events"
    headers = create_call["headers"]
    assert isinstance(headers, dict) and headers["authorization"] == "<redacted>"
    assert "singleValueExtendedProperties" in str(find_call["query"])

    assert result.html_link is not None and result.html_link.startswith(sandbox.base_url)
    async with httpx.AsyncClient() as http:
        view = await http.get(result.html_link)
    assert view.status_code == 200 and view.json()["id"] == result.event_id


async def test_one_token_for_many_events(sandbox: RunningSandbox) -> None:
    activities = activities_for(sandbox)
    for seq in (1, 2, 3):
        assert (await block(activities, block_input(sandbox, seq=seq))).created
    assert len(events_of(sandbox)) == 3
    assert [c for c in calls(sandbox) if c[1] == "token"] == [("POST", "token", 200)]
    assert store_of(sandbox).token_requests == 1


async def test_a_token_is_renewed_before_it_expires(sandbox: RunningSandbox) -> None:
    now = [1000.0]
    activities = activities_for(sandbox, clock=lambda: now[0])
    await block(activities, block_input(sandbox, seq=1))
    now[0] += 3599 - 301  # just inside the renewal margin
    await block(activities, block_input(sandbox, seq=2))
    assert store_of(sandbox).token_requests == 1
    now[0] += 2  # past it
    await block(activities, block_input(sandbox, seq=3))
    assert store_of(sandbox).token_requests == 2


async def test_a_revoked_token_is_replaced_once(sandbox: RunningSandbox) -> None:
    activities = activities_for(sandbox)
    await block(activities, block_input(sandbox, seq=1))
    store_of(sandbox).tokens.clear()  # e.g. the app's consent was re-granted
    assert (await block(activities, block_input(sandbox, seq=2))).created
    assert store_of(sandbox).token_requests == 2
    assert ("GET", "events", 401) in calls(sandbox)


async def test_second_block_with_the_same_key_reuses_the_event(sandbox: RunningSandbox) -> None:
    activities = activities_for(sandbox)
    first = await block(activities, block_input(sandbox))
    second = await block(activities, block_input(sandbox))

    assert first.created is True and second.created is False
    assert second.event_id == first.event_id and second.html_link == first.html_link
    assert len(events_of(sandbox)) == 1
    # The second block found the marker and posted nothing.
    assert [c for c in calls(sandbox) if c[0] == "POST" and c[1] == "events"] == [
        ("POST", "events", 201)
    ]


async def test_a_retry_after_a_lost_201_finds_the_event(sandbox: RunningSandbox) -> None:
    input = block_input(sandbox)
    body, _ = event_body(input)
    # The first attempt's POST reached Graph but its answer was lost.
    token = get_token(sandbox)
    async with httpx.AsyncClient() as http:
        lost = await http.post(
            events_api(sandbox), json=body, headers={"Authorization": f"Bearer {token}"}
        )
    assert lost.status_code == 201

    retried = await block(activities_for(sandbox), input)
    assert retried.created is False and retried.event_id == lost.json()["id"]
    assert len(events_of(sandbox)) == 1


async def test_a_lost_acknowledgement_through_the_activity_makes_one_event(
    sandbox: RunningSandbox,
) -> None:
    set_faults(
        sandbox,
        {
            "route": "^/graph/v1.0/users/[^/]+/events$",
            "method": "POST",
            "phase": "after",
            "status": 502,
            "count": 1,
        },
    )
    activities = activities_for(sandbox)
    with pytest.raises(ApplicationError) as caught:
        await block(activities, block_input(sandbox))
    assert caught.value.non_retryable is False
    [made] = events_of(sandbox)  # Graph created it; the activity never heard

    retried = await block(activities, block_input(sandbox))

    assert retried.created is False and retried.event_id == made["id"]
    assert len(events_of(sandbox)) == 1


async def test_roles_and_rounds_are_separate_events(sandbox: RunningSandbox) -> None:
    activities = activities_for(sandbox)
    a = await block(activities, block_input(sandbox, seq=1))
    b = await block(activities, block_input(sandbox, seq=2))
    c = await block(activities, block_input(sandbox, seq=1, role=Role.REVIEWER))
    assert len({a.event_id, b.event_id, c.event_id}) == 3
    review = next(e for e in events_of(sandbox) if e["id"] == c.event_id)
    assert review["subject"].startswith("Engagement review: ")


async def test_end_before_start_blocks_the_start_day(sandbox: RunningSandbox) -> None:
    result = await block(activities_for(sandbox), block_input(sandbox, start=END, end=START))
    [event] = events_of(sandbox)
    assert event["start"]["dateTime"] == "2026-12-04T00:00:00"
    assert event["end"]["dateTime"] == "2026-12-05T00:00:00"
    assert "end date was before the start" in result.detail


async def test_remove_deletes_the_block_and_is_idempotent(sandbox: RunningSandbox) -> None:
    activities = activities_for(sandbox)
    await block(activities, block_input(sandbox, seq=1))
    other = await block(activities, block_input(sandbox, seq=2))

    first = await remove(activities, remove_input(sandbox, seq=1))
    assert first.removed is True and first.detail == "deleted 1 event(s)"
    assert [e["id"] for e in events_of(sandbox)] == [other.event_id]  # only that one went
    assert ("DELETE", "event", 204) in calls(sandbox)

    again = await remove(activities, remove_input(sandbox, seq=1))
    assert again.removed is True and again.detail == "already gone"
    never = await remove(activities, remove_input(sandbox, seq=9))
    assert never.removed is True and never.detail == "already gone"
    assert [c for c in calls(sandbox) if c[0] == "DELETE"] == [("DELETE", "event", 204)]


async def test_remove_tolerates_a_block_deleted_in_between(sandbox: RunningSandbox) -> None:
    activities = activities_for(sandbox)
    await block(activities, block_input(sandbox))
    set_faults(sandbox, {"route": "/graph/v1.0/", "method": "DELETE", "status": 404, "count": 1})
    result = await remove(activities, remove_input(sandbox))
    assert result.removed is True and result.detail == "already gone"


async def test_wrong_client_secret_is_a_non_retryable_auth_error(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_secret = "definitely-not-the-secret"
    monkeypatch.setenv("MS_TEST_WRONG_SECRET", wrong_secret)
    connector = connector_for(sandbox.base_url).model_copy(
        update={"client_secret_env": "MS_TEST_WRONG_SECRET"}
    )
    with pytest.raises(ApplicationError) as caught:
        await block(OutlookCalendarActivities(connector), block_input(sandbox))
    assert caught.value.non_retryable is True and caught.value.type == "GraphAuthError"
    assert "invalid_client" in caught.value.message and "AADSTS7000215" in caught.value.message
    assert wrong_secret not in caught.value.message
    assert calls(sandbox) == [("POST", "token", 401)]
    assert events_of(sandbox) == []


async def test_missing_credentials_are_a_config_error(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MS_CLIENT_SECRET")
    with pytest.raises(ApplicationError) as caught:
        await block(activities_for(sandbox), block_input(sandbox))
    assert caught.value.non_retryable and caught.value.type == "CalendarConfigError"
    assert "MS_CLIENT_SECRET" in caught.value.message
    assert sandbox.requests(prefix="/graph") == []


async def test_429_is_retryable_after_retry_after(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {"route": "/graph/v1.0/", "method": "POST", "status": 429, "retry_after": 9, "count": 1},
    )
    activities = activities_for(sandbox)
    with pytest.raises(ApplicationError) as caught:
        await block(activities, block_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=9)
    assert (await block(activities, block_input(sandbox))).created is True


async def test_429_on_the_token_endpoint_is_retryable(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "^/graph/[^/]+/oauth2/", "status": 429, "retry_after": 3})
    with pytest.raises(ApplicationError) as caught:
        await block(activities_for(sandbox), block_input(sandbox))
    assert caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=3)


@pytest.mark.parametrize("status", [500, 503, 504])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    set_faults(sandbox, {"route": "/graph/v1.0/", "status": status, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await block(activities_for(sandbox), block_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "ServerError"


async def test_unknown_mailbox_fails_for_good_without_the_email(
    sandbox: RunningSandbox,
) -> None:
    input = block_input(sandbox)
    stranger = input.staff.model_copy(update={"email": "nobody@elsewhere.example"})
    with pytest.raises(ApplicationError) as caught:
        await block(activities_for(sandbox), input.model_copy(update={"staff": stranger}))
    assert caught.value.non_retryable is True
    assert "ErrorInvalidUser" in caught.value.message
    assert "elsewhere.example" not in caught.value.message


async def test_unreachable_graph_is_a_retryable_transport_error(sandbox: RunningSandbox) -> None:
    dead = connector_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ApplicationError) as caught:
        await block(OutlookCalendarActivities(dead), block_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "TransportError"


# --- the emulator's contract -----------------------------------------------------------------


def token_form(**changes: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": demo_secret("MS_CLIENT_ID"),
        "client_secret": demo_secret("MS_CLIENT_SECRET"),
        "scope": "https://graph.microsoft.com/.default",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v}


def test_token_endpoint_issues_bearer_tokens(sandbox: RunningSandbox) -> None:
    answer = httpx.post(f"{sandbox.base_url}/graph/{TENANT}/oauth2/v2.0/token", data=token_form())
    assert answer.status_code == 200
    data = answer.json()
    assert data["token_type"] == "Bearer" and data["expires_in"] == 3599
    assert data["access_token"].startswith("eyJ")


@pytest.mark.parametrize(
    ("tenant", "changes", "status", "error", "code"),
    [
        ("another-tenant", {}, 400, "invalid_request", 90002),
        (TENANT, {"grant_type": ""}, 400, "invalid_request", 900144),
        (TENANT, {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        (TENANT, {"scope": "Calendars.ReadWrite"}, 400, "invalid_scope", 1002012),
        (TENANT, {"client_id": "someone-else"}, 400, "unauthorized_client", 700016),
        (TENANT, {"client_secret": "wrong"}, 401, "invalid_client", 7000215),
    ],
)
def test_token_endpoint_errors_look_like_entra(
    sandbox: RunningSandbox,
    tenant: str,
    changes: dict[str, str],
    status: int,
    error: str,
    code: int,
) -> None:
    answer = httpx.post(
        f"{sandbox.base_url}/graph/{tenant}/oauth2/v2.0/token", data=token_form(**changes)
    )
    assert answer.status_code == status
    data = answer.json()
    assert data["error"] == error and data["error_codes"] == [code]
    assert data["error_description"].startswith(f"AADSTS{code}: ")
    assert {"trace_id", "correlation_id", "timestamp"} <= set(data)


def test_graph_needs_a_valid_bearer_token(sandbox: RunningSandbox) -> None:
    for headers in ({}, {"Authorization": "Bearer eyJ-not-issued-here"}):
        answer = httpx.get(events_api(sandbox), headers=headers)
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert error["code"] == "InvalidAuthenticationToken"
        assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_transaction_id_dedupes_creates(sandbox: RunningSandbox) -> None:
    bearer = {"Authorization": f"Bearer {get_token(sandbox)}"}
    body = {
        "subject": "x",
        "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "Eastern Standard Time"},
        "end": {"dateTime": "2026-12-01T10:00:00", "timeZone": "Eastern Standard Time"},
        "transactionId": "7e2b3c4d-0000-4000-8000-000000000001",
    }
    first = httpx.post(events_api(sandbox), json=body, headers=bearer)
    second = httpx.post(events_api(sandbox), json={**body, "subject": "y"}, headers=bearer)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert len(events_of(sandbox)) == 1
    event = first.json()
    for field in ("id", "iCalUId", "webLink", "createdDateTime", "@odata.etag"):
        assert field in event
    third = httpx.post(events_api(sandbox), json={**body, "transactionId": "other"}, headers=bearer)
    assert third.status_code == 201 and third.json()["id"] != event["id"]


def test_get_and_delete_by_id(sandbox: RunningSandbox) -> None:
    bearer = {"Authorization": f"Bearer {get_token(sandbox)}"}
    body = {
        "subject": "x",
        "start": {"dateTime": "2026-12-01T00:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-02T00:00:00", "timeZone": "UTC"},
        "isAllDay": True,
    }
    event = httpx.post(events_api(sandbox), json=body, headers=bearer).json()
    url = f"{events_api(sandbox)}/{quote(event['id'], safe='')}"
    assert httpx.get(url, headers=bearer).json()["id"] == event["id"]
    assert httpx.delete(url, headers=bearer).status_code == 204
    for method in ("GET", "DELETE"):
        gone = httpx.request(method, url, headers=bearer)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "ErrorItemNotFound"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"start": None}, "ErrorPropertyValidationFailure"),
        ({"end": {"dateTime": "2026-12-01T00:00:00", "timeZone": "Mars/Olympus"}}, "TimeZone"),
        ({"end": {"dateTime": "2026-12-01T12:00:00", "timeZone": "UTC"}}, "ErrorProperty"),
        ({"isAllDay": False, "end": {"dateTime": "2026-11-30T00:00:00", "timeZone": "UTC"}}, "Err"),
        ({"showAs": "sleeping"}, "RequestBodyRead"),
        ({"singleValueExtendedProperties": [{"id": "DispatchKey", "value": "1"}]}, "ErrorInvalid"),
    ],
)
def test_bad_events_are_400(sandbox: RunningSandbox, changes: dict[str, Any], code: str) -> None:
    bearer = {"Authorization": f"Bearer {get_token(sandbox)}"}
    body: dict[str, Any] = {
        "subject": "x",
        "start": {"dateTime": "2026-12-01T00:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-02T00:00:00", "timeZone": "UTC"},
        "isAllDay": True,
        **changes,
    }
    answer = httpx.post(events_api(sandbox), json=body, headers=bearer)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"].startswith(code)
    assert events_of(sandbox) == []


def test_filters_on_extended_properties_and_pages(sandbox: RunningSandbox) -> None:
    bearer = {"Authorization": f"Bearer {get_token(sandbox)}"}
    for n in range(3):
        body = {
            "subject": f"e{n}",
            "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"},
            "singleValueExtendedProperties": [
                {"id": EVENT_KEY_PROPERTY, "value": "same" if n < 2 else "other"}
            ],
        }
        httpx.post(events_api(sandbox), json=body, headers=bearer).raise_for_status()
    lower_id = EVENT_KEY_PROPERTY.replace("3f0c7e52", "3F0C7E52")  # the GUID is case-blind
    query = f"singleValueExtendedProperties/Any(ep: ep/id eq '{lower_id}' and ep/value eq 'SAME')"
    first = httpx.get(
        events_api(sandbox), params={"$filter": query, "$top": "1"}, headers=bearer
    ).json()
    assert [e["subject"] for e in first["value"]] == ["e0"]
    second = httpx.get(first["@odata.nextLink"], headers=bearer).json()
    assert [e["subject"] for e in second["value"]] == ["e1"]
    assert "@odata.nextLink" not in second

    everything = httpx.get(events_api(sandbox), params={"$select": "subject"}, headers=bearer)
    assert [sorted(e) for e in everything.json()["value"]] == [["@odata.etag", "id", "subject"]] * 3
    unsupported = httpx.get(
        events_api(sandbox), params={"$filter": "transactionId eq 'x'"}, headers=bearer
    )
    assert unsupported.status_code == 400


def test_unknown_mailbox_is_404(sandbox: RunningSandbox) -> None:
    bearer = {"Authorization": f"Bearer {get_token(sandbox)}"}
    answer = httpx.get(events_api(sandbox, "nobody@elsewhere.example"), headers=bearer)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "ErrorInvalidUser"


def test_injected_faults_use_graphs_envelope(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/graph/", "status": 429, "retry_after": 5, "count": 1})
    answer = httpx.get(events_api(sandbox))
    assert answer.status_code == 429 and answer.headers["retry-after"] == "5"
    error = answer.json()["error"]
    assert error["code"] == "TooManyRequests" and "innerError" in error


def test_event_ids_need_url_encoding(sandbox: RunningSandbox) -> None:
    bearer = {"Authorization": f"Bearer {get_token(sandbox)}"}
    body = {
        "subject": "x",
        "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"},
    }
    event = httpx.post(events_api(sandbox), json=body, headers=bearer).json()
    assert re.fullmatch(r"AAMk[A-Za-z0-9_-]+=*", event["id"]) and event["id"].endswith("=")
