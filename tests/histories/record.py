"""Record the workflow histories the replay test guards (run by hand, output committed).

    .venv/bin/python -m tests.histories.record            # into tests/histories/v7/
    .venv/bin/python -m tests.histories.record --only dispatcher_rebuilt

Each scenario runs the real worker against the sandbox: on the dev server, or on the
time-skipping server for the past-due one. Histories are kept per protocol version in their own
folder (v1: before the ledger protocol). A folder, once committed, is never re-recorded: a
change to the workflows must replay every folder (``workflow.patched`` for new behaviour), and a
new folder is recorded after each change that adds a patch, so the next change is tested
against histories that took the new paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from app.responses import deliver_due_move, deliver_response
from app.secrets_demo import export_demo_secrets
from app.temporal import data_converter
from dispatch.codec import KEYS_ENV
from dispatch.models import (
    AssignmentResponse,
    DispatchStatus,
    DueDateMove,
    EngagementState,
    PartnerDecision,
    PmUpdate,
    Role,
)
from tests.conftest import start_dev_server, temporal_test_server
from tests.harness import (
    RunningWorker,
    chat_texts,
    details,
    eventually,
    karbon_work_item,
    partner_picks_over_capacity,
    running_worker,
    workdays_ahead,
)
from tests.interceptors import RECORDED_WITH
from tests.sandbox_server import RunningSandbox, run_sandbox
from tests.workflows.conftest import quick_snapshots, relay_firm
from workflows.engagement import EngagementWorkflow

HERE = Path(__file__).parent
CURRENT = "v10"
"""v10: after the dispatcher's ``tracker-probe-while-down`` (the tracker read again during an
outage with no work waiting, so its end is told); only the dispatcher outage scenarios.
v9: after the dispatcher's ``outage-notice-beside-decisions`` (the partner's notice of a
tracker outage sent beside the decisions); only the two dispatcher outage scenarios.
v8: after ``engagement-patches-2`` (``index-changes-only``: search attributes and memo upserted
with the values that changed).
v7: after ``engagement-patches-1`` (one marker for the engagement's six patches).
v6: after ``pm-load-local`` (the engagement read from the PM system by a local activity).
v5: after ``answer-in-flight-kept`` (an answer that arrives with its request's send is taken).
v4: after the partner's due-date move (the ``move_due`` Update and ``pm_move_due_date``)."""
DISPATCHER_TOO = {
    "accepted_and_completed": "dispatcher_open_hours",
    "partner_pick_does_not_fit": "dispatcher_partner_review",
    "partner_moved_due_date": "dispatcher_partner_moved_due_date",
}


def announced(state: EngagementState) -> bool:
    return state.status is DispatchStatus.ASSIGNED and not any(
        e.state == "pending" for e in state.side_effects
    )


def settled(state: EngagementState) -> bool:
    return state.status in (DispatchStatus.ASSIGNED, DispatchStatus.NEEDS_PARTNER_REVIEW)


async def save(client: Client, workflow_id: str, name: str, folder: Path, run_id: str = "") -> None:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
    history = await handle.fetch_history()
    write(folder, name, workflow_id, history.to_json())
    print(f"recorded {folder.name}/{name}: {len(history.events)} events")


def write(folder: Path, name: str, workflow_id: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(text, encoding="utf-8")
    # The workflow id is not in the history, and the code derives keys from it.
    index_file = folder / "workflow_ids.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    index[name] = workflow_id
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


async def answer(
    worker: RunningWorker,
    workflow_id: str,
    action: Literal["accept", "reassign"],
    staff_id: str,
    event: str,
) -> None:
    await deliver_response(
        worker.client,
        workflow_id,
        AssignmentResponse(action=action, staff_id=staff_id, channel="api", event_id=event),
    )


# --- engagements ---------------------------------------------------------------------------


async def accepted_and_completed(worker: RunningWorker) -> str:
    eng = details("rec-accepted", due=workdays_ahead(worker.config, 8))
    handle = await worker.start(eng)
    state = await worker.wait_state(handle.id, announced)
    assert state.preparer is not None
    await answer(worker, handle.id, "accept", state.preparer.id, "rec-accept")
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(
            event_key="rec-started", details=eng.model_copy(update={"work_state": "in_progress"})
        ),
    )
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(
            event_key="rec-ready",
            details=eng.model_copy(update={"work_state": "ready_for_review"}),
        ),
    )
    # The preparer's hours go back to the ledger at the hand-over (the open-hours ledger).
    await worker.wait_state(handle.id, lambda s: s.held_hours.get(Role.PREPARER) == 0.0)
    await worker.ledger()
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(event_key="rec-done", details=eng.model_copy(update={"work_state": "completed"})),
    )
    await handle.result()
    return handle.id


