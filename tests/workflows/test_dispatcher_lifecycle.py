"""The dispatcher's own life: continue-as-new with state carried over, and self-healing start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from dispatch.models import DispatchStatus
from tests.conftest import start_dev_server
from tests.harness import details, eventually, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def short_history_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that suggests continue-as-new after 40 events, so it happens in seconds."""
    env = await start_dev_server(
        "--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def test_dispatcher_continues_as_new_without_losing_reservations(
    short_history_env: WorkflowEnvironment, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    client = short_history_env.client
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        first_run = (await worker.dispatcher.describe()).run_id
        handles = []
        for wave in range(4):  # several waves, so several batches and histories
            handles += await asyncio.gather(
                *(
                    worker.start(
                        details(
                            f"can-{wave}-{n}",
                            service_type="monthly_bookkeeping",
                            hours=1,
                            due=workdays_ahead(config, 10),
                            client_id=f"cl-{wave}-{n}",
                        )
                    )
                    for n in range(8)
                )
            )
            for handle in handles[-8:]:
                await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.ASSIGNED)

        async def runs() -> list[WorkflowExecutionStatus | None] | None:
            found = [
                w.status
                async for w in client.list_workflows(f'WorkflowId="{worker.dispatcher.id}"')
            ]
            return found if len(found) > 1 else None

        statuses = await eventually(runs, what="the dispatcher to continue as new")
        assert WorkflowExecutionStatus.CONTINUED_AS_NEW in statuses
        assert (await worker.dispatcher.describe()).run_id != first_run
        # Everything booked before continue-as-new is still booked after it.
        bookings = await worker.bookings()
        booked = {r.workflow_id for s in bookings.staff for r in s.reservations}
        assert booked == {h.id for h in handles}
        # A resent request after continue-as-new gets no second reservation.
        total = sum(len(s.reservations) for s in bookings.staff)
        assert total == len(handles)  # bookkeeping has no reviewer


async def test_engagement_restarts_a_stopped_dispatcher(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        await worker.dispatcher.terminate("operator stopped it")
        handle = await worker.start(details("heal", due=workdays_ahead(config, 6)))
        state = await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.ASSIGNED)
        assert state.preparer is not None
        description = await worker.dispatcher.describe()
        assert description.status is WorkflowExecutionStatus.RUNNING
