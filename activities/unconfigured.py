"""Role implementations for a firm that does not use a system in that role.

They answer honestly ("not configured") so the engagement records the side effect as skipped
instead of failing; nothing here performs I/O.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.roles import (
    CalendarActivities,
    ChatActivities,
    CrmActivities,
    EmailActivities,
    PmActivities,
    TimeTrackerActivities,
)
from dispatch.config import RelayConnector
from dispatch.models import (
    AssignmentNotice,
    CalendarBlockInput,
    CalendarBlockResult,
    CalendarRemoveInput,
    CalendarRemoveResult,
    ChatResult,
    ClientConfirmationInput,
    CrmLogInput,
    CrmLogResult,
    EmailResult,
    EngagementDetails,
    JobHours,
    JobHoursInput,
    LoadEngagementInput,
    PartnerReviewNotice,
    PmDueDateInput,
    PmWriteBackInput,
    PmWriteBackResult,
    StaffNotice,
    TrackerReadInput,
    TrackerReadResult,
)


class RelayPmActivities(PmActivities):
    """TaxDome, Canopy and other PM systems without a public API: engagements arrive whole
    through ``/webhooks/engagements`` and nothing can be written back."""

    def __init__(self, connector: RelayConnector) -> None:
        self._connector = connector

    @activity.defn(name="pm_load_engagement")
    async def load_engagement(self, input: LoadEngagementInput) -> EngagementDetails:
        raise ApplicationError(
            f"{self._connector.system_name} has no API to read engagements from; relays must send "
            "the whole engagement to /webhooks/engagements",
            type="NoPmApi",
            non_retryable=True,
        )

    @activity.defn(name="pm_write_back")
    async def write_back(self, input: PmWriteBackInput) -> PmWriteBackResult:
        return PmWriteBackResult(
            written=False,
            manual_update_required=True,
            detail=f"{self._connector.system_name} has no write API: update it by hand",
        )

    @activity.defn(name="pm_move_due_date")
    async def move_due_date(self, input: PmDueDateInput) -> PmWriteBackResult:
        return PmWriteBackResult(
            written=False,
            manual_update_required=True,
            detail=(
                f"{self._connector.system_name} has no write API: move the due date there by "
                "hand, or its next update moves it back"
            ),
        )


class NoChatActivities(ChatActivities):
    @activity.defn(name="chat_notify_assignment")
    async def notify_assignment(self, input: AssignmentNotice) -> ChatResult:
        return ChatResult(delivered=False, detail="no chat system configured")

    @activity.defn(name="chat_notify_partner")
    async def notify_partner(self, input: PartnerReviewNotice) -> ChatResult:
        return ChatResult(delivered=False, detail="no chat system configured")

    @activity.defn(name="chat_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> ChatResult:
        return ChatResult(delivered=False, detail="no chat system configured")


class NoTrackerActivities(TimeTrackerActivities):
    """Capacity from the firm config only; nothing is logged anywhere we can read."""

    @activity.defn(name="tracker_read")
    async def read(self, input: TrackerReadInput) -> TrackerReadResult:
        return TrackerReadResult(users=[])

    @activity.defn(name="tracker_job_hours")
    async def job_hours(self, input: JobHoursInput) -> JobHours:
        return JobHours(hours=0.0, detail="no time tracker configured")


class NoCalendarActivities(CalendarActivities):
    @activity.defn(name="calendar_block")
    async def block(self, input: CalendarBlockInput) -> CalendarBlockResult:
        return CalendarBlockResult(
            event_id="", created=False, delivered=False, detail="no calendar configured"
        )

    @activity.defn(name="calendar_remove")
    async def remove(self, input: CalendarRemoveInput) -> CalendarRemoveResult:
        return CalendarRemoveResult(removed=False, detail="no calendar configured")


class NoEmailActivities(EmailActivities):
    @activity.defn(name="email_client_confirmation")
    async def client_confirmation(self, input: ClientConfirmationInput) -> EmailResult:
        return EmailResult(sent=False, detail="no email service configured")

    @activity.defn(name="email_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> EmailResult:
        return EmailResult(sent=False, detail="no email service configured")


class NoCrmActivities(CrmActivities):
    @activity.defn(name="crm_log")
    async def log(self, input: CrmLogInput) -> CrmLogResult:
        return CrmLogResult(logged=False, detail="no CRM configured")