async def reassigned_to_partner_review(worker: RunningWorker) -> str:
    handle = await worker.start(
        details(
            "rec-declined", service_type="monthly_bookkeeping", due=workdays_ahead(worker.config, 8)
        )
    )
    first = await worker.wait_state(handle.id, announced)
    assert first.preparer is not None
    first_id = first.preparer.id
    await answer(worker, handle.id, "reassign", first_id, "rec-decline-1")
    second = await worker.wait_state(
        handle.id,
        lambda s: announced(s) and s.preparer is not None and s.preparer.id != first_id,
    )
    assert second.preparer is not None
    await answer(worker, handle.id, "reassign", second.preparer.id, "rec-decline-2")
    await worker.wait_state(
        handle.id,
        lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and not any(e.state == "pending" for e in s.side_effects)
        ),
    )
    return handle.id


async def due_date_moved(worker: RunningWorker) -> str:
    eng = details("rec-moved", due=workdays_ahead(worker.config, 8))
    handle = await worker.start(eng)
    await worker.wait_state(handle.id, announced)
    later = workdays_ahead(worker.config, 15)
    await handle.signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(event_key="rec-move", details=eng.model_copy(update={"due_date": later})),
    )
    await worker.wait_state(
        handle.id,
        lambda s: s.awaiting is None and any(t.kind == "reservation adjusted" for t in s.timeline),
    )
    return handle.id


async def partner_moved_due_date(worker: RunningWorker) -> str:
    """Nobody has room by the due date; a partner moves it and the work fits. Then, assigned,
    the partner moves it again: the people stay and are told."""
    handle = await worker.start(
        details(
            "rec-partner-due",
            service_type="audit_prep",
            hours=50,
            due=workdays_ahead(worker.config, 4),
        )
    )
    await worker.wait_state(
        handle.id,
        lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and not any(e.state == "pending" for e in s.side_effects)
        ),
    )
    for n, days in enumerate((30, 28)):
        moved = workdays_ahead(worker.config, days)
        await deliver_due_move(
            worker.client,
            handle.id,
            DueDateMove(partner_id="ava", due_date=moved, channel="api", event_id=f"rec-due-{n}"),
        )
        told = f"notice:due_moved:preparer:{moved.isoformat()}:chat" if n else None
        await worker.wait_state(
            handle.id,
            lambda s, moved=moved, told=told: (  # type: ignore[misc]
                announced(s)
                and s.due_date == moved
                and s.awaiting is None
                and (
                    told is None
                    or any(e.name == told and e.state == "done" for e in s.side_effects)
                )
            ),
        )
    return handle.id


async def partner_moved_due_date_twice(worker: RunningWorker) -> str:
    """The first new date is still too soon: the partner gets a fresh message; the second
    fits."""
    handle = await worker.start(
        details(
            "rec-partner-due-2",
            service_type="audit_prep",
            hours=50,
            due=workdays_ahead(worker.config, 4),
        )
    )

    def told(times: int) -> Callable[[EngagementState], bool]:
        return lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and sum(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects) == times
            and not any(e.state == "pending" for e in s.side_effects)
        )

    await worker.wait_state(handle.id, told(1))
    for n, days in enumerate((5, 30)):
        await deliver_due_move(
            worker.client,
            handle.id,
            DueDateMove(
                partner_id="ava",
                due_date=workdays_ahead(worker.config, days),
                channel="api",
                event_id=f"rec-due-twice-{n}",
            ),
        )
        await worker.wait_state(handle.id, told(2) if n == 0 else announced)
    return handle.id


