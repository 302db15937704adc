"""Slack: the emulator holds the Web API contract, and the chat activities use it.

The activities run the real ``slack_sdk`` AsyncWebClient (aiohttp) against the sandbox, so URL
joining, GET/form/JSON encoding, ``ok:false`` handling and the retry decisions are all exercised.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.slack import (
    ACCEPT_ACTION,
    ASSIGNMENT_EVENT,
    PARTNER_EVENT,
    REASSIGN_ACTION,
    SlackActivities,
    assignment_blocks,
)
from app.secrets_demo import demo_secret
from dispatch.config import SlackConnector
from dispatch.models import (
    AssignmentNotice,
    BlockReason,
    CandidateScore,
    ChatResult,
    EngagementSummary,
    MessageRef,
    PartnerReviewNotice,
    Role,
    StaffRef,
)
from sandbox.slack import SlackStore, dm_channel_id, response_url_for
from tests.connectors.landed import landed
from tests.sandbox_server import RunningSandbox, free_port

TOKEN_ENV = "SLACK_BOT_TOKEN"
WORKFLOW_ID = "engagement-karbon-4kTz9QwP"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@pytest.fixture(autouse=True)
def slack_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The activities read the bot token from the environment, like a deployed worker."""
    monkeypatch.setenv(TOKEN_ENV, demo_secret(TOKEN_ENV))


def connector_of(sandbox: RunningSandbox) -> SlackConnector:
    chat = sandbox.config.connectors.chat
    assert isinstance(chat, SlackConnector)
    return chat


def activities_of(sandbox: RunningSandbox, client: AsyncWebClient | None = None) -> SlackActivities:
    return SlackActivities(sandbox.config, connector_of(sandbox), client)


def store_of(sandbox: RunningSandbox) -> SlackStore:
    store: SlackStore = sandbox.ctx.stores["slack"]
    return store


def person(sandbox: RunningSandbox, staff_id: str, *, with_slack_id: bool = True) -> StaffRef:
    m = sandbox.config.staff_by_id(staff_id)
    return StaffRef(
        id=m.id,
        name=m.name,
        email=m.email,
        tier=m.tier,
        slack_id=m.slack_id if with_slack_id else None,
    )


def summary(**changes: Any) -> EngagementSummary:
    base = EngagementSummary(
        workflow_id=WORKFLOW_ID,
        title="2026 1040 - Eze household",
        client_id="cl-okafor-family",
        client_name="Chidi & Ngozi Eze",
        service_type="individual_tax",
        service_name="Individual tax return (1040)",
        due_date=date(2027, 4, 15),
        estimated_hours=4.5,
        pm_url="https://app2.karbonhq.com/harbor-finch#/work/4kTz9QwP",
        documents_needed=["W-2 and 1099 forms", "Prior-year return"],
    )
    return base.model_copy(update=changes)


def notice(
    sandbox: RunningSandbox,
    *,
    role: Role = Role.PREPARER,
    recipient: StaffRef | None = None,
    **changes: Any,
) -> AssignmentNotice:
    preparer, reviewer = person(sandbox, "noah"), person(sandbox, "grace")
    fields: dict[str, Any] = {
        "summary": summary(),
        "role": role,
        "recipient": recipient or (preparer if role is Role.PREPARER else reviewer),
        "preparer": preparer,
        "reviewer": reviewer,
        "estimated_completion": date(2027, 3, 12),
    }
    return AssignmentNotice(**{**fields, **changes})


async def notify(
    activities: SlackActivities, input: AssignmentNotice, *, attempt: int = 1
) -> ChatResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    result: ChatResult = await env.run(activities.notify_assignment, input)
    return result


async def notify_partner(activities: SlackActivities, input: PartnerReviewNotice) -> ChatResult:
    result: ChatResult = await ActivityEnvironment().run(activities.notify_partner, input)
    return result


