"""Google Calendar: the emulator holds the v3 events contract, and the calendar activity uses it.

Activity calls run through ``ActivityEnvironment`` against the sandbox over real HTTP with the
real ``googleapiclient``, so a wrong path, id, body or error mapping fails here.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.google_calendar import GoogleCalendarActivities, event_id_for
from app.secrets_demo import demo_secret
from dispatch.config import GoogleCalendarConnector
from dispatch.models import (
    CalendarBlockInput,
    CalendarBlockResult,
    CalendarRemoveInput,
    CalendarRemoveResult,
    EngagementSummary,
    Role,
    StaffRef,
)
from sandbox.google_calendar import TOKEN_PATH, CalendarStore
from tests.sandbox_server import RunningSandbox

TOKEN_ENV = "GOOGLE_ACCESS_TOKEN"
WORKFLOW_ID = "engagement-karbon-4kTq9bQ2"
START = date(2026, 12, 1)
END = date(2026, 12, 4)


@pytest.fixture(autouse=True)
def google_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, demo_secret(TOKEN_ENV))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


def connector_of(sandbox: RunningSandbox) -> GoogleCalendarConnector:
    calendar = sandbox.config.connectors.calendar
    assert isinstance(calendar, GoogleCalendarConnector)
    return calendar


def store_of(sandbox: RunningSandbox) -> CalendarStore:
    store: CalendarStore = sandbox.ctx.stores["google"]
    return store


def staff_ref(sandbox: RunningSandbox, staff_id: str = "priya") -> StaffRef:
    m = sandbox.config.staff_by_id(staff_id)
    return StaffRef(id=m.id, name=m.name, email=m.email, tier=m.tier)


def block_input(
    sandbox: RunningSandbox,
    *,
    role: Role = Role.PREPARER,
    seq: int = 1,
    start: date = START,
    end: date = END,
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
        staff=staff_ref(sandbox),
        summary=summary,
        role=role,
        start_date=start,
        end_date=end,
        hours=12,
        time_zone="America/New_York",
    )


async def block(
    activities: GoogleCalendarActivities, input: CalendarBlockInput
) -> CalendarBlockResult:
    result: CalendarBlockResult = await ActivityEnvironment().run(activities.block, input)
    return result


def api(sandbox: RunningSandbox, calendar_id: str = "priya@harborfinch.example") -> str:
    return f"{sandbox.base_url}/google/calendar/v3/calendars/{calendar_id}/events"


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {demo_secret(TOKEN_ENV)}"}


def all_day(event_id: str | None = None, day: date = START, days: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {
        "summary": "x",
        "start": {"date": day.isoformat()},
        "end": {"date": (day + timedelta(days=days)).isoformat()},
    }
    if event_id is not None:
        body["id"] = event_id
    return body


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    answer = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)})
    answer.raise_for_status()


# --- the activity ----------------------------------------------------------------------------


def test_event_id_is_deterministic_base32hex() -> None:
    first = event_id_for("engagement-karbon-1:preparer:1")
    assert first == event_id_for("engagement-karbon-1:preparer:1")
    assert first != event_id_for("engagement-karbon-1:preparer:2")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", first)


async def test_block_creates_an_all_day_event_on_the_staff_calendar(
    sandbox: RunningSandbox,
) -> None:
    input = block_input(sandbox)
    result = await block(GoogleCalendarActivities(connector_of(sandbox)), input)

    assert result.created is True
    assert result.event_id == event_id_for(input.event_key)
    assert result.html_link is not None and result.html_link.startswith(sandbox.base_url)
    # "primary" means the staff member's own calendar.
    events = store_of(sandbox).live("priya@harborfinch.example")
    assert list(events) == [result.event_id]
    event = events[result.event_id]
    assert event["start"] == {"date": "2026-12-01"}
    assert event["end"] == {"date": "2026-12-05"}  # exclusive end: the 4th is still blocked
    assert event["summary"] == "Engagement: S-Corporation return (1120-S) — Bayside Dental Group"
    assert "Estimated hours: 12" in event["description"]
    assert "Role: preparer" in event["description"]
    assert event["transparency"] == "opaque"
    assert event["extendedProperties"]["private"]["dispatch_workflow_id"] == WORKFLOW_ID
    assert "attendees" not in event  # token path: no attendees without delegation

    [request] = sandbox.requests(prefix="/google")
    assert request["method"] == "POST"
    assert request["path"] == "/google/calendar/v3/calendars/priya@harborfinch.example/events"
    assert "alt=json" in str(request["query"]) and "sendUpdates=none" in str(request["query"])
    headers = request["headers"]
    assert isinstance(headers, dict) and headers["authorization"] == "<redacted>"
    assert request["status"] == 200


async def test_html_link_opens_the_event(sandbox: RunningSandbox) -> None:
    result = await block(GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox))
    assert result.html_link is not None
    async with httpx.AsyncClient() as http:
        view = await http.get(result.html_link)
    assert view.status_code == 200 and view.json()["id"] == result.event_id


async def test_reviewer_block_says_review(sandbox: RunningSandbox) -> None:
    result = await block(
        GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox, role=Role.REVIEWER)
    )
    event = store_of(sandbox).live("priya@harborfinch.example")[result.event_id]
    assert event["summary"].startswith("Engagement review: ")
    assert "Role: reviewer" in event["description"]


async def test_second_block_with_same_key_reuses_the_event(sandbox: RunningSandbox) -> None:
    activities = GoogleCalendarActivities(connector_of(sandbox))
    first = await block(activities, block_input(sandbox))
    second = await block(activities, block_input(sandbox))

    assert first.created is True and second.created is False
    assert second.event_id == first.event_id
    assert second.html_link == first.html_link
    assert len(store_of(sandbox).all_events()) == 1
    calls = [(r["method"], r["status"]) for r in sandbox.requests(prefix="/google")]
    assert calls == [("POST", 200), ("POST", 409), ("GET", 200)]


async def test_a_lost_acknowledgement_makes_one_event(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {"route": "/google/", "method": "POST", "phase": "after", "status": 502, "count": 1},
    )
    activities = GoogleCalendarActivities(connector_of(sandbox))
    with pytest.raises(ApplicationError) as caught:
        await block(activities, block_input(sandbox))
    assert caught.value.non_retryable is False
    [made] = store_of(sandbox).all_events()  # Google created it; the activity never heard

    retried = await block(activities, block_input(sandbox))

    assert retried.created is False and retried.event_id == made["id"]
    assert len(store_of(sandbox).all_events()) == 1


async def test_a_new_assignment_round_is_a_new_event(sandbox: RunningSandbox) -> None:
    activities = GoogleCalendarActivities(connector_of(sandbox))
    first = await block(activities, block_input(sandbox, seq=1))
    second = await block(activities, block_input(sandbox, seq=2))
    assert second.created is True and second.event_id != first.event_id


async def test_block_deleted_in_the_calendar_is_not_recreated(sandbox: RunningSandbox) -> None:
    activities = GoogleCalendarActivities(connector_of(sandbox))
    first = await block(activities, block_input(sandbox))
    async with httpx.AsyncClient() as http:
        gone = await http.delete(f"{api(sandbox)}/{first.event_id}", headers=bearer())
    assert gone.status_code == 204

    again = await block(activities, block_input(sandbox))
    assert again.created is False and again.html_link is None
    assert "deleted" in again.detail
    assert store_of(sandbox).all_events() == []


async def test_end_before_start_blocks_the_start_day(sandbox: RunningSandbox) -> None:
    result = await block(
        GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox, start=END, end=START)
    )
    event = store_of(sandbox).live("priya@harborfinch.example")[result.event_id]
    assert event["start"] == {"date": "2026-12-04"} and event["end"] == {"date": "2026-12-05"}
    assert "end date was before the start" in result.detail


async def test_a_fixed_calendar_id_is_used_as_is(sandbox: RunningSandbox) -> None:
    shared = "dispatch-team@group.calendar.google.com"
    connector = connector_of(sandbox).model_copy(update={"calendar_id": shared})
    result = await block(GoogleCalendarActivities(connector), block_input(sandbox))
    assert result.event_id in store_of(sandbox).live(shared)


def service_account_key(path: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "sandbox",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "dispatch@sandbox.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


async def test_service_account_impersonates_staff_and_invites_them(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    key_file = service_account_key(tmp_path / "sa.json", f"{sandbox.base_url}{TOKEN_PATH}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    activities = GoogleCalendarActivities(connector_of(sandbox))

    first = await block(activities, block_input(sandbox, seq=1))
    second = await block(activities, block_input(sandbox, seq=2))

    assert first.created and second.created
    assert store_of(sandbox).dump()["delegated_subjects"] == ["priya@harborfinch.example"]
    event = store_of(sandbox).live("priya@harborfinch.example")[first.event_id]
    assert event["attendees"] == [
        {
            "email": "priya@harborfinch.example",
            "displayName": "Priya Nair",
            "responseStatus": "accepted",
        }
    ]
    [grant] = sandbox.requests(prefix=TOKEN_PATH)  # the token is reused for the second block
    assert "jwt-bearer" in str(grant["body"])
    assert [r["status"] for r in sandbox.requests(prefix="/google/calendar")] == [200, 200]


async def test_wrong_token_is_a_non_retryable_auth_error(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_TEST_WRONG_TOKEN", "ya29.not-the-right-token")
    activities = GoogleCalendarActivities(
        connector_of(sandbox), access_token_env="GOOGLE_TEST_WRONG_TOKEN"
    )
    with pytest.raises(ApplicationError) as caught:
        await block(activities, block_input(sandbox))
    # google-auth answers Google's 401 by trying to refresh; a bare token cannot, so it raises.
    assert caught.value.non_retryable is True
    assert caught.value.type == "GoogleCalendarAuthError"
    assert "ya29" not in caught.value.message
    assert [r["status"] for r in sandbox.requests(prefix="/google")] == [401]
    assert store_of(sandbox).all_events() == []


async def test_no_credentials_is_a_non_retryable_config_error(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ApplicationError) as caught:
        await block(GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox))
    assert caught.value.non_retryable is True
    assert caught.value.type == "CalendarConfigError"
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert sandbox.requests(prefix="/google") == []


async def test_unreadable_service_account_file_is_a_config_error(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    broken = tmp_path / "sa.json"
    broken.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(broken))
    with pytest.raises(ApplicationError) as caught:
        await block(GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox))
    assert caught.value.non_retryable is True and caught.value.type == "CalendarConfigError"


async def test_429_is_retryable_after_the_vendors_delay(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {
            "route": "/google/calendar/v3/calendars/",
            "method": "POST",
            "status": 429,
            "retry_after": 7,
            "count": 1,
        },
    )
    activities = GoogleCalendarActivities(connector_of(sandbox))
    with pytest.raises(ApplicationError) as caught:
        await block(activities, block_input(sandbox))
    assert caught.value.non_retryable is False
    assert caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=7)
    # The next attempt (the fault has retired) succeeds.
    assert (await block(activities, block_input(sandbox))).created is True


async def test_403_rate_limit_is_retryable(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/google/", "status": 403, "retry_after": 2, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await block(GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox))
    assert caught.value.non_retryable is False
    assert caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=2)


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    set_faults(sandbox, {"route": "/google/", "status": status, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await block(GoogleCalendarActivities(connector_of(sandbox)), block_input(sandbox))
    assert caught.value.non_retryable is False
    assert caught.value.type == "ServerError"
    assert "backendError" in caught.value.message


async def test_server_error_on_the_recovery_get_is_retryable(sandbox: RunningSandbox) -> None:
    activities = GoogleCalendarActivities(connector_of(sandbox))
    await block(activities, block_input(sandbox))
    set_faults(sandbox, {"route": "/google/", "method": "GET", "status": 500, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await block(activities, block_input(sandbox))
    assert caught.value.non_retryable is False


async def test_unreachable_endpoint_is_a_retryable_transport_error(sandbox: RunningSandbox) -> None:
    from tests.sandbox_server import free_port

    dead = GoogleCalendarConnector(
        kind="google", api_endpoint=f"http://127.0.0.1:{free_port()}/calendar/v3/"
    )
    with pytest.raises(ApplicationError) as caught:
        await block(GoogleCalendarActivities(dead), block_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "TransportError"


# --- calendar_remove -------------------------------------------------------------------------


def remove_input(sandbox: RunningSandbox, seq: int = 1) -> CalendarRemoveInput:
    return CalendarRemoveInput(
        workflow_id=WORKFLOW_ID,
        event_key=f"{WORKFLOW_ID}:preparer:{seq}",
        staff=staff_ref(sandbox),
        time_zone="America/New_York",
    )


async def remove(
    activities: GoogleCalendarActivities, input: CalendarRemoveInput
) -> CalendarRemoveResult:
    result: CalendarRemoveResult = await ActivityEnvironment().run(activities.remove, input)
    return result


async def test_remove_deletes_the_block_made_for_the_key(sandbox: RunningSandbox) -> None:
    activities = GoogleCalendarActivities(connector_of(sandbox))
    await block(activities, block_input(sandbox, seq=1))
    kept = await block(activities, block_input(sandbox, seq=2))

    result = await remove(activities, remove_input(sandbox, seq=1))
    assert result.removed is True and result.detail == "deleted"
    assert list(store_of(sandbox).live("priya@harborfinch.example")) == [kept.event_id]
    delete = sandbox.requests(prefix="/google", method="DELETE")[0]
    expected = event_id_for(f"{WORKFLOW_ID}:preparer:1")
    assert delete["path"].endswith(f"/calendars/priya@harborfinch.example/events/{expected}")
    assert "sendUpdates=none" in str(delete["query"]) and delete["status"] == 204


async def test_remove_is_idempotent(sandbox: RunningSandbox) -> None:
    activities = GoogleCalendarActivities(connector_of(sandbox))
    await block(activities, block_input(sandbox))
    await remove(activities, remove_input(sandbox))
    again = await remove(activities, remove_input(sandbox))  # 410: deleted before
    never = await remove(activities, remove_input(sandbox, seq=7))  # 404: never made
    assert (again.removed, again.detail) == (True, "already gone")
    assert (never.removed, never.detail) == (True, "already gone")
    statuses = [r["status"] for r in sandbox.requests(prefix="/google", method="DELETE")]
    assert statuses == [204, 410, 404]


async def test_remove_rate_limited_is_retryable(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {"route": "/google/", "method": "DELETE", "status": 429, "retry_after": 6, "count": 1},
    )
    activities = GoogleCalendarActivities(connector_of(sandbox))
    with pytest.raises(ApplicationError) as caught:
        await remove(activities, remove_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=6)


async def test_remove_with_a_wrong_token_fails_for_good(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_TEST_WRONG_TOKEN", "ya29.not-the-right-token")
    activities = GoogleCalendarActivities(
        connector_of(sandbox), access_token_env="GOOGLE_TEST_WRONG_TOKEN"
    )
    with pytest.raises(ApplicationError) as caught:
        await remove(activities, remove_input(sandbox))
    assert caught.value.non_retryable is True


# --- the emulator's contract -----------------------------------------------------------------


def test_missing_or_wrong_token_is_401_auth_error(sandbox: RunningSandbox) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        answer = httpx.post(api(sandbox), json=all_day(), headers=headers)
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert error["code"] == 401
        assert error["errors"][0]["reason"] == "authError"
    assert store_of(sandbox).all_events() == []


@pytest.mark.parametrize("bad_id", ["abcdW", "ABCDE", "abcdw", "abc-1", "abcd", "a" * 1025])
def test_client_ids_outside_base32hex_are_rejected(sandbox: RunningSandbox, bad_id: str) -> None:
    answer = httpx.post(api(sandbox), json=all_day(bad_id), headers=bearer())
    assert answer.status_code == 400
    assert answer.json()["error"]["errors"][0]["reason"] == "invalidParameter"


@pytest.mark.parametrize("good_id", ["abcde", "0123456789abcdefghijklmnopqrstuv", "v" * 1024])
def test_client_ids_in_base32hex_are_accepted(sandbox: RunningSandbox, good_id: str) -> None:
    answer = httpx.post(
        api(sandbox), json=all_day(good_id), params={"alt": "json"}, headers=bearer()
    )
    assert answer.status_code == 200
    event = answer.json()
    assert event["id"] == good_id and event["kind"] == "calendar#event"
    for field in ("etag", "status", "htmlLink", "created", "updated", "iCalUID", "sequence"):
        assert field in event


def test_duplicate_id_is_409_duplicate(sandbox: RunningSandbox) -> None:
    assert httpx.post(api(sandbox), json=all_day("dup01"), headers=bearer()).status_code == 200
    again = httpx.post(api(sandbox), json=all_day("dup01"), headers=bearer())
    assert again.status_code == 409
    error = again.json()["error"]["errors"][0]
    assert error["reason"] == "duplicate"
    assert error["message"] == "The requested identifier already exists."


def test_deleted_id_stays_reserved(sandbox: RunningSandbox) -> None:
    assert httpx.post(api(sandbox), json=all_day("gone1"), headers=bearer()).status_code == 200
    assert httpx.delete(f"{api(sandbox)}/gone1", headers=bearer()).status_code == 204

    reinsert = httpx.post(api(sandbox), json=all_day("gone1"), headers=bearer())
    assert reinsert.status_code == 409
    assert reinsert.json()["error"]["errors"][0]["reason"] == "duplicate"
    for method in ("GET", "DELETE"):
        answer = httpx.request(method, f"{api(sandbox)}/gone1", headers=bearer())
        assert answer.status_code == 410
        assert answer.json()["error"]["errors"][0]["reason"] == "deleted"


def test_unknown_event_and_unknown_calendar_are_404(sandbox: RunningSandbox) -> None:
    assert httpx.get(f"{api(sandbox)}/nosuchevent", headers=bearer()).status_code == 404
    stranger = httpx.post(
        api(sandbox, "someone@elsewhere.example"), json=all_day(), headers=bearer()
    )
    assert stranger.status_code == 404
    assert stranger.json()["error"]["errors"][0]["reason"] == "notFound"


def test_empty_time_range_is_rejected(sandbox: RunningSandbox) -> None:
    answer = httpx.post(api(sandbox), json=all_day(days=0), headers=bearer())
    assert answer.status_code == 400
    assert answer.json()["error"]["errors"][0]["reason"] == "timeRangeEmpty"


def test_patch_merges_and_put_replaces(sandbox: RunningSandbox) -> None:
    body = {**all_day("edit1"), "description": "keep me", "location": "Office"}
    created = httpx.post(api(sandbox), json=body, headers=bearer()).json()

    patched = httpx.patch(f"{api(sandbox)}/edit1", json={"summary": "renamed"}, headers=bearer())
    assert patched.status_code == 200
    assert patched.json()["summary"] == "renamed" and patched.json()["description"] == "keep me"
    assert patched.json()["etag"] != created["etag"]
    assert patched.json()["sequence"] == 0

    moved = {"start": {"date": "2026-12-02"}, "end": {"date": "2026-12-03"}, "summary": "moved"}
    put = httpx.put(f"{api(sandbox)}/edit1", json=moved, headers=bearer())
    assert put.status_code == 200
    assert "description" not in put.json() and "location" not in put.json()
    assert put.json()["sequence"] == 1
    assert put.json()["created"] == created["created"] and put.json()["id"] == "edit1"


def test_list_filters_by_window_and_pages(sandbox: RunningSandbox) -> None:
    for n, day in enumerate(
        [date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3), date(2026, 12, 20)]
    ):
        httpx.post(api(sandbox), json=all_day(f"list{n}", day), headers=bearer()).raise_for_status()
    params = {
        "timeMin": "2026-12-01T00:00:00Z",
        "timeMax": "2026-12-10T00:00:00Z",
        "maxResults": "2",
        "alt": "json",
    }
    first = httpx.get(api(sandbox), params=params, headers=bearer()).json()
    assert first["kind"] == "calendar#events"
    assert [e["id"] for e in first["items"]] == ["list0", "list1"]
    second = httpx.get(
        api(sandbox), params={**params, "pageToken": first["nextPageToken"]}, headers=bearer()
    ).json()
    assert [e["id"] for e in second["items"]] == ["list2"]
    assert "nextPageToken" not in second

    # timeMin bounds the event's end (exclusive): a block ending at midnight Dec 2 is out.
    later = httpx.get(
        api(sandbox), params={"timeMin": "2026-12-02T00:00:00Z"}, headers=bearer()
    ).json()
    assert [e["id"] for e in later["items"]] == ["list1", "list2", "list3"]


def test_injected_faults_use_googles_envelope(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/google/", "status": 429, "retry_after": 3, "count": 1})
    answer = httpx.post(api(sandbox), json=all_day(), headers=bearer())
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    error = answer.json()["error"]
    assert error["code"] == 429 and error["errors"][0]["reason"] == "rateLimitExceeded"
