"""One interface per role, so workflows never name a vendor.

Each role is a class whose methods carry the activity names the workflows call. A vendor module
subclasses the role and re-declares each method with the *same* ``@activity.defn(name=...)``;
the worker registers exactly one implementation per role, chosen by the firm config.
Adding a vendor therefore touches one module and the config schema.
"""

from __future__ import annotations

from temporalio import activity

from dispatch.models import (
    AssignmentNotice,
    CalendarBlockInput,
    CalendarBlockResult,
    ChatResult,
    ClientConfirmationInput,
    CrmLogInput,
    CrmLogResult,
    EmailResult,
    EngagementDetails,
    LoadEngagementInput,
    PartnerReviewNotice,
    PmWriteBackInput,
    PmWriteBackResult,
    TrackerReadInput,
    TrackerReadResult,
)


class PmActivities:
    """Practice management: where engagements live and where assignments are written back."""

    @activity.defn(name="pm_load_engagement")
    async def load_engagement(self, input: LoadEngagementInput) -> EngagementDetails:
        raise NotImplementedError

    @activity.defn(name="pm_write_back")
    async def write_back(self, input: PmWriteBackInput) -> PmWriteBackResult:
        raise NotImplementedError


class TimeTrackerActivities:
    """Weekly capacity and logged hours per person."""

    @activity.defn(name="tracker_read")
    async def read(self, input: TrackerReadInput) -> TrackerReadResult:
        raise NotImplementedError


class ChatActivities:
    """Direct messages to staff and partners."""

    @activity.defn(name="chat_notify_assignment")
    async def notify_assignment(self, input: AssignmentNotice) -> ChatResult:
        raise NotImplementedError

    @activity.defn(name="chat_notify_partner")
    async def notify_partner(self, input: PartnerReviewNotice) -> ChatResult:
        raise NotImplementedError


class CalendarActivities:
    @activity.defn(name="calendar_block")
    async def block(self, input: CalendarBlockInput) -> CalendarBlockResult:
        raise NotImplementedError


class EmailActivities:
    @activity.defn(name="email_client_confirmation")
    async def client_confirmation(self, input: ClientConfirmationInput) -> EmailResult:
        raise NotImplementedError


class CrmActivities:
    @activity.defn(name="crm_log")
    async def log(self, input: CrmLogInput) -> CrmLogResult:
        raise NotImplementedError
