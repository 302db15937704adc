"""The dispatcher's own life: continue-as-new with state carried over, and self-healing start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from dispatch.models import DispatchStatus, EngagementState
from tests.conftest import start_dev_server
from tests.harness import (
    RunningWorker,
    chat_texts,
    details,
    eventually,
    running_worker,
    workdays_ahead,
)
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import quick_snapshots, relay_firm


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
            handles += await assigned_wave(worker, f"can-{wave}", 8)

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


async def test_a_notice_on_its_way_is_not_dropped_by_continue_as_new(
    short_history_env: WorkflowEnvironment, sandbox: RunningSandbox
) -> None:
    """The tracker and Slack are both down: the partner's notice is retried while the dispatcher
    goes on deciding, its history passes the 40 events after which the server suggests a
    continue-as-new, and the run that owes the notice waits for it before continuing (a run
    that ended would drop it). Slack back: the notice goes out once, then the run continues."""
    sandbox.reset()
    client = short_history_env.client
    config = quick_snapshots(sandbox.config)
    async with running_worker(client, config) as worker:
        since = max((int(r["seq"]) for r in sandbox.requests()), default=0)
        sandbox.faults([{"route": "/harvest", "status": 401}, SLACK_DOWN])
        await asyncio.sleep(1.5)  # the snapshot is older than its 1 s time to live

        async def notice_pending() -> str | None:
            description = await worker.dispatcher.describe()
            names = {a.activity_type.name for a in description.raw_description.pending_activities}
            return description.run_id if "firm_capacity_outage_notice" in names else None

        handles = await assigned_wave(worker, "nb-0")
        owing = await eventually(notice_pending, what="the outage notice on its way")
        for wave in (1, 2):
            handles += await assigned_wave(worker, f"nb-{wave}")
        description = await worker.dispatcher.describe()
        assert description.raw_description.workflow_execution_info.history_length > 40
        assert await notice_pending() == owing, "the run continued as new with a notice owed"

        sandbox.faults([])

        async def continued() -> bool | None:
            run = worker.client.get_workflow_handle(worker.dispatcher.id, run_id=owing)
            status = (await run.describe()).status
            return True if status is WorkflowExecutionStatus.CONTINUED_AS_NEW else None

        await eventually(continued, timeout=120, what="the run that owed the notice to continue")
        told = chat_texts(sandbox, "Time tracker unavailable", since)
        assert len(told) == 1, "the notice owed was dropped (or told twice)"
        bookings = await worker.bookings()
        booked = {r.workflow_id for s in bookings.staff for r in s.reservations}
        assert booked == {h.id for h in handles}


SLACK_DOWN = {"route": "/slack", "status": 503}


async def assigned_wave(worker: RunningWorker, tag: str, n: int = 6) -> list[Any]:
    """``n`` one-hour bookkeeping jobs, each waited for until it is assigned."""
    due = workdays_ahead(worker.config, 10)
    return await worker.bookkeeping(tag, n, hours=1, due=due, until=assigned)


def assigned(state: EngagementState) -> bool:
    return state.status is DispatchStatus.ASSIGNED


async def test_an_outage_that_outlives_a_run_is_told_once_and_its_end_too(
    short_history_env: WorkflowEnvironment, sandbox: RunningSandbox
) -> None:
    """The tracker stays down across continue-as-new (the outage's start is carried): the
    partner hears "unavailable" once, not once per run, and "back" once when it heals, from a
    run that did not see the outage begin."""
    sandbox.reset()
    client = short_history_env.client
    config = quick_snapshots(sandbox.config)
    async with running_worker(client, config) as worker:
        since = max((int(r["seq"]) for r in sandbox.requests()), default=0)

        def told(words: str) -> int:
            return len(chat_texts(sandbox, words, since))

        async def run_id() -> str | None:
            return (await worker.dispatcher.describe()).run_id

        async def waves_until_continued(tag: str) -> list[Any]:
            """Waves of work until the run that decided them continues as new."""
            handles: list[Any] = []
            first = await run_id()
            for wave in range(8):
                handles += await assigned_wave(worker, f"{tag}-{wave}")
                try:
                    await eventually(lambda: _changed(run_id, first), timeout=3, what="a new run")
                    return handles
                except AssertionError:
                    continue
            raise AssertionError("the dispatcher never continued as new")

        sandbox.faults([{"route": "/harvest", "status": 401}])
        await asyncio.sleep(1.5)  # the snapshot is older than its 1 s time to live
        handles = await waves_until_continued("od")
        await eventually(
            lambda: _true(told("Time tracker unavailable") >= 1), what="the outage told"
        )
        # A new run, the tracker still down: decided on the last figures, nobody told again.
        await asyncio.sleep(1.5)
        handles += await waves_until_continued("oe")
        states = [await worker.state(h.id) for h in handles[-6:]]
        assert all(s.capacity_note and "time tracker" in s.capacity_note for s in states)
        assert told("Time tracker unavailable") == 1, "told again by the run that continued"
        # Healed: the newest run, which did not see the outage begin, says it is back (its
        # reads during the outage go on with no work waiting), and decides on fresh figures.
        sandbox.faults([])
        await eventually(lambda: _true(told("Time tracker back") >= 1), what="the end told")
        fresh = await assigned_wave(worker, "of")
        handles += fresh
        assert all([(await worker.state(h.id)).capacity_note is None for h in fresh])
        assert told("Time tracker unavailable") == 1
        assert told("Time tracker back") == 1
        bookings = await worker.bookings()
        booked = {r.workflow_id for s in bookings.staff for r in s.reservations}
        assert booked == {h.id for h in handles}


async def _changed(current: Callable[[], Awaitable[str | None]], before: str | None) -> bool | None:
    return True if await current() != before else None


async def _true(value: bool) -> bool | None:
    return True if value else None
