"""Every side effect happens once per meaning, through a real worker and Temporal's retries.

The connector activities run on a worker against the session's dev server; the sandbox loses
acknowledgements (the vendor acts, the client never hears) and injects 429/500/503 on every
vendor route. Each activity's effect must be in the vendor's store exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities import intent
from activities.crm import WebhookCrmActivities
from activities.google_calendar import GoogleCalendarActivities, event_id_for
from activities.outlook_calendar import OutlookCalendarActivities
from activities.sendgrid_mail import KEY_ARG, SendGridActivities
from activities.slack import ASSIGNMENT_EVENT, SlackActivities
from sandbox.slack import dm_channel_id
from tests.connectors import test_crm as crm
from tests.connectors import test_google_calendar as google
from tests.connectors import test_outlook_calendar as outlook
from tests.connectors import test_sendgrid as sendgrid
from tests.connectors import test_slack as slack
from tests.connectors.effects_workflow import EffectCall, EffectWorkflow
from tests.sandbox_server import RunningSandbox

VENDORS = "^/(sendgrid|google|graph|crm|slack)/"
N = 12
"""Activities per connector and kind in the chaos test."""
EFFECT_ROUTES = (
    "/sendgrid/v3/mail/send",
    "^/google/calendar/v3/calendars/[^/]+/events$",
    "^/graph/v1.0/users/[^/]+/events$",
    "/crm/records",
    "/slack/api/chat.postMessage",
)
"""The calls that cause each connector's effect."""
LOST_PER_ROUTE = 2


@asynccontextmanager
async def worker(client: Client, activities: Sequence[Callable[..., Any]]) -> AsyncIterator[str]:
    task_queue = f"effects-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[EffectWorkflow],
        activities=list(activities),
        activity_executor=ThreadPoolExecutor(max_workers=8),
    ):
        yield task_queue


async def start(
    client: Client,
    task_queue: str,
    activity_name: str,
    arg: BaseModel,
    *,
    attempt_timeout: float = 10.0,
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        EffectWorkflow.run,
        EffectCall(
            activity=activity_name,
            arg=arg.model_dump(mode="json"),
            attempt_timeout=attempt_timeout,
        ),
        id=f"effect-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue,
    )


