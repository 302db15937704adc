"""What every part of an engagement shares: its state, the side-effect plumbing (each effect
recorded as pending, done, failed or skipped, never fatal), notices, the timeline, search
attributes and memo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.firm import FirmActivities
    from activities.roles import (
        ChatActivities,
        CrmActivities,
        EmailActivities,
    )
    from dispatch import partner_review
    from dispatch import search_attributes as sa
    from dispatch.capacity import local_date
    from dispatch.ids import side_effect_key
    from dispatch.models import (
        AssignmentRequest,
        AssignmentResult,
        CandidateScore,
        Contacts,
        ContactsInput,
        CrmLogInput,
        DispatchStatus,
        DueDateMove,
        EngagementContext,
        EngagementContextInput,
        EngagementDetails,
        EngagementState,
        EngagementSummary,
        ForceAssignRequest,
        NoticeKind,
        PartnerDecision,
        PendingRequest,
        PmUpdate,
        Role,
        SideEffect,
        StaffNotice,
        StaffRef,
        TimelineEntry,
        request_sequence,
    )
    from workflows import options

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
REVIEWER_INDEX_PATCH = "index-reviewer-changes"
"""A reviewer-only change updates the Reviewer search attribute and the memo."""
LEDGER_PATCH = "ledger-v2"
"""``workflow.patched`` id of the ledger protocol (request numbers, holdings syncs, epochs,
re-parking, cancellation, continue-as-new). Engagements started before it keep their old path;
remove the old path with ``deprecate_patch`` once none of them is open (README "Upgrading")."""
LEVERS_PATCH = "engagement-levers"
"""The season's levers on the engagement's side: it tells the ledger each role's open hours
(``ReservationProgress``: the estimate less the hours its holder logged, read daily, nothing
once the work is handed over), and the partner's message lists what each option would cost."""
ANSWER_IN_FLIGHT_PATCH = "answer-in-flight-kept"
"""The answer to the request just sent can arrive while the engagement is still finishing the
previous answer's work (a reviewer asked for after a partner's pick, on a busy worker): it is
the answer waited on, taken on the next turn, never refused as unasked."""
PM_LOAD_LOCAL_PATCH = "pm-load-local"
"""The engagement is read from the PM system by a local activity: one short read that needs no
task-queue round trip (a workflow task and an activity task fewer per read, and Karbon reads
twice per engagement: on ``Inserted`` and on the ``Updated`` echo of the write-back)."""
ENGAGEMENT_PATCHES = "engagement-patches-1"
"""One marker that stands for every patch above (``PATCHES_IN_ONE``). An engagement that
records it takes each of their new paths without recording their own markers: one marker and
one ``TemporalChangeVersion`` upsert at its start instead of four to six of each, every one a
history event and the upsert a visibility write as well (docs/benchmarks.md). An engagement that
started before it does not have it and asks for each patch as before, so its history replays.
A new patch gets its own id as usual; the next one-marker id then names it too."""
PATCHES_IN_ONE = frozenset(
    {
        LEDGER_PATCH,
        LEVERS_PATCH,
        LOCAL_READS_PATCH,
        REVIEWER_INDEX_PATCH,
        ANSWER_IN_FLIGHT_PATCH,
        PM_LOAD_LOCAL_PATCH,
    }
)
CHANGES_ONLY_PATCH = "index-changes-only"
"""Search attributes and memo are upserted with the values that changed, and not at all when
none did. Before, every status change and every read from the PM system wrote all of them
again: Karbon's ``Updated`` echo of our own write-back re-wrote three search attributes and
seven memo fields with the same values (two history events and a visibility write each time,
and seven payloads through the codec)."""
ENGAGEMENT_PATCHES_2 = "engagement-patches-2"
"""The one marker for ``PATCHES_IN_TWO``: the six of ``engagement-patches-1`` and
``index-changes-only``. Asked for before ``engagement-patches-1``, which an engagement started
between the two still answers to."""
PATCHES_IN_TWO = PATCHES_IN_ONE | {CHANGES_ONLY_PATCH}
PATCH_BUNDLES = ((ENGAGEMENT_PATCHES_2, PATCHES_IN_TWO), (ENGAGEMENT_PATCHES, PATCHES_IN_ONE))
"""Newest first: the first bundle marker an engagement answers to names the patches it takes
without markers of their own."""
LOGGED_READ_EVERY = timedelta(hours=24)
"""How often the hours logged on the job are read for the open-hours ledger."""
SEEN_EVENTS = 200
TIMELINE_KEPT = 300
DECISIONS_KEPT = 12
SIDE_EFFECTS_KEPT = 200
CONTEXT_RETRY = (timedelta(minutes=1), timedelta(hours=1))


