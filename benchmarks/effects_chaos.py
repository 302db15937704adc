"""Side effects under chaos: how many land twice when the worker is killed every few seconds?

    .venv/bin/python -m benchmarks.effects_chaos --engagements 300
    .venv/bin/python -m benchmarks.effects_chaos --engagements 300 --no-activity-feed

For each of N engagements it asks for the six side effects the engagement workflow fires after
an assignment: the client confirmation and a staff notice by email (SendGrid), the calendar
block (Google, and Outlook through Graph), the CRM record and the Slack DM. Each runs as a
connector activity with retries on a worker in its own process, which is SIGKILLed every
``--kill-every`` seconds and restarted (for the first ``--kill-for`` seconds, then it drains),
while the sandbox answers ~10 % of every vendor call with 429/500/503. Engagements arrive at
``--rate`` per second. Timeouts and retry policies are the engagement workflow's
(workflows/options.py), so an attempt killed mid-call is retried when its start-to-close runs
out, as in production.

Prints, per connector: effects asked for, effects in the vendor's store, duplicates (the same
meaning more than once) and their rate, effects missing, and the time to drain. With
``--no-activity-feed`` the SendGrid account has no Email Activity add-on, so an email whose
answer was lost is not sent again (reported as "unknown": at most once, never twice).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.crm import WebhookCrmActivities
from activities.google_calendar import GoogleCalendarActivities
from activities.outlook_calendar import OutlookCalendarActivities
from activities.sendgrid_mail import SendGridActivities
from activities.slack import ASSIGNMENT_EVENT, SlackActivities
from app.secrets_demo import export_demo_secrets
from app.temporal import data_converter
from dispatch.config import (
    GoogleCalendarConnector,
    SendGridConnector,
    SlackConnector,
    WebhookCrm,
    load_firm_config,
    rebase_connectors,
)
from sandbox.faults import FaultRule
from sandbox.slack import dm_channel_id
from tests.conftest import start_dev_server
from tests.connectors import test_crm as crm
from tests.connectors import test_google_calendar as google
from tests.connectors import test_outlook_calendar as outlook
from tests.connectors import test_sendgrid as sendgrid
from tests.connectors import test_slack as slack
from tests.connectors.effects_workflow import EffectCall, EffectWorkflow
from tests.sandbox_server import DEMO_BASE, RunningSandbox, run_sandbox
from workflows import options

VENDORS = "^/(sendgrid|google|graph|crm|slack)/"
KINDS = ("confirmation", "notice", "crm", "google", "slack", "outlook")
INTEGRATIONS = {
    "confirmation": options.EMAIL,
    "notice": options.EMAIL,
    "crm": options.CRM,
    "google": options.CALENDAR,
    "slack": options.CHAT,
    "outlook": options.CALENDAR,
}


def call_of(kind: str, activity_name: str, arg: BaseModel) -> EffectCall:
    """The activity with the engagement workflow's timeouts and retry policy for its kind."""
    integration = INTEGRATIONS[kind]
    return EffectCall(
        activity=activity_name,
        arg=arg.model_dump(mode="json"),
        attempt_timeout=integration.attempt.total_seconds(),
        total_timeout=integration.total.total_seconds(),
        initial_interval=1.0,
        backoff=2.0,
        max_interval=integration.max_interval.total_seconds(),
        max_attempts=0,
    )


# --- the worker process ----------------------------------------------------------------------


async def run_worker(address: str, sandbox_url: str, queue: str) -> None:
    export_demo_secrets()
    config = rebase_connectors(load_firm_config(), DEMO_BASE, sandbox_url)
    # The same converter as the driver's client (pydantic, and the payload codec that every
    # client of this project uses): with another one the worker cannot read what it is sent.
    client = await Client.connect(address, data_converter=data_converter())
    c = config.connectors
    assert isinstance(c.email, SendGridConnector) and isinstance(c.crm, WebhookCrm)
    assert isinstance(c.chat, SlackConnector) and isinstance(c.calendar, GoogleCalendarConnector)
    mail = SendGridActivities(c.email)
    records = WebhookCrmActivities(c.crm)
    chat = SlackActivities(config, c.chat)
    google_calendar = GoogleCalendarActivities(c.calendar)
    graph = OutlookCalendarActivities(outlook.connector_for(sandbox_url))
    executor = ThreadPoolExecutor(max_workers=32)
    workers = [
        Worker(
            client,
            task_queue=queue,
            workflows=[EffectWorkflow],
            activities=[
                mail.client_confirmation,
                mail.staff_notice,
                records.log,
                google_calendar.block,
                chat.notify_assignment,
            ],
            activity_executor=executor,
        ),
        Worker(
            client,
            task_queue=f"{queue}-outlook",
            workflows=[EffectWorkflow],
            activities=[graph.block],
        ),
    ]
    await asyncio.gather(*(w.run() for w in workers))


