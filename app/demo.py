"""The month-end story: eleven engagements arrive at once, through the firm's own PM system.

- Karbon: the work items are created in the Karbon emulator and one signed ``Inserted`` webhook
  per item goes to the webhook server, all at once (the emulator also sends its own, as Karbon
  would: the duplicates show that a repeated webhook changes nothing).
- Xero Practice Manager: the jobs are created in the XPM emulator and the poller's Schedule is
  triggered, as if its next run had come.
- A relay (TaxDome, Canopy, Zapier): one signed engagement event per job to
  ``/webhooks/engagements``, all at once.

Then a progress bar while they dispatch, the board, and a check that each engagement reached
the state the scenario expects.

``in_sandbox`` turns any firm file into its demo twin: every connector pointed at the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import Client

from activities.karbon import KarbonClient
from activities.signing import dispatch_signature_header, hmac_sha256_hex
from activities.xpm import XpmClient
from app import board
from app.schedules import POLLER_PREFIX
from dispatch.capacity import WorkCalendar
from dispatch.config import (
    DEMO_FIRM_PATH,
    CalendarConnector,
    ChatConnector,
    CrmConnector,
    EmailConnector,
    FirmConfig,
    GoogleCalendarConnector,
    KarbonConnector,
    OutlookCalendarConnector,
    PmConnector,
    SendGridConnector,
    SlackConnector,
    TeamsConnector,
    TimeTrackerConnector,
    WebhookCrm,
    XpmConnector,
    secret,
)
from dispatch.ids import engagement_workflow_id
from dispatch.models import DispatchStatus, EngagementState
from sandbox.karbon import client_type_for
from sandbox.xpm import client_uuid_for
from workflows.engagement import EngagementWorkflow

SCENARIO = DEMO_FIRM_PATH.parent / "demo_scenario.yaml"
SETTLE_TIMEOUT = 120.0


@dataclass
class Planned:
    title: str
    client: str
    work_type: str
    opened: date
    """The firm's today when the scenario was loaded: the job's start date in the PM system."""
    due: date
    expect_status: str
    expect_preparer: str | None
    note: str


@dataclass
class Outcome:
    planned: Planned
    workflow_id: str
    state: EngagementState | None = None

    def problems(self) -> list[str]:
        if self.state is None:
            return [f"{self.planned.title}: no state (workflow {self.workflow_id})"]
        found: list[str] = []
        if self.state.status.value != self.planned.expect_status:
            found.append(
                f"{self.planned.title}: status {self.state.status.value}, expected "
                f"{self.planned.expect_status}"
            )
        if self.planned.expect_preparer and (
            self.state.preparer is None or self.state.preparer.id != self.planned.expect_preparer
        ):
            got = self.state.preparer.id if self.state.preparer else "nobody"
            found.append(
                f"{self.planned.title}: preparer {got}, expected {self.planned.expect_preparer}"
            )
        failed = [e.name for e in self.state.side_effects if e.state == "failed"]
        if failed:
            found.append(f"{self.planned.title}: side effects failed: {', '.join(failed)}")
        return found


def in_sandbox(config: FirmConfig, sandbox: str, starter: str) -> FirmConfig:
    """The firm with every connector pointed at the sandbox emulators (its demo twin)."""
    c = config.connectors
    pm: PmConnector = c.pm
    if isinstance(pm, KarbonConnector):
        pm = pm.model_copy(
            update={
                "base_url": f"{sandbox}/karbon",
                "webhook_target_url": f"{starter}/webhooks/karbon",
            }
        )
    elif isinstance(pm, XpmConnector):
        pm = pm.model_copy(update={"base_url": f"{sandbox}/xpm/practicemanager/3.1"})
    tracker: TimeTrackerConnector = c.time_tracker
    tracker_urls = {
        "harvest": f"{sandbox}/harvest",
        "karbon": f"{sandbox}/karbon",
        "toggl": f"{sandbox}/toggl",
        "quickbooks_time": f"{sandbox}/quickbooks_time/api/v1",
    }
    if tracker.kind in tracker_urls:
        tracker = tracker.model_copy(update={"base_url": tracker_urls[tracker.kind]})
    chat: ChatConnector = c.chat
    if isinstance(chat, SlackConnector):
        chat = chat.model_copy(update={"base_url": f"{sandbox}/slack/api/"})
    elif isinstance(chat, TeamsConnector):
        chat = chat.model_copy(update={"public_base_url": starter})
    calendar: CalendarConnector = c.calendar
    if isinstance(calendar, GoogleCalendarConnector):
        calendar = calendar.model_copy(update={"api_endpoint": f"{sandbox}/google/calendar/v3/"})
    elif isinstance(calendar, OutlookCalendarConnector):
        calendar = calendar.model_copy(
            update={
                "graph_base_url": f"{sandbox}/graph/v1.0",
                "token_url": f"{sandbox}/graph/{{tenant}}/oauth2/v2.0/token",
            }
        )
    email: EmailConnector = c.email
    if isinstance(email, SendGridConnector):
        email = email.model_copy(update={"base_url": f"{sandbox}/sendgrid"})
    crm: CrmConnector = c.crm
    if isinstance(crm, WebhookCrm):
        crm = crm.model_copy(update={"url": f"{sandbox}/crm/records"})
    connectors = c.model_copy(
        update={
            "pm": pm,
            "time_tracker": tracker,
            "chat": chat,
            "calendar": calendar,
            "email": email,
            "crm": crm,
        }
    )
    return config.model_copy(update={"connectors": connectors})


def load_scenario(config: FirmConfig, path: Path = SCENARIO) -> list[Planned]:
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    today = config.firm.today_at(datetime.now(UTC))
    calendar = WorkCalendar.of(config.firm.workday_numbers, config.firm.holidays)
    start = today if calendar.is_working_day(today) else calendar.add_working_days(today, 1)
    planned = []
    for item in raw["engagements"]:
        expect = item.get("expect", {})
        planned.append(
            Planned(
                title=item["title"],
                client=item["client"],
                work_type=item["work_type"],
                opened=today,
                due=calendar.add_working_days(start, int(item["due_in_workdays"])),
                expect_status=expect.get("status", "Assigned"),
                expect_preparer=expect.get("preparer"),
                note=item.get("note", ""),
            )
        )
    return planned


def settled(state: EngagementState) -> bool:
    if state.status in (DispatchStatus.RECEIVED,):
        return False
    if any(e.state == "pending" for e in state.side_effects):
        return False
    if state.status is DispatchStatus.NEEDS_PARTNER_REVIEW:
        return any(e.kind == "chat_partner" for e in state.side_effects)
    return any(e.kind == "crm_log" for e in state.side_effects)


async def create_work_items(
    connector: KarbonConnector, planned: list[Planned], creator_email: str
) -> list[str]:
    karbon = KarbonClient(connector)
    try:
        items = await asyncio.gather(
            *(
                karbon.create_work_item(
                    {
                        "Title": p.title,
                        "ClientKey": p.client,
                        "ClientType": client_type_for(p.client),
                        # Karbon needs an assignee on creation; the partner who opened the job.
                        "AssigneeEmailAddress": creator_email,
                        "StartDate": f"{p.opened.isoformat()}T00:00:00Z",
                        "DueDate": f"{p.due.isoformat()}T00:00:00Z",
                        "WorkType": p.work_type,
                        "PrimaryStatus": "Planned",
                    }
                )
                for p in planned
            )
        )
    finally:
        await karbon.aclose()
    return [str(item["WorkItemKey"]) for item in items]


async def send_webhooks(starter_url: str, signing_key: str, keys: list[str]) -> list[str]:
    """One signed Inserted notification per work item, all in flight at once."""
    async with httpx.AsyncClient(timeout=15) as http:

        async def send(key: str) -> str:
            body = json.dumps(
                {
                    "ResourcePermaKey": key,
                    "ResourceType": "Work",
                    "ActionType": "Inserted",
                    "TimeStamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            ).encode()
            return await _post_signed(
                http,
                f"{starter_url}/webhooks/karbon",
                body,
                {"Signature": hmac_sha256_hex(signing_key, body)},
                what=f"webhook for {key}",
            )

        return list(await asyncio.gather(*(send(k) for k in keys)))


async def _post_signed(
    http: httpx.AsyncClient, url: str, body: bytes, signature: dict[str, str], what: str
) -> str:
    """POST one signed event to the webhook server; the workflow id it answers with."""
    response = await http.post(
        url, content=body, headers={"Content-Type": "application/json", **signature}
    )
    if response.status_code != 202:
        raise RuntimeError(f"{what} answered {response.status_code}: {response.text[:200]}")
    return str(response.json()["workflow_id"])


async def follow(
    client: Client, outcomes: list[Outcome], console: Console, timeout: float = SETTLE_TIMEOUT
) -> None:
    columns = (
        TextColumn("[bold]Dispatching"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("", total=len(outcomes))
        deadline = asyncio.get_running_loop().time() + timeout
        while True:

            async def probe(outcome: Outcome) -> None:
                try:
                    outcome.state = await client.get_workflow_handle(outcome.workflow_id).query(
                        EngagementWorkflow.state
                    )
                except Exception:  # not yet picked up by the worker
                    outcome.state = None

            await asyncio.gather(*(probe(o) for o in outcomes))
            done = sum(1 for o in outcomes if o.state is not None and settled(o.state))
            statuses = [o.state.status.value for o in outcomes if o.state is not None]
            summary = ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
            progress.update(task, completed=done, description=summary)
            if done == len(outcomes) or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.3)


async def deliver_xpm(
    connector: XpmConnector, config: FirmConfig, client: Client, planned: list[Planned]
) -> list[str]:
    """Jobs in XPM, then the poller's next run (XPM has no webhooks)."""
    xpm = XpmClient(connector)
    try:
        jobs = await asyncio.gather(
            *(
                xpm.add_job(
                    name=p.title,
                    client_uuid=client_uuid_for(p.client),
                    start=p.opened,
                    due=p.due,
                    job_type=p.work_type,
                )
                for p in planned
            )
        )
    finally:
        await xpm.aclose()
    await client.get_schedule_handle(f"{POLLER_PREFIX}-{config.firm.id}").trigger()
    return [engagement_workflow_id("xpm", job.id) for job in jobs]


