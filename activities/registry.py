"""Build the worker's activities from the firm config: exactly one implementation per role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.crm import WebhookCrmActivities
from activities.firm import FirmActivities
from activities.google_calendar import GoogleCalendarActivities
from activities.harvest import HarvestActivities
from activities.karbon import KarbonActivities
from activities.karbon_tracker import KarbonTrackerActivities
from activities.optimizer import OptimizerActivities
from activities.outlook_calendar import OutlookCalendarActivities
from activities.quickbooks_time import QuickBooksTimeActivities
from activities.recurring import RecurringActivities
from activities.roles import (
    CalendarActivities,
    ChatActivities,
    CrmActivities,
    EmailActivities,
    PmActivities,
    TimeTrackerActivities,
)
from activities.sendgrid_mail import SendGridActivities
from activities.slack import SlackActivities
from activities.teams import TeamsActivities
from activities.toggl import TogglActivities
from activities.unconfigured import (
    NoCalendarActivities,
    NoChatActivities,
    NoCrmActivities,
    NoEmailActivities,
    NoTrackerActivities,
    RelayPmActivities,
)
from activities.xpm import XpmActivities
from dispatch.config import FirmConfig, FirmConfigError


def pm_for(config: FirmConfig) -> PmActivities:
    pm = config.connectors.pm
    if pm.kind == "karbon":
        return KarbonActivities(config, pm)
    if pm.kind == "xpm":
        return XpmActivities(config, pm)
    if pm.kind == "relay":
        return RelayPmActivities(pm)
    raise FirmConfigError(f"connectors.pm: {pm.kind!r} is not wired into this worker yet")


def tracker_for(config: FirmConfig) -> TimeTrackerActivities | None:
    """The time tracker, or None when capacity comes from the firm config alone."""
    tracker = config.connectors.time_tracker
    if tracker.kind == "harvest":
        return HarvestActivities(tracker)
    if tracker.kind == "karbon":
        return KarbonTrackerActivities(tracker)
    if tracker.kind == "toggl":
        return TogglActivities(tracker)
    if tracker.kind == "quickbooks_time":
        return QuickBooksTimeActivities(tracker)
    return None


def chat_for(config: FirmConfig) -> ChatActivities:
    chat = config.connectors.chat
    if chat.kind == "slack":
        return SlackActivities(config, chat)
    if chat.kind == "teams":
        return TeamsActivities(config, chat)
    return NoChatActivities()


def calendar_for(config: FirmConfig) -> CalendarActivities:
    calendar = config.connectors.calendar
    if calendar.kind == "google":
        return GoogleCalendarActivities(calendar)
    if calendar.kind == "outlook":
        return OutlookCalendarActivities(calendar)
    return NoCalendarActivities()


def email_for(config: FirmConfig) -> EmailActivities:
    email = config.connectors.email
    if email.kind == "sendgrid":
        return SendGridActivities(email)
    return NoEmailActivities()


def crm_for(config: FirmConfig) -> CrmActivities:
    crm = config.connectors.crm
    if crm.kind == "webhook":
        return WebhookCrmActivities(crm)
    return NoCrmActivities()


def build_activities(config: FirmConfig) -> list[Callable[..., Any]]:
    """Bound activity methods for the worker, one implementation per role."""
    tracker = tracker_for(config)
    pm = pm_for(config)
    chat = chat_for(config)
    firm = FirmActivities(config, tracker, chat=chat)
    calendar = calendar_for(config)
    email = email_for(config)
    crm = crm_for(config)
    return [
        firm.capacity_snapshot,
        firm.engagement_context,
        firm.ensure_dispatcher,
        firm.contacts,
        firm.collect_holdings,
        firm.closed_engagements,
        firm.capacity_outage_notice,
        (tracker or NoTrackerActivities()).job_hours,
        pm.load_engagement,
        pm.write_back,
        pm.move_due_date,
        chat.notify_assignment,
        chat.notify_partner,
        chat.staff_notice,
        calendar.block,
        calendar.remove,
        email.client_confirmation,
        email.staff_notice,
        crm.log,
        *RecurringActivities.for_config(config).activities(),
        # Always registered: the dispatcher calls it only when the firm's policy opens a
        # batching window; ortools is imported on the first solve, not here.
        OptimizerActivities().optimize_assignments,
        *([pm.list_new_jobs] if config.connectors.pm.kind == "xpm" else []),
    ]
