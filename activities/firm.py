"""The firm's own facts: the capacity snapshot, per-engagement context, the dispatcher's start.

These read the firm config (held by the worker) and the time tracker, so workflows get them as
activity results and stay free of files, clocks and time zones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.liveness import heartbeating
from activities.roles import ChatActivities, TimeTrackerActivities
from dispatch import ENGAGEMENT_ID_PREFIX, TASK_QUEUE
from dispatch.capacity import week_start
from dispatch.config import FirmConfig, FirmConfigError, StaffMember
from dispatch.decision import staff_ref
from dispatch.ids import dispatcher_workflow_id
from dispatch.links import upload_link
from dispatch.models import (
    CapacityOutageNotice,
    CapacitySnapshot,
    ChatResult,
    ClosedEngagements,
    ClosedEngagementsInput,
    CollectedHoldings,
    CollectHoldingsInput,
    Contacts,
    ContactsInput,
    DispatcherInput,
    EngagementContext,
    EngagementContextInput,
    EngagementHoldings,
    EngagementSummary,
    LedgerSyncRequest,
    SnapshotInput,
    StaffCapacity,
    StaffNotice,
    TrackerFigures,
    TrackerReadInput,
    TrackerReadResult,
    TrackerStaff,
)

log = logging.getLogger("dispatch.firm")

WORKDAY_END_HOUR = 17
TRACKER_BUDGET = timedelta(seconds=45)
"""How long one capacity snapshot may wait for the time tracker before it degrades to the last
figures (the dispatcher is waiting; a slow tracker must not hold the firm's dispatch)."""
ENGAGEMENT_WORKFLOW = "EngagementWorkflow"
HOLDINGS_UPDATE = "ledger_sync"
HOLDINGS_QUERY = "holdings"
ASK_TIMEOUT = timedelta(seconds=10)
ASK_CONCURRENCY = 16


def _utcnow() -> datetime:
    return datetime.now(UTC)


UNWIRED_POLICY_KNOBS = {
    "hold_recurring_days": "holding room for recurring work before its Schedule creates it",
    "replan_moves_per_engagement": "moving work not yet started to someone who can do it sooner",
}
"""Policy knobs the simulator measures (``dispatch simulate``) but the dispatcher does not act
on yet: a firm file that sets one is refused rather than silently ignored."""


def refuse_unwired_knobs(config: FirmConfig) -> None:
    """Raise ``FirmConfigError`` naming every unwired knob the firm file turns on."""
    policy = config.policy
    problems = [
        f"policy.{knob}: {getattr(policy, knob)!r} is not supported by the dispatcher yet "
        f"({what} is measured in `dispatch simulate` only); remove it or set it to 0"
        for knob, what in UNWIRED_POLICY_KNOBS.items()
        if getattr(policy, knob)
    ]
    if problems:
        raise FirmConfigError("\n".join(problems))


def manual_pm_note(config: FirmConfig) -> str | None:
    pm = config.connectors.pm
    if pm.kind == "relay":
        return (
            f"{pm.system_name} has no API we can write to: set the assignee and status "
            "there by hand."
        )
    return None


class FirmActivities:
    def __init__(
        self,
        config: FirmConfig,
        tracker: TimeTrackerActivities | None,
        clock: Callable[[], datetime] = _utcnow,
        chat: ChatActivities | None = None,
    ) -> None:
        refuse_unwired_knobs(config)
        self._config = config
        self._tracker = tracker
        self._clock = clock
        self._chat = chat
        self._zone = ZoneInfo(config.firm.time_zone)
        self._last_read: tuple[datetime, TrackerReadResult] | None = None
        """The last good tracker read in this worker (a fallback when the dispatcher has none)."""

    def today(self) -> date:
        return self._clock().astimezone(self._zone).date()

    @activity.defn(name="firm_capacity_snapshot")
    async def capacity_snapshot(self, input: SnapshotInput) -> CapacitySnapshot:
        """Staff, their weekly capacity and logged hours (this week and last), and the rules."""
        async with heartbeating():
            return await self._capacity_snapshot(input)

    async def _capacity_snapshot(self, input: SnapshotInput) -> CapacitySnapshot:
        config = self._config
        now = self._clock()
        today = now.astimezone(self._zone).date()
        monday = week_start(today)
        last_monday = monday - timedelta(days=7)
        warnings: list[str] = []
        tracked: dict[str, tuple[float | None, dict[date, float]]] = {}
        source = "config"
        active = [s for s in config.staff if s.active]
        tracker_ok, tracker_error = True, None
        retry_after: float | None = None
        tracker_as_of: datetime | None = now
        fallback: dict[str, TrackerFigures] = {}
        if self._tracker is not None:
            source = config.connectors.time_tracker.kind
            try:
                result = await asyncio.wait_for(
                    self._tracker.read(
                        TrackerReadInput(
                            staff=[TrackerStaff(staff_id=s.id, email=s.email) for s in active],
                            start=last_monday,
                            end=today,
                        )
                    ),
                    timeout=TRACKER_BUDGET.total_seconds(),
                )
            except Exception as err:  # any tracker failure degrades; none fails the dispatcher
                # A vendor outage degrades: the last figures stand in, and the dispatcher says
                # so in every decision and tells the managing partner once.
                tracker_ok = False
                tracker_error = _short_error(err)
                retry_after = _asked_to_wait(err)
                fallback, tracker_as_of = self._fallback(input)
                log.warning("time tracker unavailable for the capacity snapshot: %s", tracker_error)
            else:
                self._last_read = (now, result)
                tracked = {
                    u.staff_id: (u.weekly_capacity_hours, u.logged_by_date) for u in result.users
                }
                if result.unmatched:
                    warnings.append(
                        f"{len(result.unmatched)} staff not found in the time tracker; "
                        "using configured capacity and no logged hours for them"
                    )
        staff = []
        for member in config.staff:
            tracker_capacity, logged = tracked.get(member.id, (None, {}))
            figures = fallback.get(member.id)
            if figures is not None and tracker_capacity is None:
                tracker_capacity = figures.weekly_capacity_hours
            weekly = member.weekly_capacity_hours or tracker_capacity
            capacity_source = "config" if member.weekly_capacity_hours else source
            if weekly is None:
                # Unknown capacity is zero capacity: we never guess someone has room.
                weekly = 0.0
                capacity_source = "unknown"
                if member.active:
                    warnings.append(f"no weekly capacity for staff {member.id}; treated as 0 h")
            this_week = round(sum(h for d, h in logged.items() if d >= monday), 2)
            last_week = round(sum(h for d, h in logged.items() if last_monday <= d < monday), 2)
            if figures is not None and tracker_as_of is not None:
                same_week = week_start(tracker_as_of.astimezone(self._zone).date()) == monday
                this_week = figures.logged_this_week if same_week else 0.0
                last_week = figures.logged_last_week if same_week else figures.logged_this_week
            staff.append(
                StaffCapacity(
                    member=_without_reasons(member),
                    weekly_capacity_hours=weekly,
                    logged_this_week=this_week,
                    logged_last_week=last_week,
                    capacity_source=capacity_source,
                )
            )
        return CapacitySnapshot(
            taken_at=now,
            today=today,
            week_start=monday,
            workdays=config.firm.workday_numbers,
            holidays=config.firm.holidays,
            staff=staff,
            service_types=config.service_types,
            policy=config.policy,
            client_history={c.id: c.history for c in config.clients if c.history},
            managing_partner=config.escalation.managing_partner,
            source=source,
            warnings=warnings,
            tracker_ok=tracker_ok,
            tracker_as_of=tracker_as_of,
            tracker_error=tracker_error,
            tracker_retry_after_seconds=retry_after,
            time_zone=config.firm.time_zone,
            workday_start_hour=config.firm.workday_start_hour,
        )

    def _fallback(self, input: SnapshotInput) -> tuple[dict[str, TrackerFigures], datetime | None]:
        """The newest tracker figures known: the dispatcher's (carried), else this worker's."""
        mine = self._last_read
        theirs = input.last_tracker_at if input.last_tracker else None
        if mine is not None and (theirs is None or mine[0] > theirs):
            read_at, result = mine
            monday = week_start(read_at.astimezone(self._zone).date())
            figures = {
                u.staff_id: TrackerFigures(
                    staff_id=u.staff_id,
                    weekly_capacity_hours=u.weekly_capacity_hours,
                    logged_this_week=round(
                        sum(h for d, h in u.logged_by_date.items() if d >= monday), 2
                    ),
                    logged_last_week=round(
                        sum(
                            h
                            for d, h in u.logged_by_date.items()
                            if monday - timedelta(days=7) <= d < monday
                        ),
                        2,
                    ),
                )
                for u in result.users
            }
            return figures, read_at
        if input.last_tracker:
            return {f.staff_id: f for f in input.last_tracker}, theirs
        return {}, None

    @activity.defn(name="firm_engagement_context")
    async def engagement_context(self, input: EngagementContextInput) -> EngagementContext:
        config = self._config
        service = config.service_type(input.service_type)
        due_local = datetime.combine(input.due_date, time(WORKDAY_END_HOUR), tzinfo=self._zone)
        start_at = None
        if input.start_date is not None:
            start_local = datetime.combine(
                input.start_date, time(config.firm.workday_start_hour), tzinfo=self._zone
            )
            start_at = start_local.astimezone(UTC)
        policy = config.policy
        return EngagementContext(
            firm_name=config.firm.name,
            time_zone=config.firm.time_zone,
            today=self.today(),
            due_at=due_local.astimezone(UTC),
            service_name=service.name if service else None,
            upload_link=upload_link(config.firm.upload_url_template, input.client_id),
            managing_partner=staff_ref(config.managing_partner),
            deciding_partners=config.deciding_partners,
            manual_pm_update=manual_pm_note(config),
            partner_candidates_shown=policy.partner_candidates_shown,
            needs_reviewer=service is not None and service.reviewer_tier is not None,
            start_at=start_at,
            max_declines=policy.max_declines,
            response_reminder_hours=policy.response_reminder_hours,
            response_escalation_hours=policy.response_escalation_hours,
            not_started_hours=policy.not_started_hours,
            status_check_days=policy.status_check_days_before_due,
            channels=policy.checkpoint_channels,
            vendors={
                "pm": config.connectors.pm.kind,
                "chat": config.connectors.chat.kind,
                "calendar": config.connectors.calendar.kind,
                "email": config.connectors.email.kind,
                "crm": config.connectors.crm.kind,
            },
        )

    @activity.defn(name="firm_contacts")
    async def contacts(self, input: ContactsInput) -> Contacts:
        """Managers of the named staff (direct, else team manager, else managing partner)."""
        config = self._config
        managers = {}
        for staff_id in input.staff_ids:
            try:
                managers[staff_id] = staff_ref(config.manager_of(staff_id))
            except KeyError:
                managers[staff_id] = staff_ref(config.managing_partner)
        return Contacts(managers=managers, managing_partner=staff_ref(config.managing_partner))

    @activity.defn(name="firm_ensure_dispatcher")
    async def ensure_dispatcher(self, input: SnapshotInput) -> str:
        """Start the firm's dispatcher if it is not running (an operator may have stopped it).

        A fresh dispatcher rebuilds its ledger from the running engagements before deciding."""
        workflow_id = dispatcher_workflow_id(input.firm_id)
        await activity.client().start_workflow(
            "DispatcherWorkflow",
            DispatcherInput(firm_id=input.firm_id),
            id=workflow_id,
            # The queue this worker serves: the dispatcher runs beside the engagements.
            task_queue=activity.info().task_queue or TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return workflow_id

    # --- the ledger's facts ------------------------------------------------------------------

    @activity.defn(name="firm_collect_holdings")
    async def collect_holdings(self, input: CollectHoldingsInput) -> CollectedHoldings:
        """One page of the firm's running engagements, each asked what it holds.

        With an epoch (a rebuild) each is asked by Update, which also tells it the new ledger;
        without (a reconciliation) by query, which changes nothing. Engagements are found in
        visibility by type and task queue (the worker that serves this firm).
        """
        async with heartbeating():
            return await self._collect_holdings(input)

    async def _collect_holdings(self, input: CollectHoldingsInput) -> CollectedHoldings:
        if input.settle_seconds:
            await asyncio.sleep(input.settle_seconds)
        client = activity.client()
        task_queue = activity.info().task_queue or TASK_QUEUE
        query = (
            f'WorkflowType="{ENGAGEMENT_WORKFLOW}" AND ExecutionStatus="Running" '
            f'AND TaskQueue="{task_queue}"'
        )
        listing = client.list_workflows(
            query,
            page_size=input.page_size,
            next_page_token=input.page_token.encode("latin-1") if input.page_token else None,
        )
        try:
            await listing.fetch_next_page()
        except RPCError as err:
            if err.status is not RPCStatusCode.UNIMPLEMENTED:
                raise
            # A server without visibility (the time-skipping test server): nothing to list.
            log.warning("this Temporal server cannot list workflows; the ledger starts empty")
            return CollectedHoldings(engagements=[])
        executions = list(listing.current_page or [])
        gate = asyncio.Semaphore(ASK_CONCURRENCY)

        async def ask(workflow_id: str) -> EngagementHoldings | None:
            handle = client.get_workflow_handle(workflow_id)
            async with gate:
                for attempt in range(3):
                    try:
                        answer: EngagementHoldings
                        if input.epoch is not None:
                            answer = await handle.execute_update(
                                HOLDINGS_UPDATE,
                                LedgerSyncRequest(epoch=input.epoch),
                                id=f"ledger-sync-{input.epoch}",
                                result_type=EngagementHoldings,
                                rpc_timeout=ASK_TIMEOUT,
                            )
                        else:
                            answer = await handle.query(
                                HOLDINGS_QUERY,
                                result_type=EngagementHoldings,
                                rpc_timeout=ASK_TIMEOUT,
                            )
                        return answer
                    except (RPCError, WorkflowUpdateFailedError, TimeoutError) as err:
                        if attempt == 2:
                            log.warning("engagement %s did not answer: %s", workflow_id, err)
                    await asyncio.sleep(0.5 * (attempt + 1))
            return None

        ids = [e.id for e in executions if e.id.startswith(f"{ENGAGEMENT_ID_PREFIX}-")]
        answers = await asyncio.gather(*(ask(w) for w in ids))
        found = [a for a in answers if a is not None and a.firm_id == input.firm_id]
        token = listing.next_page_token
        return CollectedHoldings(
            engagements=found,
            next_page_token=token.decode("latin-1") if token else None,
            listed=len(ids),
            unanswered=[w for w, a in zip(ids, answers, strict=True) if a is None],
        )

    @activity.defn(name="firm_closed_engagements")
    async def closed_engagements(self, input: ClosedEngagementsInput) -> ClosedEngagements:
        """Engagements of this worker's queue that closed since ``since`` by any means but a
        continue-as-new (terminated, timed out, failed, cancelled, completed)."""
        async with heartbeating():
            return await self._closed_engagements(input)

    async def _closed_engagements(self, input: ClosedEngagementsInput) -> ClosedEngagements:
        client = activity.client()
        task_queue = activity.info().task_queue or TASK_QUEUE
        since = input.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = (
            f'WorkflowType="{ENGAGEMENT_WORKFLOW}" AND TaskQueue="{task_queue}" '
            f'AND ExecutionStatus IN ("Terminated", "TimedOut", "Failed", "Canceled", '
            f'"Completed") AND CloseTime > "{since}"'
        )
        ids: list[str] = []
        try:
            async for execution in client.list_workflows(query, limit=input.limit + 1):
                ids.append(execution.id)
        except RPCError as err:
            if err.status is not RPCStatusCode.UNIMPLEMENTED:
                raise
            return ClosedEngagements(workflow_ids=[])
        return ClosedEngagements(workflow_ids=ids[: input.limit], truncated=len(ids) > input.limit)

    @activity.defn(name="firm_capacity_outage_notice")
    async def capacity_outage_notice(self, input: CapacityOutageNotice) -> ChatResult:
        """Tell the managing partner that capacity comes from older figures (or is back)."""
        if self._chat is None:
            return ChatResult(delivered=False, detail="no chat connector")
        partner = staff_ref(self._config.managing_partner)
        as_of = (
            input.capacity_as_of.astimezone(self._zone).strftime("%a %d %b %H:%M")
            if input.capacity_as_of
            else "the firm file"
        )
        if input.recovered:
            subject = "Time tracker back: capacity is current again"
            lines = ["Dispatch reads live hours from the time tracker again."]
        else:
            subject = "Time tracker unavailable: dispatch uses older capacity figures"
            lines = [
                f"The time tracker stopped answering ({input.detail or 'no answer'}).",
                f"Engagements are still assigned, using the hours read at {as_of}; "
                "every decision says so. It is retried every minute.",
            ]
        today = self.today()
        notice = StaffNotice(
            kind="capacity_outage",
            recipient=partner,
            summary=EngagementSummary(
                workflow_id=dispatcher_workflow_id(self._config.firm.id),
                title="Capacity figures",
                client_id="-",
                client_name=self._config.firm.name,
                service_type="dispatch",
                service_name="Dispatch",
                due_date=today,
                estimated_hours=0,
            ),
            subject=subject,
            lines=lines,
            key=input.key,
        )
        return await self._chat.staff_notice(notice)


def _without_reasons(member: StaffMember) -> StaffMember:
    """Only the dates of an absence decide anything; why someone is away (illness, leave) is
    theirs and never goes into a workflow history."""
    if not member.absences:
        return member
    return member.model_copy(
        update={"absences": [a.model_copy(update={"reason": "absence"}) for a in member.absences]}
    )


ASKED_WAIT_MAX = timedelta(hours=1)
"""A tracker's "ask again in" is believed up to an hour (Toggl's quota window); longer is cut."""


def _asked_to_wait(err: BaseException) -> float | None:
    """The wait the tracker asked for (a connector's ``next_retry_delay`` from Retry-After or a
    quota's reset), so the dispatcher does not read a rate-limited tracker every minute."""
    if not isinstance(err, ApplicationError) or err.next_retry_delay is None:
        return None
    return min(max(err.next_retry_delay, timedelta(0)), ASKED_WAIT_MAX).total_seconds()


def _short_error(err: BaseException) -> str:
    if isinstance(err, ApplicationError):
        return err.message[:200]
    if isinstance(err, TimeoutError):
        return f"no answer within {TRACKER_BUDGET.total_seconds():.0f} s"
    return f"{type(err).__name__}: {err}"[:200]