async def deliver_relay(
    config: FirmConfig, starter_url: str, planned: list[Planned], system: str
) -> list[str]:
    """One signed engagement event per job, as a relay (Zapier, Make...) would send it."""
    source = re.sub(r"[^a-z0-9_]", "_", system.lower()).strip("_")[:31] or "relay"
    if not source[0].isalpha():
        source = "relay"
    secret_value = secret("DISPATCH_WEBHOOK_SECRET")
    assert secret_value is not None
    async with httpx.AsyncClient(timeout=15) as http:

        async def send(n: int, p: Planned) -> str:
            service = config.service_type_for_work_type(p.work_type)
            record = config.client(p.client)
            body = json.dumps(
                {
                    "event": "engagement.created",
                    "event_id": f"demo-{uuid.uuid4().hex}",
                    "source": source,
                    "engagement": {
                        "external_id": f"DEMO-{uuid.uuid4().hex[:8]}-{n}",
                        "title": p.title,
                        "client": {
                            "id": p.client,
                            "name": record.name if record and record.name else p.client,
                            "email": record.email if record else None,
                        },
                        "service_type": service.id if service else p.work_type,
                        "due_date": p.due.isoformat(),
                    },
                }
            ).encode()
            return await _post_signed(
                http,
                f"{starter_url}/webhooks/engagements",
                body,
                {"X-Dispatch-Signature": dispatch_signature_header(secret_value, body)},
                what="engagement event",
            )

        return list(await asyncio.gather(*(send(n, p) for n, p in enumerate(planned))))


