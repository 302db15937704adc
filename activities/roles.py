"""One interface per role, so workflows never name a vendor.

Each role is a class whose methods carry the activity names the workflows call. A vendor module
subclasses the role and re-declares each method with the *same* ``@activity.defn(name=...)``;
the worker registers exactly one implementation per role, chosen by the firm config.
Adding a vendor therefore touches one module and the config schema.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from temporalio import activity

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
    JobList,
    ListJobsInput,
    LoadEngagementInput,
    PartnerReviewNotice,
    PmDueDateInput,
    PmWriteBackInput,
    PmWriteBackResult,
    StaffNotice,
    TrackerReadInput,
    TrackerReadResult,
    TrackerStaff,
    TrackerUserHours,
)


class PmActivities:
    """Practice management: where engagements live and where assignments are written back."""

    @activity.defn(name="pm_load_engagement")
    async def load_engagement(self, input: LoadEngagementInput) -> EngagementDetails:
        raise NotImplementedError

    @activity.defn(name="pm_write_back")
    async def write_back(self, input: PmWriteBackInput) -> PmWriteBackResult:
        raise NotImplementedError

    @activity.defn(name="pm_move_due_date")
    async def move_due_date(self, input: PmDueDateInput) -> PmWriteBackResult:
        """A partner moved the due date; systems without a write API say so in the result."""
        raise NotImplementedError

    @activity.defn(name="pm_list_new_jobs")
    async def list_new_jobs(self, input: ListJobsInput) -> JobList:
        """Only for PM systems polled on a schedule (no webhooks), e.g. Xero Practice Manager."""
        raise NotImplementedError


class TimeTrackerActivities:
    """Weekly capacity and logged hours per person."""

    @activity.defn(name="tracker_read")
    async def read(self, input: TrackerReadInput) -> TrackerReadResult:
        raise NotImplementedError

    @activity.defn(name="tracker_job_hours")
    async def job_hours(self, input: JobHoursInput) -> JobHours:
        raise NotImplementedError


class ChatActivities:
    """Direct messages to staff and partners."""

    @activity.defn(name="chat_notify_assignment")
    async def notify_assignment(self, input: AssignmentNotice) -> ChatResult:
        raise NotImplementedError

    @activity.defn(name="chat_notify_partner")
    async def notify_partner(self, input: PartnerReviewNotice) -> ChatResult:
        raise NotImplementedError

    @activity.defn(name="chat_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> ChatResult:
        """Checkpoints, reminders and escalations (plain messages, no buttons)."""
        raise NotImplementedError


class CalendarActivities:
    @activity.defn(name="calendar_block")
    async def block(self, input: CalendarBlockInput) -> CalendarBlockResult:
        raise NotImplementedError

    @activity.defn(name="calendar_remove")
    async def remove(self, input: CalendarRemoveInput) -> CalendarRemoveResult:
        """Idempotent: removing a block that is already gone is success."""
        raise NotImplementedError


class EmailActivities:
    @activity.defn(name="email_client_confirmation")
    async def client_confirmation(self, input: ClientConfirmationInput) -> EmailResult:
        raise NotImplementedError

    @activity.defn(name="email_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> EmailResult:
        raise NotImplementedError


class CrmActivities:
    @activity.defn(name="crm_log")
    async def log(self, input: CrmLogInput) -> CrmLogResult:
        raise NotImplementedError


def email_key(staff: TrackerStaff) -> str:
    """How a staff member is found among a tracker's users: the email, case-insensitive."""
    return staff.email.strip().lower()


def match_tracker_users(
    staff: Sequence[TrackerStaff], user_ids: Mapping[str, int]
) -> tuple[list[TrackerUserHours], dict[int, list[TrackerUserHours]], list[str]]:
    """For trackers that keep no capacity (the firm config's weekly hours apply): one empty
    ``TrackerUserHours`` per matched person, the same objects by tracker user id (to fill from
    the tracker's entries), and the emails nobody matched."""
    results: list[TrackerUserHours] = []
    by_user_id: dict[int, list[TrackerUserHours]] = defaultdict(list)
    unmatched: list[str] = []
    for person in staff:
        user_id = user_ids.get(email_key(person))
        if user_id is None:
            unmatched.append(person.email)
            continue
        hours = TrackerUserHours(staff_id=person.staff_id, weekly_capacity_hours=None)
        results.append(hours)
        by_user_id[user_id].append(hours)
    return results, by_user_id, unmatched
