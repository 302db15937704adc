"""Checkpoints on durable timers (``dispatch.lifecycle`` computes them): reminders, 48 h not
started, midpoint hours, due - 3 days, past due; each fires once.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import date

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.roles import (
        TimeTrackerActivities,
    )
    from dispatch import lifecycle
    from dispatch.models import (
        JobHours,
        JobHoursInput,
        StaffRef,
        TrackerStaff,
    )
    from workflows import options
    from workflows.engagement.announcements import Announcements


class Checkpoints(Announcements):
    def _checkpoints(self) -> list[lifecycle.Checkpoint]:
        s, context, d = self._state, self._context, self._details
        if context is None or d is None or s.due_set_at is None:
            return []
        assigned = s.assigned_at
        times = lifecycle.CheckpointTimes(
            status=s.status,
            round=s.assignment_round,
            assigned_at=assigned if s.preparer is not None else None,
            responded=s.accepted_at is not None,
            work_started_at=max(
                context.start_at or assigned or s.due_set_at, assigned or s.due_set_at
            ),
            due=d.due_date,
            due_at=context.due_at,
            due_set_at=s.due_set_at,
        )
        return lifecycle.checkpoints(
            times,
            lifecycle.CheckpointPolicy(
                response_reminder_hours=context.response_reminder_hours,
                response_escalation_hours=context.response_escalation_hours,
                not_started_hours=context.not_started_hours,
                status_check_days=context.status_check_days,
            ),
        )

    async def _fire_due_checkpoints(self) -> None:
        now = workflow.now()
        for checkpoint in self._checkpoints():
            if checkpoint.key in self._state.checkpoints:
                continue
            if checkpoint.skip:
                self._state.checkpoints = {**self._state.checkpoints, checkpoint.key: "skipped"}
                continue
            if checkpoint.at > now:
                continue
            self._state.checkpoints = {**self._state.checkpoints, checkpoint.key: "fired"}
            self._note(f"checkpoint {checkpoint.kind}", checkpoint.key)
            await self._checkpoint(checkpoint)

    async def _checkpoint(self, checkpoint: lifecycle.Checkpoint) -> None:
        s = self._state
        summary = self._summary()
        due = summary.due_date.isoformat()
        preparer = s.preparer
        kind = checkpoint.kind
        if kind == "response_reminder" and preparer is not None:
            await self._notify(
                self._notice(
                    "response_reminder",
                    preparer,
                    "Please answer your new assignment",
                    [
                        f"You were assigned {summary.title} for {summary.client_name}, due {due}.",
                        "Please Accept it, or Request reassignment if you can't take it.",
                    ],
                    checkpoint.key,
                )
            )
        elif kind in ("no_response", "not_started") and preparer is not None:
            manager = (await self._contacts([preparer.id])).managers[preparer.id]
            what = "hasn't answered the assignment" if kind == "no_response" else "hasn't started"
            await self._notify(
                self._notice(
                    kind,
                    manager,
                    f"{preparer.name} {what}: {summary.title}",
                    [
                        f"{preparer.name} {what} {summary.title} for {summary.client_name}.",
                        f"Assigned {self._ago(s.assigned_at)}; due {due}; "
                        f"{summary.estimated_hours:g} h estimated.",
                        "Check in with them, or reassign it in the PM system.",
                    ],
                    checkpoint.key,
                )
            )
        elif kind == "midpoint" and preparer is not None:
            hours = await self._hours_logged()
            await self._notify(
                self._notice(
                    "midpoint",
                    preparer,
                    f"Halfway to the due date: {summary.title}",
                    [
                        f"{hours:g} h logged of {summary.estimated_hours:g} h estimated; "
                        f"due {due}.",
                        "No action needed: this is for your planning.",
                    ],
                    checkpoint.key,
                )
            )
        elif kind == "status_check" and preparer is not None:
            await self._notify(
                self._notice(
                    "status_check",
                    preparer,
                    f"Due in a few days: {summary.title}",
                    [
                        f"{summary.title} for {summary.client_name} is due {due}.",
                        "If it will slip, tell your manager now so the client hears it from us.",
                    ],
                    checkpoint.key,
                )
            )
        elif kind == "past_due":
            context = self._context
            assert context is not None
            hours = await self._hours_logged() if preparer is not None else 0.0
            await self._notify(
                self._notice(
                    "past_due",
                    context.managing_partner,
                    f"Past due: {summary.title}",
                    [
                        f"{summary.title} for {summary.client_name} was due {due} and is not done.",
                        f"Status: {s.status.value}. Preparer: "
                        f"{preparer.name if preparer else 'nobody'}; reviewer: "
                        f"{s.reviewer.name if s.reviewer else 'nobody'}.",
                        f"Hours logged: {hours:g} of {summary.estimated_hours:g} estimated.",
                        *(
                            [f"Waiting for a partner: {s.needs_partner_review_reason}"]
                            if s.needs_partner_review_reason
                            else []
                        ),
                    ],
                    checkpoint.key,
                )
            )

    async def _hours_logged(self) -> float:
        s, d = self._state, self._details
        assert d is not None and self._context is not None
        people = [p for p in (s.preparer, s.reviewer) if p is not None]
        since = self._firm_date(s.assigned_at or workflow.now())
        try:
            result = await self._job_hours(people, since, "hours logged on the job")
        except ActivityError:
            self._note("hours unavailable", "the time tracker did not answer")
            return s.hours_logged or 0.0
        s.hours_logged = result.hours
        self._note("hours logged", f"{result.hours:g} h ({result.detail})")
        return result.hours

    def _job_hours(self, people: list[StaffRef], since: date, summary: str) -> Awaitable[JobHours]:
        """The time tracker's hours logged on this job by ``people`` from ``since`` to today."""
        d = self._details
        assert d is not None
        return options.TRACKER.run(
            TimeTrackerActivities.job_hours,
            JobHoursInput(
                source=d.source,
                external_id=d.external_id,
                staff=[TrackerStaff(staff_id=p.id, email=p.email) for p in people],
                since=since,
                until=self._firm_today(),
            ),
            summary,
        )
