"""Record the engagement histories the replay test guards (run by hand, output committed).

    .venv/bin/python -m tests.histories.record

Each scenario runs the real worker against the sandbox: on the dev server, or on the
time-skipping server for the past-due one. Re-record only when a workflow change is meant to
be incompatible (and then bump the patch / version story in the code); otherwise a failing
replay test means the change would break engagements already running.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Literal

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from dispatch.models import AssignmentResponse, DispatchStatus, PmUpdate
from dispatch.responses import deliver_response
from dispatch.secrets_demo import export_demo_secrets
from tests.conftest import start_dev_server, temporal_test_server
from tests.harness import RunningWorker, details, running_worker, workdays_ahead
from tests.sandbox_server import run_sandbox
from tests.workflows.conftest import relay_firm
from workflows.engagement import EngagementWorkflow

HERE = Path(__file__).parent


def announced(state: object) -> bool:
    from dispatch.models import EngagementState

    assert isinstance(state, EngagementState)
    return state.status is DispatchStatus.ASSIGNED and not any(
        e.state == "pending" for e in state.side_effects)


async def save(client: Client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json(), encoding="utf-8")
    # The workflow id is not in the history, and the code derives keys from it.
    index_file = HERE / "workflow_ids.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    index[name] = workflow_id
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(f"recorded {name}: {len(history.events)} events")


async def answer(worker: RunningWorker, workflow_id: str, action: Literal["accept", "reassign"],
                 staff_id: str, event: str) -> None:
    await deliver_response(worker.client, workflow_id, AssignmentResponse(
        action=action, staff_id=staff_id, channel="api", event_id=event))


async def accepted_and_completed(worker: RunningWorker) -> str:
    eng = details("rec-accepted", due=workdays_ahead(worker.config, 8))
    handle = await worker.start(eng)
    state = await worker.wait_state(handle.id, announced)
    assert state.preparer is not None
    await answer(worker, handle.id, "accept", state.preparer.id, "rec-accept")
    await handle.signal(EngagementWorkflow.pm_updated, PmUpdate(
        event_key="rec-started", details=eng.model_copy(update={"work_state": "in_progress"})))
    await handle.signal(EngagementWorkflow.pm_updated, PmUpdate(
        event_key="rec-done", details=eng.model_copy(update={"work_state": "completed"})))
    await handle.result()
    return handle.id


async def reassigned_to_partner_review(worker: RunningWorker) -> str:
    handle = await worker.start(details("rec-declined", service_type="monthly_bookkeeping",
                                        due=workdays_ahead(worker.config, 8)))
    first = await worker.wait_state(handle.id, announced)
    assert first.preparer is not None
    await answer(worker, handle.id, "reassign", first.preparer.id, "rec-decline-1")
    second = await worker.wait_state(handle.id, lambda s: announced(s) and s.preparer is not None
                                     and s.preparer.id != first.preparer.id)  # type: ignore[union-attr]
    assert second.preparer is not None
    await answer(worker, handle.id, "reassign", second.preparer.id, "rec-decline-2")
    await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
                            and not any(e.state == "pending" for e in s.side_effects))
    return handle.id


async def due_date_moved(worker: RunningWorker) -> str:
    eng = details("rec-moved", due=workdays_ahead(worker.config, 8))
    handle = await worker.start(eng)
    await worker.wait_state(handle.id, announced)
    later = workdays_ahead(worker.config, 15)
    await handle.signal(EngagementWorkflow.pm_updated, PmUpdate(
        event_key="rec-move", details=eng.model_copy(update={"due_date": later})))
    await worker.wait_state(handle.id, lambda s: s.awaiting is None and any(
        t.kind == "reservation adjusted" for t in s.timeline))
    return handle.id


async def past_due(env: WorkflowEnvironment, worker: RunningWorker) -> str:
    handle = await worker.start(details("rec-past-due", due=workdays_ahead(worker.config, 5)),
                                indexed=False)
    state = await worker.wait_state(handle.id, announced)
    assert state.due_at is not None
    now = await env.get_current_time()
    await env.sleep(state.due_at - now + timedelta(hours=2))
    await worker.wait_state(handle.id, lambda s: any(
        k.startswith("past_due") and v == "fired" for k, v in s.checkpoints.items()))
    return handle.id


Scenario = Callable[[RunningWorker], Awaitable[str]]


async def main() -> None:
    export_demo_secrets()
    with run_sandbox() as sandbox:
        config = relay_firm(sandbox.config)
        env = await start_dev_server()
        try:
            scenarios: dict[str, Scenario] = {
                "accepted_and_completed": accepted_and_completed,
                "reassigned_to_partner_review": reassigned_to_partner_review,
                "due_date_moved": due_date_moved,
            }
            for name, scenario in scenarios.items():
                sandbox.reset()
                async with running_worker(env.client, config) as worker:
                    await save(env.client, await scenario(worker), name)
        finally:
            await env.shutdown()
        skipping = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=temporal_test_server(),
            data_converter=pydantic_data_converter)
        try:
            sandbox.reset()
            async with running_worker(skipping.client, config) as worker:
                await save(skipping.client, await past_due(skipping, worker), "past_due")
        finally:
            await skipping.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
