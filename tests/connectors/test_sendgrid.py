"""SendGrid: the emulator holds the v3 mail/send contract, and the email activity uses it.

The activity runs the real ``sendgrid`` client (urllib) against the sandbox, so the URL join,
headers, body shape and error mapping are all exercised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sendgrid import SendGridAPIClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sendgrid_mail import KEY_ARG, FeedPace, SendGridActivities, confirmation_key
from app.secrets_demo import demo_secret
from dispatch.config import SendGridConnector
from dispatch.models import (
    ClientConfirmationInput,
    EmailResult,
    EngagementSummary,
    StaffNotice,
    StaffRef,
)
from sandbox.sendgrid import ACTIVITY_RATE_LIMIT, MailStore
from tests.connectors.landed import landed
from tests.sandbox_server import RunningSandbox, free_port

KEY_ENV = "SENDGRID_API_KEY"
TEST_ACTIVITY_ID = ActivityEnvironment.default_info().activity_id
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
    input = confirmation(sandbox)
    result = await send(SendGridActivities(connector_of(sandbox)), input)

    [stored] = store_of(sandbox).messages
    assert result.sent is True
    assert result.message_id == stored["message_id"] and result.message_id
    message = stored["request"]
    assert message["personalizations"] == [
        {
            "to": [{"email": "eze.household@mail.example", "name": "Ngozi Eze"}],
            "custom_args": {
                "dispatch_id": WORKFLOW_ID,
                "dispatch_key": confirmation_key(input, TEST_ACTIVITY_ID),
            },
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


# --- once per meaning ------------------------------------------------------------------------


class Attempts:
    """Runs an activity attempt after attempt, carrying heartbeat details across attempts the
    way Temporal does (the last details recorded stay until a later attempt records new ones)."""

    def __init__(self, activity_id: str = TEST_ACTIVITY_ID) -> None:
        self.activity_id = activity_id
        self.attempt = 0
        self.details: list[Any] = []
        self.recorded: list[dict[str, Any]] = []

    async def run(self, fn: Callable[[Any], Awaitable[EmailResult]], arg: Any) -> EmailResult:
        self.attempt += 1
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            env.info,
            attempt=self.attempt,
            activity_id=self.activity_id,
            heartbeat_details=list(self.details),
        )
        env.on_heartbeat = self._heartbeat
        result: EmailResult = await env.run(fn, arg)
        return result

    def _heartbeat(self, *details: Any) -> None:
        self.details = list(details)
        self.recorded.extend(d for d in details if isinstance(d, dict))


def notice(sandbox: RunningSandbox) -> StaffNotice:
    summary = confirmation(sandbox).summary
    return StaffNotice(
        kind="past_due",
        recipient=person(sandbox, "grace"),
        summary=summary,
        subject="Past due: Individual tax return (1040)",
        lines=["The engagement passed its due date and is not complete."],
        key=f"{WORKFLOW_ID}:past_due:2027-04-15",
    )


def slow_client(sandbox: RunningSandbox, timeout: float = 0.3) -> SendGridAPIClient:
    client = SendGridAPIClient(api_key=demo_secret(KEY_ENV), host=connector_of(sandbox).base_url)
    client.client.timeout = timeout
    return client


def lookups(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return sandbox.requests(prefix="/sendgrid/v3/messages", method="GET")


async def retry_after_a_lost_answer(
    sandbox: RunningSandbox, activities: SendGridActivities
) -> ApplicationError:
    """Attempt 1 sends and its answer is lost (a 502 from a gateway); attempt 2's error."""
    set_faults(sandbox, {"route": "/sendgrid/v3/mail/send", "phase": "after", "status": 502})
    attempts = Attempts()
    with pytest.raises(ApplicationError):
        await attempts.run(activities.client_confirmation, confirmation(sandbox))
    with pytest.raises(ApplicationError) as caught:
        await attempts.run(activities.client_confirmation, confirmation(sandbox))
    assert len(store_of(sandbox).messages) == 1
    return caught.value


def test_feed_pace_allows_six_lookups_a_minute_then_spreads_the_rest() -> None:
    now = [1000.0]
    pace = FeedPace(clock=lambda: now[0], jitter=lambda: 0.5)
    assert [pace.claim() for _ in range(6)] == [0.0] * 6
    now[0] += 20
    assert pace.claim() == 40 + 30  # the oldest frees in 40 s, plus half a window of jitter
    now[0] += 41
    assert pace.claim() == 0.0


