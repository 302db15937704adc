"""The month-end story: eleven engagements arrive at once as signed Karbon webhooks.

The demo creates the work items in the Karbon emulator, sends one signed ``Inserted`` webhook
per item to the webhook server, all at once, shows progress while they dispatch, then prints
the board and checks each engagement reached the state the scenario expects.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import Client

from activities.karbon import KarbonClient
from activities.signing import hmac_sha256_hex
from dispatch import board
from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig, KarbonConnector, secret
from dispatch.models import DispatchStatus, EngagementState
from sandbox.karbon import client_type_for
from workflows.engagement import EngagementWorkflow

SCENARIO = Path(__file__).parent / "data" / "demo_scenario.yaml"
SETTLE_TIMEOUT = 120.0


@dataclass
class Planned:
    title: str
    client: str
    work_type: str
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


def load_scenario(config: FirmConfig, path: Path = SCENARIO) -> list[Planned]:
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    today = datetime.now(UTC).astimezone(ZoneInfo(config.firm.time_zone)).date()
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
                        "StartDate": f"{date.today().isoformat()}T00:00:00Z",
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
            response = await http.post(
                f"{starter_url}/webhooks/karbon",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Signature": hmac_sha256_hex(signing_key, body),
                },
            )
            if response.status_code != 202:
                raise RuntimeError(
                    f"webhook for {key} answered {response.status_code}: {response.text[:200]}"
                )
            return str(response.json()["workflow_id"])

        return list(await asyncio.gather(*(send(k) for k in keys)))


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


async def run(
    config: FirmConfig,
    client: Client,
    starter_url: str,
    console: Console,
    scenario: Path = SCENARIO,
) -> list[str]:
    """Play the scenario; return the problems found (empty when every expectation held)."""
    pm = config.connectors.pm
    if not isinstance(pm, KarbonConnector):
        raise RuntimeError(f"this demo scenario plays Karbon webhooks; the firm's PM is {pm.kind}")
    planned = load_scenario(config, scenario)
    console.print(
        f"[bold]Month-end close at {config.firm.name}[/]: {len(planned)} engagements "
        "arrive at once as signed Karbon webhooks."
    )
    keys = await create_work_items(pm, planned, config.managing_partner.email)
    signing_key = secret(pm.webhook_signing_key_env)
    assert signing_key is not None
    ids = await send_webhooks(starter_url, signing_key, keys)
    outcomes = [Outcome(p, w) for p, w in zip(planned, ids, strict=True)]
    await follow(client, outcomes, console)
    rows = [board.row_from_state(o.state) for o in outcomes if o.state is not None]
    board.render(rows, console, title=f"{config.firm.name}: month-end dispatch")
    for outcome in outcomes:
        if outcome.planned.note:
            console.print(f"  [dim]- {outcome.planned.title}: {outcome.planned.note}[/]")
    return [problem for o in outcomes for problem in o.problems()]