def posts(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return [
        json.loads(str(r["body"])) for r in sandbox.requests(prefix="/slack/api/chat.postMessage")
    ]


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    httpx.post(
        f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)}
    ).raise_for_status()


def call(
    sandbox: RunningSandbox,
    method: str,
    *,
    token: str | None = None,
    json_body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    verb: str = "POST",
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token or demo_secret(TOKEN_ENV)}"}
    answer = httpx.request(
        verb,
        f"{sandbox.base_url}/slack/api/{method}",
        headers=headers,
        json=json_body,
        data=form,
        params=params,
    )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [el for b in blocks if b["type"] == "actions" for el in b["elements"]]


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


# --- assignment DM ---------------------------------------------------------------------------


async def test_assignment_dm_has_both_buttons_and_carries_no_pii(sandbox: RunningSandbox) -> None:
    result = await notify(activities_of(sandbox), notice(sandbox))

    channel = dm_channel_id("U10NOAH")
    [opened] = sandbox.requests(prefix="/slack/api/conversations.open")
    assert parse_qs(str(opened["query"]) or str(opened["body"])) == {"users": ["U10NOAH"]}
    [stored] = store_of(sandbox).messages[channel]
    assert result == ChatResult(
        delivered=True, message=MessageRef(channel=channel, ts=stored["ts"])
    )

    found = buttons(stored["blocks"])
    assert [(b["action_id"], b.get("style"), b["text"]["text"]) for b in found] == [
        (ACCEPT_ACTION, "primary", "Accept"),
        (REASSIGN_ACTION, "danger", "Request reassignment"),
    ]
    assert all(b["value"] == WORKFLOW_ID for b in found)
    assert not any(EMAIL.search(b["value"]) for b in found)
    assert not EMAIL.search(all_text(stored["blocks"]) + stored["text"])
    [actions] = [b for b in stored["blocks"] if b["type"] == "actions"]
    assert WORKFLOW_ID in actions["block_id"] and "preparer" in actions["block_id"]
    assert stored["text"]  # notification fallback
    assert stored["metadata"] == {
        "event_type": ASSIGNMENT_EVENT,
        "event_payload": {
            "workflow_id": WORKFLOW_ID,
            "role": "preparer",
            "digest": stored["metadata"]["event_payload"]["digest"],
        },
    }
    # chat.postMessage goes out as JSON, with the bot token as a Bearer header.
    [request] = sandbox.requests(prefix="/slack/api/chat.postMessage")
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["content-type"].startswith("application/json")


async def test_assignment_says_what_when_who_and_what_is_missing(sandbox: RunningSandbox) -> None:
    manual = "TaxDome has no write API: set the assignee on the job in TaxDome."
    input = notice(sandbox, role=Role.REVIEWER, manual_pm_update=manual)
    await notify(activities_of(sandbox), input)

    [stored] = store_of(sandbox).messages[dm_channel_id("U07GRACE")]
    text = all_text(stored["blocks"])
    for expected in (
        "Chidi &amp; Ngozi Eze",
        "Individual tax return (1040)",
        "Thu Apr 15, 2027",
        "4.5 h",
        "Reviewer",
        "Fri Mar 12, 2027",
        "Prepared by Noah Patel, then reviewed by Grace Kim",
        "W-2 and 1099 forms",
        "Prior-year return",
        "https://app2.karbonhq.com/harbor-finch#/work/4kTz9QwP",
        "by hand",
        "TaxDome has no write API",
    ):
        assert expected in text, expected
    assert stored["metadata"]["event_payload"]["role"] == "reviewer"
    assert "Chidi &amp; Ngozi Eze" in stored["text"]


def test_blocks_without_a_reviewer_or_manual_step() -> None:
    noah = StaffRef(
        id="noah",
        name="Noah Patel",
        email="noah@harborfinch.example",
        tier="staff",
        slack_id="U10NOAH",
    )
    blocks = assignment_blocks(
        AssignmentNotice(
            summary=summary(documents_needed=[]), recipient=noah, role=Role.PREPARER, preparer=noah
        )
    )
    text = all_text(blocks)
    assert "then reviewed by" not in text and "by hand" not in text
    assert "None outstanding" in text
    assert {b["action_id"] for b in buttons(blocks)} == {ACCEPT_ACTION, REASSIGN_ACTION}