async def test_a_lookup_over_the_workers_pace_does_not_call_sendgrid(
    sandbox: RunningSandbox,
) -> None:
    pace = FeedPace(limit=1, clock=lambda: 0.0, jitter=lambda: 0.0)
    assert pace.claim() == 0.0  # another lookup of this worker used the minute's slot

    error = await retry_after_a_lost_answer(
        sandbox, SendGridActivities(connector_of(sandbox), feed_pace=pace)
    )

    assert error.type == "RateLimited" and error.next_retry_delay == timedelta(seconds=60)
    assert lookups(sandbox) == []


async def test_the_key_is_one_per_meaning(sandbox: RunningSandbox) -> None:
    input = confirmation(sandbox)
    assert confirmation_key(input, "7") == confirmation_key(input.model_copy(), "7")
    other_assignee = input.model_copy(update={"assignee": person(sandbox, "grace")})
    assert (
        len(
            {
                confirmation_key(input, "7"),
                confirmation_key(input, "12"),  # a later confirmation of the same engagement
                confirmation_key(other_assignee, "7"),
            }
        )
        == 3
    )


async def test_intent_is_recorded_before_the_mail_leaves(sandbox: RunningSandbox) -> None:
    seen_before_send: list[int] = []
    attempts = Attempts()

    def heartbeat(*details: Any) -> None:
        seen_before_send.append(len(store_of(sandbox).messages))
        attempts.details = list(details)

    input = confirmation(sandbox)
    env = ActivityEnvironment()
    env.on_heartbeat = heartbeat
    await env.run(SendGridActivities(connector_of(sandbox)).client_confirmation, input)

    assert seen_before_send == [0]  # recorded once, while nothing was queued yet
    [details] = attempts.details
    assert details["state"] == "sending" and details["attempt"] == 1
    assert details["key"] == confirmation_key(input, TEST_ACTIVITY_ID)


@pytest.mark.parametrize(
    "lost",
    [
        {"delay_ms": 1500},  # the answer comes after the client gave up
        {"status": 502},  # a gateway lost SendGrid's 202
        {"status": 504},
    ],
    ids=["timeout", "502", "504"],
)
async def test_a_lost_acknowledgement_sends_one_mail(
    sandbox: RunningSandbox, lost: dict[str, Any]
) -> None:
    set_faults(sandbox, {"route": "/sendgrid/v3/mail/send", "phase": "after", "count": 1, **lost})
    impatient = SendGridActivities(connector_of(sandbox), client=slow_client(sandbox))
    attempts = Attempts()
    input = confirmation(sandbox)

    with pytest.raises(ApplicationError) as caught:
        await attempts.run(impatient.client_confirmation, input)
    assert caught.value.non_retryable is False
    await landed(lambda: store_of(sandbox).messages)
    [queued] = store_of(sandbox).messages  # SendGrid took it; the activity never heard

    activities = SendGridActivities(connector_of(sandbox))
    retried = await attempts.run(activities.client_confirmation, input)

    assert retried.sent is True and retried.message_id == queued["message_id"]
    assert "already sent by attempt 1" in retried.detail
    assert len(store_of(sandbox).messages) == 1
    [lookup] = lookups(sandbox)
    assert lookup["status"] == 200
    assert (
        KEY_ARG in lookup["query"] and confirmation_key(input, TEST_ACTIVITY_ID) in lookup["query"]
    )


async def test_a_staff_notice_with_a_lost_acknowledgement_is_sent_once(
    sandbox: RunningSandbox,
) -> None:
    set_faults(sandbox, {"route": "/sendgrid/v3/mail/send", "phase": "after", "status": 502})
    activities = SendGridActivities(connector_of(sandbox))
    attempts = Attempts()
    with pytest.raises(ApplicationError):
        await attempts.run(activities.staff_notice, notice(sandbox))
    for _ in range(2):  # the fault stays: every later attempt must still find the first mail
        result = await attempts.run(activities.staff_notice, notice(sandbox))
        assert (
            result.sent is True and result.message_id == store_of(sandbox).messages[0]["message_id"]
        )
    assert len(store_of(sandbox).messages) == 1


