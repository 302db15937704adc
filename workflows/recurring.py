"""The recurring-work spawner: what a template's Schedule starts each time it fires.

Trigger timing. A Schedule cannot say "the last business day" or "21 days before the 15th,
rolled to a working day" (temporal#5811), so the template's Schedule fires at 00:00 (firm time)
on the 1st of every month in which a trigger date can fall, and this workflow:

1. takes the fire's *nominal* time: the ``TemporalScheduledStartTime`` search attribute the
   Schedule sets (a backfill sets the backfilled time, so it plans the backfilled period, not
   "now"), or ``SpawnerInput.fire_time`` when started by hand;
2. asks ``recurring_plan`` which periods trigger in that month (usually one; none for a month
   that only sometimes holds a trigger) with their due dates and trigger instants;
3. sleeps durably until each trigger instant still in the future, then plans again, so a
   template changed or removed meanwhile is honoured;
4. creates the PM job if the template asks for one (found again, not duplicated, on a repeat);
5. starts ``engagement-{source}-{external_id}`` through an activity, with USE_EXISTING: the
   engagement must outlive the spawner, so it is not a child workflow. ``source`` is the PM's
   (``karbon`` and the work item key, the same id its ``Inserted`` webhook maps to), or
   ``recurring`` with ``{template}-{period}`` when no PM job is created.

A duplicate fire for the same month (a manual trigger, an overlapping backfill) plans the same
periods and ends at the same workflow ids, so it creates nothing new.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.recurring import RecurringActivities
    from dispatch.ids import InvalidIdError, engagement_workflow_id
    from dispatch.models import (
        EngagementInput,
        PlannedPeriod,
        PmJobInput,
        RecurringPlan,
        RecurringPlanInput,
        SpawnerInput,
        SpawnerStatus,
        SpawnOutcome,
        StartEngagementsInput,
    )
    from workflows import options

SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
"""Set by Temporal on every workflow a Schedule starts: the action's nominal time."""


@workflow.defn
class RecurringSpawnerWorkflow:
    @workflow.init
    def __init__(self, input: SpawnerInput) -> None:
        self._status = SpawnerStatus(template_id=input.template_id)

    @workflow.query
    def status(self) -> SpawnerStatus:
        return self._status

    @workflow.run
    async def run(self, input: SpawnerInput) -> SpawnerStatus:
        fire_time = self._fire_time(input)
        self._status.fire_time = fire_time
        plan = await self._plan(input, fire_time)
        self._status.fire_date = plan.fire_date
        self._status.note = plan.note
        for planned in plan.periods:
            current = await self._wait_for_trigger(input, fire_time, planned)
            if current is None:
                self._status.outcomes.append(
                    SpawnOutcome(
                        period_key=planned.period_key,
                        due_date=planned.due_date,
                        skipped="the template changed while waiting for the trigger date",
                    )
                )
                continue
            self._status.outcomes.append(await self._spawn(input, current))
        failed = [o for o in self._status.outcomes if o.error]
        if failed:
            # Visible as a failed run in the Schedule's recent actions and the Web UI; a later
            # fire, trigger or backfill for the month retries it without duplicating anything.
            raise ApplicationError(
                "; ".join(f"{o.period_key}: {o.error}" for o in failed),
                type="RecurringSpawnFailed",
                non_retryable=True,
            )
        return self._status

    @staticmethod
    def _fire_time(input: SpawnerInput) -> datetime:
        if input.fire_time is not None:
            return input.fire_time
        info = workflow.info()
        scheduled = info.typed_search_attributes.get(SCHEDULED_START_TIME)
        return scheduled or info.workflow_start_time

    async def _plan(self, input: SpawnerInput, fire_time: datetime) -> RecurringPlan:
        return await options.FIRM.run(
            RecurringActivities.plan,
            RecurringPlanInput(template_id=input.template_id, fire_time=fire_time),
            "plan the periods triggering this month",
        )

    async def _wait_for_trigger(
        self, input: SpawnerInput, fire_time: datetime, planned: PlannedPeriod
    ) -> PlannedPeriod | None:
        """Sleep until the trigger instant; None if the period no longer triggers this month."""
        current: PlannedPeriod | None = planned
        while current is not None and current.trigger_at > workflow.now():
            self._status.waiting_for = current.period_key
            self._status.waiting_until = current.trigger_at
            await workflow.sleep(
                current.trigger_at - workflow.now(),
                summary=f"until the trigger date of {current.period_key}",
            )
            fresh = await self._plan(input, fire_time)
            current = next((p for p in fresh.periods if p.period_key == planned.period_key), None)
        self._status.waiting_for = None
        self._status.waiting_until = None
        return current

    async def _spawn(self, input: SpawnerInput, planned: PlannedPeriod) -> SpawnOutcome:
        outcome = SpawnOutcome(period_key=planned.period_key, due_date=planned.due_date)
        details = planned.details
        try:
            if planned.create_in_pm:
                job = await options.PM.run(
                    RecurringActivities.create_pm_job,
                    PmJobInput(
                        template_id=input.template_id,
                        period_key=planned.period_key,
                        details=details,
                    ),
                    f"create the PM job for {planned.period_key}",
                )
                outcome.pm_job = job
                details = details.model_copy(
                    update={
                        "source": job.source,
                        "external_id": job.external_id,
                        "pm_url": job.pm_url or details.pm_url,
                        "client_email": job.client_email or details.client_email,
                    }
                )
            outcome.workflow_id = engagement_workflow_id(details.source, details.external_id)
            result = await options.FIRM.run(
                RecurringActivities.start_engagements,
                StartEngagementsInput(
                    engagements=[
                        EngagementInput(
                            firm_id=input.firm_id,
                            source=details.source,
                            external_id=details.external_id,
                            details=details,
                            received_at=workflow.now(),
                        )
                    ]
                ),
                f"start the engagement for {planned.period_key}",
            )
        except InvalidIdError as err:  # a PM key we cannot use in a workflow id
            outcome.error = str(err)
            return outcome
        except ActivityError as err:
            cause = err.cause
            outcome.error = cause.message if isinstance(cause, FailureError) else str(err)
            workflow.logger.warning("recurring %s %s failed", input.template_id, planned.period_key)
            return outcome
        outcome.started = result.engagements[0].started
        return outcome