# --- the driver ------------------------------------------------------------------------------


def calls_for(sandbox: RunningSandbox, i: int, run: str) -> list[tuple[str, str, BaseModel]]:
    """The six effects of engagement ``i``: (kind, activity name, input)."""
    wf = f"engagement-chaos-{run}-{i}"
    confirmation = sendgrid.confirmation(sandbox).model_copy(deep=True)
    confirmation.summary.workflow_id = wf
    notice = sendgrid.notice(sandbox).model_copy(update={"key": f"{wf}:past_due"})
    chat = slack.notice(sandbox).model_copy(deep=True)
    chat.summary.workflow_id = wf
    return [
        ("confirmation", "email_client_confirmation", confirmation),
        ("notice", "email_staff_notice", notice),
        ("crm", "crm_log", crm.log_input(sandbox, key=f"{wf}:crm-assigned:1")),
        ("google", "calendar_block", google.block_input(sandbox, seq=i)),
        ("slack", "chat_notify_assignment", chat),
        ("outlook", "calendar_block", outlook.block_input(sandbox, seq=i)),
    ]


def spawn_worker(address: str, sandbox_url: str, queue: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.effects_chaos", "worker", address, sandbox_url, queue],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def chaos(
    address: str,
    sandbox_url: str,
    queue: str,
    kill_every: float,
    kill_for: float,
    stop: asyncio.Event,
) -> int:
    """Keep one worker process alive, SIGKILLing it every ``kill_every`` seconds for the first
    ``kill_for`` seconds; then let it drain."""
    kills = 0
    worker = spawn_worker(address, sandbox_url, queue)
    until = time.monotonic() + kill_for
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=kill_every)
            except TimeoutError:
                if time.monotonic() > until:
                    continue
                os.kill(worker.pid, signal.SIGKILL)
                await asyncio.to_thread(worker.wait)
                kills += 1
                worker = spawn_worker(address, sandbox_url, queue)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait)
    return kills


async def outcome(
    handle: WorkflowHandle[Any, Any], started: datetime, gate: asyncio.Semaphore
) -> tuple[str, float]:
    """How the effect ended, and when (seconds since the first engagement arrived)."""
    async with gate:  # the server limits concurrent long polls per namespace
        state = "done"
        try:
            await handle.result()
        except WorkflowFailureError as err:
            state = "failed"
            cause: BaseException | None = err
            while cause is not None:
                if isinstance(cause, ApplicationError) and cause.type == "EmailDeliveryUnknown":
                    state = "unknown"
                cause = cause.__cause__
        closed = (await handle.describe()).close_time
    return state, ((closed or datetime.now(UTC)) - started).total_seconds()


def counted(sandbox: RunningSandbox) -> dict[str, Counter[str]]:
    """How many times each meaning landed in each vendor's store."""
    stores = sandbox.ctx.stores
    mails = [m["request"] for m in stores["sendgrid"].messages]
    dm = stores["slack"].messages.get(dm_channel_id("U10NOAH"), [])
    return {
        # Each engagement has its own workflow id, and each notice its own key.
        "confirmation": Counter(
            m["personalizations"][0]["custom_args"]["dispatch_id"]
            for m in mails
            if "engagement-confirmation" in m.get("categories", [])
        ),
        "notice": Counter(
            m["personalizations"][0]["custom_args"]["notice"]
            for m in mails
            if "engagement-notice" in m.get("categories", [])
        ),
        "crm": Counter(r["idempotency_key"] for r in stores["crm"].records),
        "google": Counter(e["id"] for e in stores["google"].all_events()),
        "slack": Counter(
            m["metadata"]["event_payload"]["workflow_id"]
            for m in dm
            if m.get("metadata", {}).get("event_type") == ASSIGNMENT_EVENT
        ),
        "outlook": Counter(
            str(e.get("transactionId") or e["id"]) for e in outlook.events_of(sandbox)
        ),
    }