async def test_recipient_without_slack_id_is_found_by_email(sandbox: RunningSandbox) -> None:
    noah = person(sandbox, "noah", with_slack_id=False)
    result = await notify(activities_of(sandbox), notice(sandbox, recipient=noah))

    [lookup] = sandbox.requests(prefix="/slack/api/users.lookupByEmail")
    assert lookup["method"] == "GET"
    assert parse_qs(str(lookup["query"])) == {"email": ["noah@harborfinch.example"]}
    assert result.delivered and result.message is not None
    assert result.message.channel == dm_channel_id("U10NOAH")
    assert len(store_of(sandbox).messages[dm_channel_id("U10NOAH")]) == 1


async def test_recipient_with_no_slack_account_is_not_a_failure(sandbox: RunningSandbox) -> None:
    stranger = StaffRef(id="temp", name="Temp Worker", email="temp@agency.example", tier="staff")
    result = await notify(activities_of(sandbox), notice(sandbox, recipient=stranger))

    assert result == ChatResult(delivered=False, detail="no Slack user for the assignee")
    assert posts(sandbox) == []
    assert sandbox.requests(prefix="/slack/api/conversations.open") == []


async def test_previous_message_is_updated_not_reposted(sandbox: RunningSandbox) -> None:
    activities = activities_of(sandbox)
    first = await notify(activities, notice(sandbox))
    assert first.message is not None

    later = notice(sandbox, previous=first.message, estimated_completion=date(2027, 3, 19))
    second = await notify(activities, later)

    assert second.message == first.message
    assert len(posts(sandbox)) == 1
    assert len(sandbox.requests(prefix="/slack/api/chat.update")) == 1
    [stored] = store_of(sandbox).messages[first.message.channel]
    assert "Fri Mar 19, 2027" in all_text(stored["blocks"])
    assert [u["ts"] for u in store_of(sandbox).updates] == [first.message.ts]


async def test_previous_message_gone_posts_a_fresh_one(sandbox: RunningSandbox) -> None:
    gone = MessageRef(channel=dm_channel_id("U10NOAH"), ts="1600000000.000100")
    call(sandbox, "conversations.open", form={"users": "U10NOAH"})
    result = await notify(activities_of(sandbox), notice(sandbox, previous=gone))
    assert result.delivered and result.message is not None and result.message.ts != gone.ts
    assert len(posts(sandbox)) == 1


async def test_retry_after_lost_answer_does_not_double_post(sandbox: RunningSandbox) -> None:
    activities = activities_of(sandbox)
    first = await notify(activities, notice(sandbox))
    # The reviewer's notice of the same engagement sits in another DM; the preparer gets a
    # newer message in between: the retry must still find its own message by metadata.
    call(sandbox, "chat.postMessage", json_body={"channel": "U10NOAH", "text": "hello"})

    retried = await notify(activities, notice(sandbox), attempt=2)

    assert retried.message == first.message
    assert len(posts(sandbox)) == 2  # the first post and the unrelated "hello"
    [history] = sandbox.requests(prefix="/slack/api/conversations.history")
    assert "include_all_metadata=1" in str(history["query"])


async def test_retry_posts_when_the_first_attempt_never_did(sandbox: RunningSandbox) -> None:
    activities = activities_of(sandbox)
    await notify(activities, notice(sandbox, role=Role.REVIEWER))  # a different message
    result = await notify(activities, notice(sandbox), attempt=2)

    assert result.delivered and result.message is not None
    assert len(sandbox.requests(prefix="/slack/api/conversations.history")) == 1
    assert len(store_of(sandbox).messages[dm_channel_id("U10NOAH")]) == 1


