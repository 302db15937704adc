"""Talking to the firm's dispatcher: requests numbered per engagement, what it holds told to the
ledger, answers taken or refused, reassignments, partner picks and closing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

from workflows.engagement.base import (
    ANSWER_IN_FLIGHT_PATCH,
    DECISIONS_KEPT,
    LOGGED_READ_EVERY,
    RESULT_WAIT,
    RESULT_WAIT_V2,
    REVIEWER_INDEX_PATCH,
    cause_of,
    message_of,
    result_sequence,
)

with workflow.unsafe.imports_passed_through():
    from activities.firm import FirmActivities
    from dispatch import lifecycle
    from dispatch.ids import dispatcher_workflow_id, request_id
    from dispatch.ledger import progress_hours
    from dispatch.models import (
        AssignmentRequest,
        AssignmentResult,
        DispatchStatus,
        ForceAssignRequest,
        HoldingsSync,
        PartnerDecision,
        PendingRequest,
        ReleaseRequest,
        Reservation,
        ReservationProgress,
        Role,
        SnapshotInput,
        StaffRef,
    )
    from workflows import options
    from workflows.dispatcher import DispatcherWorkflow
    from workflows.engagement.checkpoints import Checkpoints


class DispatchClient(Checkpoints):
    @property
    def _result_wait(self) -> timedelta:
        return RESULT_WAIT_V2 if self._v2 else RESULT_WAIT

    async def _refuse_unasked(self) -> None:
        """Answers to requests this engagement no longer waits on (superseded, withdrawn, or
        a second answer to one it took). It keeps what it holds and tells the ledger so, which
        gives back anything booked for it that it did not ask for."""
        pending = self._pending
        waited: dict[str, AssignmentResult] = {}
        if (
            pending is not None
            and pending.request_id in self._results
            and self._patched(ANSWER_IN_FLIGHT_PATCH)
        ):
            waited[pending.request_id] = self._results.pop(pending.request_id)
        unasked = [r for r in self._results.values() if r.outcome == "assigned"]
        self._results.clear()
        self._results.update(waited)
        for result in unasked:
            self._note("answer not taken", result.request_id.rpartition(":")[2])
            await self._sync(result_sequence(result), "kept what it holds")

    def _request(self, purpose: str, *, keep: dict[Role, str] | None = None) -> PendingRequest:
        d = self._details
        assert d is not None
        self._state.request_seq += 1
        keep = keep or {}
        message = AssignmentRequest(
            request_id=request_id(self._state.workflow_id, self._state.request_seq),
            seq=self._state.request_seq if self._v2 else 0,
            workflow_id=self._state.workflow_id,
            client_id=d.client_id,
            service_type=d.service_type,
            due_date=d.due_date,
            start_date=d.start_date,
            estimated_hours=d.estimated_hours,
            required_skills=d.required_skills,
            specializations=d.specializations,
            exclude=self._state.declined_by,
            keep_preparer=keep.get(Role.PREPARER),
            keep_reviewer=keep.get(Role.REVIEWER),
        )
        return PendingRequest(
            request_id=message.request_id, purpose=purpose, sent_at=workflow.now(), request=message
        )

    def _refreshed(self, request: AssignmentRequest) -> AssignmentRequest:
        """The waiting request with today's facts (a moved due date, a new estimate)."""
        d = self._details
        if d is None:
            return request
        return request.model_copy(
            update={
                "due_date": d.due_date,
                "start_date": d.start_date,
                "estimated_hours": d.estimated_hours,
                "exclude": list(self._state.declined_by),
            }
        )

    def _reservations(self, without: frozenset[Role] = frozenset()) -> list[Reservation]:
        """What this engagement holds, as the ledger books it."""
        s, d, context = self._state, self._details, self._context
        if d is None:
            return []
        # The firm's today, as the dispatcher books it: the UTC date runs a day ahead of it in
        # the evening west of Greenwich, and the ledger would then disagree with what is held.
        today = context.today if context else d.due_date
        start = max(d.start_date or today, today)
        held = []
        for role, person, hours in (
            (Role.PREPARER, s.preparer, s.preparer_hours),
            (Role.REVIEWER, s.reviewer, s.reviewer_hours),
        ):
            if person is None or role in without or hours <= 0:
                continue
            held.append(
                Reservation(
                    workflow_id=s.workflow_id,
                    role=role,
                    staff_id=person.id,
                    # What the ledger was told is still open (the whole estimate until then).
                    hours=s.held_hours.get(role, hours),
                    start=min(start, d.due_date),
                    due=d.due_date,
                    client_id=d.client_id,
                    forced=s.forced and role is Role.PREPARER,
                )
            )
        return held

    def _answered_seq(self) -> int:
        """The newest request whose answer is reflected in what this engagement holds."""
        return self._state.request_seq - (1 if self._pending is not None else 0)

    async def _sync(
        self,
        seq: int,
        reason: str,
        *,
        without: frozenset[Role] = frozenset(),
        withdraw: bool = False,
    ) -> None:
        """Tell the ledger what this engagement holds as of request ``seq``."""
        await self._to_dispatcher(
            DispatcherWorkflow.sync_holdings,
            HoldingsSync(
                workflow_id=self._state.workflow_id,
                seq=seq,
                holdings=[] if withdraw else self._reservations(without),
                withdraw=withdraw,
                reason=reason,
            ),
        )

    async def _ask(self, pending: PendingRequest) -> None:
        self._pending = pending
        self._state.awaiting = pending.purpose
        await self._send(pending)

    async def _send(self, pending: PendingRequest) -> None:
        pending.sent_at = workflow.now()
        message = message_of(pending)
        if isinstance(message, ForceAssignRequest):
            await self._to_dispatcher(DispatcherWorkflow.force_assign, message)
        else:
            await self._to_dispatcher(DispatcherWorkflow.request_assignment, message)

    async def _to_dispatcher(self, signal: Any, arg: Any) -> None:
        handle = workflow.get_external_workflow_handle(dispatcher_workflow_id(self._state.firm_id))
        try:
            await handle.signal(signal, arg)
        except FailureError:
            # Not running (first engagement ever, or stopped by an operator): start it, retry.
            # A fresh dispatcher rebuilds its ledger from the engagements, this one included.
            try:
                await options.FIRM.run(
                    FirmActivities.ensure_dispatcher,
                    SnapshotInput(firm_id=self._state.firm_id),
                    "start dispatcher",
                )
                await handle.signal(signal, arg)
            except (ActivityError, FailureError) as err:
                # Never fatal: a waiting request is asked again after a while, and a fresh
                # dispatcher reads what this engagement holds when it rebuilds.
                self._note("dispatcher unreachable", cause_of(err))

    async def _release(self, roles: list[Role], why: str) -> None:
        if self._v2:
            both = set(roles) == {Role.PREPARER, Role.REVIEWER}
            # Closing withdraws every request it ever sent; giving one role back keeps a
            # decision still on its way (it is refused, and corrected, when it arrives).
            seq = self._state.request_seq if both else self._answered_seq()
            await self._sync(seq, why, without=frozenset(roles), withdraw=both)
            return
        await self._to_dispatcher(
            DispatcherWorkflow.release,
            ReleaseRequest(
                workflow_id=self._state.workflow_id,
                roles=roles,
                reason=why,
                withdraw_request=set(roles) == {Role.PREPARER, Role.REVIEWER},
            ),
        )

    async def _on_result(self, result: AssignmentResult, pending: PendingRequest) -> None:
        s = self._state
        tell_again, s.tell_partner_again = s.tell_partner_again, False
        s.decisions = [*s.decisions, *result.decisions][-DECISIONS_KEPT:]
        if result.decisions:
            self._last_candidates = result.decisions[-1].candidates
        if self._v2:
            if result.epoch and (s.ledger_epoch is None or result.epoch > s.ledger_epoch):
                s.ledger_epoch = result.epoch
            s.capacity_note = result.capacity_note
        if result.outcome == "needs_partner_review":
            if pending.purpose == "partner":
                # The partner's choice doesn't fit and wasn't "assign anyway": tell them why.
                self._pending = None
                s.awaiting = None
                await self._tell_partner_no_fit(result.reason)
                if self._v2 and s.status is DispatchStatus.NEEDS_PARTNER_REVIEW:
                    # Back in the queue: it still assigns itself when someone has room (the
                    # partner's pick superseded the request that waited).
                    await self._ask(self._request("dispatch"))
                return
            if pending.purpose == "adjust":
                self._pending = None
                s.awaiting = None
                s.warnings = [*s.warnings, result.reason]
                return
            # The dispatcher keeps the request parked and answers again on the same id.
            pending.parked = True
            if s.status is not DispatchStatus.NEEDS_PARTNER_REVIEW or tell_again:
                await self._needs_partner(
                    result.reason,
                    self._last_candidates,
                    choices=result.options if self._levers else [],
                )
            return
        self._pending = None
        s.awaiting = None
        if result.warnings:
            s.warnings = [*s.warnings, *result.warnings]
        if pending.purpose == "adjust":
            self._rebooked([Role.PREPARER, Role.REVIEWER], changed=[])
            s.preparer_hours = result.preparer_hours
            s.reviewer_hours = result.reviewer_hours
            self._note("reservation adjusted", "; ".join(result.warnings) or "fits")
            if result.warnings and s.preparer is not None:
                await self._tell_manager_over_capacity(result.warnings)
            return
        previous = {Role.PREPARER: s.preparer, Role.REVIEWER: s.reviewer}
        if pending.parked:
            self._note("capacity freed", "assigned after waiting for partner review")
        if pending.purpose == "partner":
            s.forced = any(
                d.outcome == "forced" and "over capacity" in d.reason for d in result.decisions
            )
            keep_reviewer = s.reviewer
            result = result.model_copy(
                update={"reviewer": keep_reviewer, "reviewer_hours": s.reviewer_hours}
            )
        changed = []
        for role in (Role.PREPARER, Role.REVIEWER):
            now_holder, before = self._holder(result, role), previous[role]
            if now_holder is not None and (before is None or before.id != now_holder.id):
                changed.append(role)
        # A partner's pick books the preparer alone; every other answer books both roles whole.
        self._rebooked(
            [Role.PREPARER] if pending.purpose == "partner" else [Role.PREPARER, Role.REVIEWER],
            changed=changed,
        )
        s.preparer = result.preparer
        s.reviewer = result.reviewer
        s.preparer_hours = result.preparer_hours
        s.reviewer_hours = result.reviewer_hours or s.reviewer_hours
        s.estimated_completion = result.estimated_completion or s.estimated_completion
        s.needs_partner_review_reason = None
        s.review_sequence = lifecycle.review_sequence(
            s.preparer.name if s.preparer else None, s.reviewer.name if s.reviewer else None
        )
        if Role.PREPARER in changed:
            s.assignment_round += 1
            s.assigned_at = workflow.now()
            s.accepted_at = None
        reassigned = pending.purpose.startswith("reassign") or (
            pending.purpose == "partner" and any(previous.values())
        )
        if s.assignment_round == 1 and Role.PREPARER in changed:
            workflow.metric_meter().create_histogram_timedelta(
                "dispatch_assignment_latency", "webhook to first assignment", "s"
            ).record(workflow.now() - workflow.info().workflow_start_time)
        if (
            s.status in (DispatchStatus.NEEDS_PARTNER_REVIEW, DispatchStatus.RECEIVED)
            or Role.PREPARER in changed
        ):
            self._set_status(DispatchStatus.ASSIGNED, result.reason)
        else:
            self._note("reviewer assigned", result.reason)
            if self._patched(REVIEWER_INDEX_PATCH):
                # The Reviewer search attribute follows a reviewer-only change too.
                self._set_status(s.status, "reviewer assigned", note=False)
        await self._announce(result, changed, reassigned=reassigned)
        if (
            pending.purpose == "partner"
            and self._context is not None
            and self._context.needs_reviewer
            and s.reviewer is None
        ):
            # A partner named the preparer; the dispatcher still finds the reviewer.
            assert s.preparer is not None
            await self._ask(self._request("reviewer", keep={Role.PREPARER: s.preparer.id}))

    @staticmethod
    def _holder(result: AssignmentResult, role: Role) -> StaffRef | None:
        return result.preparer if role is Role.PREPARER else result.reviewer

    async def _reassign(self, role: Role, staff_id: str, reason: str) -> None:
        s = self._state
        context = self._context
        assert context is not None
        holder = s.preparer if role is Role.PREPARER else s.reviewer
        if holder is None or holder.id != staff_id:
            return  # already moved on (a second click, or a partner decision came first)
        if staff_id not in s.declined_by:
            s.declined_by = [*s.declined_by, staff_id]
        await self._release([role], f"{staff_id} asked to be reassigned")
        await self._remove_block(role, holder)
        if role is Role.PREPARER:
            s.preparer = None
            s.preparer_hours = 0.0
        else:
            s.reviewer = None
            s.reviewer_hours = 0.0
        self._rebooked([role], changed=[role])
        if not self._v2:
            # The first protocol logged the gap too (nobody, 0 h): one record per meaning now,
            # written when the new person is announced.
            await self._log("reassigned", s.status)
        if len(s.declined_by) >= context.max_declines:
            names = ", ".join(s.declined_by)
            candidates = [c for c in self._last_candidates if c.staff_id not in s.declined_by]
            await self._needs_partner(
                f"declined by {names} ({len(s.declined_by)} of {context.max_declines} allowed)",
                candidates,
            )
            return
        other = s.reviewer if role is Role.PREPARER else s.preparer
        keep = (
            {Role.REVIEWER if role is Role.PREPARER else Role.PREPARER: other.id}
            if other is not None
            else {}
        )
        await self._ask(self._request(f"reassign:{role.value}", keep=keep))

    async def _partner_decision(self, decision: PartnerDecision) -> None:
        s = self._state
        d = self._details
        context = self._context
        if s.status is not DispatchStatus.NEEDS_PARTNER_REVIEW or d is None or context is None:
            return
        s.request_seq += 1
        start = max(d.start_date or context.today, context.today)
        message = ForceAssignRequest(
            request_id=request_id(s.workflow_id, s.request_seq),
            workflow_id=s.workflow_id,
            partner_id=decision.partner_id,
            staff_id=decision.staff_id,
            client_id=d.client_id,
            start=start,
            due=d.due_date,
            hours=d.estimated_hours,
            override_capacity=decision.override_capacity,
            seq=s.request_seq if self._v2 else 0,
        )
        await self._ask(
            PendingRequest(
                request_id=message.request_id,
                purpose="partner",
                sent_at=workflow.now(),
                force=message,
            )
        )

    # --- open hours (LEVERS_PATCH) -----------------------------------------------------------

    def _rebooked(self, roles: list[Role], *, changed: list[Role]) -> None:
        """The ledger booked these roles' whole estimates again (an answer taken) or released
        them: what it was told of their open hours no longer stands. A new holder starts with
        no hours logged."""
        if not self._levers:
            return
        s = self._state
        s.held_hours = {r: h for r, h in s.held_hours.items() if r not in roles}
        s.logged_hours = {r: h for r, h in s.logged_hours.items() if r not in changed}

    def _handed_over(self, role: Role) -> bool:
        """The role's work is done as far as capacity goes: the preparer's once the PM system
        shows it ready for review or in review (a review sent back re-opens it), the
        reviewer's once it is completed."""
        d = self._details
        state = d.work_state if d is not None else None
        if role is Role.PREPARER:
            return state in ("ready_for_review", "in_review", "completed")
        return state == "completed"

    def _held_roles(self) -> list[tuple[Role, StaffRef, float]]:
        s = self._state
        return [
            (role, person, estimate)
            for role, person, estimate in (
                (Role.PREPARER, s.preparer, s.preparer_hours),
                (Role.REVIEWER, s.reviewer, s.reviewer_hours),
            )
            if person is not None and estimate > 0
        ]

    async def _report_progress(self) -> None:
        """Tell the ledger each role's open hours where they differ from what it holds."""
        s = self._state
        if self._details is None or s.status.is_closed:
            return
        seq = self._answered_seq()
        for role, person, estimate in self._held_roles():
            message = ReservationProgress(
                workflow_id=s.workflow_id,
                seq=seq,
                role=role,
                staff_id=person.id,
                estimate=estimate,
                logged=s.logged_hours.get(role, 0.0),
                handed_over=self._handed_over(role),
            )
            hours = progress_hours(message)
            if s.held_hours.get(role, estimate) == hours:
                continue
            s.held_hours = {**s.held_hours, role: hours}
            await self._to_dispatcher(DispatcherWorkflow.reservation_progress, message)

    def _logged_read_at(self) -> datetime | None:
        """When the hours logged are read next: daily while someone's work is under way."""
        s = self._state
        if s.status.is_closed or not self._roles_to_read():
            return None
        last = s.logged_read_at or s.assigned_at
        return last + LOGGED_READ_EVERY if last is not None else None

    def _roles_to_read(self) -> list[tuple[Role, StaffRef]]:
        """The preparer until the work is handed over, then the reviewer."""
        preparer_done = self._handed_over(Role.PREPARER)
        return [
            (role, person)
            for role, person, _ in self._held_roles()
            if (role is Role.PREPARER) != preparer_done
        ]

    async def _read_logged(self) -> None:
        """The hours each working holder logged on the job, from the time tracker."""
        s, d = self._state, self._details
        assert d is not None
        today = self._firm_today()
        s.logged_read_at = workflow.now()
        starts = [
            d.start_date,
            self._firm_date(s.assigned_at) if s.assigned_at else None,
            self._firm_date(s.timeline[0].at) if s.timeline else None,
        ]
        since = min([day for day in starts if day is not None] or [today])
        for role, person in self._roles_to_read():
            try:
                result = await self._job_hours(
                    [person], min(since, today), f"hours logged by the {role.value}"
                )
            except ActivityError as err:
                # The ledger keeps what it holds (more, never less, than is open).
                self._note("hours unavailable", cause_of(err))
                continue
            s.logged_hours = {**s.logged_hours, role: result.hours}

    async def _close(self, status: DispatchStatus, why: str) -> None:
        s = self._state
        self._set_status(status, why)
        if status is DispatchStatus.COMPLETED:
            s.completed_at = workflow.now()
        self._pending = None
        s.awaiting = None
        await self._release([Role.PREPARER, Role.REVIEWER], why)
        if self._details is None:
            return
        if status is DispatchStatus.CANCELLED:
            for role, person in ((Role.PREPARER, s.preparer), (Role.REVIEWER, s.reviewer)):
                if person is not None:
                    await self._remove_block(role, person)
        event: Literal["completed", "cancelled"] = (
            "completed" if status is DispatchStatus.COMPLETED else "cancelled"
        )
        await self._log(event, status)
