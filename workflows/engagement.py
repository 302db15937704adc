"""One engagement, from the PM system's webhook until the work is done.

1. Load the engagement from the PM system (thin webhooks carry only a key).
2. Ask the firm's dispatcher for people; it reads capacity, chooses and reserves atomically.
3. Assigned: fire the side effects together (PM write-back, Slack DM with Accept / Request
   Reassignment, calendar blocks, client confirmation, CRM record).
   Nobody fits: ``NeedsPartnerReview``; the managing partner gets the candidates and why each
   was blocked; the dispatcher keeps retrying as capacity is released.
4. Stay open, following the PM system's changes, until completed or cancelled; then release
   the hours and log it.

Every side effect has a deterministic idempotency key, so a retried activity or a duplicated
webhook cannot produce a second PM write, message, calendar event or email.
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
    )
    from dispatch import search_attributes as sa
    from dispatch.ids import calendar_event_key, dispatcher_workflow_id, request_id, side_effect_key
    from dispatch.models import (
        AssignmentNotice,
        AssignmentRequest,
        AssignmentResult,
        CalendarBlockInput,
        ClientConfirmationInput,
        CrmLogInput,
        DispatchStatus,
        EngagementContext,
        EngagementContextInput,
        EngagementDetails,
        EngagementInput,
        EngagementState,
        EngagementSummary,
        LoadEngagementInput,
        PartnerReviewNotice,
        PmUpdate,
        PmWriteBackInput,
        ReleaseRequest,
        Role,
        SideEffect,
        SnapshotInput,
        StaffRef,
        TimelineEntry,
    )
    from workflows import options
    from workflows.dispatcher import RESULT_SIGNAL, DispatcherWorkflow

T = TypeVar("T")
EffectState = Literal["pending", "done", "failed", "skipped"]

RESULT_WAIT = timedelta(minutes=10)
"""How long to wait for the dispatcher before asking again (the request id makes it harmless)."""
SEEN_EVENTS = 200


class _NotDispatchable(Exception):
    """Internal: the engagement cannot be dispatched as it stands (reason in the message)."""


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
        self._details: EngagementDetails | None = input.details
        self._context: EngagementContext | None = None
        self._results: dict[str, AssignmentResult] = {}
        self._pm_updates: list[PmUpdate] = []

    # --- messages ------------------------------------------------------------------------

    @workflow.signal(name=RESULT_SIGNAL)
    def assignment_decided(self, result: AssignmentResult) -> None:
        self._results[result.request_id] = result

    @workflow.signal
    def pm_updated(self, update: PmUpdate) -> None:
        """The PM system says something changed; duplicates (by event key) count once."""
        if update.event_key in self._state.seen_events:
            return
        self._state.seen_events = [*self._state.seen_events, update.event_key][-SEEN_EVENTS:]
        self._pm_updates.append(update)

    @workflow.query
    def state(self) -> EngagementState:
        return self._state

    # --- main flow -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: EngagementInput) -> EngagementState:
        self._note("received", f"from {input.source}")
        details = self._details
        while details is None:
            details = await self._load()
            if details is None and not self._state.status.is_closed:
                # Not dispatchable as it stands (e.g. an unmapped work type): wait for the PM
                # system to change it, then read it again.
                await workflow.wait_condition(lambda: bool(self._pm_updates))
                update = self._pm_updates.pop(0)
                if update.action == "Deleted":
                    await self._close(DispatchStatus.CANCELLED, "deleted in the PM system")
            if self._state.status.is_closed:
                return self._state
        self._apply_details(details)
        self._context = await options.FIRM.run(
            FirmActivities.engagement_context,
            EngagementContextInput(
                client_id=details.client_id,
                service_type=details.service_type,
                due_date=details.due_date,
                start_date=details.start_date,
            ),
            "firm context",
        )
        self._state.pm_manual_update_required = self._context.manual_pm_update is not None
        await self._assign()
        await self._follow_until_closed()
        return self._state

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
            if kind == "EngagementNotFound":
                self._state.error = message
                await self._close(DispatchStatus.CANCELLED, "not found in the PM system")
                return None
            self._state.error = message
            await self._needs_partner(f"cannot be dispatched as it stands: {message}", notify=False)
            return None

    async def _assign(self) -> None:
        """Ask the dispatcher until someone is assigned (or the engagement closes)."""
        details = self._details
        assert details is not None
        self._state.request_seq += 1
        request = AssignmentRequest(
            request_id=request_id(self._state.workflow_id, self._state.request_seq),
            workflow_id=self._state.workflow_id,
            client_id=details.client_id,
            service_type=details.service_type,
            due_date=details.due_date,
            start_date=details.start_date,
            estimated_hours=details.estimated_hours,
            required_skills=details.required_skills,
            specializations=details.specializations,
            exclude=self._state.declined_by,
        )
        result = await self._ask_dispatcher(request)
        if result.outcome == "needs_partner_review":
            self._state.decisions = [*self._state.decisions, *result.decisions]
            await self._needs_partner(result.reason, notify=True, result=result)
            # The dispatcher answers again on this request id once capacity frees up.
            await workflow.wait_condition(
                lambda: self._assigned(request.request_id) or self._closing_update()
            )
            if not self._assigned(request.request_id):
                await self._handle_pm_updates()
                return
            result = self._results[request.request_id]
            self._note("capacity freed", "assigned after waiting for partner review")
        await self._on_assigned(result)

    async def _ask_dispatcher(self, request: AssignmentRequest) -> AssignmentResult:
        while True:
            await self._signal_dispatcher(request)
            try:
                await workflow.wait_condition(
                    lambda: request.request_id in self._results,
                    timeout=RESULT_WAIT,
                    timeout_summary="waiting for the dispatcher",
                )
                return self._results[request.request_id]
            except TimeoutError:
                self._note("dispatcher slow", "asking again")

    async def _signal_dispatcher(self, request: AssignmentRequest) -> None:
        await self._to_dispatcher(DispatcherWorkflow.request_assignment, request)

    async def _to_dispatcher(self, signal: Any, arg: Any) -> None:
        handle = workflow.get_external_workflow_handle(dispatcher_workflow_id(self._state.firm_id))
        try:
            await handle.signal(signal, arg)
        except FailureError:
            # Not running (first engagement ever, or stopped by an operator): start it, retry.
            await options.FIRM.run(
                FirmActivities.ensure_dispatcher,
                SnapshotInput(firm_id=self._state.firm_id),
                "start dispatcher",
            )
            await handle.signal(signal, arg)

    def _assigned(self, rid: str) -> bool:
        result = self._results.get(rid)
        return result is not None and result.outcome == "assigned"

    def _closing_update(self) -> bool:
        return bool(self._pm_updates)

    async def _on_assigned(self, result: AssignmentResult) -> None:
        self._state.preparer = result.preparer
        self._state.reviewer = result.reviewer
        self._state.preparer_hours = result.preparer_hours
        self._state.reviewer_hours = result.reviewer_hours
        self._state.estimated_completion = result.estimated_completion
        self._state.needs_partner_review_reason = None
        self._state.decisions = [*self._state.decisions, *result.decisions]
        self._set_status(DispatchStatus.ASSIGNED, result.reason)
        await self._announce(result)

    async def _announce(self, result: AssignmentResult) -> None:
        """Fire every side effect of an assignment together; each failure is recorded, not fatal."""
        details, context = self._details, self._context
        assert details is not None and context is not None and result.preparer is not None
        summary = self._summary()
        seq = self._state.request_seq
        wf_id = self._state.workflow_id
        completion = result.estimated_completion or details.due_date
        start = max(details.start_date or context.today, context.today)
        effects: list[tuple[str, Awaitable[Any]]] = [
            (
                "pm_write_back",
                options.PM.run(
                    PmActivities.write_back,
                    PmWriteBackInput(
                        workflow_id=wf_id,
                        source=details.source,
                        external_id=details.external_id,
                        assignee_email=result.preparer.email,
                        status=DispatchStatus.ASSIGNED,
                    ),
                    "PM write-back",
                ),
            ),
        ]
        people: list[tuple[Role, StaffRef, float]] = [
            (Role.PREPARER, result.preparer, result.preparer_hours)
        ]
        if result.reviewer is not None:
            people.append((Role.REVIEWER, result.reviewer, result.reviewer_hours))
        for role, person, hours in people:
            effects.append(
                (
                    f"chat_{role.value}",
                    options.CHAT.run(
                        ChatActivities.notify_assignment,
                        AssignmentNotice(
                            summary=summary,
                            recipient=person,
                            role=role,
                            preparer=result.preparer,
                            reviewer=result.reviewer,
                            estimated_completion=completion,
                            manual_pm_update=context.manual_pm_update,
                        ),
                        f"notify {role.value}",
                    ),
                )
            )
            effects.append(
                (
                    f"calendar_{role.value}",
                    options.CALENDAR.run(
                        CalendarActivities.block,
                        CalendarBlockInput(
                            workflow_id=wf_id,
                            event_key=calendar_event_key(wf_id, role.value, seq),
                            staff=person,
                            summary=summary,
                            role=role,
                            start_date=start,
                            end_date=completion if role is Role.PREPARER else details.due_date,
                            hours=hours,
                            time_zone=context.time_zone,
                        ),
                        f"calendar block for {role.value}",
                    ),
                )
            )
        if details.client_email:
            effects.append(
                (
                    "client_email",
                    options.EMAIL.run(
                        EmailActivities.client_confirmation,
                        ClientConfirmationInput(
                            summary=summary,
                            to_email=details.client_email,
                            to_name=details.client_contact_name,
                            assignee=result.preparer,
                            reviewer=result.reviewer,
                            estimated_completion=completion,
                            upload_link=context.upload_link,
                            firm_name=context.firm_name,
                        ),
                        "client confirmation",
                    ),
                )
            )
        else:
            self._effect_state("client_email", "skipped", "no client email address on file")
        effects.append(
            (
                "crm_log",
                options.CRM.run(
                    CrmActivities.log,
                    CrmLogInput(
                        idempotency_key=side_effect_key(wf_id, "crm-assigned", seq),
                        event="assigned",
                        summary=summary,
                        status=DispatchStatus.ASSIGNED,
                        preparer=result.preparer,
                        reviewer=result.reviewer,
                        preparer_hours=result.preparer_hours,
                        reviewer_hours=result.reviewer_hours,
                        occurred_at=workflow.now(),
                    ),
                    "CRM log",
                ),
            )
        )

        outcomes = await asyncio.gather(*(self._effect(name, call) for name, call in effects))
        for (name, _), outcome in zip(effects, outcomes, strict=True):
            if name == "chat_preparer" and outcome is not None and outcome.message is not None:
                self._state.chat_message = outcome.message
            if name == "calendar_preparer" and outcome is not None:
                self._state.calendar_event_id = outcome.event_id
            if name == "pm_write_back" and outcome is not None and outcome.manual_update_required:
                self._state.pm_manual_update_required = True
        self._note("announced", ", ".join(f"{e.name}={e.state}" for e in self._state.side_effects))

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

    async def _needs_partner(
        self, reason: str, *, notify: bool, result: AssignmentResult | None = None
    ) -> None:
        self._state.needs_partner_review_reason = reason
        self._set_status(DispatchStatus.NEEDS_PARTNER_REVIEW, reason)
        context = self._context
        if not notify or context is None:
            return
        candidates = result.decisions[-1].candidates if result and result.decisions else []
        await self._effect(
            "chat_partner",
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
            "crm_partner_review",
            options.CRM.run(
                CrmActivities.log,
                CrmLogInput(
                    idempotency_key=side_effect_key(
                        self._state.workflow_id, "crm-npr", self._state.request_seq
                    ),
                    event="needs_partner_review",
                    summary=self._summary(),
                    status=DispatchStatus.NEEDS_PARTNER_REVIEW,
                    occurred_at=workflow.now(),
                ),
                "CRM log",
            ),
        )

    # --- after dispatch ------------------------------------------------------------------

    async def _follow_until_closed(self) -> None:
        while not self._state.status.is_closed:
            await workflow.wait_condition(lambda: bool(self._pm_updates))
            await self._handle_pm_updates()

    async def _handle_pm_updates(self) -> None:
        """Re-read the engagement after a PM change and act on what actually changed."""
        while self._pm_updates and not self._state.status.is_closed:
            update = self._pm_updates.pop(0)
            if update.action == "Deleted":
                await self._close(DispatchStatus.CANCELLED, "deleted in the PM system")
                return
            fresh = update.details or await self._load()
            if fresh is None or self._state.status.is_closed:
                continue
            previous = self._details or fresh
            self._details = fresh
            if update.action == "Completed" or fresh.pm_status == "Completed":
                await self._close(DispatchStatus.COMPLETED, "completed in the PM system")
            elif fresh.due_date != previous.due_date:
                self._apply_details(fresh)
                self._note("due date moved", f"{previous.due_date} -> {fresh.due_date}")

    async def _close(self, status: DispatchStatus, why: str) -> None:
        self._set_status(status, why)
        await self._to_dispatcher(
            DispatcherWorkflow.release,
            ReleaseRequest(workflow_id=self._state.workflow_id, reason=why),
        )
        if self._details is not None:
            event = "completed" if status is DispatchStatus.COMPLETED else "cancelled"
            await self._effect(
                f"crm_{event}",
                options.CRM.run(
                    CrmActivities.log,
                    CrmLogInput(
                        idempotency_key=side_effect_key(self._state.workflow_id, f"crm-{event}", 0),
                        event=event,
                        summary=self._summary(),
                        status=status,
                        preparer=self._state.preparer,
                        reviewer=self._state.reviewer,
                        occurred_at=workflow.now(),
                    ),
                    "CRM log",
                ),
            )

    # --- state helpers -------------------------------------------------------------------

    def _apply_details(self, details: EngagementDetails) -> None:
        self._details = details
        s = self._state
        s.title = details.title
        s.client_id = details.client_id
        s.client_name = details.client_name
        s.service_type = details.service_type
        s.due_date = details.due_date
        s.estimated_hours = details.estimated_hours
        workflow.upsert_search_attributes(
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

    def _set_status(self, status: DispatchStatus, detail: str = "") -> None:
        self._state.status = status
        updates = [sa.DISPATCH_STATUS.value_set(status.value)]
        if self._state.preparer is not None:
            updates.append(sa.PREPARER.value_set(self._state.preparer.id))
        if self._state.reviewer is not None:
            updates.append(sa.REVIEWER.value_set(self._state.reviewer.id))
        workflow.upsert_search_attributes(updates)
        self._note(status.value, detail)
        self._memo(why=detail)

    def _memo(self, why: str | None = None) -> None:
        s = self._state
        memo: dict[str, Any] = {
            "title": s.title,
            "client_name": s.client_name,
            "preparer_name": s.preparer.name if s.preparer else None,
            "reviewer_name": s.reviewer.name if s.reviewer else None,
        }
        if why is not None:
            memo["why"] = why
        workflow.upsert_memo(memo)

    def _effect_state(self, name: str, state: EffectState, detail: str = "") -> None:
        effects = [e for e in self._state.side_effects if e.name != name]
        effects.append(SideEffect(name=name, state=state, detail=detail))
        self._state.side_effects = effects

    def _note(self, kind: str, detail: str = "") -> None:
        self._state.timeline = [
            *self._state.timeline,
            TimelineEntry(at=workflow.now(), kind=kind, detail=detail),
        ]