def duplicates(counts: Iterable[int]) -> int:
    return sum(n - 1 for n in counts if n > 1)


async def main(
    n: int, rate: float, kill_every: float, kill_for: float, feed: bool
) -> dict[str, Any]:
    export_demo_secrets()
    env = await start_dev_server()
    address = env.client.service_client.config.target_host
    run = uuid.uuid4().hex[:6]
    queue = f"effects-chaos-{run}"
    with run_sandbox() as sandbox:
        sandbox.ctx.stores["sendgrid"].activity_enabled = feed
        # About 10 % of every vendor call is turned away, a third each 429, 500 and 503.
        sandbox.ctx.faults.set_rules(
            [
                FaultRule(route=VENDORS, status=429, retry_after=1, rate=1 / 30),
                FaultRule(route=VENDORS, status=500, rate=1 / 30),
                FaultRule(route=VENDORS, status=503, rate=1 / 30),
            ]
        )
        stop = asyncio.Event()
        killer = asyncio.create_task(
            chaos(address, sandbox.base_url, queue, kill_every, kill_for, stop)
        )
        started = datetime.now(UTC)
        handles: dict[str, list[WorkflowHandle[Any, Any]]] = {k: [] for k in KINDS}
        for i in range(n):
            for kind, name, arg in calls_for(sandbox, i, run):
                handles[kind].append(
                    await env.client.start_workflow(
                        EffectWorkflow.run,
                        call_of(kind, name, arg),
                        id=f"{queue}-{kind}-{i}",
                        task_queue=f"{queue}-outlook" if kind == "outlook" else queue,
                    )
                )
            await asyncio.sleep(1 / rate)
        flat = [(kind, h) for kind, hs in handles.items() for h in hs]
        gate = asyncio.Semaphore(64)
        results = await asyncio.gather(*(outcome(h, started, gate) for _, h in flat))
        ended: dict[str, list[tuple[str, float]]] = {kind: [] for kind in KINDS}
        for (kind, _), result in zip(flat, results, strict=True):
            ended[kind].append(result)
        drained = max(at for _, at in results)
        stop.set()
        kills = await killer
        counts = counted(sandbox)
        faults = sum(int(r["applied"]) for r in sandbox.ctx.faults.describe())
        lookups = len(sandbox.requests(prefix="/sendgrid/v3/messages", method="GET"))
    await env.shutdown()

    print(
        f"\n{n} engagements at {rate:g}/s, worker SIGKILLed {kills} times "
        f"(every {kill_every:g} s), {faults} vendor calls answered 429/500/503, Email Activity API "
        f"{'on' if feed else 'off'} ({lookups} lookups); drained in {drained:.0f} s"
    )
    print(
        f"{'effect':14}{'asked':>7}{'landed':>8}{'dupes':>7}{'rate':>8}{'missing':>9}"
        f"{'unknown':>9}{'failed':>8}{'p50 s':>8}{'last s':>8}"
    )
    figures: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        landed = counts[kind]
        dupes = duplicates(landed.values())
        outcomes = Counter(state for state, _ in ended[kind])
        times = sorted(at for _, at in ended[kind])
        print(
            f"{kind:14}{n:7}{sum(landed.values()):8}{dupes:7}{dupes / n:8.2%}"
            f"{n - len(landed):9}{outcomes['unknown']:9}{outcomes['failed']:8}"
            f"{statistics.median(times):8.0f}{times[-1]:8.0f}"
        )
        figures[kind] = {
            "asked": n,
            "landed": sum(landed.values()),
            "duplicates": dupes,
            "missing": n - len(landed),
            "unknown": outcomes["unknown"],
            "failed": outcomes["failed"],
        }
    return {"kills": kills, "drained_s": drained, "effects": figures}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        asyncio.run(run_worker(*sys.argv[2:5]))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engagements", type=int, default=300)
    parser.add_argument("--rate", type=float, default=5.0, help="engagements per second")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between SIGKILLs")
    parser.add_argument(
        "--kill-for", type=float, default=120.0, help="seconds of killing, then drain in peace"
    )
    parser.add_argument("--no-activity-feed", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(
        main(
            args.engagements,
            args.rate,
            args.kill_every,
            args.kill_for,
            not args.no_activity_feed,
        )
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.stdout.flush()
