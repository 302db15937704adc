"""The signed CRM webhook: signing helpers, the emulator's contract, and the CRM activity."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.crm import WebhookCrmActivities
from activities.signing import dispatch_signature_header, hmac_sha256_hex, verify_hex_signature
from app.secrets_demo import demo_secret
from dispatch.config import WebhookCrm
from dispatch.models import CrmLogInput, CrmLogResult, DispatchStatus, EngagementSummary, StaffRef
from sandbox.crm import CrmStore
from tests.connectors.landed import landed
from tests.sandbox_server import RunningSandbox, free_port

SECRET_ENV = "CRM_WEBHOOK_SECRET"
WORKFLOW_ID = "engagement-karbon-4kTq9bQ2"
FOX = b"The quick brown fox jumps over the lazy dog"
FOX_HMAC = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
"""HMAC-SHA256 with key "key" (the well-known test vector)."""


@pytest.fixture(autouse=True)
def crm_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, demo_secret(SECRET_ENV))


# --- signing helpers -------------------------------------------------------------------------


def test_hmac_matches_the_known_vector() -> None:
    assert hmac_sha256_hex("key", FOX) == FOX_HMAC
    assert dispatch_signature_header("key", FOX) == f"sha256={FOX_HMAC}"


def test_verify_accepts_either_case_and_prefix_only_when_asked() -> None:
    assert verify_hex_signature("key", FOX, FOX_HMAC)
    assert verify_hex_signature("key", FOX, FOX_HMAC.upper())
    assert not verify_hex_signature("key", FOX, f"sha256={FOX_HMAC}")
    assert verify_hex_signature("key", FOX, f"sha256={FOX_HMAC}", allow_prefix=True)
    assert verify_hex_signature("key", FOX, f"SHA256={FOX_HMAC}", allow_prefix=True)
    assert verify_hex_signature("key", FOX, FOX_HMAC, allow_prefix=True)


@pytest.mark.parametrize(
    ("secret", "body", "given"),
    [
        ("other", FOX, FOX_HMAC),  # wrong key
        ("key", FOX + b" ", FOX_HMAC),  # body changed by one byte
        ("key", FOX, FOX_HMAC[:-1]),  # truncated
        ("key", FOX, ""),  # missing
        ("", FOX, hmac_sha256_hex("", FOX)),  # an unset secret never verifies
        ("key", FOX, FOX_HMAC[:-1] + "é"),  # non-ASCII header
    ],
)
def test_verify_rejects(secret: str, body: bytes, given: str) -> None:
    assert not verify_hex_signature(secret, body, given, allow_prefix=True)


# --- the activity ----------------------------------------------------------------------------


def connector_of(sandbox: RunningSandbox, **changes: Any) -> WebhookCrm:
    crm = sandbox.config.connectors.crm
    assert isinstance(crm, WebhookCrm)
    return crm.model_copy(update=changes) if changes else crm


def store_of(sandbox: RunningSandbox) -> CrmStore:
    store: CrmStore = sandbox.ctx.stores["crm"]
    return store


def person(sandbox: RunningSandbox, staff_id: str) -> StaffRef:
    m = sandbox.config.staff_by_id(staff_id)
    return StaffRef(id=m.id, name=m.name, email=m.email, tier=m.tier)


def log_input(sandbox: RunningSandbox, key: str = f"{WORKFLOW_ID}:crm-assigned:1") -> CrmLogInput:
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
    return CrmLogInput(
        idempotency_key=key,
        event="assigned",
        summary=summary,
        status=DispatchStatus.ASSIGNED,
        preparer=person(sandbox, "priya"),
        reviewer=person(sandbox, "mia"),
        preparer_hours=12,
        reviewer_hours=4.2,
        occurred_at=datetime(2026, 11, 30, 14, 5, tzinfo=UTC),
    )


async def crm_log(activities: WebhookCrmActivities, input: CrmLogInput) -> CrmLogResult:
    result: CrmLogResult = await ActivityEnvironment().run(activities.log, input)
    return result


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    answer = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)})
    answer.raise_for_status()


async def test_assignment_is_logged_as_a_signed_record(sandbox: RunningSandbox) -> None:
    result = await crm_log(WebhookCrmActivities(connector_of(sandbox)), log_input(sandbox))

    assert result.logged is True and "rec_" in result.detail
    [stored] = store_of(sandbox).records
    assert stored["idempotency_key"] == f"{WORKFLOW_ID}:crm-assigned:1"
    assert stored["record"] == {
        "event": "assigned",
        "occurred_at": "2026-11-30T14:05:00+00:00",
        "engagement": {
            "workflow_id": WORKFLOW_ID,
            "title": "2026 S-Corp return",
            "client_id": "cl-bayside-dental",
            "client_name": "Bayside Dental Group",
            "service_type": "s_corp_return",
            "due_date": "2026-12-11",
            "estimated_hours": 12.0,
            "pm_url": "https://app2.karbonhq.com/harbor-finch/work/4kTq9bQ2",
        },
        "status": "Assigned",
        "preparer": {"id": "priya", "name": "Priya Nair", "email": "priya@harborfinch.example"},
        "reviewer": {"id": "mia", "name": "Mia Chen", "email": "mia@harborfinch.example"},
        "hours": {"preparer": 12.0, "reviewer": 4.2},
    }
    [request] = sandbox.requests(prefix="/crm")
    assert request["status"] == 201
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["content-type"] == "application/json"
    # The signature covers the exact bytes that were sent.
    expected = hmac.new(
        demo_secret(SECRET_ENV).encode(), str(request["body"]).encode(), hashlib.sha256
    ).hexdigest()
    assert headers["x-dispatch-signature"] == f"sha256={expected}"


async def test_same_idempotency_key_logs_once(sandbox: RunningSandbox) -> None:
    activities = WebhookCrmActivities(connector_of(sandbox))
    first = await crm_log(activities, log_input(sandbox))
    second = await crm_log(activities, log_input(sandbox))

    assert first.logged and second.logged
    assert "already logged" in second.detail
    assert len(store_of(sandbox).records) == 1
    assert [r["status"] for r in sandbox.requests(prefix="/crm")] == [201, 200]
    third = await crm_log(activities, log_input(sandbox, key=f"{WORKFLOW_ID}:crm-assigned:2"))
    assert "already" not in third.detail and len(store_of(sandbox).records) == 2


async def test_injected_http_client_is_used(sandbox: RunningSandbox) -> None:
    seen: list[str] = []

    async def note(request: httpx.Request) -> None:
        seen.append(request.headers["Idempotency-Key"])

    async with httpx.AsyncClient(event_hooks={"request": [note]}) as http:
        result = await crm_log(
            WebhookCrmActivities(connector_of(sandbox), http=http), log_input(sandbox)
        )
    assert result.logged and seen == [f"{WORKFLOW_ID}:crm-assigned:1"]


async def test_wrong_secret_is_non_retryable(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TEST_WRONG_SECRET", "not-the-shared-secret")
    activities = WebhookCrmActivities(connector_of(sandbox, secret_env="CRM_TEST_WRONG_SECRET"))
    with pytest.raises(ApplicationError) as caught:
        await crm_log(activities, log_input(sandbox))
    assert caught.value.non_retryable is True
    assert "401" in caught.value.message and "bad signature" in caught.value.message
    assert store_of(sandbox).records == []


async def test_missing_secret_is_a_config_error(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ApplicationError) as caught:
        await crm_log(WebhookCrmActivities(connector_of(sandbox)), log_input(sandbox))
    assert caught.value.non_retryable is True and caught.value.type == "CrmConfigError"
    assert SECRET_ENV in caught.value.message
    assert sandbox.requests(prefix="/crm") == []


async def test_429_is_retryable_after_the_receivers_delay(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/crm/records", "status": 429, "retry_after": 5, "count": 1})
    activities = WebhookCrmActivities(connector_of(sandbox))
    with pytest.raises(ApplicationError) as caught:
        await crm_log(activities, log_input(sandbox))
    assert caught.value.non_retryable is False
    assert caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=5)
    assert (await crm_log(activities, log_input(sandbox))).logged
    assert len(store_of(sandbox).records) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    set_faults(sandbox, {"route": "/crm/", "status": status, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await crm_log(WebhookCrmActivities(connector_of(sandbox)), log_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "ServerError"


async def test_unreachable_receiver_is_a_retryable_transport_error(sandbox: RunningSandbox) -> None:
    dead = connector_of(sandbox, url=f"http://127.0.0.1:{free_port()}/crm/records")
    with pytest.raises(ApplicationError) as caught:
        await crm_log(WebhookCrmActivities(dead), log_input(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "TransportError"


async def test_timeout_is_a_retryable_transport_error(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/crm/", "delay_ms": 1500, "count": 1})
    async with httpx.AsyncClient(timeout=0.3) as http:
        with pytest.raises(ApplicationError) as caught:
            await crm_log(
                WebhookCrmActivities(connector_of(sandbox), http=http), log_input(sandbox)
            )
    assert caught.value.non_retryable is False and caught.value.type == "TransportError"
    # The server still finishes the abandoned request; let it, so it cannot land in a later test.
    await settled(sandbox, "/crm/")


@pytest.mark.parametrize(
    "lost",
    [{"status": 502}, {"delay_ms": 1500}],
    ids=["502 after storing", "answer after the client gave up"],
)
async def test_a_retry_after_a_lost_answer_logs_one_record(
    sandbox: RunningSandbox, lost: dict[str, Any]
) -> None:
    set_faults(sandbox, {"route": "/crm/records", "phase": "after", "count": 1, **lost})
    async with httpx.AsyncClient(timeout=0.3) as impatient:
        with pytest.raises(ApplicationError) as caught:
            await crm_log(
                WebhookCrmActivities(connector_of(sandbox), http=impatient), log_input(sandbox)
            )
    assert caught.value.non_retryable is False
    await landed(lambda: store_of(sandbox).records)
    [stored] = store_of(sandbox).records  # the receiver kept it; the activity never heard

    retried = await crm_log(WebhookCrmActivities(connector_of(sandbox)), log_input(sandbox))

    assert retried.logged and retried.detail == f"already logged as {stored['id']}"
    assert len(store_of(sandbox).records) == 1


async def settled(sandbox: RunningSandbox, prefix: str) -> None:
    for _ in range(100):
        if all(r["status"] for r in sandbox.requests(prefix=prefix)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the delayed request never finished")


# --- the emulator's contract -----------------------------------------------------------------


def post_record(
    sandbox: RunningSandbox,
    payload: Any,
    *,
    key: str | None = "k-1",
    secret: str | None = None,
    signature: str | None = None,
) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Dispatch-Signature": signature
        if signature is not None
        else dispatch_signature_header(secret or demo_secret(SECRET_ENV), body),
    }
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{sandbox.base_url}/crm/records", content=body, headers=headers)


GOOD = {"event": "assigned", "engagement": {"workflow_id": WORKFLOW_ID}}


@pytest.mark.parametrize("signature", ["", "sha256=00", FOX_HMAC, "sha256=" + "0" * 64])
def test_bad_or_missing_signature_is_401(sandbox: RunningSandbox, signature: str) -> None:
    answer = post_record(sandbox, GOOD, signature=signature)
    assert answer.status_code == 401 and answer.json() == {"error": "bad signature"}
    assert store_of(sandbox).records == []


def test_signature_with_another_secret_is_401(sandbox: RunningSandbox) -> None:
    assert post_record(sandbox, GOOD, secret="someone-else").status_code == 401


def test_missing_idempotency_key_is_400(sandbox: RunningSandbox) -> None:
    answer = post_record(sandbox, GOOD, key=None)
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json()["error"]
    assert store_of(sandbox).records == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"engagement": {"workflow_id": WORKFLOW_ID}}, "event"),
        ({"event": "assigned"}, "engagement.workflow_id"),
        ({"event": "assigned", "engagement": {"workflow_id": ""}}, "engagement.workflow_id"),
    ],
)
def test_missing_fields_are_422_naming_the_field(
    sandbox: RunningSandbox, payload: dict[str, Any], field: str
) -> None:
    answer = post_record(sandbox, payload)
    assert answer.status_code == 422 and answer.json()["field"] == field
    assert store_of(sandbox).records == []


def test_repeat_key_returns_the_first_record(sandbox: RunningSandbox) -> None:
    first = post_record(sandbox, GOOD, key="same")
    again = post_record(sandbox, GOOD, key="same")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    listed = httpx.get(f"{sandbox.base_url}/crm/records").json()["records"]
    assert [r["id"] for r in listed] == [first.json()["id"]]