@pytest.mark.parametrize(
    "lost",
    [{"status": 503}, {"delay_ms": 2500}],
    ids=["503 after posting", "answer after the client gave up"],
)
async def test_a_retry_after_a_lost_acknowledgement_posts_nothing_new(
    sandbox: RunningSandbox, lost: dict[str, Any]
) -> None:
    call(sandbox, "conversations.open", form={"users": "U10NOAH"})
    set_faults(
        sandbox,
        {"route": "/slack/api/chat.postMessage", "phase": "after", "count": 1, **lost},
    )
    client = AsyncWebClient(
        token=demo_secret(TOKEN_ENV), base_url=connector_of(sandbox).base_url, timeout=1
    )
    with pytest.raises(ApplicationError) as caught:
        await notify(activities_of(sandbox, client), notice(sandbox))
    assert caught.value.non_retryable is False
    await landed(lambda: store_of(sandbox).messages.get(dm_channel_id("U10NOAH"), []))
    [posted] = store_of(sandbox).messages[dm_channel_id("U10NOAH")]  # Slack has it

    retried = await notify(activities_of(sandbox), notice(sandbox), attempt=2)

    assert retried.delivered and retried.message is not None
    assert retried.message.ts == posted["ts"]
    assert len(store_of(sandbox).messages[dm_channel_id("U10NOAH")]) == 1
    assert len(posts(sandbox)) == 1


async def test_first_attempt_does_not_read_history(sandbox: RunningSandbox) -> None:
    await notify(activities_of(sandbox), notice(sandbox))
    assert sandbox.requests(prefix="/slack/api/conversations.history") == []


# --- errors ----------------------------------------------------------------------------------


async def test_rate_limit_is_retryable_with_slacks_delay(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {"route": "/slack/api/chat.postMessage", "status": 429, "retry_after": 7, "count": 1},
    )
    with pytest.raises(ApplicationError) as caught:
        await notify(activities_of(sandbox), notice(sandbox))

    err = caught.value
    assert err.type == "RateLimited" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=7)
    # The SDK did not sleep and retry on its own: Temporal owns that.
    [request] = sandbox.requests(prefix="/slack/api/chat.postMessage")
    assert request["status"] == 429


