"""Recurring work on Temporal Schedules, on the dev server (the time-skipping server has none).

``sync`` creates, updates and deletes Schedules to match the firm config; a fire (trigger or
backfill) starts the spawner, which plans the *nominal* month's periods and starts each
engagement once, creating the PM job first when the template asks for one.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
import yaml
from temporalio import activity
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    WorkflowExecutionDescription,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer, Worker

from activities.recurring import RecurringActivities, pm_marker
from activities.registry import build_activities
from app.schedules import (
    add_parser,
    owned_schedule_ids,
    recurring_schedule_id,
    run,
    sync,
)
from app.temporal import data_converter
from dispatch import search_attributes as sa
from dispatch.config import FirmConfig, RecurringTemplate, XpmConnector
from dispatch.ids import engagement_workflow_id
from dispatch.models import RecurringPlanInput, SpawnerInput, SpawnerStatus
from dispatch.recurrence import Recurrence
from sandbox.karbon import KarbonStore
from tests.harness import eventually, firm_today, isolated
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from worker import WORKFLOWS, ensure_dispatcher
from workflows.pm_poller import PmPollerWorkflow
from workflows.recurring import RecurringSpawnerWorkflow

T = TypeVar("T")
ALL_WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def tpl(**fields: Any) -> RecurringTemplate:
    """A template with a unique id: engagement ids name the template, and the dev server is
    shared by the whole session."""
    base: dict[str, Any] = {
        "id": f"t{uuid.uuid4().hex[:8]}",
        "client": "cl-bayside-dental",
        "service_type": "monthly_bookkeeping",
        "cadence": "monthly",
        "due_day": 15,
        "create_in_pm": False,
    }
    return RecurringTemplate.model_validate(base | fields)


def with_recurring(
    config: FirmConfig, templates: list[RecurringTemplate], **firm: Any
) -> FirmConfig:
    return config.model_copy(
        update={"recurring": templates, "firm": config.firm.model_copy(update=firm)}
    )


@asynccontextmanager
async def recurring_worker(
    client: Client,
    config: FirmConfig,
    extra: list[Callable[..., Any]] | None = None,
    roles_config: FirmConfig | None = None,
) -> AsyncIterator[str]:
    """The real worker's workflows and activities, on a task queue of its own; the recurring
    activities are built from ``config`` (its templates) and ``extra`` replaces any activity of
    the same name (the poller tests bring their own ``pm_list_new_jobs``). Yields the queue.

    ``roles_config`` builds the role activities when ``config`` names a PM the test fakes."""
    task_queue = f"recurring-test-{uuid.uuid4().hex[:8]}"
    recurring = RecurringActivities.for_config(config)
    chosen: dict[str, Callable[..., Any]] = {}
    for fn in [*build_activities(roles_config or config), *recurring.activities(), *(extra or [])]:
        chosen[activity_name(fn)] = fn
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=list(chosen.values()),
        activity_executor=ThreadPoolExecutor(max_workers=8),
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    try:
        async with worker:
            await ensure_dispatcher(client, config, task_queue=task_queue)
            try:
                yield task_queue
            finally:
                await client.get_workflow_handle(f"dispatcher-{config.firm.id}").terminate(
                    "test finished"
                )
    finally:
        await recurring.aclose()
        await drop_schedules(client, config.firm.id)


async def drop_schedules(client: Client, firm_id: str, *ids: str) -> None:
    """Delete a test's schedules so they never fire later in the session."""
    for schedule_id in {*ids, *await owned_schedule_ids(client, firm_id)}:
        try:
            await client.get_schedule_handle(schedule_id).delete()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise


async def describe_or_none(client: Client, workflow_id: str) -> WorkflowExecutionDescription | None:
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


async def engagements_on(client: Client, task_queue: str) -> int:
    query = f"TaskQueue = '{task_queue}' AND WorkflowType = 'EngagementWorkflow'"
    return (await client.count_workflows(query)).count


async def settled_count(client: Client, task_queue: str, expected: int) -> int:
    """The engagement count once visibility caught up with at least ``expected``."""

    async def probe() -> int | None:
        count = await engagements_on(client, task_queue)
        return count if count >= expected else None

    return await eventually(probe, what=f"{expected} engagements listed")


