"""The firm configuration: one YAML file, validated, with errors that name file, field and reason.

The file path comes from ``DISPATCH_FIRM_CONFIG``; without it the packaged demo firm is used.
Secrets never live in this file: connectors name the environment variables that hold them.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEMO_FIRM_PATH = Path(__file__).parent / "data" / "demo_firm.yaml"
CONFIG_ENV = "DISPATCH_FIRM_CONFIG"

_ID = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""Ids end up in workflow ids and search attributes: keep them short and boring."""


class Tier(StrEnum):
    """Seniority, lowest first. Order matters: "lowest sufficient tier" ranks by it."""

    STAFF = "staff"
    SENIOR = "senior"
    MANAGER = "manager"
    PARTNER = "partner"

    @property
    def rank(self) -> int:
        return _TIER_ORDER.index(self)


_TIER_ORDER = [Tier.STAFF, Tier.SENIOR, Tier.MANAGER, Tier.PARTNER]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Absence(_Strict):
    start: date = Field(alias="from")
    end: date = Field(alias="to")
    reason: str = "absence"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _ordered(self) -> Absence:
        if self.end < self.start:
            raise ValueError(f"'to' ({self.end}) is before 'from' ({self.start})")
        return self


class StaffMember(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    name: Annotated[str, Field(min_length=1)]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    tier: Tier
    skills: list[str] = Field(default_factory=list)
    weekly_capacity_hours: Annotated[float, Field(gt=0, le=80)] | None = None
    """Overrides the time tracker's figure when set (e.g. a part-timer the tracker gets wrong)."""
    slack_id: str | None = None
    manager: str | None = None
    team: str | None = None
    absences: list[Absence] = Field(default_factory=list)
    active: bool = True

    def absent_on(self, day: date) -> bool:
        return any(a.start <= day <= a.end for a in self.absences)


class ServiceType(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    name: str
    required_skills: list[str] = Field(default_factory=list)
    preferred_skills: list[str] = Field(default_factory=list)
    """Specialisations that make someone a better fit without being required."""
    default_estimated_hours: Annotated[float, Field(gt=0, le=2000)]
    preparer_tier: Tier = Tier.STAFF
    reviewer_tier: Tier | None = None
    review_fraction: Annotated[float, Field(gt=0, le=1)] = 0.35
    """Reviewer hours as a share of the preparer's estimate (review is ~30-40% of prep)."""
    lead_days: Annotated[int, Field(ge=0, le=365)] = 10
    documents_needed: list[str] = Field(default_factory=list)
    pm_work_types: list[str] = Field(default_factory=list)
    """PM-system work types (e.g. Karbon ``WorkType``) that map to this service type."""


class Weights(_Strict):
    """Ranking weights. The defaults keep the seed's order: history, specialisation, hours, tier."""

    client_history: Annotated[float, Field(ge=0)] = 1000.0
    specialization: Annotated[float, Field(ge=0)] = 100.0
    available_hours: Annotated[float, Field(ge=0)] = 10.0
    lowest_tier: Annotated[float, Field(ge=0)] = 1.0


Channel = Literal["chat", "email"]
_BOTH_CHANNELS: list[Channel] = ["chat", "email"]


class Policy(_Strict):
    weights: Weights = Field(default_factory=Weights)
    preparer_utilization_ceiling: Annotated[float, Field(gt=0, le=1)] = 1.0
    reviewer_utilization_ceiling: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Reviews may be booked to this share of a reviewer's capacity. Below 1 keeps room so
    reviews queue less behind the reviewer's own preparation. On the tax-season benchmark
    (docs/benchmarks.md) 0.8 sent 3 points more engagements to partner review for the same
    on-time rate, with the slowest reviews starting ~50 h sooner: the default is the whole
    capacity; a firm that values quick reviews over fewer partner decisions sets 0.8."""
    snapshot_ttl_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    """How long a time-tracker capacity snapshot is reused before the dispatcher reads it again."""
    partner_candidates_shown: Annotated[int, Field(ge=1, le=20)] = 5
    max_declines: Annotated[int, Field(ge=1, le=10)] = 2
    """After this many "Request reassignment" answers the engagement goes to partner review."""
    response_reminder_hours: Annotated[float, Field(gt=0, le=24 * 14)] = 24
    """No Accept / Request reassignment by then: remind the assignee."""
    response_escalation_hours: Annotated[float, Field(gt=0, le=24 * 14)] = 48
    """Still no answer by then (from assignment): tell their manager."""
    not_started_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 48
    """Assigned but not started by then: alert the manager (the seed's 48 h checkpoint)."""
    status_check_days_before_due: Annotated[int, Field(ge=0, le=60)] = 3
    checkpoint_channels: list[Channel] = Field(default_factory=lambda: list(_BOTH_CHANNELS))
    """How checkpoint and escalation notices reach people."""
    review_reserve: dict[Tier, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    """Share of each tier's hours kept for reviews when its people prepare work a lower tier
    could do, e.g. ``{manager: 0.5}``: a manager takes a senior's return only while half of
    their hours stay free for the reviews only managers can do."""
    continuity_yields_to_free_share: Annotated[float, Field(ge=0, le=1)] = 0
    """Keep a client with a more senior prior preparer only while nobody eligible of a lower
    sufficient tier has this share of their hours up to the due date free (0.9: a senior keeps
    the client unless a qualified junior is nearly idle). 0: client history always counts.
    A firm file that leaves it out gets ``FIRM_DEFAULTS`` (0.9, ``FirmConfig``); the
    model's own 0 is what a capacity snapshot recorded before the knob existed decodes to, so
    a dispatcher's history replays as it ran. See README "Policy knobs for the season"."""
    available_hours_as_share: bool = False
    """The "available hours" criterion ranks people by the share of their own hours up to the
    due date still free, not by the hours: a part-timer with half their week free ranks with a
    full-timer with half of theirs. A firm file that leaves it out gets ``FIRM_DEFAULTS``;
    the model's own False is what a snapshot recorded before the knob decodes to."""
    workday_end_hour: Annotated[float, Field(gt=0, le=24)] = 17
    """With ``firm.workday_start_hour``: the working day. A decision counts only the share of
    today's hours still ahead (at 16:00 of a 9-to-5 day, one hour of eight)."""
    hold_recurring_days: Annotated[int, Field(ge=0, le=366)] = 0
    """Hold room for recurring engagements due within this many days, before the Schedule
    creates them, on the people the rule would choose (0: no holds)."""
    replan_moves_per_engagement: Annotated[int, Field(ge=0, le=5)] = 0
    """How often the dispatcher may move an engagement whose preparer has not started and can
    no longer do it by its date to someone who can (0: never; the person is told each time)."""
    batch_window_seconds: Annotated[float, Field(ge=0, le=300)] = 0
    """Collect arrivals this long and assign them jointly (0 = decide as they come)."""
    optimizer_time_limit_seconds: Annotated[float, Field(gt=0, le=120)] = 5


class Escalation(_Strict):
    managing_partner: str
    team_managers: dict[str, str] = Field(default_factory=dict)
    partners: list[str] = Field(default_factory=list)
    """Partners who may decide ``NeedsPartnerReview`` items (the managing partner always may)."""


class ClientRecord(_Strict):
    id: str
    name: str | None = None
    email: str | None = None
    history: list[str] = Field(default_factory=list)
    """Staff ids who served this client before, most recent first."""


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_MON_TO_FRI: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]


class FirmInfo(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    name: str
    time_zone: str = "America/New_York"
    workdays: list[Weekday] = Field(default_factory=lambda: list(_MON_TO_FRI))
    holidays: list[date] = Field(default_factory=list)
    upload_url_template: str = "https://portal.example.com/upload/{client_id}"
    workday_start_hour: Annotated[int, Field(ge=0, le=23)] = 9

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA time zone {value!r}") from err
        return value

    def today_at(self, now: datetime) -> date:
        """The firm's calendar date at the instant ``now`` (the evening before, west of UTC)."""
        from dispatch.capacity import local_date  # capacity imports this module

        return local_date(now, self.time_zone)

    @property
    def workday_numbers(self) -> list[int]:
        """ISO weekday numbers minus one (Monday = 0), as ``date.weekday()`` returns."""
        names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        return sorted(names.index(d) for d in self.workdays)


# --- connectors ---------------------------------------------------------------------------


class KarbonConnector(_Strict):
    kind: Literal["karbon"]
    base_url: str = "https://api.karbonhq.com"
    bearer_token_env: str = "KARBON_BEARER_TOKEN"
    access_key_env: str = "KARBON_ACCESS_KEY"
    webhook_signing_key_env: str = "KARBON_WEBHOOK_SIGNING_KEY"
    app_url: str = "https://app2.karbonhq.com"
    webhook_target_url: str | None = None
    """Our public ``/webhooks/karbon`` URL: when set, the worker makes sure Karbon's ``Work``
    webhook subscription exists at start-up (Karbon cancels one after ten failed deliveries)."""
    assigned_primary_status: str = "ReadyToStart"
    assigned_secondary_status: str | None = "Assigned"
    """Karbon has no built-in "Assigned" status: map it to a tenant secondary status."""
    ready_for_review_statuses: list[str] = Field(default_factory=lambda: ["Ready for Review"])
    """Tenant secondary statuses that mean the preparer handed over to the reviewer."""
    in_review_statuses: list[str] = Field(default_factory=lambda: ["In Review"])


class XpmConnector(_Strict):
    """Xero Practice Manager: no job webhooks, so new jobs are polled on a Temporal Schedule."""

    kind: Literal["xpm"]
    base_url: str = "https://api.xero.com/practicemanager/3.1"
    access_token_env: str = "XERO_ACCESS_TOKEN"
    tenant_id_env: str = "XERO_TENANT_ID"
    app_url: str = "https://practicemanager.xero.com"
    poll_minutes: Annotated[int, Field(ge=1, le=1440)] = 5
    lookback_days: Annotated[int, Field(ge=1, le=365)] = 7
    """How far back each poll lists jobs (job.api/list is by creation date)."""
    assigned_state: str | None = None
    """The firm's job-state interface code for "assigned" (XPM states are firm-defined)."""
    in_progress_state: str | None = None
    completed_state: str | None = "COMPLETED"


class RelayConnector(_Strict):
    """A PM system with no usable API (TaxDome, Canopy): engagements arrive through a relay."""

    kind: Literal["relay"]
    system_name: str = "your practice management system"


PmConnector = Annotated[
    KarbonConnector | XpmConnector | RelayConnector, Field(discriminator="kind")
]


class HarvestConnector(_Strict):
    kind: Literal["harvest"]
    base_url: str = "https://api.harvestapp.com"
    access_token_env: str = "HARVEST_ACCESS_TOKEN"
    account_id_env: str = "HARVEST_ACCOUNT_ID"
    user_agent: str = "Engagement Dispatch (ops@example.com)"


class KarbonTimeTracker(_Strict):
    """Karbon as the capacity source: ``CapacityMinutesPerWeek`` and ``IndividualTimeEntries``."""

    kind: Literal["karbon"]
    base_url: str = "https://api.karbonhq.com"
    bearer_token_env: str = "KARBON_BEARER_TOKEN"
    access_key_env: str = "KARBON_ACCESS_KEY"


class TogglConnector(_Strict):
    """Toggl Track: logged hours from the Reports API; capacity from the firm config."""

    kind: Literal["toggl"]
    base_url: str = "https://api.track.toggl.com"
    api_token_env: str = "TOGGL_API_TOKEN"
    workspace_id: int


class QuickBooksTimeConnector(_Strict):
    """QuickBooks Time (TSheets): logged hours from timesheets; capacity from the firm config."""

    kind: Literal["quickbooks_time"]
    base_url: str = "https://rest.tsheets.com/api/v1"
    access_token_env: str = "QBTIME_ACCESS_TOKEN"


class ConfigOnlyTracker(_Strict):
    """No time tracker: capacity comes from ``weekly_capacity_hours`` and nothing is logged."""

    kind: Literal["config"]


TimeTrackerConnector = Annotated[
    HarvestConnector
    | KarbonTimeTracker
    | TogglConnector
    | QuickBooksTimeConnector
    | ConfigOnlyTracker,
    Field(discriminator="kind"),
]


class SlackConnector(_Strict):
    kind: Literal["slack"]
    base_url: str = "https://slack.com/api/"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"


class TeamsConnector(_Strict):
    """Microsoft Teams through a Workflows webhook: an Adaptive Card whose Accept / Request
    reassignment buttons are signed, expiring, single-use links served by the webhook server."""

    kind: Literal["teams"]
    webhook_url_env: str = "TEAMS_WEBHOOK_URL"
    """The Workflows "post to a channel when a webhook request is received" URL (a secret)."""
    public_base_url: str = "http://127.0.0.1:8000"
    """Where staff reach the webhook server (the links in the cards point here)."""
    link_secret_env: str = "DISPATCH_LINK_SECRET"
    link_ttl_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 72


class NoChat(_Strict):
    kind: Literal["none"]


ChatConnector = Annotated[SlackConnector | TeamsConnector | NoChat, Field(discriminator="kind")]


class GoogleCalendarConnector(_Strict):
    kind: Literal["google"]
    api_endpoint: str = "https://www.googleapis.com/calendar/v3/"
    credentials_file_env: str = "GOOGLE_APPLICATION_CREDENTIALS"
    """Service-account key with domain-wide delegation; unset means no auth (sandbox only)."""
    calendar_id: str = "primary"


class OutlookCalendarConnector(_Strict):
    """Outlook calendars through Microsoft Graph (app-only, client-credentials token)."""

    kind: Literal["outlook"]
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    token_url: str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    tenant_id_env: str = "MS_TENANT_ID"
    client_id_env: str = "MS_CLIENT_ID"
    client_secret_env: str = "MS_CLIENT_SECRET"


class NoCalendar(_Strict):
    kind: Literal["none"]


CalendarConnector = Annotated[
    GoogleCalendarConnector | OutlookCalendarConnector | NoCalendar, Field(discriminator="kind")
]


class SendGridConnector(_Strict):
    kind: Literal["sendgrid"]
    base_url: str = "https://api.sendgrid.com"
    api_key_env: str = "SENDGRID_API_KEY"
    from_email: str
    from_name: str | None = None
    reply_to_assignee: bool = True


class NoEmail(_Strict):
    kind: Literal["none"]


EmailConnector = Annotated[SendGridConnector | NoEmail, Field(discriminator="kind")]


class WebhookCrm(_Strict):
    """A generic signed webhook: one JSON record per assignment event."""

    kind: Literal["webhook"]
    url: str
    secret_env: str = "CRM_WEBHOOK_SECRET"


class NoCrm(_Strict):
    kind: Literal["none"]


CrmConnector = Annotated[WebhookCrm | NoCrm, Field(discriminator="kind")]


class Connectors(_Strict):
    pm: PmConnector
    time_tracker: TimeTrackerConnector = Field(
        default_factory=lambda: ConfigOnlyTracker(kind="config")
    )
    chat: ChatConnector = Field(default_factory=lambda: NoChat(kind="none"))
    calendar: CalendarConnector = Field(default_factory=lambda: NoCalendar(kind="none"))
    email: EmailConnector = Field(default_factory=lambda: NoEmail(kind="none"))
    crm: CrmConnector = Field(default_factory=lambda: NoCrm(kind="none"))


class RecurringTemplate(_Strict):
    """Work that comes back every period: one Temporal Schedule per template.

    Periods are calendar months, quarters or years (``period_start_month`` shifts a year to
    a fiscal year). The due date is ``due_day`` of the month ``due_months_after_period_end``
    months after the period's last month (0 = in it), rolled to a working day; the engagement
    is created ``lead_days`` (default: the service type's) before it.
    """

    id: Annotated[str, Field(pattern=_ID)]
    client: str
    service_type: str
    cadence: Literal["monthly", "quarterly", "annual"]
    due_day: Annotated[int, Field(ge=1, le=31)] | Literal["last_day", "last_business_day"]
    due_months_after_period_end: Annotated[int, Field(ge=0, le=12)] = 0
    roll: Literal["preceding", "following", "none"] = "preceding"
    """A due date on a weekend or holiday moves to the working day before (or after)."""
    period_start_month: Annotated[int, Field(ge=1, le=12)] = 1
    lead_days: Annotated[int, Field(ge=0, le=365)] | None = None
    title: str = "{service} - {client} - {period}"
    estimated_hours: Annotated[float, Field(gt=0, le=2000)] | None = None
    create_in_pm: bool = True
    """Also create the job in the PM system (Karbon), so recurring work is never off the books."""
    active: bool = True


CONTINUITY_YIELDS_DEFAULT = 0.9
"""The tax-season benchmark's pick (docs/benchmarks.md): on time +1.7 points and a tenth of the
idle junior weeks, for 10 points of client continuity."""
FIRM_DEFAULTS: dict[str, Any] = {
    "continuity_yields_to_free_share": CONTINUITY_YIELDS_DEFAULT,
    "available_hours_as_share": True,
}
"""What a firm file's ``policy:`` gets for a knob it leaves out, where that differs from the
model's own default (which is what a capacity snapshot recorded before the knob decodes to,
so a dispatcher's history replays the decisions it made)."""


class FirmConfig(_Strict):
    firm: FirmInfo
    staff: list[StaffMember]
    service_types: list[ServiceType]
    escalation: Escalation
    policy: Policy = Field(default_factory=lambda: Policy(**FIRM_DEFAULTS))
    clients: list[ClientRecord] = Field(default_factory=list)
    recurring: list[RecurringTemplate] = Field(default_factory=list)
    connectors: Connectors

    @field_validator("policy")
    @classmethod
    def _firm_defaults(cls, policy: Policy) -> Policy:
        unset = {k: v for k, v in FIRM_DEFAULTS.items() if k not in policy.model_fields_set}
        return policy.model_copy(update=unset) if unset else policy

    @model_validator(mode="after")
    def _references(self) -> FirmConfig:
        staff_ids = [s.id for s in self.staff]
        _no_duplicates("staff", staff_ids)
        _no_duplicates("staff (email)", [s.email.lower() for s in self.staff])
        _no_duplicates("service_types", [t.id for t in self.service_types])
        known = set(staff_ids)
        for member in self.staff:
            if member.manager is not None and member.manager not in known:
                raise ValueError(
                    f"staff {member.id!r}: manager {member.manager!r} is not a staff id"
                )
        by_id = {s.id: s for s in self.staff}
        mp = self.escalation.managing_partner
        if mp not in known:
            raise ValueError(f"escalation.managing_partner: {mp!r} is not a staff id")
        if by_id[mp].tier is not Tier.PARTNER:
            raise ValueError(
                f"escalation.managing_partner: {mp!r} has tier {by_id[mp].tier}, not partner"
            )
        for pid in self.escalation.partners:
            if pid not in known or by_id[pid].tier is not Tier.PARTNER:
                raise ValueError(f"escalation.partners: {pid!r} is not a partner on the staff list")
        for team, manager in self.escalation.team_managers.items():
            if manager not in known:
                raise ValueError(f"escalation.team_managers.{team}: {manager!r} is not a staff id")
        _no_duplicates("recurring", [r.id for r in self.recurring])
        for template in self.recurring:
            if self.service_type(template.service_type) is None:
                raise ValueError(
                    f"recurring {template.id!r}: unknown service_type {template.service_type!r}"
                )
        work_types: dict[str, str] = {}
        for st in self.service_types:
            if st.reviewer_tier is not None and st.reviewer_tier.rank < st.preparer_tier.rank:
                raise ValueError(
                    f"service_types {st.id!r}: reviewer_tier {st.reviewer_tier} is below "
                    f"preparer_tier {st.preparer_tier}"
                )
            for wt in st.pm_work_types:
                if wt.casefold() in work_types:
                    raise ValueError(
                        f"service_types {st.id!r}: pm_work_type {wt!r} is already mapped to "
                        f"{work_types[wt.casefold()]!r}"
                    )
                work_types[wt.casefold()] = st.id
        return self

    # --- lookups used across the app ---------------------------------------------------

    def staff_by_id(self, staff_id: str) -> StaffMember:
        for member in self.staff:
            if member.id == staff_id:
                return member
        raise KeyError(staff_id)

    def service_type(self, service_type_id: str) -> ServiceType | None:
        return next((t for t in self.service_types if t.id == service_type_id), None)

    def service_type_for_work_type(self, work_type: str | None) -> ServiceType | None:
        if not work_type:
            return None
        wanted = work_type.casefold()
        for st in self.service_types:
            if wanted == st.id or wanted in (w.casefold() for w in st.pm_work_types):
                return st
        return None

    def client(self, client_id: str) -> ClientRecord | None:
        return next((c for c in self.clients if c.id == client_id), None)

    def manager_of(self, staff_id: str) -> StaffMember:
        """The person a stalled engagement escalates to: direct manager, team manager, partner."""
        member = self.staff_by_id(staff_id)
        if member.manager:
            return self.staff_by_id(member.manager)
        if member.team and member.team in self.escalation.team_managers:
            return self.staff_by_id(self.escalation.team_managers[member.team])
        return self.managing_partner

    @property
    def managing_partner(self) -> StaffMember:
        return self.staff_by_id(self.escalation.managing_partner)

    @property
    def deciding_partners(self) -> list[str]:
        ids = [self.escalation.managing_partner, *self.escalation.partners]
        return list(dict.fromkeys(ids))


def _no_duplicates(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what}: duplicate id {value!r}")
        seen.add(value)


class FirmConfigError(Exception):
    """The firm configuration is unusable. The message names the file, the field and the reason."""


def _field_path(loc: tuple[int | str, ...], raw: Any) -> str:
    """Turn pydantic's loc into ``staff[3] (id=bob).tier`` so the operator finds the line."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and "id" in node:
                    label += f" (id={node['id']})"
            else:
                node = None
            parts.append(label)
        else:
            # Discriminated unions add the tag as a loc element; it is not a field.
            if isinstance(node, dict) and item not in node and item in _CONNECTOR_KINDS:
                continue
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


_CONNECTOR_KINDS = {
    "karbon",
    "xpm",
    "relay",
    "harvest",
    "toggl",
    "quickbooks_time",
    "config",
    "slack",
    "teams",
    "none",
    "google",
    "outlook",
    "sendgrid",
    "webhook",
}


def parse_firm_config(raw: Any, source: str = "<firm config>") -> FirmConfig:
    if not isinstance(raw, dict):
        raise FirmConfigError(
            f"{source}: the top level must be a mapping, got {type(raw).__name__}"
        )
    try:
        return FirmConfig.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            path = _field_path(tuple(e["loc"]), raw)
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {path}: {msg}")
        raise FirmConfigError("\n".join(lines)) from None


def load_firm_config(path: str | os.PathLike[str] | None = None) -> FirmConfig:
    """Load and validate the firm file (``DISPATCH_FIRM_CONFIG`` or the demo firm)."""
    chosen = Path(path) if path is not None else Path(os.environ.get(CONFIG_ENV) or DEMO_FIRM_PATH)
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as err:
        raise FirmConfigError(f"{chosen}: cannot read the firm config: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        raise FirmConfigError(f"{chosen}: not valid YAML{where}: {err}") from None
    return parse_firm_config(raw, str(chosen))


def secret(env_name: str, *, required: bool = True) -> str | None:
    """Read a secret from the environment; the error names the variable, never a value."""
    value = os.environ.get(env_name)
    if not value and required:
        raise FirmConfigError(f"environment variable {env_name} is not set (a connector needs it)")
    return value or None


WORKFLOW_ID_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def rebase_connectors(config: FirmConfig, old_base: str, new_base: str) -> FirmConfig:
    """The same firm with every connector URL under ``old_base`` moved to ``new_base``.

    Used to point the demo firm at a sandbox on another port (tests, ``--sandbox-url``).
    """
    data = config.connectors.model_dump(mode="json")

    def move(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: move(v) for k, v in node.items()}
        if isinstance(node, str) and node.startswith(old_base):
            return new_base + node[len(old_base) :]
        return node

    connectors = Connectors.model_validate(move(data))
    return config.model_copy(update={"connectors": connectors})