def effect_role(name: str) -> str:
    """``calendar_preparer:2`` -> calendar, ``notice:past_due:x:email`` -> email, ..."""
    kind = name.split(":", 1)[0]
    if kind == "notice":
        return name.rsplit(":", 1)[-1]
    for role in ("pm", "chat", "calendar", "crm"):
        if kind.startswith(role):
            return role
    return "email" if "email" in kind else kind


def cause_of(err: FailureError) -> str:
    cause = err.cause
    return cause.message if isinstance(cause, FailureError) else (err.message or str(err))


def result_sequence(result: AssignmentResult) -> int:
    return request_sequence(result.request_id)


def message_of(pending: PendingRequest) -> AssignmentRequest | ForceAssignRequest:
    message = pending.force or pending.request
    assert message is not None
    return message


class EngagementBase:
    """Attributes set by ``EngagementWorkflow.__init__``, declared here for the parts."""

    _state: EngagementState
    _indexed: bool
    _details: EngagementDetails | None
    _context: EngagementContext | None
    _results: dict[str, AssignmentResult]
    _v2: bool
    _levers: bool
    _local_reads: bool
    _pm_updates: list[PmUpdate]
    _reassignments: list[tuple[Role, str, str]]
    _decisions: list[PartnerDecision]
    _due_moves: list[DueDateMove]
    _last_candidates: list[CandidateScore]
    _bundle: frozenset[str] | None
    _upserted: dict[str, Any]

    def _patched(self, patch_id: str) -> bool:
        """``workflow.patched(patch_id)``, or true without a marker of its own for an
        engagement that recorded a bundle marker naming it (``PATCH_BUNDLES``). The bundles are
        asked for first, newest first, at the engagement's first ``_patched``: a new engagement
        records the newest alone; in an older history the newer ones are absent, so they are
        false there and it replays the bundle, or each patch's own marker, it recorded."""
        assert patch_id in PATCHES_IN_TWO, patch_id
        if self._bundle is None:
            self._bundle = next(
                (patches for marker, patches in PATCH_BUNDLES if workflow.patched(marker)),
                frozenset(),
            )
        return patch_id in self._bundle or workflow.patched(patch_id)

    @property
    def _pending(self) -> PendingRequest | None:
        """The dispatcher request this engagement waits on (in its state, so it is carried)."""
        return self._state.pending

    @_pending.setter
    def _pending(self, value: PendingRequest | None) -> None:
        self._state.pending = value

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
                self._state.error = f"firm context unavailable: {cause_of(err)}"
                self._note("waiting", self._state.error)
                if self._context is not None:
                    return  # keep the context in hand; the next change reads it again
                await workflow.sleep(wait, summary="retry firm context")
                wait = min(wait * 2, CONTEXT_RETRY[1])
        self._state.error = None
        self._state.due_at = self._context.due_at
        self._state.pm_manual_update_required = self._context.manual_pm_update is not None

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
            self._note("contacts unavailable", cause_of(err))
            partner = context.managing_partner
            return Contacts(managers={i: partner for i in staff_ids}, managing_partner=partner)

    async def _effect(self, name: str, call: Awaitable[T]) -> T | None:
        self._effect_state(name, "pending")
        try:
            outcome = await call
        except ActivityError as err:
            cause = err.cause
            detail = cause.message if isinstance(cause, FailureError) else str(err)
            self._effect_state(name, "failed", detail)
            workflow.logger.warning("side effect %s failed for %s", name, self._state.workflow_id)
            self._count_failure(name)
            return None
        detail = getattr(outcome, "detail", "") or ""
        # Results say "not done" in their own words (a firm without a calendar, a relay PM).
        delivered = all(
            getattr(outcome, flag, True) for flag in ("delivered", "sent", "logged", "written")
        )
        self._effect_state(name, "done" if delivered else "skipped", detail)
        return outcome

    def _count_failure(self, name: str) -> None:
        """``dispatch_side_effect_failures`` by role and vendor (for the operator's alerts)."""
        role = effect_role(name)
        vendors = self._context.vendors if self._context is not None else {}
        workflow.metric_meter().create_counter(
            "dispatch_side_effect_failures", "side effects that failed after every retry"
        ).with_additional_attributes({"role": role, "vendor": vendors.get(role, "unknown")}).add(1)

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

    def _index(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        if not self._indexed:
            return
        changed = self._changes({f"sa:{u.key.name}": u.value for u in updates})
        if changed is not None:
            updates = [u for u in updates if f"sa:{u.key.name}" in changed]
        if updates:
            workflow.upsert_search_attributes(updates)

    def _changes(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """Of ``values`` (search attributes and memo fields this run upserts), those that
        differ from what this run last upserted; None (upsert them all) for an engagement that
        started before ``CHANGES_ONLY_PATCH``. Either way they are remembered: a run starts
        with nothing remembered, so its first upsert of each is whole (a continued run)."""
        upserted = self._upserted
        changed = {k: v for k, v in values.items() if k not in upserted or upserted[k] != v}
        upserted.update(values)
        return changed if self._patched(CHANGES_ONLY_PATCH) else None

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
        # The partner-review queue's short list, so the board reads the queue from the list
        # alone (one visibility query per page, never one query per waiting engagement).
        memo[partner_review.MEMO_KEY] = None
        if s.status is DispatchStatus.NEEDS_PARTNER_REVIEW:
            shown = self._context.partner_candidates_shown if self._context else None
            picks = partner_review.partner_candidates(s.decisions, shown)
            if picks:
                memo[partner_review.MEMO_KEY] = partner_review.review_memo(s.request_seq, picks)
        changed = self._changes({f"memo:{k}": v for k, v in memo.items()})
        upsert = memo if changed is None else {k: memo[k] for k in memo if f"memo:{k}" in changed}
        if upsert:
            workflow.upsert_memo(upsert)
        # The Web UI's "current details" (served by a query, never written to history, so it
        # needs no patch): where the engagement stands, by ids, as the memo.
        workflow.set_current_details(
            "\n\n".join(
                [
                    f"**{s.status.value}**",
                    f"Preparer: {s.preparer.id if s.preparer else '-'}",
                    f"Reviewer: {s.reviewer.id if s.reviewer else '-'}",
                    f"Due: {memo['due_date'] or '-'}",
                ]
            )
        )

    def _effect_state(self, name: str, state: EffectState, detail: str = "") -> None:
        effects = [e for e in self._state.side_effects if e.name != name]
        effects.append(SideEffect(name=name, state=state, detail=detail))
        self._state.side_effects = effects[-SIDE_EFFECTS_KEPT:]

    def _firm_date(self, at: datetime) -> date:
        """The date at ``at`` on the firm's clock, which dates its time entries and due dates
        (UTC until the firm's context has been read)."""
        if self._context is None:
            return at.date()
        return local_date(at, self._context.time_zone)

    def _firm_today(self) -> date:
        return self._firm_date(workflow.now())

    def _note(self, kind: str, detail: str = "") -> None:
        self._state.timeline = [
            *self._state.timeline,
            TimelineEntry(at=workflow.now(), kind=kind, detail=detail),
        ][-TIMELINE_KEPT:]