async def test_server_error_is_retryable(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/slack/api/conversations.open", "status": 503, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await notify(activities_of(sandbox), notice(sandbox))
    assert caught.value.type == "ServerError" and not caught.value.non_retryable
    assert len(sandbox.requests(prefix="/slack/api/conversations.open")) == 1


async def test_invalid_auth_is_final(sandbox: RunningSandbox) -> None:
    client = AsyncWebClient(
        token="xoxb-not-the-right-token", base_url=connector_of(sandbox).base_url
    )
    with pytest.raises(ApplicationError) as caught:
        await notify(activities_of(sandbox, client), notice(sandbox))

    err = caught.value
    assert err.non_retryable and err.type == "SlackRejected"
    assert "invalid_auth" in str(err) and list(err.details) == ["invalid_auth"]
    assert "xoxb" not in str(err)


async def test_unknown_channel_on_update_is_final(sandbox: RunningSandbox) -> None:
    bogus = MessageRef(channel="C0NOPE", ts="1700000000.000100")
    with pytest.raises(ApplicationError) as caught:
        await notify(activities_of(sandbox), notice(sandbox, previous=bogus))
    assert caught.value.non_retryable and "channel_not_found" in str(caught.value)


async def test_unreachable_slack_is_retryable(sandbox: RunningSandbox) -> None:
    client = AsyncWebClient(
        token=demo_secret(TOKEN_ENV), base_url=f"http://127.0.0.1:{free_port()}/slack/api/"
    )
    with pytest.raises(ApplicationError) as caught:
        await notify(activities_of(sandbox, client), notice(sandbox))
    assert caught.value.type == "TransportError" and not caught.value.non_retryable


# --- partner review --------------------------------------------------------------------------


def candidate(
    staff_id: str, name: str, tier: str, hours: float, blocked: list[BlockReason], why: str | None
) -> CandidateScore:
    return CandidateScore(
        staff_id=staff_id,
        name=name,
        tier=tier,
        eligible=False,
        blocked=blocked,
        why_blocked=why,
        available_hours=hours,
    )


async def test_partner_sees_candidates_and_why_each_was_blocked(sandbox: RunningSandbox) -> None:
    candidates = [
        candidate(
            "lucas",
            "Lucas Weber",
            "senior",
            12.5,
            [BlockReason.CAPACITY],
            "capacity: needs 30 h, has 12.5 h",
        ),
        candidate(
            "priya", "Priya Nair", "senior", 31.0, [BlockReason.SKILL], "skill: missing audit_prep"
        ),
        candidate("noah", "Noah Patel", "staff", 20.0, [BlockReason.TIER, BlockReason.SKILL], None),
    ]
    input = PartnerReviewNotice(
        summary=summary(service_name="Audit preparation"),
        partner=person(sandbox, "ava"),
        reason="No preparer fits: every audit_prep senior is full",
        candidates=candidates,
    )
    result = await notify_partner(activities_of(sandbox), input)

    assert result.delivered and result.message is not None
    assert result.message.channel == dm_channel_id("U01AVA")
    [stored] = store_of(sandbox).messages[dm_channel_id("U01AVA")]
    text = all_text(stored["blocks"])
    for expected in (
        "every audit_prep senior is full",
        "Lucas Weber",
        "senior",
        "12.5 h",
        "capacity: needs 30 h, has 12.5 h",
        "skill: missing audit_prep",
        "tier, skill",
    ):
        assert expected in text, expected
    [picker, *found] = buttons(stored["blocks"])
    # A date picker first: moving the due date is the partner's other way out.
    assert picker["type"] == "datepicker" and picker["action_id"] == "partner_due"
    assert picker["initial_date"] == input.summary.due_date.isoformat()
    due_block = next(b for b in stored["blocks"] if picker in b.get("elements", []))
    assert due_block["block_id"] == f"partner:{WORKFLOW_ID}:due"
    # Lucas is blocked only by capacity: his button books him anyway, and says so.
    assert [b["action_id"] for b in found] == [
        "partner_force:lucas",
        "partner_assign:priya",
        "partner_assign:noah",
    ]
    assert found[0]["text"]["text"] == "Assign Lucas Weber anyway"
    assert found[0]["style"] == "danger"
    assert [b["value"] for b in found] == [
        f"{WORKFLOW_ID}|lucas",
        f"{WORKFLOW_ID}|priya",
        f"{WORKFLOW_ID}|noah",
    ]
    assert not EMAIL.search(text)
    assert stored["metadata"]["event_type"] == PARTNER_EVENT
    assert stored["metadata"]["event_payload"]["workflow_id"] == WORKFLOW_ID


async def test_partner_candidates_are_capped_by_policy(sandbox: RunningSandbox) -> None:
    many = [
        candidate(f"s{i}", f"Person {i}", "staff", 1.0, [BlockReason.CAPACITY], None)
        for i in range(12)
    ]
    input = PartnerReviewNotice(
        summary=summary(),
        partner=person(sandbox, "ava"),
        reason="No preparer fits",
        candidates=many,
    )
    await notify_partner(activities_of(sandbox), input)
    [stored] = store_of(sandbox).messages[dm_channel_id("U01AVA")]
    assign = [b for b in buttons(stored["blocks"]) if b["type"] == "button"]
    assert len(assign) == sandbox.config.policy.partner_candidates_shown


# --- the emulator's contract -----------------------------------------------------------------


def test_auth_is_checked_like_slack(sandbox: RunningSandbox) -> None:
    url = f"{sandbox.base_url}/slack/api/auth.test"
    missing = httpx.post(url)
    assert missing.status_code == 200 and missing.json() == {"ok": False, "error": "not_authed"}
    wrong = call(sandbox, "auth.test", token="xoxb-wrong")
    assert wrong == {"ok": False, "error": "invalid_auth"}
    ok = call(sandbox, "auth.test")
    assert ok["ok"] and {"url", "team", "user", "team_id", "user_id", "bot_id"} <= set(ok)
    via_form = httpx.post(url, data={"token": demo_secret(TOKEN_ENV)}).json()
    assert via_form["ok"] is True


def test_invalid_blocks_are_rejected(sandbox: RunningSandbox) -> None:
    duplicate = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "same",
                    "text": {"type": "plain_text", "text": "A"},
                },
                {
                    "type": "button",
                    "action_id": "same",
                    "text": {"type": "plain_text", "text": "B"},
                },
            ],
        }
    ]
    answer = call(
        sandbox,
        "chat.postMessage",
        json_body={"channel": "U10NOAH", "text": "x", "blocks": duplicate},
    )
    assert answer["ok"] is False and answer["error"] == "invalid_blocks"
    assert any(
        "/blocks/0/elements/1/action_id" in m for m in answer["response_metadata"]["messages"]
    )

    long_text = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "a",
                    "value": "v",
                    "text": {"type": "plain_text", "text": "x" * 76},
                }
            ],
        }
    ]
    too_many = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": f"a{i}",
                    "text": {"type": "plain_text", "text": "x"},
                }
                for i in range(26)
            ],
        }
    ]
    big_value = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "a",
                    "value": "v" * 2001,
                    "text": {"type": "plain_text", "text": "x"},
                }
            ],
        }
    ]
    long_action = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "a" * 256,
                    "text": {"type": "plain_text", "text": "x"},
                }
            ],
        }
    ]
    for blocks in (long_text, too_many, big_value, long_action):
        answer = call(
            sandbox,
            "chat.postMessage",
            json_body={"channel": "U10NOAH", "text": "x", "blocks": blocks},
        )
        assert answer["error"] == "invalid_blocks"
    assert store_of(sandbox).messages.get(dm_channel_id("U10NOAH"), []) == []