async def attempts_of(handle: WorkflowHandle[Any, Any]) -> int:
    """The attempt that completed the activity (only the last one is in the history)."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            return int(event.activity_task_started_event_attributes.attempt)
    raise AssertionError("the activity never started")


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    httpx.post(
        f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)}
    ).raise_for_status()


# --- SendGrid: the acknowledgement of attempt 1 is lost -------------------------------------


@pytest.mark.parametrize(
    ("lost", "attempt_timeout"),
    [
        ({"status": 502}, 10.0),  # a gateway loses SendGrid's 202
        ({"delay_ms": 8000}, 3.0),  # the attempt times out, as when its worker dies
    ],
    ids=["502 after queueing", "attempt timed out after queueing"],
)
async def test_a_confirmation_whose_answer_was_lost_is_sent_once(
    client: Client, sandbox: RunningSandbox, lost: dict[str, Any], attempt_timeout: float
) -> None:
    set_faults(sandbox, {"route": "/sendgrid/v3/mail/send", "phase": "after", "count": 1, **lost})
    email = SendGridActivities(sendgrid.connector_of(sandbox))
    async with worker(client, [email.client_confirmation]) as queue:
        handle = await start(
            client,
            queue,
            "email_client_confirmation",
            sendgrid.confirmation(sandbox),
            attempt_timeout=attempt_timeout,
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)

    [queued] = sendgrid.store_of(sandbox).messages
    assert result["sent"] is True and result["message_id"] == queued["message_id"]
    assert await attempts_of(handle) == 2
    [lookup] = sendgrid.lookups(sandbox)  # attempt 2 asked the activity feed, found it
    assert lookup["status"] == 200


async def test_an_attempt_that_outlived_its_timeout_cannot_record_an_intent(
    client: Client,
) -> None:
    refused: list[str] = []

    @activity.defn(name="late_intent")
    async def late_intent(_: dict[str, Any]) -> dict[str, Any]:
        if activity.info().attempt == 1:
            await asyncio.sleep(2.5)  # past the 1 s start-to-close: attempt 2 is running
            try:
                await intent.record("k", intent.SENDING)
            except ApplicationError as err:
                refused.append(str(err.type))
                raise
            return {"recorded_by": 1}
        return {"recorded_by": activity.info().attempt}

    async with worker(client, [late_intent]) as queue:
        handle = await client.start_workflow(
            EffectWorkflow.run,
            EffectCall(activity="late_intent", arg={}, attempt_timeout=1.0),
            id=f"effect-{uuid.uuid4().hex[:10]}",
            task_queue=queue,
        )
        assert await asyncio.wait_for(handle.result(), timeout=30) == {"recorded_by": 2}
        for _ in range(50):
            if refused:
                break
            await asyncio.sleep(0.1)
    # Temporal refused the stale attempt's record, so it would not have sent anything.
    assert refused == ["IntentNotRecorded"]


# --- chaos: every connector, faults on every vendor route ------------------------------------


async def test_every_connector_makes_each_effect_once_under_vendor_faults(
    client: Client, sandbox: RunningSandbox
) -> None:
    set_faults(
        sandbox,
        # Lost acknowledgements: the vendor acts, the client sees a 502.
        *(
            {
                "route": route,
                "method": "POST",
                "phase": "after",
                "status": 502,
                "rate": 0.2,
                "count": LOST_PER_ROUTE,
            }
            for route in EFFECT_ROUTES
        ),
        # What a busy vendor answers before acting: about 10 % of every call.
        {"route": VENDORS, "status": 429, "retry_after": 1, "rate": 1 / 30},
        {"route": VENDORS, "status": 500, "rate": 1 / 30},
        {"route": VENDORS, "status": 503, "rate": 1 / 30},
    )
    email = SendGridActivities(sendgrid.connector_of(sandbox), feed_settle=timedelta(seconds=1))
    calendar = GoogleCalendarActivities(google.connector_of(sandbox))
    graph = OutlookCalendarActivities(outlook.connector_for(sandbox.base_url))
    records = WebhookCrmActivities(crm.connector_of(sandbox))
    chat = SlackActivities(sandbox.config, slack.connector_of(sandbox))

    async with (
        worker(client, [email.client_confirmation, email.staff_notice, records.log]) as mail_q,
        worker(client, [calendar.block, chat.notify_assignment]) as google_q,
        worker(client, [graph.block]) as graph_q,
    ):
        calls = []
        for i in range(N):
            confirmation = sendgrid.confirmation(sandbox).model_copy(deep=True)
            confirmation.summary.workflow_id = f"engagement-chaos-{i}"
            notice = sendgrid.notice(sandbox).model_copy(update={"key": f"chaos:{i}"})
            chat_notice = slack.notice(sandbox).model_copy(deep=True)
            chat_notice.summary.workflow_id = f"engagement-chaos-{i}"
            calls += [
                (mail_q, "email_client_confirmation", confirmation),
                (mail_q, "email_staff_notice", notice),
                (mail_q, "crm_log", crm.log_input(sandbox, key=f"chaos:{i}")),
                (google_q, "calendar_block", google.block_input(sandbox, seq=i)),
                (google_q, "chat_notify_assignment", chat_notice),
                (graph_q, "calendar_block", outlook.block_input(sandbox, seq=i)),
            ]
        handles = [await start(client, q, name, arg) for q, name, arg in calls]
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=120)

    # The faults did strike: each effect's acknowledgement was lost twice, and about one call
    # in ten was turned away.
    rules = sandbox.ctx.faults.describe()
    assert [r["applied"] for r in rules[: len(EFFECT_ROUTES)]] == [LOST_PER_ROUTE] * len(
        EFFECT_ROUTES
    )
    assert sum(r["applied"] for r in rules[len(EFFECT_ROUTES) :]) >= len(calls) // 10
    mails = Counter(
        m["request"]["personalizations"][0]["custom_args"][KEY_ARG]
        for m in sendgrid.store_of(sandbox).messages
    )
    assert len(mails) == 2 * N and set(mails.values()) == {1}
    assert len(sendgrid.lookups(sandbox)) >= LOST_PER_ROUTE  # found, not sent again
    google_ids = Counter(e["id"] for e in google.store_of(sandbox).all_events())
    expected = {event_id_for(google.block_input(sandbox, seq=i).event_key) for i in range(N)}
    assert set(google_ids) == expected and set(google_ids.values()) == {1}
    assert len(outlook.events_of(sandbox)) == N
    keys = Counter(r["idempotency_key"] for r in crm.store_of(sandbox).records)
    assert len(keys) == N and set(keys.values()) == {1}
    dm = slack.store_of(sandbox).messages[dm_channel_id("U10NOAH")]
    posted = Counter(
        m["metadata"]["event_payload"]["workflow_id"]
        for m in dm
        if m.get("metadata", {}).get("event_type") == ASSIGNMENT_EVENT
    )
    assert len(posted) == N and set(posted.values()) == {1}