async def schedule_done(client: Client, schedule_id: str, actions: int) -> ScheduleDescription:
    """The schedule once it has taken ``actions`` actions and none is still running."""

    async def probe() -> ScheduleDescription | None:
        description = await client.get_schedule_handle(schedule_id).describe()
        info = description.info
        return description if info.num_actions >= actions and not info.running_actions else None

    return await eventually(probe, what=f"{actions} finished actions of {schedule_id}")


async def spawner_results(client: Client, description: ScheduleDescription) -> list[SpawnerStatus]:
    results = []
    for action in description.info.recent_actions:
        execution = action.action
        assert isinstance(execution, ScheduleActionExecutionStartWorkflow)
        handle = client.get_workflow_handle_for(RecurringSpawnerWorkflow.run, execution.workflow_id)
        results.append(await handle.result())
        await replays(client, execution.workflow_id)
    return results


def activity_name(fn: Callable[..., Any]) -> str:
    defn = activity._Definition.from_callable(fn)
    assert defn is not None and defn.name is not None
    return defn.name


async def replays(client: Client, workflow_id: str) -> None:
    """The run's history replays against today's workflow code (determinism guard)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    replayer = Replayer(
        workflows=[RecurringSpawnerWorkflow, PmPollerWorkflow],
        data_converter=data_converter(),
    )
    await replayer.replay_workflow(history)


async def due_date_of(client: Client, workflow_id: str) -> date:
    async def probe() -> WorkflowExecutionDescription | None:
        return await describe_or_none(client, workflow_id)

    description = await eventually(probe, what=f"engagement {workflow_id}")
    due = description.typed_search_attributes.get(sa.DUE_DATE)
    assert due is not None
    return due.date()


def fire_months(description: ScheduleDescription) -> list[int]:
    return [r.start for r in description.schedule.spec.calendars[0].month]


async def until(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    return await eventually(probe, what=what)


# --- the plan activity (pure date rules turned into engagements) -------------------------------


async def test_plan_takes_the_nominal_fire_month_and_the_firm_time_zone(
    sandbox: RunningSandbox,
) -> None:
    template = tpl(cadence="quarterly", due_day=15, due_months_after_period_end=1, lead_days=21)
    config = with_recurring(relay_firm(sandbox.config), [template])
    activities = RecurringActivities(config)
    env = ActivityEnvironment()
    # 04:30 UTC on June 1st is still May 31st in New York: May has no trigger.
    may = await env.run(
        activities.plan,
        RecurringPlanInput(
            template_id=template.id, fire_time=datetime(2025, 6, 1, 3, 30, tzinfo=UTC)
        ),
    )
    assert may.fire_date == date(2025, 5, 31)
    assert may.periods == []
    june = await env.run(
        activities.plan,
        RecurringPlanInput(
            template_id=template.id, fire_time=datetime(2025, 6, 1, 4, 30, tzinfo=UTC)
        ),
    )
    [planned] = june.periods
    assert (planned.period_key, planned.due_date, planned.trigger_date) == (
        "2025-Q2",
        date(2025, 7, 15),
        date(2025, 6, 24),
    )
    # 09:00 in New York (EDT) on the trigger date.
    assert planned.trigger_at == datetime(2025, 6, 24, 13, 0, tzinfo=UTC)
    details = planned.details
    assert (details.source, details.external_id) == ("recurring", f"{template.id}-2025-Q2")
    assert details.title == "Monthly bookkeeping close - Bayside Dental Group - 2025-Q2"
    assert details.client_email == "office@baysidedental.example"
    assert details.estimated_hours == 6.0
    assert not planned.create_in_pm

    inactive = with_recurring(config, [template.model_copy(update={"active": False})])
    gone = await env.run(
        RecurringActivities(inactive).plan,
        RecurringPlanInput(template_id=template.id, fire_time=datetime(2025, 6, 2, tzinfo=UTC)),
    )
    assert gone.periods == [] and "inactive" in gone.note
    xpm = config.connectors.model_copy(update={"pm": XpmConnector(kind="xpm")})
    in_pm = with_recurring(
        config.model_copy(update={"connectors": xpm}),
        [template.model_copy(update={"create_in_pm": True})],
    )
    no_pm_job = await env.run(
        RecurringActivities(in_pm).plan,
        RecurringPlanInput(template_id=template.id, fire_time=datetime(2025, 6, 2, tzinfo=UTC)),
    )
    assert not no_pm_job.periods[0].create_in_pm
    assert "xpm" in no_pm_job.note


# --- fires -------------------------------------------------------------------------------------


async def test_a_triggered_schedule_starts_the_engagement_and_a_second_fire_adds_nothing(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    base = isolated(relay_firm(sandbox.config))
    today = firm_today(base)
    # An annual template (fiscal year starting this month) whose trigger is the 1st of this
    # month, in a firm that works every day from midnight: whatever today is, a fire now
    # plans exactly one period, due now.
    draft = tpl(cadence="annual", period_start_month=today.month, due_day=28, roll="none")
    firm_fields: dict[str, Any] = {"workdays": ALL_WEEK, "workday_start_hour": 0}
    recurrence = Recurrence.of(draft, with_recurring(base, [draft], **firm_fields))
    period = recurrence.period_containing(today)
    due = recurrence.due_date(period)
    template = draft.model_copy(update={"lead_days": (due - today.replace(day=1)).days})
    config = with_recurring(base, [template], **firm_fields)
    schedule_id = recurring_schedule_id(config.firm.id, template.id)
    engagement_id = engagement_workflow_id("recurring", f"{template.id}-{period.key}")

    async with recurring_worker(client, config) as task_queue:
        report = await sync(client, config, task_queue)
        assert report.created == [schedule_id]
        handle = client.get_schedule_handle(schedule_id)
        await handle.trigger()
        assert await due_date_of(client, engagement_id) == due
        [first] = await spawner_results(client, await schedule_done(client, schedule_id, 1))
        assert first.fire_date == today
        [outcome] = first.outcomes
        assert (outcome.period_key, outcome.workflow_id, outcome.started) == (
            period.key,
            engagement_id,
            True,
        )

        await handle.trigger()
        results = await spawner_results(client, await schedule_done(client, schedule_id, 2))
        [again] = results[1].outcomes
        assert (again.workflow_id, again.started) == (engagement_id, False)
        assert await settled_count(client, task_queue, 1) == 1


async def test_backfilling_a_quarterly_template_over_a_year_spawns_four_engagements(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    template = tpl(cadence="quarterly", due_day=15, due_months_after_period_end=1, lead_days=21)
    config = with_recurring(isolated(relay_firm(sandbox.config)), [template])
    zone = ZoneInfo(config.firm.time_zone)
    schedule_id = recurring_schedule_id(config.firm.id, template.id)
    async with recurring_worker(client, config) as task_queue:
        await sync(client, config, task_queue)
        handle = client.get_schedule_handle(schedule_id)
        assert fire_months(await handle.describe()) == [3, 6, 9, 12]
        # Fires on Mar 1, Jun 1, Sep 1 and Dec 1, 2025; the period each plans is the one
        # whose trigger falls in *that* month, not today's.
        await handle.backfill(
            ScheduleBackfill(
                start_at=datetime(2024, 12, 15, tzinfo=zone),
                end_at=datetime(2025, 12, 15, tzinfo=zone),
                overlap=ScheduleOverlapPolicy.ALLOW_ALL,
            )
        )
        expected = {
            "2025-Q1": date(2025, 4, 15),
            "2025-Q2": date(2025, 7, 15),
            "2025-Q3": date(2025, 10, 15),
            "2025-Q4": date(2026, 1, 15),  # triggered on Thu Dec 25, 2025 (not a firm holiday)
        }
        for key, due in expected.items():
            engagement_id = engagement_workflow_id("recurring", f"{template.id}-{key}")
            assert await due_date_of(client, engagement_id) == due, key
        description = await schedule_done(client, schedule_id, 4)
        assert description.info.num_actions == 4
        results = await spawner_results(client, description)
        assert sorted(o.period_key for r in results for o in r.outcomes) == sorted(expected)
        assert await settled_count(client, task_queue, 4) == 4


async def test_the_spawner_sleeps_until_a_future_trigger_date(
    client: Client, sandbox: RunningSandbox
) -> None:
    template = tpl(cadence="monthly", due_day=20, lead_days=10)
    config = with_recurring(isolated(relay_firm(sandbox.config)), [template])
    zone = ZoneInfo(config.firm.time_zone)
    today = firm_today(config)
    fire = datetime(today.year + 1, today.month, 1, tzinfo=zone)
    [occurrence] = Recurrence.of(template, config).triggered_in(fire.year, fire.month)
    engagement_id = engagement_workflow_id("recurring", f"{template.id}-{occurrence.period.key}")
    async with recurring_worker(client, config) as task_queue:
        handle = await client.start_workflow(
            RecurringSpawnerWorkflow.run,
            SpawnerInput(firm_id=config.firm.id, template_id=template.id, fire_time=fire),
            id=f"spawner-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )

        async def waiting() -> SpawnerStatus | None:
            status = await handle.query(RecurringSpawnerWorkflow.status)
            return status if status.waiting_until is not None else None

        status = await until(waiting, "the spawner to sleep")
        assert status.waiting_for == occurrence.period.key
        trigger_at = datetime.combine(occurrence.trigger, time(9), tzinfo=zone)
        assert status.waiting_until == trigger_at.astimezone(UTC)
        assert await describe_or_none(client, engagement_id) is None
        await handle.terminate("test finished")


async def test_a_recurring_job_is_created_in_karbon_once(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    template = tpl(due_day=20, lead_days=10, create_in_pm=True)
    config = with_recurring(isolated(sandbox.config), [template])  # Karbon is the PM
    fire = datetime(2026, 3, 1, tzinfo=ZoneInfo(config.firm.time_zone))
    store: KarbonStore = sandbox.ctx.stores["karbon"]
    async with recurring_worker(client, config) as task_queue:
        outcomes = []
        for _ in range(2):  # the second fire for March finds the job and the engagement
            spawner_id = f"spawner-{uuid.uuid4().hex[:8]}"
            status = await client.execute_workflow(
                RecurringSpawnerWorkflow.run,
                SpawnerInput(firm_id=config.firm.id, template_id=template.id, fire_time=fire),
                id=spawner_id,
                task_queue=task_queue,
            )
            outcomes += status.outcomes
            await replays(client, spawner_id)
        first, second = outcomes
        assert first.pm_job is not None and second.pm_job is not None
        key = first.pm_job.external_id
        assert (first.pm_job.created, first.started) == (True, True)
        assert (second.pm_job.created, second.pm_job.external_id, second.started) == (
            False,
            key,
            False,
        )
        assert first.workflow_id == second.workflow_id == engagement_workflow_id("karbon", key)

        marker = pm_marker(template.id, "2026-03")
        mine = [i for i in store.work_items.values() if marker in (i.get("Description") or "")]
        assert [i["WorkItemKey"] for i in mine] == [key]
        item = mine[0]
        assert item["Title"] == "Monthly bookkeeping close - Bayside Dental Group - 2026-03"
        assert item["DueDate"].startswith("2026-03-20")
        assert item["StartDate"].startswith("2026-03-10")
        assert item["WorkType"] == "Bookkeeping - Monthly"  # loads back as monthly_bookkeeping
        assert item["ClientType"] == "Organization"
        assert len(sandbox.requests(prefix="/karbon/v3/WorkItems", method="POST")) == 1
        assert await settled_count(client, task_queue, 1) == 1


# --- sync --------------------------------------------------------------------------------------


async def test_sync_updates_a_changed_template_in_place_and_keeps_a_pause(
    client: Client, sandbox: RunningSandbox
) -> None:
    template = tpl(cadence="quarterly", due_day=15, due_months_after_period_end=1, lead_days=21)
    config = with_recurring(isolated(relay_firm(sandbox.config)), [template])
    schedule_id = recurring_schedule_id(config.firm.id, template.id)
    try:
        assert (await sync(client, config, "queue-a")).created == [schedule_id]
        handle = client.get_schedule_handle(schedule_id)
        await handle.pause(note="paused by the operator")

        # Annual, due April 15th of the following year: the trigger moves to March only.
        changed = template.model_copy(
            update={"cadence": "annual", "due_months_after_period_end": 4}
        )
        new_config = with_recurring(config, [changed])
        report = await sync(client, new_config, "queue-b")
        assert (report.updated, report.created, report.deleted) == ([schedule_id], [], [])

        description = await handle.describe()
        assert fire_months(description) == [3]
        assert description.schedule.spec.time_zone_name == config.firm.time_zone
        action = description.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "RecurringSpawnerWorkflow"
        assert action.task_queue == "queue-b"
        [spawner_input] = await client.data_converter.decode(list(action.args), [SpawnerInput])
        assert spawner_input == SpawnerInput(firm_id=config.firm.id, template_id=template.id)
        assert description.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        assert description.schedule.policy.catchup_window == timedelta(days=1)
        assert description.schedule.state.paused
        assert (await description.memo())["template"] == template.id

        assert (await sync(client, new_config, "queue-b")).unchanged == [schedule_id]
    finally:
        await drop_schedules(client, config.firm.id, schedule_id)


async def test_sync_deletes_removed_and_inactive_templates_of_this_firm_only(
    client: Client, sandbox: RunningSandbox
) -> None:
    kept, paused, removed = tpl(), tpl(), tpl()
    config = with_recurring(isolated(relay_firm(sandbox.config)), [kept, paused, removed])
    firm_id = config.firm.id
    # Another firm whose schedule ids start with ours: never ours to delete.
    neighbour_template = tpl()
    neighbour = with_recurring(config, [neighbour_template], id=f"{firm_id}-west")
    ids = {t.id: recurring_schedule_id(firm_id, t.id) for t in (kept, paused, removed)}
    neighbour_id = recurring_schedule_id(neighbour.firm.id, neighbour_template.id)
    assert neighbour_id.startswith(f"recurring-{firm_id}-")
    try:
        assert sorted((await sync(client, config, "q")).created) == sorted(ids.values())
        assert (await sync(client, neighbour, "q")).created == [neighbour_id]

        async def listed() -> list[str] | None:  # listing is eventually consistent
            found = await owned_schedule_ids(client, firm_id)
            return found if len(found) == 3 else None

        assert await until(listed, "three listed schedules") == sorted(ids.values())

        later = with_recurring(config, [kept, paused.model_copy(update={"active": False})])
        report = await sync(client, later, "q")
        assert sorted(report.deleted) == sorted([ids[paused.id], ids[removed.id]])
        assert (report.unchanged, report.created, report.updated) == ([ids[kept.id]], [], [])
        for gone in (ids[paused.id], ids[removed.id]):
            with pytest.raises(RPCError) as err:
                await client.get_schedule_handle(gone).describe()
            assert err.value.status is RPCStatusCode.NOT_FOUND
        assert (await client.get_schedule_handle(neighbour_id).describe()).id == neighbour_id
    finally:
        await drop_schedules(client, firm_id, *ids.values())
        await drop_schedules(client, neighbour.firm.id, neighbour_id)


async def test_sync_twice_changes_nothing_the_second_time_cli(
    client: Client, sandbox: RunningSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = isolated(relay_firm(sandbox.config))
    xpm = base.connectors.model_copy(update={"pm": XpmConnector(kind="xpm", poll_minutes=7)})
    config = with_recurring(
        base.model_copy(update={"connectors": xpm}),
        [tpl(), tpl(cadence="annual", due_day="last_business_day")],
    )
    path = tmp_path / "firm.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)), "utf-8")
    parser = argparse.ArgumentParser(prog="dispatch")
    add_parser(parser.add_subparsers(dest="command"))

    def args(*argv: str) -> argparse.Namespace:
        return parser.parse_args(["schedules", *argv, "--firm", str(path), "--task-queue", "q"])

    poller_id = f"pm-poller-{config.firm.id}"
    try:
        assert await run(args("sync"), client) == 0
        assert capsys.readouterr().out.splitlines()[-1] == (
            "3 created, 0 updated, 0 deleted, 0 unchanged"
        )
        assert await run(args("sync"), client) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[-1] == "0 created, 0 updated, 0 deleted, 3 unchanged"
        assert all(line.startswith("unchanged") for line in out[:-1])

        poller = await client.get_schedule_handle(poller_id).describe()
        assert [i.every for i in poller.schedule.spec.intervals] == [timedelta(minutes=7)]
        action = poller.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "PmPollerWorkflow"

        assert await run(args("list"), client) == 0
        listing = capsys.readouterr().out
        assert poller_id in listing and listing.count(": active; next ") == 3
        assert "1st of every month" in listing
    finally:
        await drop_schedules(client, config.firm.id, poller_id)