async def fill(worker: RunningWorker, tag: str, n: int, days: int) -> list[str]:
    due = workdays_ahead(worker.config, days)
    handles = await worker.bookkeeping(tag, n, hours=16, due=due, until=settled, timeout=60)
    return [h.id for h in handles]


async def partner_pick_does_not_fit(worker: RunningWorker) -> str:
    """Waiting for a partner, the partner picks someone full: told so, and back in the queue;
    then someone else's work is cancelled and it assigns itself."""
    # More than the firm's free hours hold, so someone waits whatever the day and hour.
    n = await worker.jobs_past_capacity(16, workdays_ahead(worker.config, 3))
    ids = await fill(worker, "rec-pick", n, 3)
    states = {w: await worker.state(w) for w in ids}
    target = next(w for w, s in states.items() if s.status is DispatchStatus.NEEDS_PARTNER_REVIEW)
    full = next(s.preparer.id for s in states.values() if s.preparer is not None)
    handle = worker.client.get_workflow_handle(target)
    await handle.execute_update(
        EngagementWorkflow.decide,
        PartnerDecision(partner_id="ava", staff_id=full, channel="api", event_id="rec-pick"),
    )
    await worker.wait_state(
        target,
        lambda s: s.pending is not None and s.pending.purpose == "dispatch" and s.pending.parked,
    )
    freed = next(w for w, s in states.items() if s.preparer is not None)
    await worker.client.get_workflow_handle(freed).signal(
        EngagementWorkflow.pm_updated, PmUpdate(event_key="rec-gone", action="Deleted")
    )
    await worker.wait_state(target, announced, timeout=60)
    return target


async def answer_in_flight(worker: RunningWorker) -> str:
    """A partner's pick over capacity, and the reviewer's answer arrives before the engagement
    has finished sending its request (``AnswerBeforeSent``): taken since the patch
    ``answer-in-flight-kept``; before it, refused ("answer not taken")."""
    handle, _ = await partner_picks_over_capacity(worker, "rec-in-flight")
    await worker.wait_state(
        handle.id,
        lambda s: (
            (
                (s.reviewer is not None and s.awaiting is None)
                or any(t.kind == "answer not taken" for t in s.timeline)
            )
            and not any(e.state == "pending" for e in s.side_effects)
        ),
        timeout=60,
    )
    return handle.id


async def karbon_loaded(worker: RunningWorker, sandbox: RunningSandbox) -> str:
    """A thin Karbon webhook: the work item is read from Karbon, assigned and written back, and
    Karbon's ``Updated`` echo of the write-back is read again (nothing changed)."""
    key = await karbon_work_item(
        worker.config,
        "2026 1120-S - Bayside Dental",
        "cl-bayside-dental",
        "Tax Return - S Corp",
        15,
    )
    handle = await worker.start(source="karbon", external_id=key)
    await worker.wait_state(handle.id, announced)
    await handle.signal(EngagementWorkflow.pm_updated, PmUpdate(event_key=f"{key}:echo"))

    async def read_twice() -> bool | None:
        reads = sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}", method="GET")
        return True if len(reads) >= 2 else None

    await eventually(read_twice, what="the echo read")
    await asyncio.sleep(1)  # its workflow task completes
    return handle.id


async def cancelled_in_temporal(worker: RunningWorker) -> str:
    handle = await worker.start(details("rec-cancel", due=workdays_ahead(worker.config, 8)))
    await worker.wait_state(handle.id, announced)
    await handle.cancel()

    async def closed() -> bool | None:
        status = (await handle.describe()).status
        return True if status is WorkflowExecutionStatus.CANCELED else None

    await eventually(closed, what="the engagement to close as cancelled")
    return handle.id


async def past_due(env: WorkflowEnvironment, worker: RunningWorker) -> str:
    handle = await worker.start(
        details("rec-past-due", due=workdays_ahead(worker.config, 5)), indexed=False
    )
    state = await worker.wait_state(handle.id, announced)
    assert state.due_at is not None
    now = await env.get_current_time()
    await env.sleep(state.due_at - now + timedelta(hours=2))
    await worker.wait_state(
        handle.id,
        lambda s: any(k.startswith("past_due") and v == "fired" for k, v in s.checkpoints.items()),
    )
    return handle.id


