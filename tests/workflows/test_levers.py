"""The season's levers as the workflows use them: hours left today, the open-hours ledger and
the partner's options, on the real worker against the sandbox.

Each test ends with the ledger's truth (``assert_truth``): what the dispatcher books equals
what the live engagements hold, and the histories the new code records replay.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from app.temporal import data_converter
from dispatch.config import FirmConfig
from dispatch.models import (
    DispatchStatus,
    EngagementDetails,
    EngagementState,
    PmUpdate,
    Role,
)
from tests.harness import (
    RunningWorker,
    chat_posts,
    details,
    eventually,
    patches_in,
    running_worker,
    workdays_ahead,
)
from tests.sandbox_server import RunningSandbox
from tests.workflows import test_checkpoints
from tests.workflows.conftest import relay_firm
from tests.workflows.test_checkpoints import advance
from tests.workflows.test_ledger_survives import HOURS, assert_truth, settled
from worker import WORKFLOWS
from workflows.dispatcher import DAY_LEFT_PATCH, OPEN_HOURS_PATCH, PARTNER_OPTIONS_PATCH
from workflows.engagement import EngagementWorkflow
from workflows.engagement.base import ENGAGEMENT_PATCHES_2, LEVERS_PATCH, PATCHES_IN_TWO

skipping = test_checkpoints.skipping
"""The time-skipping server (a fresh one per test), for the daily read of hours logged."""


def firm_at_local_hour(config: FirmConfig, hour: int) -> FirmConfig:
    """The firm moved to a fixed-offset zone where it is now ``hour``:xx, working every day,
    so the test means the same whatever the time of day it runs."""
    offset = (hour - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    zone = "Etc/GMT" + (f"-{offset}" if offset > 0 else f"+{-offset}" if offset < 0 else "")
    assert datetime.now(ZoneInfo(zone)).hour == hour
    return firm_in_zone(config, zone)


def firm_in_zone(config: FirmConfig, zone: str) -> FirmConfig:
    """The firm moved to ``zone``, working every day."""
    firm = config.firm.model_copy(
        update={
            "time_zone": zone,
            "workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "holidays": [],
        }
    )
    return config.model_copy(update={"firm": firm})


async def ledger_hours(worker: RunningWorker, workflow_id: str) -> dict[Role, float]:
    _, entries = await worker.ledger()
    return {r.role: r.hours for e in entries if e.workflow_id == workflow_id for r in e.holdings}


async def replays(client: Client, workflow_id: str, patch: str) -> None:
    """The history the new code recorded carries the patch (or the one engagement marker that
    stands for it) and replays against it."""
    handle = client.get_workflow_handle(workflow_id)
    history: WorkflowHistory = await handle.fetch_history()
    recorded = patches_in(history)
    assert patch in recorded or (patch in PATCHES_IN_TWO and ENGAGEMENT_PATCHES_2 in recorded)
    await Replayer(workflows=WORKFLOWS, data_converter=data_converter()).replay_workflow(history)


async def test_a_decision_after_hours_counts_none_of_today(
    client: Client, sandbox: RunningSandbox
) -> None:
    """Due today, 2 h: before the working day starts the whole day is free; at 20:00 none is."""
    sandbox.reset()
    for hour, expected in ((6, DispatchStatus.ASSIGNED), (20, DispatchStatus.NEEDS_PARTNER_REVIEW)):
        config = firm_at_local_hour(relay_firm(sandbox.config), hour)
        today = config.firm.today_at(datetime.now(UTC))
        async with running_worker(client, config) as worker:
            handle = await worker.start(
                details(f"today-{hour}", service_type="monthly_bookkeeping", hours=2, due=today)
            )
            state = await worker.wait_state(handle.id, settled, timeout=60)
            assert state.status is expected, (hour, state.needs_partner_review_reason)
            snapshot = await worker.snapshot()
            assert snapshot is not None and snapshot.time_zone == config.firm.time_zone
            assert snapshot.workday_start_hour == config.firm.workday_start_hour
            await replays(client, worker.dispatcher.id, DAY_LEFT_PATCH)


async def wave(
    worker: RunningWorker, n: int, due: date
) -> tuple[dict[str, EngagementDetails], dict[str, EngagementState]]:
    jobs = [
        details(
            f"open-{i}", service_type="monthly_bookkeeping", hours=HOURS, due=due, client_id=f"c{i}"
        )
        for i in range(n)
    ]
    handles = await asyncio.gather(*(worker.start(j) for j in jobs))
    states = {h.id: await worker.wait_state(h.id, settled, timeout=60) for h in handles}
    return {h.id: j for h, j in zip(handles, jobs, strict=True)}, states


async def move(client: Client, workflow_id: str, job: EngagementDetails, state: str) -> None:
    await client.get_workflow_handle(workflow_id).signal(
        EngagementWorkflow.pm_updated,
        PmUpdate(
            event_key=f"{workflow_id}-{state}",
            details=job.model_copy(update={"work_state": state}),
        ),
    )


async def test_work_handed_over_for_review_frees_the_preparer_for_waiting_work(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker:
        since = max((int(r["seq"]) for r in sandbox.requests()), default=0)
        due = workdays_ahead(config, 3)
        jobs, states = await wave(worker, await worker.jobs_past_capacity(HOURS, due), due)
        waiting = [w for w, s in states.items() if s.status is DispatchStatus.NEEDS_PARTNER_REVIEW]
        assigned = [w for w, s in states.items() if s.status is DispatchStatus.ASSIGNED]
        assert waiting and assigned, "the firm should have run out of bookkeeping hours"

        # The partner's message lists what each option would cost, not only who is blocked.
        partner = [
            p for p in chat_posts(sandbox, since) if "Partner review" in str(p.get("blocks", ""))
        ]
        assert partner and all("Options" in str(p["blocks"]) for p in partner)
        assert any("h overtime to finish by" in str(p["blocks"]) for p in partner)

        # One preparer hands the work over: their hours go back, and waiting work takes them.
        done = assigned[0]
        await move(client, done, jobs[done], "ready_for_review")

        async def released() -> bool | None:
            return True if await ledger_hours(worker, done) == {Role.PREPARER: 0.0} else None

        await eventually(released, timeout=30, what="the preparer's hours released")
        held = await worker.holdings(done)
        assert [(r.role, r.hours) for r in held.holdings] == [(Role.PREPARER, 0.0)]
        await eventually(
            lambda: _any_assigned(worker, waiting),
            timeout=60,
            what="a waiting engagement to take the released hours",
        )
        live = list(jobs)
        await assert_truth(worker, live)

        # The review sends it back: the preparer's estimate (less nothing logged) is open again.
        await move(client, done, jobs[done], "in_progress")

        async def reopened() -> bool | None:
            return True if await ledger_hours(worker, done) == {Role.PREPARER: HOURS} else None

        await eventually(reopened, timeout=30, what="the preparer's hours re-opened")
        state = await worker.state(done)
        assert state.held_hours == {Role.PREPARER: HOURS}

        async def agrees() -> bool | None:
            _, entries = await worker.ledger()
            ledger = {e.workflow_id: sorted(e.holdings, key=str) for e in entries if e.holdings}
            truth = {}
            for w in live:
                facts = await worker.holdings(w)
                if facts.holdings:
                    truth[w] = sorted(facts.holdings, key=str)
            return True if ledger == truth else None

        await eventually(agrees, timeout=30, what="the ledger to equal the engagements' holdings")
        for patch in (OPEN_HOURS_PATCH, PARTNER_OPTIONS_PATCH):
            await replays(client, worker.dispatcher.id, patch)
        await replays(client, done, LEVERS_PATCH)


async def _any_assigned(worker: RunningWorker, ids: list[str]) -> bool | None:
    for workflow_id in ids:
        state = await worker.state(workflow_id)
        if state.status is DispatchStatus.ASSIGNED:
            return True
    return None


def log_hours(sandbox: RunningSandbox, email: str, external_id: str, hours: float) -> None:
    """The preparer logs ``hours`` today in Harvest on an entry whose notes name the job."""
    store = sandbox.ctx.stores["harvest"]
    user = next(u for u in store.users if u["email"] == email)
    template = next(e for e in store.time_entries if e["user"]["id"] == user["id"])
    entry = {
        **template,
        "id": max(e["id"] for e in store.time_entries) + 1,
        "spent_date": datetime.now(UTC).date().isoformat(),
        "hours": hours,
        "notes": f"{external_id}: reconciliations",
    }
    store.time_entries.insert(0, entry)


async def test_hours_logged_on_the_job_come_off_the_ledger_the_next_day(
    skipping: WorkflowEnvironment, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(skipping.client, config) as worker:
        job = details(
            "logged", service_type="monthly_bookkeeping", hours=10, due=workdays_ahead(config, 10)
        )
        handle = await worker.start(job, indexed=False)
        assigned = await worker.wait_state(
            handle.id, lambda s: s.status is DispatchStatus.ASSIGNED, timeout=60
        )
        assert assigned.preparer is not None
        log_hours(sandbox, assigned.preparer.email, job.external_id, 4.0)
        # Not before a day has passed: the ledger still holds the whole estimate.
        state = await advance(skipping, worker, handle.id, timedelta(hours=23), assigned)
        assert state.held_hours == {} and await ledger_hours(worker, handle.id) == {
            Role.PREPARER: 10.0
        }
        state = await advance(skipping, worker, handle.id, timedelta(hours=24, minutes=1), assigned)
        state = await worker.wait_state(handle.id, lambda s: bool(s.held_hours), timeout=30)
        assert state.logged_hours == {Role.PREPARER: 4.0}
        assert state.held_hours == {Role.PREPARER: 6.0}

        async def ledger_follows() -> bool | None:
            return True if await ledger_hours(worker, handle.id) == {Role.PREPARER: 6.0} else None

        await eventually(ledger_follows, timeout=30, what="the ledger to hold the open hours")


async def test_hours_logged_are_read_up_to_the_firms_today_not_the_utc_date(
    skipping: WorkflowEnvironment, sandbox: RunningSandbox
) -> None:
    """A firm's time entries are dated on its own clock. East of UTC the morning's are dated a
    day after the UTC date (Sydney, Auckland); a read up to the UTC date would miss them.

    The zone is a day off UTC when the daily read runs, a simulated day and a minute from now:
    UTC-12 is until 12:00 UTC, UTC+14 from 10:00 UTC.
    """
    sandbox.reset()
    read_hour = (datetime.now(UTC) + timedelta(hours=24, minutes=1)).hour
    zone = "Etc/GMT+12" if read_hour < 11 else "Etc/GMT-14"
    config = firm_in_zone(relay_firm(sandbox.config), zone)
    async with running_worker(skipping.client, config) as worker:
        job = details(
            "local-day",
            service_type="monthly_bookkeeping",
            hours=10,
            due=workdays_ahead(config, 10),
        )
        handle = await worker.start(job, indexed=False)
        assigned = await worker.wait_state(
            handle.id, lambda s: s.status is DispatchStatus.ASSIGNED, timeout=60
        )
        await advance(skipping, worker, handle.id, timedelta(hours=24, minutes=1), assigned)
        state = await worker.wait_state(
            handle.id, lambda s: s.logged_read_at is not None, timeout=30
        )
    assert state.logged_read_at is not None and assigned.assigned_at is not None
    read_on = state.logged_read_at.astimezone(ZoneInfo(zone)).date()
    assert read_on != state.logged_read_at.date()  # else this test could not fail
    assigned_on = assigned.assigned_at.astimezone(ZoneInfo(zone)).date()
    job_reads = [
        parse_qs(str(r["query"]))
        for r in sandbox.requests(prefix="/harvest/v2/time_entries")
        if "user_id=" in str(r["query"])
    ]
    assert job_reads, "the daily read of hours logged did not reach Harvest"
    for query in job_reads:
        assert query["to"] == [read_on.isoformat()]
        assert query["from"][0] <= assigned_on.isoformat()
