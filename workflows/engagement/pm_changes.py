"""Loading the engagement from its PM system and following the changes the PM system reports
(started, ready for review, completed, cancelled, a moved due date, a new estimate), and a
partner moving the due date here, which the PM system is then told of.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.engagement.base import PM_LOAD_LOCAL_PATCH

with workflow.unsafe.imports_passed_through():
    from activities.roles import (
        PmActivities,
    )
    from dispatch import lifecycle
    from dispatch.models import (
        DispatchStatus,
        DueDateMove,
        EngagementDetails,
        LoadEngagementInput,
        PmDueDateInput,
        PmUpdate,
        Role,
    )
    from workflows import options
    from workflows.engagement.dispatching import DispatchClient


class PmChanges(DispatchClient):
    async def _load_until_dispatchable(self) -> bool:
        """Load the engagement; when it cannot be dispatched, wait for the PM to fix it."""
        while self._details is None:
            details = await self._load()
            if details is not None:
                self._apply_details(details)
                return True
            if self._state.status.is_closed:
                return False
            await workflow.wait_condition(lambda: bool(self._pm_updates))
            update = self._pm_updates.pop(0)
            if update.action == "Deleted":
                await self._close(DispatchStatus.CANCELLED, "deleted in the PM system")
                return False
            if update.details is not None:
                self._apply_details(update.details)
        self._apply_details(self._details)
        return True

    async def _load(self) -> EngagementDetails | None:
        read = options.PM.run_local if self._patched(PM_LOAD_LOCAL_PATCH) else options.PM.run
        try:
            return await read(
                PmActivities.load_engagement,
                LoadEngagementInput(source=self._state.source, external_id=self._state.external_id),
                "load from PM",
            )
        except ActivityError as err:
            cause = err.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            message = cause.message if isinstance(cause, FailureError) else str(err)
            self._state.error = message
            if kind == "EngagementNotFound":
                await self._close(DispatchStatus.CANCELLED, "not found in the PM system")
                return None
            self._state.needs_partner_review_reason = (
                f"cannot be dispatched as it stands: {message}"
            )
            self._set_status(
                DispatchStatus.NEEDS_PARTNER_REVIEW, self._state.needs_partner_review_reason
            )
            return None

    async def _pm_update(self, update: PmUpdate) -> None:
        s = self._state
        if update.action == "Deleted":
            await self._close(DispatchStatus.CANCELLED, "deleted in the PM system")
            return
        fresh = update.details or await self._load()
        if fresh is None or s.status.is_closed or self._details is None:
            return
        previous = self._details
        self._apply_details(fresh)
        work_state = "completed" if update.action == "Completed" else fresh.work_state
        target = lifecycle.next_status(s.status, work_state)
        if fresh.due_date != previous.due_date or fresh.estimated_hours != previous.estimated_hours:
            await self._plan_changed(previous, fresh)
        if target is None:
            return
        if target in (DispatchStatus.COMPLETED, DispatchStatus.CANCELLED):
            await self._close(target, f"{target.value.lower()} in the PM system")
            return
        if target is DispatchStatus.IN_PROGRESS and s.started_at is None:
            s.started_at = workflow.now()
        self._set_status(target, "changed in the PM system")
        if target is DispatchStatus.READY_FOR_REVIEW and s.reviewer is not None:
            await self._notify(
                self._notice(
                    "review_ready",
                    s.reviewer,
                    "Ready for your review",
                    [
                        f"{s.preparer.name if s.preparer else 'The preparer'} has finished "
                        f"{self._summary().title}; it is ready for your review."
                    ],
                    f"review_ready:{s.assignment_round}",
                )
            )

    async def _move_due(self, move: DueDateMove) -> None:
        """A partner's new due date: the PM record first (else the PM system's next update
        would move it back), then the same path as a date moved in the PM system."""
        s, previous = self._state, self._details
        if previous is None or previous.due_date == move.due_date:
            return
        await self._effect(
            f"pm_due_date:{move.due_date.isoformat()}",
            options.PM.run(
                PmActivities.move_due_date,
                PmDueDateInput(
                    workflow_id=s.workflow_id,
                    source=previous.source,
                    external_id=previous.external_id,
                    due_date=move.due_date,
                ),
                "PM due date",
            ),
        )
        fresh = previous.model_copy(update={"due_date": move.due_date})
        self._apply_details(fresh)
        # Waiting for a partner, with a request the new date goes out again: the answer goes
        # back to them either way (assigned shows on the board; still nobody, and they get a
        # fresh message). A partner's own pick on its way is answered as a pick.
        pending = self._pending
        s.tell_partner_again = (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and self._v2
            and pending is not None
            and pending.request is not None
        )
        await self._plan_changed(previous, fresh)
        day = f"{move.due_date:%a %d %b %Y}"
        for role, person in ((Role.PREPARER, s.preparer), (Role.REVIEWER, s.reviewer)):
            if person is None:
                continue
            await self._notify(
                self._notice(
                    "due_moved",
                    person,
                    f"New due date: {day}",
                    [f"{self._summary().title} is now due {day} (moved by a partner)."],
                    f"due_moved:{role.value}:{move.due_date.isoformat()}",
                )
            )

    async def _plan_changed(self, previous: EngagementDetails, fresh: EngagementDetails) -> None:
        """A moved due date or a new estimate: new deadlines, and the reservation follows."""
        s = self._state
        if fresh.due_date != previous.due_date:
            await self._refresh_context()
            s.due_set_at = workflow.now()
            self._note("due date moved", f"{previous.due_date} -> {fresh.due_date}")
        if fresh.estimated_hours != previous.estimated_hours:
            self._note(
                "estimate changed", f"{previous.estimated_hours:g} h -> {fresh.estimated_hours:g} h"
            )
        keep = {
            role: person.id
            for role, person in ((Role.PREPARER, s.preparer), (Role.REVIEWER, s.reviewer))
            if person is not None
        }
        pending = self._pending
        if keep and pending is None:
            await self._ask(self._request("adjust", keep=keep))
        elif self._v2 and pending is not None and pending.request is not None:
            # Still waiting (or parked): the request follows the new date and hours, so nobody
            # is later booked on yesterday's facts. The newer request supersedes the older.
            waiting = pending.request
            await self._ask(
                self._request(
                    pending.purpose,
                    keep={
                        role: staff
                        for role, staff in (
                            (Role.PREPARER, waiting.keep_preparer),
                            (Role.REVIEWER, waiting.keep_reviewer),
                        )
                        if staff is not None
                    },
                )
            )