# --- the dispatcher ------------------------------------------------------------------------


async def dispatcher_rebuilt(worker: RunningWorker) -> tuple[str, str]:
    """A dispatcher terminated mid-season and the fresh one that rebuilt from engagements."""
    await fill(worker, "rec-rb1", 6, 5)
    await worker.dispatcher.terminate("operator stopped it")
    await fill(worker, "rec-rb2", 6, 5)
    run = (await worker.dispatcher.describe()).run_id or ""
    return worker.dispatcher.id, run


async def dispatcher_outage(
    worker: RunningWorker, sandbox: RunningSandbox, chat_down: bool = False
) -> tuple[str, str]:
    """The time tracker fails mid-season: decisions go on with the last figures. With
    ``chat_down`` Slack refuses the partner's notices until the tracker is back, so both
    notices are still on their way while engagements are decided."""
    tag = "rec-cd" if chat_down else "rec-out"  # one server records both: ids apart
    await fill(worker, f"{tag}1", 2, 8)
    slack: list[dict[str, Any]] = [{"route": "/slack", "status": 503}] if chat_down else []
    sandbox.faults([{"route": "/harvest", "status": 503}, *slack])
    await asyncio.sleep(1.5)
    await fill(worker, f"{tag}2", 2, 8)
    sandbox.faults(slack)
    await asyncio.sleep(6)
    await fill(worker, f"{tag}3", 1, 8)
    sandbox.faults([])
    if chat_down:

        async def both_told() -> bool | None:
            return True if len(chat_texts(sandbox, "Time tracker")) >= 2 else None

        await eventually(both_told, timeout=120, what="both outage notices")
    run = (await worker.dispatcher.describe()).run_id or ""
    return worker.dispatcher.id, run


async def dispatcher_outage_healed_idle(worker: RunningWorker, sandbox: RunningSandbox) -> str:
    """The time tracker fails and heals while nothing waits to be decided: the dispatcher's own
    reads during the outage find it back, and the partner is told before the next engagement."""
    await fill(worker, "rec-hi1", 2, 8)
    sandbox.faults([{"route": "/harvest", "status": 503}])
    await asyncio.sleep(1.5)
    await fill(worker, "rec-hi2", 2, 8)
    sandbox.faults([])

    async def back_told() -> bool | None:
        return True if chat_texts(sandbox, "Time tracker back") else None

    await eventually(back_told, timeout=30, what="the tracker told back")
    await fill(worker, "rec-hi3", 1, 8)
    return (await worker.dispatcher.describe()).run_id or ""


async def continued_as_new(worker: RunningWorker) -> tuple[str, str, str]:
    """An engagement and the dispatcher, each continued as new (a server that asks early)."""
    eng = details("rec-long", due=workdays_ahead(worker.config, 10))
    handle = await worker.start(eng)
    await worker.wait_state(handle.id, announced)
    for n in range(12):  # PM notifications until the server suggests continue-as-new
        await handle.signal(
            EngagementWorkflow.pm_updated,
            PmUpdate(
                event_key=f"rec-note-{n}",
                details=eng.model_copy(update={"scope_summary": f"Scope note {n}"}),
            ),
        )
    await fill(worker, "rec-can", 8, 10)

    async def continued() -> EngagementState | None:
        state = await worker.state(handle.id)
        return state if state.continued > 0 else None

    await eventually(continued, timeout=60, what="the engagement to continue as new")
    first = [
        w.run_id
        async for w in worker.client.list_workflows(f'WorkflowId="{handle.id}"')
        if w.status is WorkflowExecutionStatus.CONTINUED_AS_NEW
    ]
    return handle.id, first[0], (await handle.describe()).run_id or ""


Scenario = Callable[[RunningWorker], Awaitable[str]]