async def test_a_clear_refusal_is_retried_without_asking_the_feed(
    sandbox: RunningSandbox,
) -> None:
    set_faults(sandbox, {"route": "/sendgrid/v3/mail/send", "status": 429, "count": 1})
    activities = SendGridActivities(connector_of(sandbox))
    attempts = Attempts()
    with pytest.raises(ApplicationError):
        await attempts.run(activities.client_confirmation, confirmation(sandbox))
    assert attempts.details[0]["state"] == "refused"

    result = await attempts.run(activities.client_confirmation, confirmation(sandbox))

    assert result.sent is True and len(store_of(sandbox).messages) == 1
    assert lookups(sandbox) == []


async def test_an_attempt_that_never_sent_is_sent_by_the_retry(sandbox: RunningSandbox) -> None:
    # Attempt 1 recorded its intent and died before the mail left: the feed has nothing, and
    # the intent is older than the settle time, so the retry sends.
    activities = SendGridActivities(connector_of(sandbox), feed_settle=timedelta(seconds=0))
    input = confirmation(sandbox)
    attempts = Attempts()
    attempts.details = [
        {
            "key": confirmation_key(input, TEST_ACTIVITY_ID),
            "state": "sending",
            "at": time.time(),
            "attempt": 1,
        }
    ]
    attempts.attempt = 1

    result = await attempts.run(activities.client_confirmation, input)

    assert result.sent is True and len(store_of(sandbox).messages) == 1
    assert len(lookups(sandbox)) == 1


async def test_a_retry_waits_until_the_feed_can_show_the_earlier_send(
    sandbox: RunningSandbox,
) -> None:
    store_of(sandbox).activity_lag = 60  # SendGrid's feed is behind
    activities = SendGridActivities(connector_of(sandbox), feed_settle=timedelta(seconds=30))

    error = await retry_after_a_lost_answer(sandbox, activities)

    assert error.type == "AwaitingEmailActivity" and not error.non_retryable
    assert error.next_retry_delay is not None
    assert timedelta(seconds=25) < error.next_retry_delay <= timedelta(seconds=30)


async def test_without_the_activity_api_a_lost_answer_is_not_sent_again(
    sandbox: RunningSandbox,
) -> None:
    store_of(sandbox).activity_enabled = False  # the account has no Email Activity add-on
    activities = SendGridActivities(connector_of(sandbox))

    error = await retry_after_a_lost_answer(sandbox, activities)

    assert error.type == "EmailDeliveryUnknown" and error.non_retryable
    assert "may have sent" in error.message and "403" in error.message
    # The worker remembers: the next doubtful send is settled without asking SendGrid again.
    store_of(sandbox).messages.clear()
    again = await retry_after_a_lost_answer(sandbox, activities)
    assert again.type == "EmailDeliveryUnknown" and "403" in again.message
    assert len(lookups(sandbox)) == 1


async def test_a_rate_limited_lookup_waits_for_the_feeds_reset(sandbox: RunningSandbox) -> None:
    for _ in range(ACTIVITY_RATE_LIMIT):
        assert activity_query(sandbox, "").status_code == 200

    error = await retry_after_a_lost_answer(sandbox, SendGridActivities(connector_of(sandbox)))

    assert error.type == "RateLimited" and error.next_retry_delay is not None
    assert timedelta(seconds=1) <= error.next_retry_delay <= timedelta(seconds=61)


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


# --- the Email Activity API ------------------------------------------------------------------


def activity_query(
    sandbox: RunningSandbox, query: str | None, key: str | None = None, **params: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or demo_secret(KEY_ENV)}"}
    if query is not None:
        params["query"] = query
    return httpx.get(f"{sandbox.base_url}/sendgrid/v3/messages", headers=headers, params=params)


def tagged(key: str, *recipients: str) -> dict[str, Any]:
    body = valid()
    body["personalizations"] = [
        {"to": [{"email": r} for r in recipients], "custom_args": {"dispatch_key": key}}
    ]
    return body


def test_activity_needs_the_api_key(sandbox: RunningSandbox) -> None:
    assert activity_query(sandbox, "", key="SG.other").status_code == 401
    answer = httpx.get(f"{sandbox.base_url}/sendgrid/v3/messages")
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["message"] == "authorization required"


