"""End to end with real processes: dev server, sandbox, worker and webhook server.

An outside client sends signed Karbon webhooks; the side effects are read back from the
sandbox's request log, the assignment is found with the ``temporal`` CLI as an operator would,
and the worker is stopped mid-way to show a webhook accepted while it is down is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.karbon import KarbonClient
from app.secrets_demo import demo_secret
from app.stack import Stack
from app.temporal import connect
from dispatch.config import KarbonConnector, load_firm_config
from dispatch.models import DispatchStatus, EngagementState
from tests.conftest import temporal_cli
from tests.e2e.drive import (
    free_ports,
    new_work_item,
    sandbox_firm_file,
    sandbox_log,
    send_inserted,
    settled,
    state_of,
)
from tests.harness import eventually
from tests.slack_driver import click, message_with
from workflows.engagement import EngagementWorkflow

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data = tmp_path_factory.mktemp("stack")
    ports = free_ports()
    firm_file = sandbox_firm_file(data, ports)
    running = Stack(load_firm_config(firm_file), firm_file, root=ROOT, ports=ports, data=data)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def test_signed_webhook_to_assignment_through_real_processes(stack: Stack) -> None:
    key = await new_work_item(
        stack, "2026 1120-S - Bayside Dental Group", "cl-bayside-dental", "Tax Return - S Corp", 15
    )
    response = await send_inserted(stack, key)
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    state = await settled(stack, workflow_id)
    assert state.preparer is not None and state.preparer.id == "priya"
    assert state.decisions and len(state.decisions[0].candidates) == len(stack.config.staff)

    # What an operator would type.
    def listed() -> list[dict[str, Any]]:
        out = subprocess.run(
            [
                temporal_cli(),
                "workflow",
                "list",
                "--address",
                stack.temporal_address,
                "--query",
                'DispatchStatus="Assigned"',
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return json.loads(out) if out.strip() else []

    async def found() -> bool | None:
        rows = await asyncio.to_thread(listed)
        return True if any(workflow_id in json.dumps(r) for r in rows) else None

    await eventually(found, what="temporal workflow list to find the assignment")

    posts = [
        r for r in sandbox_log(stack, "/slack/api/chat.postMessage") if workflow_id in r["body"]
    ]
    assert len(posts) == 2  # preparer and reviewer
    assert len([r for r in sandbox_log(stack, "/google/calendar/v3") if r["method"] == "POST"]) >= 2
    assert any(
        "office@baysidedental.example" in r["body"]
        for r in sandbox_log(stack, "/sendgrid/v3/mail/send")
    )
    assert any(workflow_id in r["body"] for r in sandbox_log(stack, "/crm/records"))
    puts = [r for r in sandbox_log(stack, f"/karbon/v3/WorkItems/{key}") if r["method"] == "PUT"]
    assert len(puts) == 1 and "priya@harborfinch.example" in puts[0]["body"]


async def test_webhook_accepted_while_the_worker_is_down_is_not_lost(stack: Stack) -> None:
    key = await new_work_item(
        stack, "November close - Harbor Bistro", "cl-harbor-bistro", "Month-End Close", 8
    )
    await stack.stop_role("worker")
    try:
        response = await send_inserted(stack, key)
        assert response.status_code == 202
        workflow_id = response.json()["workflow_id"]
        await asyncio.sleep(1.0)
    finally:
        await stack.start_workers()
    state = await settled(stack, workflow_id)
    assert state.preparer is not None


async def karbon_status(stack: Stack, key: str, primary: str, secondary: str | None) -> None:
    """Someone changes the work item in Karbon; Karbon (the emulator) sends the webhook."""
    pm = stack.config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    karbon = KarbonClient(pm)
    try:
        item = await karbon.get_work_item(key)
        assert item is not None
        body = {
            k: item[k]
            for k in (
                "AssigneeEmailAddress",
                "Title",
                "ClientKey",
                "ClientType",
                "StartDate",
                "DueDate",
                "WorkType",
            )
            if item.get(k)
        }
        await karbon.put_work_item(
            key, {**body, "PrimaryStatus": primary, "SecondaryStatus": secondary}
        )
    finally:
        await karbon.aclose()


async def test_from_webhook_to_completed_driven_by_slack_and_karbon(stack: Stack) -> None:
    """The whole life through the front doors: Karbon webhook, Slack click, Karbon changes."""
    key = await new_work_item(
        stack, "2026 1040 - Eze household", "cl-okafor-family", "Tax Return - Individual", 12
    )
    # No webhook sent by hand: Karbon (the emulator) delivers Inserted to the subscription the
    # worker made at start-up.
    workflow_id = f"engagement-karbon-{key}"
    state = await settled(stack, workflow_id)
    assert state.preparer is not None and state.reviewer is not None

    async with httpx.AsyncClient(timeout=10) as http:
        slack_state = (await http.get(f"{stack.sandbox_base}/_sandbox/state/slack")).json()
    preparer_slack = stack.config.staff_by_id(state.preparer.id).slack_id
    assert preparer_slack is not None
    message = message_with(slack_state, preparer_slack, "assignment_accept", workflow_id)
    accepted = click(
        stack.sandbox_base,
        message,
        "assignment_accept",
        preparer_slack,
        signing_secret=demo_secret("SLACK_SIGNING_SECRET"),
    )
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{stack.starter_url}/slack/events", content=accepted.body, headers=accepted.headers
        )
    assert response.status_code == 200
    assert (await state_of(stack, workflow_id)).status is DispatchStatus.ACCEPTED

    async def reaches(status: DispatchStatus) -> EngagementState:
        async def probe() -> EngagementState | None:
            found = await state_of(stack, workflow_id)
            return found if found.status is status else None

        return await eventually(probe, timeout=30, what=f"status {status.value}")

    await karbon_status(stack, key, "InProgress", "Preparing")
    started = await reaches(DispatchStatus.IN_PROGRESS)
    assert started.started_at is not None
    await karbon_status(stack, key, "InProgress", "Ready for Review")
    await reaches(DispatchStatus.READY_FOR_REVIEW)
    await karbon_status(stack, key, "InProgress", "In Review")
    await reaches(DispatchStatus.IN_REVIEW)
    await karbon_status(stack, key, "Completed", None)
    done = await reaches(DispatchStatus.COMPLETED)

    # Our own write-back echoed back from Karbon as an Updated webhook and changed nothing.
    kinds = [t.kind for t in done.timeline]
    assert kinds.count("Assigned") == 1 and kinds.count("Accepted") == 1
    reviewer_notice = [e for e in done.side_effects if e.name.startswith("notice:review_ready")]
    assert reviewer_notice and all(e.state == "done" for e in reviewer_notice)
    client = await connect(stack.temporal_address)
    result = await client.get_workflow_handle_for(EngagementWorkflow.run, workflow_id).result()
    assert result.status is DispatchStatus.COMPLETED
    # The final billing record goes out as the workflow closes (after the status flips).
    crm = [r for r in sandbox_log(stack, "/crm/records") if workflow_id in r["body"]]
    assert any('"completed"' in r["body"] for r in crm)


def test_the_dev_server_database_is_in_write_ahead_mode(stack: Stack) -> None:
    """`dispatch up`'s pragmas reach the server: WAL is recorded in the file itself."""
    database = stack.data_dir / "temporal.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert (stack.data_dir / "temporal.db-wal").exists()