async def run(
    config: FirmConfig,
    client: Client,
    starter_url: str,
    console: Console,
    scenario: Path = SCENARIO,
) -> list[str]:
    """Play the scenario; return the problems found (empty when every expectation held)."""
    pm = config.connectors.pm
    planned = load_scenario(config, scenario)
    system = getattr(pm, "system_name", "the practice management system")
    how = {
        "karbon": "signed Karbon webhooks",
        "xpm": "new jobs in Xero Practice Manager",
        "relay": f"signed events relayed from {system}",
    }
    console.print(
        f"[bold]Month-end close at {config.firm.name}[/]: {len(planned)} engagements "
        f"arrive at once as {how[pm.kind]}."
    )
    if isinstance(pm, KarbonConnector):
        keys = await create_work_items(pm, planned, config.managing_partner.email)
        signing_key = secret(pm.webhook_signing_key_env)
        assert signing_key is not None
        ids = await send_webhooks(starter_url, signing_key, keys)
    elif isinstance(pm, XpmConnector):
        ids = await deliver_xpm(pm, config, client, planned)
    else:
        ids = await deliver_relay(config, starter_url, planned, system)
    outcomes = [Outcome(p, w) for p, w in zip(planned, ids, strict=True)]
    await follow(client, outcomes, console)
    rows = [board.row_from_state(o.state) for o in outcomes if o.state is not None]
    board.render(rows, console, title=f"{config.firm.name}: month-end dispatch")
    for outcome in outcomes:
        if outcome.planned.note:
            console.print(f"  [dim]- {outcome.planned.title}: {outcome.planned.note}[/]")
    return [problem for o in outcomes for problem in o.problems()]