async def main(only: set[str] | None) -> None:
    export_demo_secrets()
    # Recorded in clear: the replay test must read them on any machine, with any key.
    os.environ.pop(KEYS_ENV, None)
    folder = HERE / CURRENT

    def wanted(name: str) -> bool:
        return only is None or name in only

    with run_sandbox() as sandbox:
        config = relay_firm(sandbox.config)
        env = await start_dev_server()
        try:
            scenarios: dict[str, Scenario] = {
                "accepted_and_completed": accepted_and_completed,
                "reassigned_to_partner_review": reassigned_to_partner_review,
                "due_date_moved": due_date_moved,
                "partner_pick_does_not_fit": partner_pick_does_not_fit,
                "cancelled_in_temporal": cancelled_in_temporal,
                "partner_moved_due_date": partner_moved_due_date,
                "partner_moved_due_date_twice": partner_moved_due_date_twice,
                "answer_in_flight": answer_in_flight,
            }
            for name, scenario in scenarios.items():
                if not wanted(name):
                    continue
                sandbox.reset()
                intercepted = RECORDED_WITH.get(name, [])
                async with running_worker(env.client, config, intercepted) as worker:
                    await save(env.client, await scenario(worker), name, folder)
                    if name in DISPATCHER_TOO:
                        # The dispatcher's side of it: open hours at the hand-over to review,
                        # the partner's options when nobody fits.
                        await save(env.client, worker.dispatcher.id, DISPATCHER_TOO[name], folder)
            if wanted("karbon_loaded"):
                sandbox.reset()
                async with running_worker(env.client, sandbox.config) as worker:
                    await save(
                        env.client, await karbon_loaded(worker, sandbox), "karbon_loaded", folder
                    )
            # A reset dispatcher is not recorded: the Replayer takes the run id from the
            # history, which for a reset run names the original run, so it cannot replay one
            # faithfully; tests/workflows/test_ledger_survives.py replays it on a real worker.
            if wanted("dispatcher_rebuilt"):
                sandbox.reset()
                async with running_worker(env.client, config) as worker:
                    workflow_id, run_id = await dispatcher_rebuilt(worker)
                    await save(env.client, workflow_id, "dispatcher_rebuilt", folder, run_id)
            quick = quick_snapshots(sandbox.config)
            for name, chat_down in (
                ("dispatcher_outage", False),
                ("dispatcher_outage_chat_down", True),
            ):
                if not wanted(name):
                    continue
                sandbox.reset()
                async with running_worker(env.client, quick) as worker:
                    workflow_id, run_id = await dispatcher_outage(worker, sandbox, chat_down)
                    await save(env.client, workflow_id, name, folder, run_id)
            if wanted("dispatcher_outage_healed_idle"):
                sandbox.reset()
                async with running_worker(env.client, quick) as worker:
                    run_id = await dispatcher_outage_healed_idle(worker, sandbox)
                    name = "dispatcher_outage_healed_idle"
                    await save(env.client, worker.dispatcher.id, name, folder, run_id)
        finally:
            await env.shutdown()
        if wanted("continued_as_new"):
            short = await start_dev_server(
                "--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=60"
            )
            try:
                sandbox.reset()
                async with running_worker(short.client, config) as worker:
                    workflow_id, before, after = await continued_as_new(worker)
                    await save(
                        short.client, workflow_id, "engagement_before_continue", folder, before
                    )
                    await save(
                        short.client, workflow_id, "engagement_after_continue", folder, after
                    )
                    runs = [
                        w
                        async for w in short.client.list_workflows(
                            f'WorkflowId="{worker.dispatcher.id}"'
                        )
                    ]
                    for w in runs:
                        name = (
                            "dispatcher_before_continue"
                            if w.status is WorkflowExecutionStatus.CONTINUED_AS_NEW
                            else "dispatcher_after_continue"
                        )
                        await save(short.client, w.id, name, folder, w.run_id or "")
            finally:
                await short.shutdown()
        if wanted("past_due"):
            skipping = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=temporal_test_server(),
                data_converter=data_converter(),
            )
            try:
                sandbox.reset()
                async with running_worker(skipping.client, config) as worker:
                    await save(
                        skipping.client, await past_due(skipping, worker), "past_due", folder
                    )
            finally:
                await skipping.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="record only this scenario (repeatable)")
    args = parser.parse_args()
    asyncio.run(main(set(args.only) if args.only else None))
    sys.stdout.flush()
    os._exit(0)
