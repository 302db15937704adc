"""The firm's own facts: the capacity snapshot, per-engagement context, the dispatcher's start.

These read the firm config (held by the worker) and the time tracker, so workflows get them as
activity results and stay free of files, clocks and time zones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy

from activities.roles import TimeTrackerActivities
from dispatch import TASK_QUEUE
from dispatch.capacity import week_start
from dispatch.config import FirmConfig
from dispatch.decision import staff_ref
from dispatch.ids import dispatcher_workflow_id
from dispatch.models import (
    CapacitySnapshot,
    Contacts,
    ContactsInput,
    DispatcherInput,
    EngagementContext,
    EngagementContextInput,
    SnapshotInput,
    StaffCapacity,
    TrackerReadInput,
    TrackerStaff,
)

WORKDAY_END_HOUR = 17


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self._config = config
        self._tracker = tracker
        self._clock = clock
        self._zone = ZoneInfo(config.firm.time_zone)

    def today(self) -> date:
        return self._clock().astimezone(self._zone).date()

    @activity.defn(name="firm_capacity_snapshot")
    async def capacity_snapshot(self, input: SnapshotInput) -> CapacitySnapshot:
        """Staff, their weekly capacity and logged hours (this week and last), and the rules."""
        config = self._config
        now = self._clock()
        today = now.astimezone(self._zone).date()
        monday = week_start(today)
        last_monday = monday - timedelta(days=7)
        warnings: list[str] = []
        tracked: dict[str, tuple[float | None, dict[date, float]]] = {}
        source = "config"
        active = [s for s in config.staff if s.active]
        if self._tracker is not None:
            result = await self._tracker.read(
                TrackerReadInput(
                    staff=[TrackerStaff(staff_id=s.id, email=s.email) for s in active],
                    start=last_monday,
                    end=today,
                )
            )
            source = config.connectors.time_tracker.kind
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
            weekly = member.weekly_capacity_hours or tracker_capacity
            capacity_source = "config" if member.weekly_capacity_hours else source
            if weekly is None:
                # Unknown capacity is zero capacity: we never guess someone has room.
                weekly = 0.0
                capacity_source = "unknown"
                if member.active:
                    warnings.append(f"no weekly capacity for staff {member.id}; treated as 0 h")
            staff.append(
                StaffCapacity(
                    member=member,
                    weekly_capacity_hours=weekly,
                    logged_this_week=round(sum(h for d, h in logged.items() if d >= monday), 2),
                    logged_last_week=round(
                        sum(h for d, h in logged.items() if last_monday <= d < monday), 2
                    ),
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
        )

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
            upload_link=config.firm.upload_url_template.format(client_id=input.client_id),
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
        """Start the firm's dispatcher if it is not running (an operator may have stopped it)."""
        from workflows.dispatcher import DispatcherWorkflow

        workflow_id = dispatcher_workflow_id(input.firm_id)
        await activity.client().start_workflow(
            DispatcherWorkflow.run,
            DispatcherInput(firm_id=input.firm_id),
            id=workflow_id,
            # The queue this worker serves: the dispatcher runs beside the engagements.
            task_queue=activity.info().task_queue or TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return workflow_id
