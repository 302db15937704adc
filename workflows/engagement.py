"""One engagement, from the PM system's webhook until the work is done.

1. Load the engagement from the PM system (thin webhooks carry only a key).
2. Ask the firm's dispatcher for people; it reads capacity, chooses and reserves atomically.
3. Assigned: fire the side effects together (PM write-back, a DM to each person with Accept /
   Request reassignment, calendar blocks, client confirmation, CRM record).
   Nobody fits: ``NeedsPartnerReview``; the managing partner gets the candidates and why each
   was blocked, as buttons; the dispatcher keeps retrying as capacity is released.
4. Live until completed or cancelled, on durable timers and messages:
   - answers (Update ``respond``): Accept, or Request reassignment -> release, exclude, dispatch
     again; after ``max_declines`` declines -> partner review;
   - partner decisions (Update ``decide``), including "assign anyway" over capacity;
   - PM changes (signal ``pm_updated``): started, ready for review, in review, completed,
     cancelled, due date moved, estimate changed;
   - checkpoints (``dispatch.lifecycle``): reminders, 48 h not started, midpoint, due - 3 days,
     past due — each once, recomputed when the due date moves.
5. Closed: hours released, CRM record, search attributes final.

Every side effect has a deterministic key, so a retried activity or a duplicated webhook or
click cannot produce a second PM write, message, calendar event or email.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.firm import FirmActivities
    from activities.roles import (
        CalendarActivities,
        ChatActivities,
        CrmActivities,
        EmailActivities,
        PmActivities,
        TimeTrackerActivities,
    )
    from dispatch import lifecycle
    from dispatch import search_attributes as sa
    from dispatch.ids import calendar_event_key, dispatcher_workflow_id, request_id, side_effect_key
    from dispatch.models import (
        AssignmentNotice,
        AssignmentRequest,
        AssignmentResponse,
        AssignmentResult,
        CalendarBlockInput,
        CalendarRemoveInput,
        CandidateScore,
        ClientConfirmationInput,
        Contacts,
        ContactsInput,
        CrmLogInput,
        DispatchStatus,
        EngagementContext,
        EngagementContextInput,
        EngagementDetails,
        EngagementHoldings,
        EngagementInput,
        EngagementState,
        EngagementSummary,
        ForceAssignRequest,
        HoldingsSync,
        JobHoursInput,
        LedgerSyncRequest,
        LoadEngagementInput,
        PartnerDecision,
        PartnerReviewNotice,
        PendingRequest,
        PmUpdate,
        PmWriteBackInput,
        ReleaseRequest,
        Reservation,
        ResponseOutcome,
        Role,
        SideEffect,
        SnapshotInput,
        StaffNotice,
        StaffRef,
        TimelineEntry,
        TrackerStaff,
        request_sequence,
    )
    from workflows import options
    from workflows.dispatcher import RESULT_SIGNAL, DispatcherWorkflow

T = TypeVar("T")
EffectState = Literal["pending", "done", "failed", "skipped"]

RESULT_WAIT = timedelta(minutes=10)
"""How long to wait for the dispatcher before asking again (the request id makes it harmless)."""
RESULT_WAIT_V2 = timedelta(minutes=2)
"""The same for engagements of the ledger protocol: a lost dispatcher is rebuilt from the
engagements (their waiting requests included), so a resend is only a safety net, and a short
one wakes a dispatcher nobody else is waiting on."""
LOCAL_READS_PATCH = "firm-reads-local"
"""Firm context and escalation contacts are read by local activities (no task-queue round
trip per read: two fewer workflow tasks per engagement)."""
LEDGER_PATCH = "ledger-v2"
"""``workflow.patched`` id of the ledger protocol (request numbers, holdings syncs, epochs,
re-parking, cancellation, continue-as-new). Engagements started before it keep their old path;
remove the old path with ``deprecate_patch`` once none of them is open (README "Upgrading")."""
SEEN_EVENTS = 200
TIMELINE_KEPT = 300
DECISIONS_KEPT = 12
SIDE_EFFECTS_KEPT = 200
CONTEXT_RETRY = (timedelta(minutes=1), timedelta(hours=1))
NoticeKind = Literal[
    "response_reminder",
    "no_response",
    "not_started",
    "midpoint",
    "status_check",
    "past_due",
    "reassigned_away",
    "partner_decision",
    "review_ready",
    "completed",
]


def _cause(err: FailureError) -> str:
    cause = err.cause
    return cause.message if isinstance(cause, FailureError) else (err.message or str(err))


def result_sequence(result: AssignmentResult) -> int:
    return request_sequence(result.request_id)


def _message(pending: PendingRequest) -> AssignmentRequest | ForceAssignRequest:
    message = pending.force or pending.request
    assert message is not None
    return message


@workflow.defn
class EngagementWorkflow:
    @workflow.init
    def __init__(self, input: EngagementInput) -> None:
        info = workflow.info()
        self._state = input.state or EngagementState(
            workflow_id=info.workflow_id,
            firm_id=input.firm_id,
            source=input.source,
            external_id=input.external_id,
        )
        self._indexed = input.index_search_attributes
        self._details: EngagementDetails | None = input.details
        self._context: EngagementContext | None = None
        self._results: dict[str, AssignmentResult] = {}
        self._v2 = False
        """The ledger protocol (``LEDGER_PATCH``); set at the start of ``run``."""
        self._local_reads = False
        self._pm_updates: list[PmUpdate] = []
        self._reassignments: list[tuple[Role, str, str]] = []
        self._decisions: list[PartnerDecision] = []
        self._last_candidates: list[CandidateScore] = []

    @property
    def _pending(self) -> PendingRequest | None:
        """The dispatcher request this engagement waits on (in its state, so it is carried)."""
        return self._state.pending

    @_pending.setter
    def _pending(self, value: PendingRequest | None) -> None:
        self._state.pending = value

    # --- messages ------------------------------------------------------------------------

    @workflow.signal(name=RESULT_SIGNAL)
    def assignment_decided(self, result: AssignmentResult) -> None:
        known = self._state.ledger_epoch
        if self._v2 and result.epoch and known and result.epoch < known:
            # From a ledger that was lost and rebuilt since: the new one answers instead.
            return
        self._results[result.request_id] = result

    @workflow.update
    def ledger_sync(self, request: LedgerSyncRequest) -> EngagementHoldings:
        """A rebuilt ledger asks what this engagement holds and becomes the one it listens to."""
        if self._state.ledger_epoch is None or request.epoch > self._state.ledger_epoch:
            self._state.ledger_epoch = request.epoch
        return self.holdings()

    @workflow.query
    def holdings(self) -> EngagementHoldings:
        """What this engagement holds and waits for: what a ledger is rebuilt from."""
        s = self._state
        pending = self._pending
        request = force = None
        if pending is not None:
            if pending.force is not None:
                force = pending.force
            elif pending.request is not None:
                request = self._refreshed(pending.request)
        return EngagementHoldings(
            workflow_id=s.workflow_id,
            firm_id=s.firm_id,
            seq=self._answered_seq(),
            holdings=[] if s.status.is_closed else self._reservations(),
            request=request,
            force=force,
            parked=pending.parked if pending is not None else False,
            closed=s.status.is_closed,
            client_id=s.client_id,
            epoch=s.ledger_epoch,
        )

    @workflow.signal
    def pm_updated(self, update: PmUpdate) -> None:
        """The PM system says something changed.

        Relay events carry the whole engagement and an event id: a redelivery counts once.
        Thin notifications (Karbon) only say "look again", and two real changes within one
        second carry the same timestamp, so each one is followed by a fresh read.
        """
        if update.details is not None and self._seen(update.event_key):
            return
        self._pm_updates.append(update)

    @workflow.update
    def respond(self, response: AssignmentResponse) -> ResponseOutcome:
        """Accept / Request reassignment from the assignee (Slack button, Teams link, API)."""
        s = self._state
        if self._seen(response.event_id):
            return ResponseOutcome(changed=False, status=s.status, message="Already recorded.")
        role = self._role_of(response.staff_id)
        assert role is not None  # the validator refused anyone else
        if response.action == "reassign":
            self._reassignments.append((role, response.staff_id, response.reason))
            self._note("reassignment requested", f"{role.value} {response.staff_id}")
            return ResponseOutcome(
                changed=True,
                status=s.status,
                message="Thanks: you are off this engagement and it is being reassigned.",
            )
        if role is Role.REVIEWER:
            if s.reviewer_accepted_at is None:
                s.reviewer_accepted_at = workflow.now()
                self._note("reviewer accepted", response.staff_id)
            return ResponseOutcome(
                changed=True, status=s.status, message="Thanks: you are down to review it."
            )
        if s.status is DispatchStatus.ASSIGNED:
            s.accepted_at = workflow.now()
            self._set_status(DispatchStatus.ACCEPTED, f"accepted by {response.staff_id}")
            return ResponseOutcome(
                changed=True,
                status=s.status,
                message="Accepted: it is yours. The client has been told.",
            )
        return ResponseOutcome(changed=False, status=s.status, message="Already accepted.")

    @respond.validator
    def _check_response(self, response: AssignmentResponse) -> None:
        """Refuse before anything is recorded: wrong person, closed or not-yet-assigned work."""
        s = self._state
        if response.event_id in s.seen_events:
            return
        if s.status.is_closed:
            raise ApplicationError(
                f"This engagement is already {s.status.value.lower()}.", type="Closed"
            )
        if s.status is DispatchStatus.NEEDS_PARTNER_REVIEW:
            raise ApplicationError(
                "This engagement is waiting for a partner's decision.", type="NotAssigned"
            )
        role = self._role_of(response.staff_id)
        if role is None:
            holders = " or ".join(p.name for p in (s.preparer, s.reviewer) if p is not None)
            raise ApplicationError(
                f"Only {holders or 'the assignee'} can answer this assignment.",
                type="NotAssignee",
            )
        if (
            response.action == "reassign"
            and s.status not in (DispatchStatus.ASSIGNED, DispatchStatus.ACCEPTED)
            and role is Role.PREPARER
        ):
            raise ApplicationError(
                "Work has already started: ask your manager to move it.", type="Started"
            )

    @workflow.update
    def decide(self, decision: PartnerDecision) -> ResponseOutcome:
        """A partner's choice for a NeedsPartnerReview engagement."""
        if self._seen(decision.event_id):
            return ResponseOutcome(
                changed=False, status=self._state.status, message="Already recorded."
            )
        self._decisions.append(decision)
        anyway = " over capacity" if decision.override_capacity else ""
        self._note("partner decision", f"{decision.partner_id} chose {decision.staff_id}{anyway}")
        return ResponseOutcome(
            changed=True,
            status=self._state.status,
            message=f"Assigning {decision.staff_id}{anyway}.",
        )

    @decide.validator
    def _check_decision(self, decision: PartnerDecision) -> None:
        s = self._state
        if decision.event_id in s.seen_events:
            return
        context = self._context
        if context is None or decision.partner_id not in context.deciding_partners:
            raise ApplicationError(
                "Only the firm's deciding partners can decide this.", type="NotPartner"
            )
        if s.status is not DispatchStatus.NEEDS_PARTNER_REVIEW:
            raise ApplicationError(
                f"This engagement is {s.status.value}, not waiting for a partner.",
                type="NotWaiting",
            )

    @workflow.query
    def state(self) -> EngagementState:
        return self._state

    # --- main flow -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: EngagementInput) -> EngagementState:
        self._v2 = workflow.patched(LEDGER_PATCH)
        self._local_reads = workflow.patched(LOCAL_READS_PATCH)
        try:
            if input.state is not None and self._details is not None:
                await self._resume()
            else:
                self._note("received", f"from {input.source}")
                if await self._load_until_dispatchable():
                    await self._refresh_context()
                    self._state.due_set_at = workflow.now()
                    await self._ask(self._request("dispatch"))
                    await self._live()
        except asyncio.CancelledError:
            if not self._v2 or self._state.status.is_closed:
                raise
            # Cancelled through Temporal (an operator, `dispatch` tooling): the hours go back
            # and everyone is told, exactly as for a cancellation in the PM system.
            await self._close(DispatchStatus.CANCELLED, "cancelled in Temporal")
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _resume(self) -> None:
        """A continued-as-new run: the same engagement, a short history."""
        assert self._details is not None
        self._apply_details(self._details)
        self._set_status(self._state.status, "continued as new", note=False)
        await self._refresh_context()
        pending = self._pending
        if pending is not None and not pending.parked:
            await self._send(pending)
        await self._live()

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
        try:
            return await options.PM.run(
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

    async def _refresh_context(self) -> None:
        d = self._details
        assert d is not None
        wait = CONTEXT_RETRY[0]
        while True:
            try:
                read = options.FIRM.run_local if self._local_reads else options.FIRM.run
                self._context = await read(
                    FirmActivities.engagement_context,
                    EngagementContextInput(
                        client_id=d.client_id,
                        service_type=d.service_type,
                        due_date=d.due_date,
                        start_date=d.start_date,
                    ),
                    "firm context",
                )
                break
            except ActivityError as err:
                # No activity failure ends an engagement: say so, wait, try again.
                self._state.error = f"firm context unavailable: {_cause(err)}"
                self._note("waiting", self._state.error)
                if self._context is not None:
                    return  # keep the context in hand; the next change reads it again
                await workflow.sleep(wait, summary="retry firm context")
                wait = min(wait * 2, CONTEXT_RETRY[1])
        self._state.error = None
        self._state.due_at = self._context.due_at
        self._state.pm_manual_update_required = self._context.manual_pm_update is not None

    async def _live(self) -> None:
        """React to answers, decisions, PM changes, dispatcher results and timers until closed."""
        while not self._state.status.is_closed:
            await self._drain()
            if self._state.status.is_closed:
                return
            if self._v2 and workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._has_work():
                    self._continue_as_new()
            deadline = self._next_deadline()
            timeout = max(deadline - workflow.now(), timedelta(0)) if deadline else None
            try:
                await workflow.wait_condition(
                    self._has_work, timeout=timeout, timeout_summary="next checkpoint"
                )
            except TimeoutError:
                pass

    def _continue_as_new(self) -> None:
        """Months of checkpoints and messages: start a short history, the state carried."""
        s = self._state
        s.continued += 1
        workflow.continue_as_new(
            EngagementInput(
                firm_id=s.firm_id,
                source=s.source,
                external_id=s.external_id,
                details=self._details,
                state=s,
                index_search_attributes=self._indexed,
            )
        )

    def _has_work(self) -> bool:
        pending = self._pending
        return bool(
            (pending is not None and pending.request_id in self._results)
            or (self._v2 and self._results)
            or self._reassignments
            or self._decisions
            or self._pm_updates
        )

    async def _drain(self) -> None:
        pending = self._pending
        if pending is not None and pending.request_id in self._results:
            result = self._results.pop(pending.request_id)
            await self._on_result(result, pending)
        if self._v2:
            await self._refuse_unasked()
        while self._reassignments and not self._state.status.is_closed:
            role, staff_id, reason = self._reassignments.pop(0)
            await self._reassign(role, staff_id, reason)
        while self._decisions and not self._state.status.is_closed:
            await self._partner_decision(self._decisions.pop(0))
        while self._pm_updates and not self._state.status.is_closed:
            await self._pm_update(self._pm_updates.pop(0))
        if not self._state.status.is_closed:
            await self._fire_due_checkpoints()
        pending = self._pending
        if (
            pending is not None
            and not pending.parked
            and workflow.now() - pending.sent_at >= self._result_wait
        ):
            self._note("dispatcher slow", "asking again")
            await self._send(pending)

    @property
    def _result_wait(self) -> timedelta:
        return RESULT_WAIT_V2 if self._v2 else RESULT_WAIT

    def _next_deadline(self) -> datetime | None:
        moments = [
            c.at for c in self._checkpoints() if c.key not in self._state.checkpoints and not c.skip
        ]
        if self._pending is not None and not self._pending.parked:
            moments.append(self._pending.sent_at + self._result_wait)
        return min(moments) if moments else None

    async def _refuse_unasked(self) -> None:
        """Answers to requests this engagement no longer waits on (superseded, withdrawn, or
        a second answer to one it took). It keeps what it holds and tells the ledger so, which
        gives back anything booked for it that it did not ask for."""
        unasked = [r for r in self._results.values() if r.outcome == "assigned"]
        self._results.clear()
        for result in unasked:
            self._note("answer not taken", result.request_id.rpartition(":")[2])
            await self._sync(result_sequence(result), "kept what it holds")

    # --- talking to the dispatcher -------------------------------------------------------

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
        start = max(d.start_date or workflow.now().date(), context.today if context else d.due_date)
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
                    hours=hours,
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
        message = _message(pending)
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
                self._note("dispatcher unreachable", _cause(err))

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
            if s.status is not DispatchStatus.NEEDS_PARTNER_REVIEW:
                await self._needs_partner(result.reason, self._last_candidates)
            return
        self._pending = None
        s.awaiting = None
        if result.warnings:
            s.warnings = [*s.warnings, *result.warnings]
        if pending.purpose == "adjust":
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
        if (
            s.status in (DispatchStatus.NEEDS_PARTNER_REVIEW, DispatchStatus.RECEIVED)
            or Role.PREPARER in changed
        ):
            self._set_status(DispatchStatus.ASSIGNED, result.reason)
        else:
            self._note("reviewer assigned", result.reason)
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

    # --- answers and decisions -----------------------------------------------------------

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

    # --- PM changes ----------------------------------------------------------------------

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

    # --- checkpoints ---------------------------------------------------------------------

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
        since = (s.assigned_at or workflow.now()).date()
        try:
            result = await options.TRACKER.run(
                TimeTrackerActivities.job_hours,
                JobHoursInput(
                    source=d.source,
                    external_id=d.external_id,
                    staff=[TrackerStaff(staff_id=p.id, email=p.email) for p in people],
                    since=since,
                    until=workflow.now().date(),
                ),
                "hours logged on the job",
            )
        except ActivityError:
            self._note("hours unavailable", "the time tracker did not answer")
            return s.hours_logged or 0.0
        s.hours_logged = result.hours
        self._note("hours logged", f"{result.hours:g} h ({result.detail})")
        return result.hours

    async def _contacts(self, staff_ids: list[str]) -> Contacts:
        read = options.FIRM.run_local if self._local_reads else options.FIRM.run
        try:
            return await read(
                FirmActivities.contacts, ContactsInput(staff_ids=staff_ids), "escalation contacts"
            )
        except ActivityError as err:
            # Escalate to the managing partner rather than not at all.
            context = self._context
            assert context is not None
            self._note("contacts unavailable", _cause(err))
            partner = context.managing_partner
            return Contacts(managers={i: partner for i in staff_ids}, managing_partner=partner)

    # --- announcing ----------------------------------------------------------------------

    async def _announce(
        self, result: AssignmentResult, changed: list[Role], *, reassigned: bool
    ) -> None:
        """Fire the side effects of an assignment together; failures are recorded, not fatal.

        ``changed`` are the roles with a new person: they get a DM and a calendar block. The
        other role's person sees their existing DM updated with the new partner's name.
        """
        d, context, s = self._details, self._context, self._state
        assert d is not None and context is not None and s.preparer is not None
        summary = self._summary()
        seq = s.request_seq
        wf_id = s.workflow_id
        completion = s.estimated_completion or d.due_date
        start = max(d.start_date or context.today, context.today)
        effects: list[tuple[str, Awaitable[Any]]] = []
        if Role.PREPARER in changed:
            effects.append(
                (
                    f"pm_write_back:{seq}",
                    options.PM.run(
                        PmActivities.write_back,
                        PmWriteBackInput(
                            workflow_id=wf_id,
                            source=d.source,
                            external_id=d.external_id,
                            assignee_email=s.preparer.email,
                            status=DispatchStatus.ASSIGNED,
                        ),
                        "PM write-back",
                    ),
                )
            )
        for role in (Role.PREPARER, Role.REVIEWER):
            person = s.preparer if role is Role.PREPARER else s.reviewer
            if person is None:
                continue
            previous = None if role in changed else s.chat_messages.get(role.value)
            if role not in changed and previous is None:
                continue
            effects.append(
                (
                    f"chat_{role.value}:{seq}",
                    options.CHAT.run(
                        ChatActivities.notify_assignment,
                        AssignmentNotice(
                            summary=summary,
                            recipient=person,
                            role=role,
                            preparer=s.preparer,
                            reviewer=s.reviewer,
                            estimated_completion=completion,
                            manual_pm_update=context.manual_pm_update,
                            previous=previous,
                        ),
                        f"notify {role.value}",
                    ),
                )
            )
            if role in changed:
                key = calendar_event_key(wf_id, role.value, seq)
                s.calendar_keys = {**s.calendar_keys, role.value: key}
                hours = s.preparer_hours if role is Role.PREPARER else s.reviewer_hours
                effects.append(
                    (
                        f"calendar_{role.value}:{seq}",
                        options.CALENDAR.run(
                            CalendarActivities.block,
                            CalendarBlockInput(
                                workflow_id=wf_id,
                                event_key=key,
                                staff=person,
                                summary=summary,
                                role=role,
                                start_date=start,
                                end_date=completion if role is Role.PREPARER else d.due_date,
                                hours=hours,
                                time_zone=context.time_zone,
                            ),
                            f"calendar block for {role.value}",
                        ),
                    )
                )
        if Role.PREPARER in changed and (not self._v2 or s.assignment_round == 1):
            # The client hears once, of the first assignment; a later change of preparer is
            # the firm's to explain (an email per reassignment read as a duplicate).
            if d.client_email:
                effects.append(
                    (
                        f"client_email:{seq}",
                        options.EMAIL.run(
                            EmailActivities.client_confirmation,
                            ClientConfirmationInput(
                                summary=summary,
                                to_email=d.client_email,
                                to_name=d.client_contact_name,
                                assignee=s.preparer,
                                reviewer=s.reviewer,
                                estimated_completion=completion,
                                upload_link=context.upload_link,
                                firm_name=context.firm_name,
                            ),
                            "client confirmation",
                        ),
                    )
                )
            else:
                self._effect_state(
                    f"client_email:{seq}", "skipped", "no client email address on file"
                )
        effects.append(
            (
                f"crm_log:{seq}",
                self._log_call("reassigned" if reassigned else "assigned", DispatchStatus.ASSIGNED),
            )
        )

        outcomes = await asyncio.gather(*(self._effect(name, call) for name, call in effects))
        for (name, _), outcome in zip(effects, outcomes, strict=True):
            if outcome is None:
                continue
            kind = name.split(":")[0]
            if kind.startswith("chat_") and outcome.message is not None:
                role_name = kind.removeprefix("chat_")
                s.chat_messages = {**s.chat_messages, role_name: outcome.message}
                if role_name == Role.PREPARER.value:
                    s.chat_message = outcome.message
            if kind == "calendar_preparer":
                s.calendar_event_id = outcome.event_id
            if kind == "pm_write_back" and outcome.manual_update_required:
                s.pm_manual_update_required = True
        self._note(
            "announced",
            ", ".join(f"{e.name}={e.state}" for e in s.side_effects if e.name.endswith(f":{seq}")),
        )

    async def _remove_block(self, role: Role, person: StaffRef) -> None:
        key = self._state.calendar_keys.get(role.value)
        if key is None or self._context is None:
            return
        await self._effect(
            f"calendar_remove_{role.value}:{self._state.request_seq}",
            options.CALENDAR.run(
                CalendarActivities.remove,
                CalendarRemoveInput(
                    workflow_id=self._state.workflow_id,
                    event_key=key,
                    staff=person,
                    time_zone=self._context.time_zone,
                ),
                f"remove {role.value} calendar block",
            ),
        )
        self._state.calendar_keys = {
            k: v for k, v in self._state.calendar_keys.items() if k != role.value
        }

    async def _needs_partner(self, reason: str, candidates: list[CandidateScore]) -> None:
        s = self._state
        s.needs_partner_review_reason = reason
        self._set_status(DispatchStatus.NEEDS_PARTNER_REVIEW, reason)
        context = self._context
        if context is None:
            return
        await self._effect(
            f"chat_partner:{s.request_seq}",
            options.CHAT.run(
                ChatActivities.notify_partner,
                PartnerReviewNotice(
                    summary=self._summary(),
                    partner=context.managing_partner,
                    reason=reason,
                    candidates=candidates[: context.partner_candidates_shown],
                ),
                "notify managing partner",
            ),
        )
        await self._effect(
            f"crm_partner_review:{s.request_seq}",
            self._log_call("needs_partner_review", DispatchStatus.NEEDS_PARTNER_REVIEW),
        )

    async def _tell_partner_no_fit(self, reason: str) -> None:
        context = self._context
        assert context is not None
        await self._notify(
            self._notice(
                "partner_decision",
                context.managing_partner,
                "That choice doesn't fit",
                [reason, "Choose someone else, or 'assign anyway' to book over capacity."],
                f"partner_no_fit:{self._state.request_seq}",
            )
        )

    async def _tell_manager_over_capacity(self, warnings: list[str]) -> None:
        preparer = self._state.preparer
        assert preparer is not None
        manager = (await self._contacts([preparer.id])).managers[preparer.id]
        summary = self._summary()
        await self._notify(
            self._notice(
                "not_started",
                manager,
                f"Over capacity after a change: {summary.title}",
                [*warnings, "The PM system changed the engagement; consider moving work."],
                f"over_capacity:{self._state.request_seq}",
            )
        )

    # --- closing -------------------------------------------------------------------------

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

    # --- side-effect plumbing ------------------------------------------------------------

    def _log_call(
        self,
        event: Literal["assigned", "needs_partner_review", "reassigned", "completed", "cancelled"],
        status: DispatchStatus,
    ) -> Awaitable[Any]:
        s = self._state
        return options.CRM.run(
            CrmActivities.log,
            CrmLogInput(
                idempotency_key=side_effect_key(s.workflow_id, f"crm-{event}", s.request_seq),
                event=event,
                summary=self._summary(),
                status=status,
                preparer=s.preparer,
                reviewer=s.reviewer,
                preparer_hours=s.preparer_hours,
                reviewer_hours=s.reviewer_hours,
                occurred_at=workflow.now(),
            ),
            "CRM log",
        )

    async def _log(
        self,
        event: Literal["assigned", "needs_partner_review", "reassigned", "completed", "cancelled"],
        status: DispatchStatus,
    ) -> None:
        await self._effect(f"crm_{event}:{self._state.request_seq}", self._log_call(event, status))

    def _notice(
        self, kind: NoticeKind, recipient: StaffRef, subject: str, lines: list[str], key: str
    ) -> StaffNotice:
        return StaffNotice(
            kind=kind,
            recipient=recipient,
            summary=self._summary(),
            subject=subject,
            lines=lines,
            key=f"{self._state.workflow_id}:{key}",
        )

    async def _notify(self, notice: StaffNotice) -> None:
        """A notice by every channel the firm chose; both in parallel."""
        context = self._context
        channels = context.channels if context is not None else ["chat"]
        calls: list[tuple[str, Awaitable[Any]]] = []
        short = notice.key.removeprefix(f"{self._state.workflow_id}:")
        if "chat" in channels:
            calls.append(
                (
                    f"notice:{short}:chat",
                    options.CHAT.run(ChatActivities.staff_notice, notice, f"{notice.kind} by chat"),
                )
            )
        if "email" in channels:
            calls.append(
                (
                    f"notice:{short}:email",
                    options.EMAIL.run(
                        EmailActivities.staff_notice, notice, f"{notice.kind} by email"
                    ),
                )
            )
        await asyncio.gather(*(self._effect(name, call) for name, call in calls))

    async def _effect(self, name: str, call: Awaitable[T]) -> T | None:
        self._effect_state(name, "pending")
        try:
            outcome = await call
        except ActivityError as err:
            cause = err.cause
            detail = cause.message if isinstance(cause, FailureError) else str(err)
            self._effect_state(name, "failed", detail)
            workflow.logger.warning("side effect %s failed for %s", name, self._state.workflow_id)
            return None
        detail = getattr(outcome, "detail", "") or ""
        # Results say "not done" in their own words (a firm without a calendar, a relay PM).
        delivered = all(
            getattr(outcome, flag, True) for flag in ("delivered", "sent", "logged", "written")
        )
        self._effect_state(name, "done" if delivered else "skipped", detail)
        return outcome

    # --- state helpers -------------------------------------------------------------------

    def _role_of(self, staff_id: str) -> Role | None:
        s = self._state
        if s.preparer is not None and s.preparer.id == staff_id:
            return Role.PREPARER
        if s.reviewer is not None and s.reviewer.id == staff_id:
            return Role.REVIEWER
        return None

    def _seen(self, event_id: str) -> bool:
        """Record an event id; True when it was already recorded (a redelivery)."""
        if event_id in self._state.seen_events:
            return True
        self._state.seen_events = [*self._state.seen_events, event_id][-SEEN_EVENTS:]
        return False

    def _ago(self, moment: datetime | None) -> str:
        if moment is None:
            return "earlier"
        hours = (workflow.now() - moment).total_seconds() / 3600
        return f"{hours:.0f} h ago"

    def _apply_details(self, details: EngagementDetails) -> None:
        self._details = details
        s = self._state
        s.title = details.title
        s.client_id = details.client_id
        s.client_name = details.client_name
        s.service_type = details.service_type
        s.due_date = details.due_date
        s.estimated_hours = details.estimated_hours
        self._index(
            [
                sa.CLIENT_ID.value_set(details.client_id),
                sa.SERVICE_TYPE.value_set(details.service_type),
                sa.DUE_DATE.value_set(datetime.combine(details.due_date, time(), tzinfo=UTC)),
            ]
        )
        self._memo()

    def _summary(self) -> EngagementSummary:
        d = self._details
        assert d is not None
        service_name = (self._context.service_name if self._context else None) or d.service_type
        return EngagementSummary(
            workflow_id=self._state.workflow_id,
            title=d.title,
            client_id=d.client_id,
            client_name=d.client_name,
            service_type=d.service_type,
            service_name=service_name,
            due_date=d.due_date,
            estimated_hours=d.estimated_hours,
            pm_url=d.pm_url,
            scope_summary=d.scope_summary,
            documents_needed=d.documents_needed,
        )

    def _set_status(self, status: DispatchStatus, detail: str = "", *, note: bool = True) -> None:
        s = self._state
        s.status = status
        updates = [
            sa.DISPATCH_STATUS.value_set(status.value),
            sa.PREPARER.value_set(s.preparer.id) if s.preparer else sa.PREPARER.value_unset(),
            sa.REVIEWER.value_set(s.reviewer.id) if s.reviewer else sa.REVIEWER.value_unset(),
        ]
        self._index(updates)
        if note:
            self._note(status.value, detail)
        self._memo(why=detail)

    def _index(self, updates: list[Any]) -> None:
        if self._indexed:
            workflow.upsert_search_attributes(updates)

    def _memo(self, why: str | None = None) -> None:
        s = self._state
        # Ids only: the memo is readable wherever the workflow list is (DESIGN §3.6).
        memo: dict[str, Any] = {
            "client_id": s.client_id,
            "service_type": s.service_type,
            "due_date": s.due_date.isoformat() if s.due_date else None,
            "preparer_id": s.preparer.id if s.preparer else None,
            "reviewer_id": s.reviewer.id if s.reviewer else None,
        }
        if why is not None:
            memo["why"] = why
        workflow.upsert_memo(memo)

    def _effect_state(self, name: str, state: EffectState, detail: str = "") -> None:
        effects = [e for e in self._state.side_effects if e.name != name]
        effects.append(SideEffect(name=name, state=state, detail=detail))
        self._state.side_effects = effects[-SIDE_EFFECTS_KEPT:]

    def _note(self, kind: str, detail: str = "") -> None:
        self._state.timeline = [
            *self._state.timeline,
            TimelineEntry(at=workflow.now(), kind=kind, detail=detail),
        ][-TIMELINE_KEPT:]
