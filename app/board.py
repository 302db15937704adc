"""The dispatch board: engagement, client, service, people, why, status.

Read from Temporal itself (visibility for the list, the ``state`` query for the detail), so it
shows the truth the workflows hold, not a copy. When no worker answers queries, it falls back
to the memo and search attributes the workflows keep up to date.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowExecution

from dispatch.models import EngagementState
from workflows.engagement import EngagementWorkflow

STATUS_STYLE = {
    "Assigned": "green",
    "Accepted": "green",
    "InProgress": "cyan",
    "ReadyForReview": "cyan",
    "InReview": "cyan",
    "Completed": "dim",
    "Cancelled": "dim",
    "NeedsPartnerReview": "bold yellow",
    "Received": "white",
}


@dataclass
class BoardRow:
    workflow_id: str
    title: str
    client: str
    service: str
    preparer: str
    reviewer: str
    why: str
    status: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def row_from_state(state: EngagementState) -> BoardRow:
    if state.needs_partner_review_reason and state.status.value == "NeedsPartnerReview":
        why = state.needs_partner_review_reason
    else:
        why = state.decisions[0].reason if state.decisions else (state.error or "")
    return BoardRow(
        workflow_id=state.workflow_id,
        title=state.title or state.external_id,
        client=state.client_name or state.client_id or "",
        service=state.service_type or "",
        preparer=state.preparer.name if state.preparer else "-",
        reviewer=state.reviewer.name if state.reviewer else "-",
        why=why,
        status=state.status.value,
    )


async def _row(client: Client, execution: WorkflowExecution) -> BoardRow:
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        state = await handle.query(EngagementWorkflow.state, rpc_timeout=timedelta(seconds=3))
        return row_from_state(state)
    except Exception:  # no worker to answer: use what visibility and the memo know
        memo: Mapping[str, Any] = await execution.memo()
        status = execution.typed_search_attributes
        return BoardRow(
            workflow_id=execution.id,
            title=execution.id,
            client=str(memo.get("client_id") or ""),
            service=next((str(p.value) for p in status if p.key.name == "ServiceType"), ""),
            preparer=str(memo.get("preparer_id") or "-"),
            reviewer=str(memo.get("reviewer_id") or "-"),
            why=str(memo.get("why") or ""),
            status=next((str(p.value) for p in status if p.key.name == "DispatchStatus"), "?"),
        )


async def collect(
    client: Client,
    *,
    workflow_ids: list[str] | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[BoardRow]:
    query = 'WorkflowType="EngagementWorkflow"'
    if status:
        query += f' AND DispatchStatus="{status}"'
    executions: list[WorkflowExecution] = []
    if workflow_ids is not None:
        executions = [await client.get_workflow_handle(w).describe() for w in workflow_ids]
    else:
        async for execution in client.list_workflows(query, limit=limit):
            executions.append(execution)
    gate = asyncio.Semaphore(16)

    async def one(execution: WorkflowExecution) -> BoardRow:
        async with gate:
            return await _row(client, execution)

    return list(await asyncio.gather(*(one(e) for e in executions)))


def render(
    rows: list[BoardRow], console: Console | None = None, title: str = "Dispatch board"
) -> None:
    console = console or Console()
    table = Table(title=title, show_lines=False, expand=True)
    table.add_column("Engagement", ratio=3)
    table.add_column("Client", ratio=2)
    table.add_column("Service", ratio=2)
    table.add_column("Preparer / reviewer", ratio=2)
    table.add_column("Why", ratio=5)
    table.add_column("Status", ratio=2)
    for row in rows:
        people = row.preparer if row.reviewer == "-" else f"{row.preparer} / {row.reviewer}"
        table.add_row(
            row.title,
            row.client,
            row.service,
            people,
            row.why,
            f"[{STATUS_STYLE.get(row.status, 'white')}]{row.status}[/]",
        )
    console.print(table)
