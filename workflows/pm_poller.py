"""The PM poller: for practice-management systems without webhooks (Xero Practice Manager).

A Schedule (``pm-poller-{firm}``, every ``connector.poll_minutes``) starts one run per poll:

1. ``poller_window``: the dates to list, from the firm's "today" (workflows have no time zone);
2. ``pm_list_new_jobs`` (the PM role): jobs created in that window;
3. ``engagements_start``: one engagement per dispatchable job, id
   ``engagement-{source}-{external_id}`` with USE_EXISTING (and REJECT_DUPLICATE), so a job
   seen by many polls gives one engagement, and a finished one is never reopened.

Jobs the PM returns with a ``problem`` (e.g. a job type mapped to no service type) are reported
in the run's result, which the Web UI shows per poll; nothing is started for them. A later poll
sees them again, so fixing the job or the config is enough.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.recurring import RecurringActivities
    from activities.roles import PmActivities
    from dispatch.ids import InvalidIdError, engagement_workflow_id
    from dispatch.models import (
        EngagementInput,
        JobProblem,
        PollerInput,
        PollResult,
        StartEngagementsInput,
    )
    from workflows import options

START_BATCH = 50
"""Engagements started per activity: bounded payloads, and few history events per poll."""


@workflow.defn
class PmPollerWorkflow:
    @workflow.run
    async def run(self, input: PollerInput) -> PollResult:
        window = await options.FIRM.run(
            RecurringActivities.poller_window, input, "the dates this poll covers"
        )
        listed = await options.PM.run(PmActivities.list_new_jobs, window, "list new PM jobs")
        result = PollResult(window=window)
        starts: list[EngagementInput] = []
        for job in listed.jobs:
            details = job.details
            if job.problem or details is None:
                problem = job.problem or "the PM system returned no details"
                result.problems.append(JobProblem(external_id=job.external_id, problem=problem))
                continue
            try:
                engagement_workflow_id(details.source, details.external_id)
            except InvalidIdError as err:
                result.problems.append(JobProblem(external_id=job.external_id, problem=str(err)))
                continue
            starts.append(
                EngagementInput(
                    firm_id=input.firm_id,
                    source=details.source,
                    external_id=details.external_id,
                    details=details,
                    received_at=workflow.now(),
                )
            )
        for first in range(0, len(starts), START_BATCH):
            batch = starts[first : first + START_BATCH]
            done = await options.FIRM.run(
                RecurringActivities.start_engagements,
                StartEngagementsInput(engagements=batch),
                f"start {len(batch)} engagements",
            )
            for engagement in done.engagements:
                (result.started if engagement.started else result.existing).append(
                    engagement.workflow_id
                )
        workflow.logger.info(
            "poll %s..%s: %d started, %d existing, %d with problems",
            window.since,
            window.until,
            len(result.started),
            len(result.existing),
            len(result.problems),
        )
        return result
