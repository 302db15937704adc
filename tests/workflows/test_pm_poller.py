"""The PM poller on the dev server: polls start one engagement per job, however often they run.

The PM side (``pm_list_new_jobs``) is a small activity over a fixed job list here; the XPM
connector has its own contract tests. Temporal, the poller, the engagement starts and the
engagements themselves are real.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, ScheduleActionStartWorkflow

from activities.roles import PmActivities
from app.schedules import owned_schedule_ids, poller_schedule_id, sync
from dispatch.config import FirmConfig, RelayConnector, XpmConnector
from dispatch.ids import engagement_workflow_id
from dispatch.models import JobList, ListJobsInput, PmJob, PollerInput, PollResult
from tests.harness import details, eventually, firm_today, isolated, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm
from tests.workflows.test_schedules import (
    describe_or_none,
    drop_schedules,
    recurring_worker,
    replays,
    settled_count,
)
from workflows.pm_poller import PmPollerWorkflow


class ListedJobs(PmActivities):
    """The PM role's listing over a fixed set of jobs; records each window it is asked for."""

    def __init__(self, jobs: list[PmJob]) -> None:
        self.jobs = jobs
        self.windows: list[ListJobsInput] = []

    @activity.defn(name="pm_list_new_jobs")
    async def list_new_jobs(self, input: ListJobsInput) -> JobList:
        self.windows.append(input)
        return JobList(jobs=self.jobs)


def xpm_firm(sandbox: RunningSandbox, lookback_days: int = 3) -> tuple[FirmConfig, FirmConfig]:
    """(the firm with XPM as its PM, the same firm with a relay PM for the role activities).

    Without recurring templates: these tests are about the poller's schedule alone.
    """
    relay = isolated(relay_firm(sandbox.config)).model_copy(update={"recurring": []})
    xpm = relay.connectors.model_copy(
        update={"pm": XpmConnector(kind="xpm", poll_minutes=5, lookback_days=lookback_days)}
    )
    return relay.model_copy(update={"connectors": xpm}), relay


def jobs(config: FirmConfig, tag: str) -> list[PmJob]:
    due = workdays_ahead(config, 15)
    return [
        PmJob(external_id=f"J{tag}-1", details=details(f"{tag}-1", due=due, source="xpm")),
        PmJob(external_id=f"J{tag}-2", details=details(f"{tag}-2", due=due, source="xpm")),
        PmJob(
            external_id=f"J{tag}-3",
            problem="job type 'Special project' is not mapped to a service type",
        ),
    ]


async def test_polling_the_same_jobs_twice_starts_one_engagement_per_job(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config, relay = xpm_firm(sandbox, lookback_days=3)
    tag = uuid.uuid4().hex[:8]
    listed = ListedJobs(jobs(config, tag))
    expected = [engagement_workflow_id("xpm", f"E{tag}-{n}") for n in (1, 2)]
    async with recurring_worker(
        client, config, extra=[listed.list_new_jobs], roles_config=relay
    ) as task_queue:
        results: list[PollResult] = []
        for n in range(2):
            poll_id = f"pm-poller-{config.firm.id}-{n}"
            results.append(
                await client.execute_workflow(
                    PmPollerWorkflow.run,
                    PollerInput(firm_id=config.firm.id),
                    id=poll_id,
                    task_queue=task_queue,
                )
            )
            await replays(client, poll_id)
        first, second = results
        assert (first.started, first.existing) == (expected, [])
        assert (second.started, second.existing) == ([], expected)
        for result in results:
            assert [(p.external_id, p.problem) for p in result.problems] == [
                (f"J{tag}-3", "job type 'Special project' is not mapped to a service type")
            ]
        today = firm_today(config)
        # Through tomorrow: XPM dates jobs in its own time zone, which may be a day ahead.
        window = ListJobsInput(since=today - timedelta(days=3), until=today + timedelta(days=1))
        assert listed.windows == [window, window]
        assert first.window == window
        for workflow_id in expected:
            assert await describe_or_none(client, workflow_id) is not None
        assert await settled_count(client, task_queue, 2) == 2


async def test_the_poller_schedule_follows_the_pm_connector(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config, relay = xpm_firm(sandbox)
    tag = uuid.uuid4().hex[:8]
    listed = ListedJobs(jobs(config, tag)[:1])
    schedule_id = poller_schedule_id(config.firm.id)
    async with recurring_worker(
        client, config, extra=[listed.list_new_jobs], roles_config=relay
    ) as task_queue:
        assert (await sync(client, config, task_queue)).created == [schedule_id]
        handle = client.get_schedule_handle(schedule_id)
        description = await handle.describe()
        assert [i.every for i in description.schedule.spec.intervals] == [timedelta(minutes=5)]
        action = description.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "PmPollerWorkflow"

        await handle.trigger()
        engagement_id = engagement_workflow_id("xpm", f"E{tag}-1")

        async def started() -> object | None:
            return await describe_or_none(client, engagement_id)

        await eventually(started, what="the polled job's engagement")

        async def listed_schedule() -> bool | None:  # deletion needs the (lagging) listing
            return True if schedule_id in await owned_schedule_ids(client, config.firm.id) else None

        await eventually(listed_schedule, what="the poller schedule in the listing")
        no_poller = config.connectors.model_copy(
            update={"pm": RelayConnector(kind="relay", system_name="TaxDome")}
        )
        report = await sync(client, config.model_copy(update={"connectors": no_poller}), task_queue)
        assert report.deleted == [schedule_id]
    await drop_schedules(client, config.firm.id, schedule_id)