def test_post_rules(sandbox: RunningSandbox) -> None:
    assert call(sandbox, "chat.postMessage", json_body={"channel": "U10NOAH"})["error"] == "no_text"
    assert (
        call(sandbox, "chat.postMessage", json_body={"channel": "C0NOPE", "text": "x"})["error"]
        == "channel_not_found"
    )
    # Form-encoded posts carry blocks and metadata as JSON strings.
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    first = call(
        sandbox,
        "chat.postMessage",
        form={
            "channel": "U10NOAH",
            "text": "one",
            "blocks": json.dumps(blocks),
            "metadata": json.dumps({"event_type": "t", "event_payload": {"k": "v"}}),
        },
    )
    second = call(
        sandbox, "chat.postMessage", json_body={"channel": first["channel"], "text": "two"}
    )
    assert first["ok"] and first["channel"] == dm_channel_id("U10NOAH")
    assert re.fullmatch(r"\d{10}\.\d{6}", first["ts"])
    assert float(second["ts"]) > float(first["ts"])

    history = call(
        sandbox,
        "conversations.history",
        verb="GET",
        params={"channel": first["channel"], "limit": "10"},
    )
    assert [m["text"] for m in history["messages"]] == ["two", "one"]  # newest first
    assert "metadata" not in history["messages"][1]
    with_meta = call(
        sandbox,
        "conversations.history",
        verb="GET",
        params={"channel": first["channel"], "include_all_metadata": "true"},
    )
    assert with_meta["messages"][1]["metadata"] == {"event_type": "t", "event_payload": {"k": "v"}}
    paged = call(
        sandbox,
        "conversations.history",
        verb="GET",
        params={"channel": first["channel"], "limit": "1"},
    )
    assert paged["has_more"] is True and paged["response_metadata"]["next_cursor"]

    assert (
        call(
            sandbox,
            "chat.update",
            json_body={"channel": first["channel"], "ts": "1.000001", "text": "x"},
        )["error"]
        == "message_not_found"
    )
    updated = call(
        sandbox,
        "chat.update",
        json_body={"channel": first["channel"], "ts": first["ts"], "text": "edited"},
    )
    assert updated["ok"] and updated["ts"] == first["ts"] and updated["text"] == "edited"