def test_activity_finds_a_message_by_its_custom_argument(sandbox: RunningSandbox) -> None:
    sent = mail_send(sandbox, tagged("k-1", "a@example.com", "b@example.com"))
    mail_send(sandbox, tagged("k-2", "c@example.com"))

    answer = activity_query(sandbox, "unique_args['dispatch_key']=\"k-1\"")

    assert answer.status_code == 200
    rows = answer.json()["messages"]
    assert sorted(r["to_email"] for r in rows) == ["a@example.com", "b@example.com"]
    for row in rows:
        assert set(row) == {
            "from_email",
            "msg_id",
            "subject",
            "to_email",
            "status",
            "opens_count",
            "clicks_count",
            "last_event_time",
        }
        assert row["msg_id"].startswith(sent.headers["x-message-id"] + ".")
        assert row["from_email"] == "dispatch@example.com" and row["subject"] == "Hi"
        assert row["status"] == "processed"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["last_event_time"])
    assert len({r["msg_id"] for r in rows}) == 2
    nothing = activity_query(sandbox, "unique_args['dispatch_key']=\"k-3\"")
    assert nothing.json() == {"messages": []}


def test_activity_clauses_combine_with_and(sandbox: RunningSandbox) -> None:
    sent = mail_send(sandbox, tagged("k-1", "a@example.com", "b@example.com"))
    prefix = sent.headers["x-message-id"]
    query = f"(msg_id LIKE '{prefix}%') AND to_email=\"b@example.com\""
    [row] = activity_query(sandbox, query).json()["messages"]
    assert row["to_email"] == "b@example.com"


def test_activity_is_newest_first_and_limited(sandbox: RunningSandbox) -> None:
    for i in range(3):
        mail_send(sandbox, tagged("same", f"p{i}@example.com"))
    answer = activity_query(sandbox, "unique_args['dispatch_key']=\"same\"", limit="2")
    assert [r["to_email"] for r in answer.json()["messages"]] == [
        "p2@example.com",
        "p1@example.com",
    ]


@pytest.mark.parametrize(
    ("query", "params", "says"),
    [
        ('bad_field="x"', {}, "invalid syntax: 'bad_field' is not a known field"),
        ('to_email="a@example.com" OR to_email="b@example.com"', {}, "AND only"),
        ("to_email", {}, "invalid syntax"),
        ('to_email="x"', {"limit": "0"}, "limit"),
        ('to_email="x"', {"limit": "1001"}, "limit"),
    ],
)
def test_activity_refuses_what_it_does_not_understand(
    sandbox: RunningSandbox, query: str, params: dict[str, str], says: str
) -> None:
    answer = activity_query(sandbox, query, **params)
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert says in error["message"]


def test_activity_allows_six_queries_a_minute(sandbox: RunningSandbox) -> None:
    answers = [activity_query(sandbox, "") for _ in range(ACTIVITY_RATE_LIMIT + 1)]
    assert [a.status_code for a in answers] == [200] * ACTIVITY_RATE_LIMIT + [429]
    assert answers[0].headers["x-ratelimit-limit"] == str(ACTIVITY_RATE_LIMIT)
    assert answers[-2].headers["x-ratelimit-remaining"] == "0"
    limited = answers[-1]
    assert limited.json() == {"errors": [{"message": "too many requests"}]}
    reset = int(limited.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 61


def test_activity_without_the_add_on_is_403(sandbox: RunningSandbox) -> None:
    store_of(sandbox).activity_enabled = False
    answer = activity_query(sandbox, "")
    assert answer.status_code == 403
    assert answer.json() == {"errors": [{"field": None, "message": "access forbidden"}]}


def test_activity_shows_a_message_after_the_feed_lag(sandbox: RunningSandbox) -> None:
    store_of(sandbox).activity_lag = 0.5
    mail_send(sandbox, tagged("k-1", "a@example.com"))
    assert activity_query(sandbox, "").json()["messages"] == []
    time.sleep(0.6)
    assert len(activity_query(sandbox, "").json()["messages"]) == 1


def test_lost_answer_fault_lets_the_mail_through(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/sendgrid/v3/mail/send", "phase": "after", "status": 502})
    answer = mail_send(sandbox, valid())
    assert answer.status_code == 502
    assert len(store_of(sandbox).messages) == 1
    [request] = sandbox.requests(prefix="/sendgrid/v3/mail/send")
    assert request["status"] == 502 and "the emulator answered 202" in str(request["fault"])
