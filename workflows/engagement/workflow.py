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
   - partner decisions (Update ``decide``), including "assign anyway" over capacity, and a
     partner moving the due date (Update ``move_due``: written back to the PM system, and the
     checkpoints and any waiting dispatch request follow it);
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
from datetime import date, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.engagement.base import (
    LEDGER_PATCH,
    LEVERS_PATCH,
    LOCAL_READS_PATCH,
)

with workflow.unsafe.imports_passed_through():
    from dispatch import limits
    from dispatch.models import (
        AssignmentResponse,
        AssignmentResult,
        CandidateScore,
        DispatchStatus,
        DueDateMove,
        EngagementContext,
        EngagementDetails,
        EngagementHoldings,
        EngagementInput,
        EngagementState,
        LedgerSyncRequest,
        PartnerDecision,
        PmUpdate,
        ResponseOutcome,
        Role,
    )
    from workflows.dispatcher import RESULT_SIGNAL
    from workflows.engagement.pm_changes import PmChanges


@workflow.defn
class EngagementWorkflow(PmChanges):
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
        self._levers = False
        """Open hours and partner options (``LEVERS_PATCH``); set at the start of ``run``."""
        self._local_reads = False
        self._bundle: frozenset[str] | None = None
        """The patches the engagement's bundle marker names, asked for with the first patch
        (``_patched``)."""
        self._upserted: dict[str, Any] = {}
        """Search attributes and memo fields as this run last upserted them (not carried)."""
        self._pm_updates: list[PmUpdate] = []
        self._reassignments: list[tuple[Role, str, str]] = []
        self._decisions: list[PartnerDecision] = []
        self._due_moves: list[DueDateMove] = []
        self._last_candidates: list[CandidateScore] = []

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

    @workflow.update
    def move_due(self, move: DueDateMove) -> ResponseOutcome:
        """A partner moves the due date (board, Slack date picker, API)."""
        s = self._state
        if self._seen(move.event_id):
            return ResponseOutcome(changed=False, status=s.status, message="Already recorded.")
        if move.due_date == self._due_after_moves():
            return ResponseOutcome(
                changed=False, status=s.status, message=f"It is already due {_day(move.due_date)}."
            )
        self._due_moves.append(move)
        self._note("due date move", f"{move.partner_id} chose {move.due_date.isoformat()}")
        return ResponseOutcome(
            changed=True,
            status=s.status,
            message=(
                f"Moving the due date to {_day(move.due_date)}: the PM system, the deadlines "
                "and the people on it follow."
            ),
        )

    @move_due.validator
    def _check_move(self, move: DueDateMove) -> None:
        s = self._state
        if move.event_id in s.seen_events:
            return
        context = self._context
        if context is None or move.partner_id not in context.deciding_partners:
            raise ApplicationError(
                "Only the firm's deciding partners can move a due date.", type="NotPartner"
            )
        if s.status.is_closed:
            raise ApplicationError(
                f"This engagement is already {s.status.value.lower()}.", type="Closed"
            )
        d = self._details
        if d is None:
            raise ApplicationError(
                "This engagement has not been read from the PM system yet.", type="NotWaiting"
            )
        # The surfaces check against the firm's own today; this bound (a day's grace for time
        # zones) keeps a date nobody could meet, or one in 9999, out of the workflow.
        today = max(context.today, (workflow.now() - timedelta(days=1)).date())
        problem = limits.due_date_problem(move.due_date, today)
        if problem is None and d.start_date is not None and move.due_date < d.start_date:
            problem = f"{move.due_date.isoformat()} is before the start date"
        if problem is not None:
            raise ApplicationError(f"That due date cannot be used: {problem}.", type="BadDate")

    def _due_after_moves(self) -> date | None:
        if self._due_moves:
            return self._due_moves[-1].due_date
        return self._details.due_date if self._details is not None else None

    @workflow.query
    def state(self) -> EngagementState:
        return self._state

    @workflow.run
    async def run(self, input: EngagementInput) -> EngagementState:
        self._v2 = self._patched(LEDGER_PATCH)
        self._levers = self._v2 and self._patched(LEVERS_PATCH)
        self._local_reads = self._patched(LOCAL_READS_PATCH)
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
            or self._due_moves
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
        while self._due_moves and not self._state.status.is_closed:
            await self._move_due(self._due_moves.pop(0))
        while self._pm_updates and not self._state.status.is_closed:
            await self._pm_update(self._pm_updates.pop(0))
        if not self._state.status.is_closed:
            await self._fire_due_checkpoints()
        if self._levers and not self._state.status.is_closed:
            at = self._logged_read_at()
            if at is not None and at <= workflow.now():
                await self._read_logged()
            await self._report_progress()
        pending = self._pending
        if (
            pending is not None
            and not pending.parked
            and workflow.now() - pending.sent_at >= self._result_wait
        ):
            self._note("dispatcher slow", "asking again")
            await self._send(pending)

    def _next_deadline(self) -> datetime | None:
        moments = [
            c.at for c in self._checkpoints() if c.key not in self._state.checkpoints and not c.skip
        ]
        if self._pending is not None and not self._pending.parked:
            moments.append(self._pending.sent_at + self._result_wait)
        read = self._logged_read_at() if self._levers else None
        if read is not None:
            moments.append(read)
        return min(moments) if moments else None


def _day(day: date) -> str:
    return f"{day:%a %d %b %Y}"
