"""The audit export: every assignment decision in a date window, with its reasons and overrides.

Read from Temporal itself, like the board: the visibility list finds the engagements that lived
in the window (running or closed, every run of a continued-as-new engagement), and each one's
``state`` query gives its decisions (the dispatcher's, with every candidate's scores and why each
was blocked) and its timeline (the partners' picks and "assign anyway", reassignment requests).
Queries on closed engagements are answered by any running worker, which replays them.

An auditor gets ids and staff names; client names, emails and scope text stay out (DESIGN §3.6).
Windows are whole days in UTC, both ends included.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from dispatch.models import CandidateScore, Decision, EngagementState, TimelineEntry
from workflows.engagement import EngagementWorkflow

AuditKind = Literal["decision", "partner_pick", "assign_anyway", "reassignment_request"]

QUERY_TIMEOUT = timedelta(seconds=10)
PARALLEL_QUERIES = 16
MAX_DAYS = 366
"""A year at most per export: each engagement in the window is replayed by a worker."""

CSV_COLUMNS = [
    "engagement_id",
    "external_id",
    "client_id",
    "service_type",
    "at",
    "kind",
    "role",
    "outcome",
    "chosen_id",
    "chosen_name",
    "made_by",
    "reason",
    "required_hours",
    "candidates",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet runs a cell that starts with one of these as a formula (CSV injection)."""


class AuditUnavailable(RuntimeError):
    """The export cannot be complete (no worker answers queries, Temporal refused the list)."""


class AuditRecord(BaseModel):
    """One decision, or one person's override of a decision, on one engagement."""

    engagement_id: str
    external_id: str
    source: str
    client_id: str | None = None
    service_type: str | None = None
    at: datetime
    kind: AuditKind
    role: str | None = None
    outcome: Literal["assigned", "needs_partner_review", "forced"] | None = None
    """For ``decision``: assigned, nobody fits (needs partner review), or a partner's pick."""
    chosen_id: str | None = None
    chosen_name: str | None = None
    made_by: str
    """``dispatcher`` for its decisions; the partner's or the staff member's id otherwise."""
    reason: str = ""
    required_hours: float | None = None
    window_start: date | None = None
    window_end: date | None = None
    candidates: list[CandidateScore] = Field(default_factory=list)
    """Every person considered, with the scores and why each was blocked."""


def check_window(start: date, end: date) -> None:
    if end < start:
        raise ValueError(f"the window ends ({end}) before it starts ({start})")
    if (end - start).days + 1 > MAX_DAYS:
        raise ValueError(f"the window is longer than {MAX_DAYS} days: export it in parts")


async def collect_decisions(client: Client, start: date, end: date) -> list[AuditRecord]:
    """Every decision and override made from ``start`` to ``end`` (UTC days, both included),
    oldest first."""
    check_window(start, end)
    since = datetime.combine(start, time(), UTC)
    until = datetime.combine(end + timedelta(days=1), time(), UTC)
    executions = await _engagements(client, since, until)
    gate = asyncio.Semaphore(PARALLEL_QUERIES)

    async def one(execution: WorkflowExecution) -> EngagementState:
        async with gate:
            return await _state(client, execution)

    states = await asyncio.gather(*(one(e) for e in executions))
    found: dict[tuple[object, ...], AuditRecord] = {}
    for state in states:
        for record in records_of(state):
            if since <= record.at < until:
                # Every run of a continued-as-new engagement carries the earlier decisions.
                key = (record.engagement_id, record.at, record.kind, record.role, record.chosen_id)
                found.setdefault(key, record)
    return sorted(found.values(), key=lambda r: (r.at, r.engagement_id, r.kind, r.role or ""))


async def _engagements(client: Client, since: datetime, until: datetime) -> list[WorkflowExecution]:
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    query = (
        f'WorkflowType="EngagementWorkflow" AND StartTime < "{until.strftime(stamp)}" AND '
        f'(ExecutionStatus="Running" OR CloseTime >= "{since.strftime(stamp)}")'
    )
    try:
        return [e async for e in client.list_workflows(query)]
    except RPCError as err:
        raise AuditUnavailable(f"Temporal refused the engagement list: {err.message}") from None


