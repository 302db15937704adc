"""SendGrid: the emulator holds the v3 mail/send contract, and the email activity uses it.

The activity runs the real ``sendgrid`` client (urllib) against the sandbox, so the URL join,
headers, body shape and error mapping are all exercised.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sendgrid import SendGridAPIClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sendgrid_mail import SendGridActivities
from dispatch.config import SendGridConnector
from dispatch.models import ClientConfirmationInput, EmailResult, EngagementSummary, StaffRef
from dispatch.secrets_demo import demo_secret
from sandbox.sendgrid import MailStore
from tests.sandbox_server import RunningSandbox, free_port

KEY_ENV = "SENDGRID_API_KEY"
WORKFLOW_ID = "engagement-relay-taxdome-77"
DOCUMENTS = ["W-2 and 1099 forms", "Prior-year return", "Receipts <for> donations & gifts"]


@pytest.fixture(autouse=True)
def sendgrid_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, demo_secret(KEY_ENV))


def connector_of(sandbox: RunningSandbox, **changes: Any) -> SendGridConnector:
    email = sandbox.config.connectors.email
    assert isinstance(email, SendGridConnector)
    return email.model_copy(update=changes) if changes else email


def store_of(sandbox: RunningSandbox) -> MailStore:
    store: MailStore = sandbox.ctx.stores["sendgrid"]
    return store


def person(sandbox: RunningSandbox, staff_id: str) -> StaffRef:
    m = sandbox.config.staff_by_id(staff_id)
    return StaffRef(id=m.id, name=m.name, email=m.email, tier=m.tier)


def confirmation(
    sandbox: RunningSandbox,
    *,
    reviewer: bool = True,
    to_email: str = "eze.household@mail.example",
    documents: list[str] | None = None,
) -> ClientConfirmationInput:
    summary = EngagementSummary(
        workflow_id=WORKFLOW_ID,
        title="2026 individual return <Eze household>",
        client_id="cl-okafor-family",
        client_name="Chidi & Ngozi Eze",
        service_type="individual_tax",
        service_name="Individual tax return (1040)",
        due_date=date(2027, 4, 15),
        estimated_hours=4,
        scope_summary="Federal & state returns; <b>Schedule C</b> for the side business",
        documents_needed=DOCUMENTS if documents is None else documents,
    )
    return ClientConfirmationInput(
        summary=summary,
        to_email=to_email,
        to_name="Ngozi Eze",
        assignee=person(sandbox, "noah"),
        reviewer=person(sandbox, "grace") if reviewer else None,
        estimated_completion=date(2027, 3, 12),
        upload_link="https://portal.harborfinch.example/upload/cl-okafor-family?x=1&y=2",
        firm_name="Harbor & Finch CPAs",
    )


async def send(activities: SendGridActivities, input: ClientConfirmationInput) -> EmailResult:
    result: EmailResult = await ActivityEnvironment().run(activities.client_confirmation, input)
    return result


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    answer = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)})
    answer.raise_for_status()


def content_of(message: dict[str, Any]) -> tuple[str, str]:
    [plain, html] = message["content"]
    assert plain["type"] == "text/plain" and html["type"] == "text/html"
    return str(plain["value"]), str(html["value"])


# --- the activity ----------------------------------------------------------------------------


async def test_confirmation_is_queued_with_the_message_id(sandbox: RunningSandbox) -> None:
    result = await send(SendGridActivities(connector_of(sandbox)), confirmation(sandbox))

    [stored] = store_of(sandbox).messages
    assert result.sent is True
    assert result.message_id == stored["message_id"] and result.message_id
    message = stored["request"]
    assert message["personalizations"] == [
        {
            "to": [{"email": "eze.household@mail.example", "name": "Ngozi Eze"}],
            "custom_args": {"dispatch_id": WORKFLOW_ID},
        }
    ]
    assert message["from"] == {
        "email": "dispatch@harborfinch.example",
        "name": "Harbor & Finch CPAs",
    }
    assert message["reply_to"] == {"email": "noah@harborfinch.example", "name": "Noah Patel"}
    assert message["subject"] == "Your Individual tax return (1040) is scheduled"
    assert message["categories"] == ["engagement-confirmation"]

    [request] = sandbox.requests(prefix="/sendgrid")
    assert request["method"] == "POST" and request["path"] == "/sendgrid/v3/mail/send"
    assert request["status"] == 202
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["user-agent"].startswith("sendgrid/")
    assert headers["authorization"] == "<redacted>"


async def test_body_says_who_when_and_what_is_missing(sandbox: RunningSandbox) -> None:
    await send(SendGridActivities(connector_of(sandbox)), confirmation(sandbox))
    plain, html = content_of(store_of(sandbox).messages[0]["request"])

    for body in (plain, html):
        assert "Noah Patel" in body and "noah@harborfinch.example" in body
        assert "Friday, March 12, 2027" in body  # estimated completion
        assert "Grace Kim" in body and "grace@harborfinch.example" in body  # the reviewer
        assert "reviews it" in body
    assert "Federal & state returns; <b>Schedule C</b>" in plain
    assert "2026 individual return <Eze household>" in plain
    for doc in DOCUMENTS:
        assert doc in plain
    assert "https://portal.harborfinch.example/upload/cl-okafor-family?x=1&y=2" in plain
    # the HTML part is escaped throughout
    assert "<b>Schedule C</b>" not in html and "&lt;b&gt;Schedule C&lt;/b&gt;" in html
    assert "Federal &amp; state returns" in html
    assert "2026 individual return &lt;Eze household&gt;" in html
    assert "<li>W-2 and 1099 forms</li>" in html
    assert "<li>Receipts &lt;for&gt; donations &amp; gifts</li>" in html
    assert "<li>Prior-year return</li>" in html
    assert (
        '<a href="https://portal.harborfinch.example/upload/cl-okafor-family?x=1&amp;y=2">' in html
    )
    assert "Harbor &amp; Finch CPAs" in html and "Harbor & Finch" not in html


async def test_without_reviewer_or_documents(sandbox: RunningSandbox) -> None:
    await send(
        SendGridActivities(connector_of(sandbox)),
        confirmation(sandbox, reviewer=False, documents=[]),
    )
    plain, html = content_of(store_of(sandbox).messages[0]["request"])
    assert "reviews it" not in plain and "reviews it" not in html
    assert "We have what we need to start" in plain
    assert "upload/cl-okafor-family" in plain  # the upload link is still offered


async def test_reply_to_follows_the_connector(sandbox: RunningSandbox) -> None:
    await send(
        SendGridActivities(connector_of(sandbox, reply_to_assignee=False)), confirmation(sandbox)
    )
    assert "reply_to" not in store_of(sandbox).messages[0]["request"]


async def test_bad_api_key_is_non_retryable(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDGRID_TEST_WRONG_KEY", "SG.wrong-key.wrong-secret")
    activities = SendGridActivities(connector_of(sandbox, api_key_env="SENDGRID_TEST_WRONG_KEY"))
    with pytest.raises(ApplicationError) as caught:
        await send(activities, confirmation(sandbox))
    assert caught.value.non_retryable is True
    assert caught.value.type == "SendGridRejected"
    assert "401" in caught.value.message and "authorization required" in caught.value.message
    assert "SG.wrong" not in caught.value.message
    assert store_of(sandbox).messages == []


async def test_validation_error_names_the_field(sandbox: RunningSandbox) -> None:
    with pytest.raises(ApplicationError) as caught:
        await send(
            SendGridActivities(connector_of(sandbox)),
            confirmation(sandbox, to_email="not-an-address"),
        )
    assert caught.value.non_retryable is True
    assert "400" in caught.value.message
    assert "personalizations.0.to.0.email" in caught.value.message
    assert store_of(sandbox).messages == []


async def test_bad_sender_is_reported_with_its_field(sandbox: RunningSandbox) -> None:
    with pytest.raises(ApplicationError) as caught:
        await send(
            SendGridActivities(connector_of(sandbox, from_email="dispatch-at-firm")),
            confirmation(sandbox),
        )
    assert caught.value.non_retryable is True and "from.email" in caught.value.message


async def test_429_is_retryable_after_the_vendors_delay(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox, {"route": "/sendgrid/v3/mail/send", "status": 429, "retry_after": 4, "count": 1}
    )
    activities = SendGridActivities(connector_of(sandbox))
    with pytest.raises(ApplicationError) as caught:
        await send(activities, confirmation(sandbox))
    assert caught.value.non_retryable is False
    assert caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=4)
    assert store_of(sandbox).messages == []
    assert (await send(activities, confirmation(sandbox))).sent is True


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    set_faults(sandbox, {"route": "/sendgrid/", "status": status, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await send(SendGridActivities(connector_of(sandbox)), confirmation(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "ServerError"
    assert "internal server error" in caught.value.message


async def test_unreachable_host_is_a_retryable_transport_error(sandbox: RunningSandbox) -> None:
    dead = connector_of(sandbox, base_url=f"http://127.0.0.1:{free_port()}/sendgrid")
    with pytest.raises(ApplicationError) as caught:
        await send(SendGridActivities(dead), confirmation(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "TransportError"


async def test_timeout_is_a_retryable_transport_error(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/sendgrid/", "delay_ms": 1500, "count": 1})
    connector = connector_of(sandbox)
    client = SendGridAPIClient(api_key=demo_secret(KEY_ENV), host=connector.base_url)
    client.client.timeout = 0.3
    with pytest.raises(ApplicationError) as caught:
        await send(SendGridActivities(connector, client=client), confirmation(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "TransportError"
    # The server still finishes the abandoned request; let it, so it cannot land in a later test.
    await settled(sandbox, "/sendgrid/")


async def settled(sandbox: RunningSandbox, prefix: str) -> None:
    for _ in range(100):
        if all(r["status"] for r in sandbox.requests(prefix=prefix)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the delayed request never finished")


# --- the emulator's contract -----------------------------------------------------------------


def mail_send(sandbox: RunningSandbox, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or demo_secret(KEY_ENV)}"}
    return httpx.post(
        f"{sandbox.base_url}/sendgrid/v3/mail/send", headers=headers, content=json.dumps(body)
    )


def valid() -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "dispatch@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}, {"type": "text/html", "value": "<p>x"}],
    }


def fields(answer: httpx.Response) -> list[str | None]:
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    return [e["field"] for e in errors]


def test_missing_key_is_401(sandbox: RunningSandbox) -> None:
    answer = httpx.post(f"{sandbox.base_url}/sendgrid/v3/mail/send", json=valid())
    assert answer.status_code == 401
    assert answer.json() == {
        "errors": [{"message": "authorization required", "field": None, "help": None}]
    }
    assert mail_send(sandbox, valid(), key="SG.other").status_code == 401


def test_valid_mail_is_202_with_message_id(sandbox: RunningSandbox) -> None:
    answer = mail_send(sandbox, valid())
    assert answer.status_code == 202 and answer.content == b""
    assert answer.headers["x-message-id"] == store_of(sandbox).messages[0]["message_id"]


def test_sandbox_mode_validates_without_queueing(sandbox: RunningSandbox) -> None:
    answer = mail_send(sandbox, {**valid(), "mail_settings": {"sandbox_mode": {"enable": True}}})
    assert answer.status_code == 200 and "x-message-id" not in answer.headers
    assert store_of(sandbox).messages == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"personalizations": []}, "personalizations"),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        ({"personalizations": [{"to": [{"email": "nope"}]}]}, "personalizations.0.to.0.email"),
        ({"from": {}}, "from.email"),
        ({"subject": None}, "subject"),
        ({"content": None}, "content"),
        (
            {
                "content": [
                    {"type": "text/html", "value": "<p>x"},
                    {"type": "text/plain", "value": "x"},
                ]
            },
            "content",
        ),
        ({"content": [{"type": "text/plain", "value": ""}]}, "content.0.value"),
        (
            {"personalizations": [{"to": [{"email": "a@example.com"}], "custom_args": {"n": 1}}]},
            "personalizations.0.custom_args.n",
        ),
        ({"custom_args": {"dispatch_id": 7}}, "custom_args.dispatch_id"),
        ({"reply_to": {"email": "nope"}}, "reply_to.email"),
        ({"categories": [f"c{i}" for i in range(11)]}, "categories"),
    ],
)
def test_validation_errors_name_the_field(
    sandbox: RunningSandbox, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**valid(), **change}.items() if v is not None}
    assert field in fields(mail_send(sandbox, body))
    assert store_of(sandbox).messages == []


def test_template_replaces_subject_and_content(sandbox: RunningSandbox) -> None:
    body = {k: v for k, v in valid().items() if k not in ("subject", "content")}
    assert mail_send(sandbox, {**body, "template_id": "d-123"}).status_code == 202


def test_more_than_1000_recipients_is_rejected(sandbox: RunningSandbox) -> None:
    crowd = [{"email": f"p{i}@example.com"} for i in range(1001)]
    body = {**valid(), "personalizations": [{"to": crowd}]}
    assert "personalizations" in fields(mail_send(sandbox, body))


def test_injected_faults_use_sendgrids_shape(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {"route": "/sendgrid/", "status": 429, "retry_after": 1, "count": 1},
        {"route": "/sendgrid/", "status": 500, "count": 1},
    )
    limited = mail_send(sandbox, valid())
    assert limited.status_code == 429
    assert limited.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    failed = mail_send(sandbox, valid())
    assert failed.status_code == 500
    assert failed.json() == {"errors": [{"message": "internal server error"}]}
