"""The audit export on a dev server: real engagements, a partner's "assign anyway", a
reassignment request and a closed engagement, exported by the library and by the command.

The export reads every engagement on the server and needs a worker that answers for each, so
this module has a dev server of its own (the session's holds other tests' engagements, whose
workers have stopped).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from app.audit import AuditRecord, collect_decisions, render_audit
from app.board_web.auth import SECRET_ENV
from dispatch.models import (
    AssignmentResponse,
    DispatchStatus,
    EngagementState,
    PartnerDecision,
    PmUpdate,
)
from tests.conftest import start_dev_server
from tests.harness import RunningWorker, details, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.test_board_flow import sign_in
from tests.workflows.conftest import relay_firm
from tests.workflows.test_webhook_server import http_for
from workflows.engagement import EngagementWorkflow


@pytest_asyncio.fixture(scope="module")
async def own_client() -> AsyncIterator[Client]:
    env = await start_dev_server()
    try:
        yield env.client
    finally:
        await env.shutdown()


def settled(state: EngagementState) -> bool:
    return state.status in (
        DispatchStatus.ASSIGNED,
        DispatchStatus.NEEDS_PARTNER_REVIEW,
    ) and not any(e.state == "pending" for e in state.side_effects)


async def story(worker: RunningWorker, tag: str) -> dict[str, EngagementState]:
    """Three engagements: one nobody can take (a partner assigns it anyway), one whose preparer
    asks to be taken off, one cancelled in the PM system (closed before the export)."""
    due = workdays_ahead(worker.config, 4)
    big = await worker.start(
        details(
            f"{tag}-big",
            service_type="monthly_bookkeeping",
            hours=400.0,
            due=due,
            client_id="cl-audit",
        ),
    )
    moved = await worker.start(
        details(f"{tag}-moved", service_type="monthly_bookkeeping", hours=2.0, due=due)
    )
    closed = await worker.start(details(f"{tag}-closed", hours=2.0, due=due))
    waiting = await worker.wait_state(big.id, settled)
    assert waiting.status is DispatchStatus.NEEDS_PARTNER_REVIEW
    await big.execute_update(
        EngagementWorkflow.decide,
        PartnerDecision(
            partner_id="ava",
            staff_id="emma",
            override_capacity=True,
            channel="api",
            event_id=f"audit-{uuid.uuid4().hex}",
        ),
    )
    first = await worker.wait_state(moved.id, settled)
    assert first.status is DispatchStatus.ASSIGNED and first.preparer is not None
    await moved.execute_update(
        EngagementWorkflow.respond,
        AssignmentResponse(
            action="reassign",
            staff_id=first.preparer.id,
            channel="api",
            event_id=f"audit-{uuid.uuid4().hex}",
        ),
    )
    await worker.wait_state(closed.id, settled)
    await closed.signal(EngagementWorkflow.pm_updated, PmUpdate(event_key="gone", action="Deleted"))
    await closed.result()
    return {
        "big": await worker.wait_state(
            big.id, lambda s: s.status is DispatchStatus.ASSIGNED and settled(s)
        ),
        "moved": await worker.wait_state(
            moved.id,
            lambda s: (
                s.preparer is not None and s.preparer.id != first.preparer.id  # type: ignore[union-attr]
            ),
        ),
        "closed": await worker.state(closed.id),
    }


def ours(records: list[AuditRecord], states: dict[str, EngagementState]) -> list[AuditRecord]:
    ids = {s.workflow_id for s in states.values()}
    return [r for r in records if r.engagement_id in ids]


async def test_every_decision_and_override_is_exported_with_who_made_it(
    own_client: Client, sandbox: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = own_client
    monkeypatch.setenv(SECRET_ENV, "audit-board-secret-0123456789")
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as worker:
        states = await story(worker, uuid.uuid4().hex[:6])
        today = datetime.now(UTC).date()
        window = (today - timedelta(days=1), today + timedelta(days=1))
        everything = await collect_decisions(client, *window)
        earlier = await collect_decisions(
            client, today - timedelta(days=9), today - timedelta(days=2)
        )
        exported = await asyncio.to_thread(command_export, client, window, tmp_path)
        # The board's download: a partner signed in gets the same file.
        async with http_for(worker) as http:
            await sign_in(http, worker, "ava")
            span = {"from": f"{window[0]}", "to": f"{window[1]}"}
            download = await http.get("/board/audit.csv", params=span)
    records = ours(everything, states)
    # Only these engagements ran on this server (the dispatcher is not an engagement).
    assert records == everything

    big, moved, closed = states["big"], states["moved"], states["closed"]
    of = {
        key: [r for r in records if r.engagement_id == s.workflow_id] for key, s in states.items()
    }
    # Nobody could take the big one: the dispatcher's decision, every candidate and why.
    blocked = [r for r in of["big"] if r.outcome == "needs_partner_review"]
    assert blocked and blocked[0].made_by == "dispatcher" and blocked[0].chosen_id is None
    assert blocked[0].candidates and all(c.why_blocked for c in blocked[0].candidates)
    assert blocked[0].required_hours == 400.0
    # The partner assigned it anyway: the override and the forced decision name the partner.
    [anyway] = [r for r in of["big"] if r.kind == "assign_anyway"]
    assert (anyway.made_by, anyway.chosen_id) == ("ava", "emma")
    assert anyway.chosen_name == big.preparer.name  # type: ignore[union-attr]
    [forced] = [r for r in of["big"] if r.outcome == "forced"]
    assert (forced.made_by, forced.chosen_id) == ("ava", "emma")
    assert "over capacity" in forced.reason
    # The first preparer asked to be taken off; the next decision chose someone else.
    [request] = [r for r in of["moved"] if r.kind == "reassignment_request"]
    assigned = [r for r in of["moved"] if r.kind == "decision" and r.role == "preparer"]
    assert [r.chosen_id for r in assigned][-1] == moved.preparer.id  # type: ignore[union-attr]
    assert request.made_by == assigned[0].chosen_id != moved.preparer.id  # type: ignore[union-attr]
    assert assigned[0].candidates and assigned[0].candidates[0].total is not None
    # A closed engagement's decisions are there too (its query answered by replay).
    assert closed.status is DispatchStatus.CANCELLED
    assert [r.chosen_id for r in of["closed"] if r.role == "preparer"] == [
        closed.decisions[0].chosen
    ]
    # Oldest first; nothing from outside the window.
    assert [r.at for r in records] == sorted(r.at for r in records)
    assert not ours(earlier, states)

    # The command writes the same records, and no client name or email.
    assert exported["csv"] == render_audit(records, "csv")
    assert download.status_code == 200, download.text
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.text == exported["csv"]
    loaded = [AuditRecord.model_validate(r) for r in json.loads(exported["json"])]
    assert loaded == records
    text = exported["csv"] + exported["json"]
    assert "Client cl-audit" not in text and "c@example.com" not in text
    rows = list(csv.DictReader(io.StringIO(exported["csv"], newline="")))
    assert {r["kind"] for r in rows} >= {"decision", "assign_anyway", "reassignment_request"}


def command_export(client: Client, window: tuple[date, date], folder: Path) -> dict[str, str]:
    """``dispatch audit export`` against this server, both formats."""
    env = {**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host}
    env["TEMPORAL_NAMESPACE"] = client.namespace
    found = {}
    for fmt in ("csv", "json"):
        out = folder / f"audit.{fmt}"
        argv = ["--from", f"{window[0]}", "--to", f"{window[1]}", f"--{fmt}", "--out", str(out)]
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "audit", "export", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"written to {out}" in done.stderr
        found[fmt] = out.read_bytes().decode("utf-8")
    return found