async def _state(client: Client, execution: WorkflowExecution) -> EngagementState:
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        return await handle.query(EngagementWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:
        raise AuditUnavailable(
            f"no answer from {execution.id} ({err.message}): the export needs a running worker "
            "(`dispatch up`, or worker.py against the same Temporal)"
        ) from None


def records_of(state: EngagementState) -> list[AuditRecord]:
    """What an auditor reads from one engagement: its decisions, then the overrides."""
    names = _staff_names(state)
    base = {
        "engagement_id": state.workflow_id,
        "external_id": state.external_id,
        "source": state.source,
        "client_id": state.client_id,
        "service_type": state.service_type,
    }
    records = [
        _decision_record(d, names, base) for d in state.decisions if d.decided_at is not None
    ]
    for entry in state.timeline:
        override = _override_record(entry, names, base)
        if override is not None:
            records.append(override)
    return records


def _staff_names(state: EngagementState) -> dict[str, str]:
    names = {c.staff_id: c.name for d in state.decisions for c in d.candidates}
    for person in (state.preparer, state.reviewer):
        if person is not None:
            names[person.id] = person.name
    return names


def _decision_record(
    decision: Decision, names: dict[str, str], base: dict[str, str | None]
) -> AuditRecord:
    assert decision.decided_at is not None
    outcome: Literal["assigned", "needs_partner_review", "forced"] = (
        "needs_partner_review" if decision.outcome == "blocked" else decision.outcome
    )
    return AuditRecord.model_validate(
        {
            **base,
            "at": decision.decided_at,
            "kind": "decision",
            "role": decision.role.value,
            "outcome": outcome,
            "chosen_id": decision.chosen,
            "chosen_name": names.get(decision.chosen) if decision.chosen else None,
            "made_by": _partner_of(decision) or "dispatcher",
            "reason": decision.reason,
            "required_hours": decision.required_hours,
            "window_start": decision.window_start,
            "window_end": decision.window_end,
            "candidates": decision.candidates,
        }
    )


def _partner_of(decision: Decision) -> str | None:
    """A partner's pick names the partner (``Assigned by partner p-1 to ...``)."""
    prefix = "Assigned by partner "
    if decision.outcome != "forced" or not decision.reason.startswith(prefix):
        return None
    return decision.reason[len(prefix) :].split(" ", 1)[0] or None


def _override_record(
    entry: TimelineEntry, names: dict[str, str], base: dict[str, str | None]
) -> AuditRecord | None:
    """The engagement's timeline notes each override as ``partner decision`` ("p-1 chose s-2
    [over capacity]") or ``reassignment requested`` ("preparer s-2")."""
    words = entry.detail.split()
    if entry.kind == "partner decision" and len(words) >= 3 and words[1] == "chose":
        anyway = entry.detail.endswith(" over capacity")
        partner, chosen = words[0], words[2]
        return AuditRecord.model_validate(
            {
                **base,
                "at": entry.at,
                "kind": "assign_anyway" if anyway else "partner_pick",
                "role": "preparer",
                "chosen_id": chosen,
                "chosen_name": names.get(chosen),
                "made_by": partner,
                "reason": "assign anyway, over capacity" if anyway else "partner's choice",
            }
        )
    if entry.kind == "reassignment requested" and len(words) == 2:
        role, staff_id = words
        return AuditRecord.model_validate(
            {
                **base,
                "at": entry.at,
                "kind": "reassignment_request",
                "role": role,
                "made_by": staff_id,
                "reason": f"{names.get(staff_id, staff_id)} asked to be taken off",
            }
        )
    return None


def render_audit(records: list[AuditRecord], fmt: Literal["csv", "json"]) -> str:
    """The records as CSV (one row per record, spreadsheet-safe) or JSON (everything nested)."""
    if fmt == "json":
        return json.dumps([r.model_dump(mode="json") for r in records], indent=2) + "\n"
    if fmt != "csv":
        raise ValueError(f"unknown audit format {fmt!r}: csv or json")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow([_safe_cell(v) for v in _row(record)])
    return out.getvalue()


def _row(record: AuditRecord) -> list[str]:
    hours = record.required_hours
    return [
        record.engagement_id,
        record.external_id,
        record.client_id or "",
        record.service_type or "",
        record.at.astimezone(UTC).isoformat(),
        record.kind,
        record.role or "",
        record.outcome or "",
        record.chosen_id or "",
        record.chosen_name or "",
        record.made_by,
        record.reason,
        "" if hours is None else f"{hours:g}",
        "; ".join(_candidate_text(c) for c in record.candidates),
    ]


def _candidate_text(c: CandidateScore) -> str:
    if c.eligible:
        score = "" if c.total is None else f" score {c.total:.2f}"
        return f"{c.name} ({c.staff_id}){score}, {c.available_hours:g} h free"
    why = c.why_blocked or ", ".join(b.value for b in c.blocked) or "blocked"
    return f"{c.name} ({c.staff_id}) blocked: {why}"


def _safe_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading formula character is quoted away."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


__all__ = [
    "AuditRecord",
    "AuditUnavailable",
    "check_window",
    "collect_decisions",
    "render_audit",
]