def test_users_and_dms(sandbox: RunningSandbox) -> None:
    found = call(
        sandbox, "users.lookupByEmail", verb="GET", params={"email": "Grace@HarborFinch.example"}
    )
    assert found["user"]["id"] == "U07GRACE"
    assert (
        call(sandbox, "users.lookupByEmail", form={"email": "nobody@harborfinch.example"})["error"]
        == "users_not_found"
    )
    # users.lookupByEmail reads form/query arguments only: a JSON body is not read.
    assert (
        call(sandbox, "users.lookupByEmail", json_body={"email": "grace@harborfinch.example"})[
            "error"
        ]
        == "invalid_arguments"
    )
    assert (
        call(sandbox, "users.info", verb="GET", params={"user": "U07GRACE"})["user"]["real_name"]
        == "Grace Kim"
    )

    opened = call(sandbox, "conversations.open", form={"users": "U07GRACE"})
    again = call(sandbox, "conversations.open", form={"users": "U07GRACE"})
    assert opened == {"ok": True, "channel": {"id": "D07GRACE"}}
    assert again["channel"] == {"id": "D07GRACE"} and again["already_open"] is True
    assert (
        call(sandbox, "conversations.open", form={"users": "U99NOBODY"})["error"]
        == "user_not_found"
    )
    assert call(sandbox, "conversations.open", form={})["error"] == "users_list_not_supplied"

    ephemeral = call(
        sandbox,
        "chat.postEphemeral",
        json_body={"channel": "D07GRACE", "user": "U07GRACE", "text": "only you"},
    )
    assert ephemeral["ok"] and ephemeral["message_ts"]
    assert (
        call(
            sandbox,
            "chat.postEphemeral",
            json_body={"channel": "D07GRACE", "user": "U10NOAH", "text": "x"},
        )["error"]
        == "user_not_in_channel"
    )


def test_response_url_sink(sandbox: RunningSandbox) -> None:
    posted = call(sandbox, "chat.postMessage", json_body={"channel": "U10NOAH", "text": "ask"})
    url = response_url_for(sandbox.ctx, "tok-1", channel=posted["channel"], message_ts=posted["ts"])
    assert url == f"{sandbox.base_url}/slack/response/tok-1"
    answer = httpx.post(url, json={"replace_original": True, "text": "Accepted by Noah"})
    assert answer.status_code == 200
    store = store_of(sandbox)
    assert store.response_posts["tok-1"] == [{"replace_original": True, "text": "Accepted by Noah"}]
    [message] = store.messages[posted["channel"]]
    assert message["text"] == "Accepted by Noah"
    dumped = httpx.get(f"{sandbox.base_url}/_sandbox/state/slack").json()
    assert dumped["response_posts"]["tok-1"][0]["text"] == "Accepted by Noah"


def test_faults_look_like_slack(sandbox: RunningSandbox) -> None:
    set_faults(
        sandbox,
        {"route": "/slack/api/auth.test", "status": 429, "retry_after": 3, "count": 1},
        {"route": "/slack/api/auth.test", "status": 502, "count": 1},
    )
    headers = {"Authorization": f"Bearer {demo_secret(TOKEN_ENV)}"}
    limited = httpx.post(f"{sandbox.base_url}/slack/api/auth.test", headers=headers)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json() == {"ok": False, "error": "ratelimited"}
    upstream = httpx.post(f"{sandbox.base_url}/slack/api/auth.test", headers=headers)
    assert upstream.status_code == 502
    assert upstream.headers["content-type"].startswith("text/plain")
    assert upstream.text == "upstream error"
