"""Every payload that crosses a Temporal boundary: one pydantic model per input and output.

Workflows import this module through ``imports_passed_through`` so it is loaded once per worker,
not once per workflow run. Nothing here performs I/O.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatch.config import _BOTH_CHANNELS, Absence, Channel, Policy, ServiceType, StaffMember, Tier

WorkState = Literal["in_progress", "ready_for_review", "in_review", "completed", "cancelled"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DispatchStatus(StrEnum):
    RECEIVED = "Received"
    ASSIGNED = "Assigned"
    ACCEPTED = "Accepted"
    IN_PROGRESS = "InProgress"
    READY_FOR_REVIEW = "ReadyForReview"
    IN_REVIEW = "InReview"
    COMPLETED = "Completed"
    NEEDS_PARTNER_REVIEW = "NeedsPartnerReview"
    CANCELLED = "Cancelled"

    @property
    def is_closed(self) -> bool:
        return self in (DispatchStatus.COMPLETED, DispatchStatus.CANCELLED)


class Role(StrEnum):
    PREPARER = "preparer"
    REVIEWER = "reviewer"


# --- the engagement itself -------------------------------------------------------------------


class EngagementDetails(Model):
    """What the firm knows about one engagement, whichever PM system it came from."""

    source: str
    external_id: str
    title: str
    client_id: str
    client_name: str
    client_email: str | None = None
    client_contact_name: str | None = None
    service_type: str
    due_date: date
    start_date: date | None = None
    estimated_hours: float = Field(gt=0)
    required_skills: list[str] = Field(default_factory=list)
    specializations: list[str] = Field(default_factory=list)
    documents_needed: list[str] = Field(default_factory=list)
    scope_summary: str = ""
    pm_url: str | None = None
    pm_work_type: str | None = None
    pm_assignee_email: str | None = None
    pm_status: str | None = None
    pm_secondary_status: str | None = None
    work_state: WorkState | None = None
    """Where the work stands in the PM system, in our words (each connector maps its own
    statuses); None when the PM says nothing beyond "planned" or "assigned"."""


class EngagementInput(Model):
    firm_id: str
    source: str
    external_id: str
    details: EngagementDetails | None = None
    """Present when the webhook carried the whole engagement; otherwise loaded from the PM."""
    received_at: datetime | None = None
    state: EngagementState | None = None
    """Carried across continue-as-new."""
    index_search_attributes: bool = True
    """False only on a server without our search attributes (the time-skipping test server,
    which cannot register custom ones); everything else is unchanged."""


class StaffRef(Model):
    """The public face of a staff member inside workflow state and notifications."""

    id: str
    name: str
    email: str
    tier: Tier
    slack_id: str | None = None
    manager_id: str | None = None


# --- decisions -------------------------------------------------------------------------------


class BlockReason(StrEnum):
    SKILL = "skill"
    TIER = "tier"
    CAPACITY = "capacity"
    ABSENT = "absent"
    DECLINED = "declined"
    OTHER_ROLE = "other_role"
    INACTIVE = "inactive"


class CandidateScore(Model):
    staff_id: str
    name: str
    tier: Tier
    eligible: bool
    blocked: list[BlockReason] = Field(default_factory=list)
    why_blocked: str | None = None
    available_hours: float
    scores: dict[str, float] = Field(default_factory=dict)
    """Per-criterion scores in [0, 1]: client_history, specialization, available_hours,
    lowest_tier."""
    total: float | None = None


class Decision(Model):
    role: Role
    outcome: Literal["assigned", "blocked", "forced"]
    chosen: str | None = None
    reason: str
    required_hours: float
    window_start: date
    window_end: date
    candidates: list[CandidateScore]
    decided_at: datetime | None = None


def request_sequence(request_id: str) -> int:
    """``engagement-...:req-7`` -> 7 (0 when the id has no number)."""
    _, _, tail = request_id.rpartition(":req-")
    return int(tail) if tail.isdigit() else 0


class AssignmentRequest(Model):
    """An engagement asks the firm's dispatcher for people. Keyed so a resend is harmless."""

    request_id: str
    workflow_id: str
    client_id: str
    service_type: str
    due_date: date
    start_date: date | None = None
    estimated_hours: float = Field(gt=0)
    required_skills: list[str] = Field(default_factory=list)
    specializations: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    """Staff who declined this engagement: never offered it again."""
    keep_preparer: str | None = None
    """The preparer already booked stays (a reviewer-only reassignment, a changed estimate)."""
    keep_reviewer: str | None = None
    """The reviewer already booked stays (a preparer-only reassignment, a changed estimate)."""
    seq: int = 0
    """The engagement's request number (0 on requests from before it was sent: read from the
    id). A newer request of the same engagement supersedes an older one."""

    @property
    def sequence(self) -> int:
        return self.seq or request_sequence(self.request_id)


class PartnerOption(BaseModel):
    """One way a partner can place a role nobody has room for, and what it costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    staff_id: str
    name: str
    tier: Tier
    hours: float
    overtime_hours: float
    """Hours beyond the person's capacity needed to do this by its due date and still keep
    every later commitment's date (0: it fits their whole capacity, only not the ceiling)."""
    finish_by: date | None
    """The earliest due date that would fit without overtime (None: not within half a year)."""
    commitments_at_risk: int
    """Other reservations of theirs whose dates no longer hold if it is booked anyway."""
    declined: bool = False
    """They already asked to be reassigned from this engagement."""
    summary: str


class AssignmentResult(Model):
    request_id: str
    workflow_id: str
    outcome: Literal["assigned", "needs_partner_review"]
    preparer: StaffRef | None = None
    reviewer: StaffRef | None = None
    preparer_hours: float = 0.0
    reviewer_hours: float = 0.0
    decisions: list[Decision] = Field(default_factory=list)
    estimated_completion: date | None = None
    reason: str = ""
    decided_at: datetime | None = None
    warnings: list[str] = Field(default_factory=list)
    """E.g. a kept person who no longer fits after the PM system moved the due date."""
    epoch: str | None = None
    """The ledger that made this decision (see ``LedgerSyncRequest``): an engagement takes
    answers only from the newest ledger it knows of."""
    capacity_as_of: datetime | None = None
    """When the time tracker was last read successfully for the capacity this used."""
    capacity_note: str | None = None
    """Set when the decision used capacity older than the firm's policy allows (a tracker
    outage): what was used and since when."""
    options: list[PartnerOption] = Field(default_factory=list)
    """When nobody fits: the partner's choices for the blocked role, best first (who, with
    how much overtime, by which later date: ``dispatch.decision.partner_options``)."""


class ReleaseRequest(Model):
    workflow_id: str
    roles: list[Role] = Field(default_factory=lambda: [Role.PREPARER, Role.REVIEWER])
    reason: str = ""
    withdraw_request: bool = True
    """Also drop a parked (waiting for capacity) request of this engagement."""


class HoldingsSync(Model):
    """What an engagement holds, as of its request number ``seq``: the dispatcher's ledger
    takes it as the truth for that engagement unless it booked a newer request since.

    Sent when an engagement gives hours back (reassignment, completion, cancellation), when an
    answer reaches it that it did not ask for (it keeps what it holds and the ledger follows),
    and when it hands its preparer's work over for review.
    """

    workflow_id: str
    seq: int
    holdings: list[Reservation] = Field(default_factory=list)
    withdraw: bool = False
    """Drop every request of this engagement up to ``seq`` (it wants nothing more of them)."""
    reason: str = ""


class ReservationProgress(Model):
    """How far one role of an engagement has come, for the ledger's open hours: the role's
    estimate, the hours its holder logged on the job, and whether the work is handed over.

    Applied only to the reservation the ledger holds for that role and person at request
    number ``seq`` or older (never to a newer decision, never to a released reservation)."""

    workflow_id: str
    seq: int
    role: Role
    staff_id: str
    estimate: float = Field(ge=0)
    logged: float = Field(default=0.0, ge=0)
    handed_over: bool = False


class Reservation(Model):
    workflow_id: str
    role: Role
    staff_id: str
    hours: float
    start: date
    due: date
    client_id: str
    forced: bool = False


# --- capacity --------------------------------------------------------------------------------


class StaffCapacity(Model):
    member: StaffMember
    weekly_capacity_hours: float
    logged_this_week: float = 0.0
    logged_last_week: float = 0.0
    capacity_source: str = "config"


class CapacitySnapshot(Model):
    """Everything the dispatcher needs to decide, read at one moment by one activity."""

    taken_at: datetime
    today: date
    week_start: date
    workdays: list[int]
    holidays: list[date] = Field(default_factory=list)
    staff: list[StaffCapacity]
    service_types: list[ServiceType]
    policy: Policy
    client_history: dict[str, list[str]] = Field(default_factory=dict)
    managing_partner: str
    source: str
    warnings: list[str] = Field(default_factory=list)
    tracker_ok: bool = True
    """False when the time tracker failed and older figures (or the firm file) stand in."""
    tracker_as_of: datetime | None = None
    """When the tracker figures in use were read (``taken_at`` when fresh)."""
    tracker_error: str | None = None
    tracker_retry_after_seconds: float | None = Field(default=None, ge=0, le=3600)
    """When the failing tracker said when to ask again (Retry-After, a quota's reset): the
    dispatcher reads it no sooner (None: it did not say)."""
    time_zone: str | None = None
    """The firm's clock, with ``workday_start_hour`` and ``policy.workday_end_hour``: how much
    of today is still ahead when deciding (None on snapshots read before it was sent: the
    whole day counts)."""
    workday_start_hour: int | None = None

    def service_type(self, service_type_id: str) -> ServiceType | None:
        return next((t for t in self.service_types if t.id == service_type_id), None)


class SnapshotInput(Model):
    firm_id: str
    last_tracker: list[TrackerFigures] | None = None
    """The last good tracker figures the dispatcher holds: used if the tracker fails now."""
    last_tracker_at: datetime | None = None


class TrackerStaff(Model):
    staff_id: str
    email: str


class TrackerReadInput(Model):
    staff: list[TrackerStaff]
    start: date
    end: date


class TrackerUserHours(Model):
    staff_id: str
    weekly_capacity_hours: float | None = None
    logged_by_date: dict[date, float] = Field(default_factory=dict)


class TrackerReadResult(Model):
    users: list[TrackerUserHours]
    unmatched: list[str] = Field(default_factory=list)
    """Staff emails the tracker does not know (reported, never silently zero)."""


# --- dispatcher ------------------------------------------------------------------------------


class DispatcherState(Model):
    """The carried state of dispatchers from before the ledger was packed (read, never written)."""

    reservations: list[Reservation] = Field(default_factory=list)
    parked: list[AssignmentRequest] = Field(default_factory=list)
    results: dict[str, AssignmentResult] = Field(default_factory=dict)
    """Recent results by request id: a duplicate request gets the same answer."""
    result_order: list[str] = Field(default_factory=list)
    client_history: dict[str, list[str]] = Field(default_factory=dict)
    snapshot: CapacitySnapshot | None = None
    snapshot_at: datetime | None = None
    batches: int = 0
    decided: int = 0


class DispatcherInput(Model):
    firm_id: str
    state: DispatcherState | None = None
    """Legacy carried state (read once and converted)."""
    carried: CarriedLedger | None = None
    """What continue-as-new carries: the packed ledger (see ``dispatch.ledger_state``)."""


class CarriedLedger(Model):
    """The dispatcher's state across continue-as-new, packed: bounded and small.

    ``packed`` is base64 of zlib-compressed JSON (``dispatch.ledger_state``): the reservations
    of every live engagement, the live and parked requests, learned client history, the last
    tracker figures, and counters. Never the capacity snapshot (the firm file is re-read) and
    never explanations (engagements hold their own decisions).
    """

    format: int = 1
    epoch: str
    packed: str


class TrackerFigures(Model):
    """The time tracker's numbers for one person, kept so an outage degrades to them."""

    staff_id: str
    weekly_capacity_hours: float | None = None
    logged_this_week: float = 0.0
    logged_last_week: float = 0.0


class LedgerSyncRequest(Model):
    """A (re)built ledger asks an engagement what it holds and tells it which ledger is now in
    charge: answers from older ledgers are refused from then on."""

    epoch: str


class EngagementHoldings(Model):
    """What one engagement holds and asks for: the facts a ledger is rebuilt from."""

    workflow_id: str
    firm_id: str
    seq: int
    """The engagement's latest request number."""
    holdings: list[Reservation] = Field(default_factory=list)
    request: AssignmentRequest | None = None
    """Its live request (waiting for the dispatcher, or parked), with today's dates and hours."""
    force: ForceAssignRequest | None = None
    """A partner's pick it is waiting on, instead of ``request``."""
    parked: bool = False
    closed: bool = False
    client_id: str | None = None
    epoch: str | None = None


class CollectHoldingsInput(Model):
    firm_id: str
    epoch: str | None = None
    """Set on a rebuild: each engagement is told the new ledger (an Update); None on a
    reconciliation, which only reads (a query)."""
    page_token: str | None = None
    page_size: int = Field(default=500, ge=1, le=1000)
    settle_seconds: float = Field(default=0.0, ge=0, le=30)
    """Wait this long before the first page, so engagements started moments ago are listed."""


class CollectedHoldings(Model):
    engagements: list[EngagementHoldings]
    next_page_token: str | None = None
    listed: int = 0
    unanswered: list[str] = Field(default_factory=list)
    """Running engagements that did not answer (their holdings are kept as the ledger has them)."""


class ClosedEngagementsInput(Model):
    firm_id: str
    since: datetime
    limit: int = Field(default=2000, ge=1, le=10000)


class ClosedEngagements(Model):
    workflow_ids: list[str]
    truncated: bool = False


class CapacityOutageNotice(Model):
    """Tell the managing partner, once per outage, that capacity comes from an older reading."""

    key: str
    since: datetime
    capacity_as_of: datetime | None
    detail: str
    recovered: bool = False


class LedgerEntryView(Model):
    workflow_id: str
    seq: int
    holdings: list[Reservation]


class LedgerView(Model):
    """The ``ledger`` query: every live engagement's reservations, a page at a time."""

    epoch: str
    entries: list[LedgerEntryView]
    total: int
    offset: int
    live_requests: list[str] = Field(default_factory=list)
    parked: list[str] = Field(default_factory=list)
    capacity_as_of: datetime | None = None
    capacity_note: str | None = None
    rebuilt_at: datetime | None = None
    reconciled_at: datetime | None = None
    carried_bytes: int = 0
    """Size of the last continue-as-new input (the packed ledger)."""
    continued: int = 0


class LedgerQuery(Model):
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=1000, ge=1, le=5000)


class StaffBooking(Model):
    staff_id: str
    name: str
    weekly_capacity_hours: float
    reserved_hours: float
    reservations: list[Reservation]


class BookingsView(Model):
    firm_id: str
    staff: list[StaffBooking]
    parked: list[str]
    batches: int
    decided: int
    epoch: str | None = None
    capacity_as_of: datetime | None = None
    capacity_note: str | None = None


class PlannedRole(Model):
    """One role of one request in a batch plan: who takes it."""

    request_id: str
    workflow_id: str
    role: Role
    staff_id: str


class OptimizeBatchInput(Model):
    """A batch for the optimiser: the requests, capacity, the ledger and history as they are."""

    requests: list[AssignmentRequest]
    """Earliest due first, in the order the dispatcher applies them."""
    snapshot: CapacitySnapshot
    reservations: list[Reservation]
    client_history: dict[str, list[str]] = Field(default_factory=dict)
    """What the dispatcher learned (most recent first); the snapshot carries the configured."""
    time_limit_seconds: float = Field(gt=0)
    seed: int = 0
    current_plan: list[Reservation] = Field(default_factory=list)
    """Who holds each role now, when re-planning work that already has people (churn)."""
    day_left: float = Field(default=1.0, ge=0, le=1)
    """The share of today's working hours still ahead (``dispatch.capacity.day_left_at``)."""


class OptimizedBatch(Model):
    """The optimiser's plan. The dispatcher re-checks every role against its ledger."""

    assignments: list[PlannedRole]
    solver_status: str
    objective: float | None = None
    fallback: str | None = None
    """Why the greedy rule's plan was returned instead of the solver's, when it was."""
    assigned_hours: float
    greedy_assigned_hours: float
    solve_seconds: float
    deterministic: bool = True


class ForceAssignRequest(Model):
    """A partner's explicit decision; may override capacity, and says so in the record."""

    request_id: str
    workflow_id: str
    partner_id: str
    staff_id: str
    client_id: str
    start: date
    due: date
    hours: float
    override_capacity: bool = False
    seq: int = 0
    """As ``AssignmentRequest.seq``: a partner's pick supersedes the engagement's parked request."""

    @property
    def sequence(self) -> int:
        return self.seq or request_sequence(self.request_id)


# --- side effects ----------------------------------------------------------------------------


class EngagementSummary(Model):
    """What notifications need to say about an engagement; no internal ids beyond the key."""

    workflow_id: str
    title: str
    client_id: str
    client_name: str
    service_type: str
    service_name: str
    due_date: date
    estimated_hours: float
    pm_url: str | None = None
    scope_summary: str = ""
    documents_needed: list[str] = Field(default_factory=list)


class LoadEngagementInput(Model):
    source: str
    external_id: str


class EngagementContextInput(Model):
    client_id: str
    service_type: str
    due_date: date
    start_date: date | None = None


class EngagementContext(Model):
    """Firm facts an engagement needs, read by an activity so workflow code stays pure.

    Time zones live here too: firm-local wall times are turned into UTC instants, because the
    workflow sandbox has no business reading tz data.
    """

    firm_name: str
    time_zone: str
    today: date
    due_at: datetime
    """End of the due date's working day in the firm's time zone, as UTC."""
    service_name: str | None
    """None when the service type is not in the firm config."""
    upload_link: str
    managing_partner: StaffRef
    deciding_partners: list[str]
    manual_pm_update: str | None = None
    """Set when the PM system has no write API: what the assignee must update by hand."""
    partner_candidates_shown: int = 5
    needs_reviewer: bool = False
    """The service type has a review step."""
    start_at: datetime | None = None
    """The start date's working day start, as UTC (None: no start date)."""
    max_declines: int = 2
    response_reminder_hours: float = 24
    response_escalation_hours: float = 48
    not_started_hours: float = 48
    status_check_days: int = 3
    channels: list[Channel] = Field(default_factory=lambda: list(_BOTH_CHANNELS))
    vendors: dict[str, str] = Field(default_factory=dict)
    """Role (pm, chat, calendar, email, crm) -> the connector the firm uses (for metrics)."""


class ContactsInput(Model):
    staff_ids: list[str]


class Contacts(Model):
    """Who a stalled engagement escalates to: each person's manager, and the managing partner."""

    managers: dict[str, StaffRef]
    managing_partner: StaffRef


class PmWriteBackInput(Model):
    workflow_id: str
    source: str
    external_id: str
    assignee_email: str | None
    status: DispatchStatus


class PmDueDateInput(Model):
    """A partner moved the due date: the PM record follows, so its next update agrees."""

    workflow_id: str
    source: str
    external_id: str
    due_date: date


class PmWriteBackResult(Model):
    written: bool
    manual_update_required: bool = False
    detail: str = ""


class AssignmentNotice(Model):
    summary: EngagementSummary
    recipient: StaffRef
    role: Role
    preparer: StaffRef | None = None
    reviewer: StaffRef | None = None
    estimated_completion: date | None = None
    manual_pm_update: str | None = None
    """When set, the PM record must be updated by hand (no API); the text says where."""
    previous: MessageRef | None = None


class MessageRef(Model):
    channel: str
    ts: str


class ChatResult(Model):
    delivered: bool
    message: MessageRef | None = None
    detail: str = ""


class PartnerReviewNotice(Model):
    summary: EngagementSummary
    partner: StaffRef
    reason: str
    candidates: list[CandidateScore]
    options: list[PartnerOption] = Field(default_factory=list)
    """What each qualified person would cost (overtime, a later date), shown as text."""


class CalendarBlockInput(Model):
    workflow_id: str
    event_key: str
    """Stable per engagement and assignment: the calendar event id is derived from it."""
    staff: StaffRef
    summary: EngagementSummary
    role: Role
    start_date: date
    end_date: date
    hours: float
    time_zone: str


class CalendarBlockResult(Model):
    event_id: str
    created: bool
    """False when the event already existed (a retried insert)."""
    html_link: str | None = None
    delivered: bool = True
    """False when the firm has no calendar connector."""
    detail: str = ""


class ClientConfirmationInput(Model):
    summary: EngagementSummary
    to_email: str
    to_name: str | None = None
    assignee: StaffRef
    reviewer: StaffRef | None = None
    estimated_completion: date
    upload_link: str
    firm_name: str
    key: str = ""
    """What makes this confirmation one (engagement and assignment round): a retry, a replay
    or a continue-as-new never sends it twice. Empty on inputs from before the key existed."""


class EmailResult(Model):
    sent: bool
    message_id: str | None = None
    detail: str = ""


class CrmLogInput(Model):
    idempotency_key: str
    event: Literal["assigned", "needs_partner_review", "reassigned", "completed", "cancelled"]
    summary: EngagementSummary
    status: DispatchStatus
    preparer: StaffRef | None = None
    reviewer: StaffRef | None = None
    preparer_hours: float = 0.0
    reviewer_hours: float = 0.0
    occurred_at: datetime


class CrmLogResult(Model):
    logged: bool
    detail: str = ""


class CalendarRemoveInput(Model):
    workflow_id: str
    event_key: str
    """The key the block was created with (its event id is derived from it)."""
    staff: StaffRef
    time_zone: str


class CalendarRemoveResult(Model):
    removed: bool
    detail: str = ""


class ListJobsInput(Model):
    """For PM systems without webhooks: jobs created in [since, until] (firm-local dates)."""

    since: date
    until: date


class PmJob(Model):
    external_id: str
    details: EngagementDetails | None = None
    """None when the job cannot be dispatched as it stands (``problem`` says why)."""
    problem: str | None = None


class JobList(Model):
    jobs: list[PmJob]


class JobHoursInput(Model):
    """Hours logged on one engagement (the midpoint checkpoint's informational read)."""

    source: str
    external_id: str
    staff: list[TrackerStaff]
    since: date
    until: date


class JobHours(Model):
    hours: float
    detail: str = ""
    """How the hours were attributed (e.g. time entries on the work item, or the assignees'
    entries that name the job)."""


NoticeKind = Literal[
    "response_reminder",
    "no_response",
    "not_started",
    "midpoint",
    "status_check",
    "past_due",
    "reassigned_away",
    "partner_decision",
    "due_moved",
    "review_ready",
    "completed",
    "capacity_outage",
]


class StaffNotice(Model):
    """A checkpoint, reminder or escalation for one person, by chat and/or email."""

    kind: NoticeKind
    recipient: StaffRef
    summary: EngagementSummary
    subject: str
    lines: list[str]
    """The message, one paragraph per line; no secrets, only what the recipient needs."""
    key: str
    """Idempotency key: one notice per engagement, kind and moment."""


class AssignmentResponse(Model):
    """Accept / Request reassignment, from any surface (Slack button, Teams link, API)."""

    action: Literal["accept", "reassign"]
    staff_id: str
    """Who answered, already resolved from the surface's identity (Slack user, link owner)."""
    channel: Literal["slack", "teams", "api"]
    event_id: str
    """Unique per delivery of the click; used as the Update id so a retry counts once."""
    reason: str = ""


class ResponseOutcome(Model):
    changed: bool
    status: DispatchStatus
    message: str
    """What to tell the person who answered."""


class PartnerDecision(Model):
    """A partner's answer to a NeedsPartnerReview item."""

    partner_id: str
    staff_id: str
    override_capacity: bool = False
    """"Assign anyway": book over capacity, explicitly, and say so in the record."""
    channel: Literal["slack", "teams", "api", "board"]
    event_id: str


class DueDateMove(Model):
    """A partner moves an engagement's due date (the board, a Slack date picker, the API).

    Written back to the PM system; the checkpoints, the reservation and a waiting dispatch
    request follow the new date, so work nobody had room for by the old date may fit now.
    """

    partner_id: str
    due_date: date
    channel: Literal["slack", "teams", "api", "board"]
    event_id: str


# --- engagement state (the `state` query) ----------------------------------------------------


class TimelineEntry(Model):
    at: datetime
    kind: str
    detail: str = ""


class SideEffect(Model):
    name: str
    """``kind:round`` (e.g. ``chat_preparer:1``): a reassignment makes a new round."""
    state: Literal["pending", "done", "failed", "skipped"]
    detail: str = ""

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]


class PmUpdate(Model):
    """A PM system says the engagement changed.

    Thin webhooks (Karbon) carry only the key and the workflow re-reads the engagement; relays
    carry the whole engagement in ``details``.
    """

    event_key: str
    action: str = "Updated"
    details: EngagementDetails | None = None


class EngagementState(Model):
    workflow_id: str
    firm_id: str
    status: DispatchStatus = DispatchStatus.RECEIVED
    source: str
    external_id: str
    title: str | None = None
    client_id: str | None = None
    client_name: str | None = None
    service_type: str | None = None
    due_date: date | None = None
    estimated_hours: float | None = None
    preparer: StaffRef | None = None
    reviewer: StaffRef | None = None
    preparer_hours: float = 0.0
    reviewer_hours: float = 0.0
    estimated_completion: date | None = None
    decisions: list[Decision] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    side_effects: list[SideEffect] = Field(default_factory=list)
    needs_partner_review_reason: str | None = None
    tell_partner_again: bool = False
    """A partner moved the due date while it waited for them: if nobody fits by the new date
    either, the partner gets a fresh message (the one they answered lost its buttons)."""
    pm_manual_update_required: bool = False
    chat_message: MessageRef | None = None
    """The preparer's assignment DM."""
    chat_messages: dict[str, MessageRef] = Field(default_factory=dict)
    """Role -> that person's assignment DM (updated in place when the other role changes)."""
    calendar_event_id: str | None = None
    awaiting: str | None = None
    """What the engagement is waiting for from the dispatcher ("dispatch", "reassign:preparer",
    "partner", ...), or None."""
    declined_by: list[str] = Field(default_factory=list)
    request_seq: int = 0
    seen_events: list[str] = Field(default_factory=list)
    error: str | None = None
    review_sequence: str | None = None
    assigned_at: datetime | None = None
    accepted_at: datetime | None = None
    reviewer_accepted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    due_at: datetime | None = None
    due_set_at: datetime | None = None
    assignment_round: int = 0
    checkpoints: dict[str, str] = Field(default_factory=dict)
    """Checkpoint key -> "fired" or "skipped" (each happens once)."""
    calendar_keys: dict[str, str] = Field(default_factory=dict)
    """Role -> the event key of that role's current calendar block (to remove it later)."""
    hours_logged: float | None = None
    """Hours on the job at the midpoint checkpoint (informational)."""
    warnings: list[str] = Field(default_factory=list)
    forced: bool = False
    """A partner assigned it over capacity, explicitly."""
    ledger_epoch: str | None = None
    """The newest dispatcher ledger this engagement knows of (answers from older ones are
    refused)."""
    pending: PendingRequest | None = None
    """The dispatcher request it is waiting on (carried across continue-as-new)."""
    capacity_note: str | None = None
    """Set when its last decision used capacity older than the policy allows."""
    continued: int = 0
    """How many times this engagement continued as new (long lives keep short histories)."""
    logged_hours: dict[Role, float] = Field(default_factory=dict)
    """Role -> hours its current holder logged on the job (the daily tracker read)."""
    logged_read_at: datetime | None = None
    held_hours: dict[Role, float] = Field(default_factory=dict)
    """Role -> the open hours the ledger holds for it (told by ``ReservationProgress``); a
    role not listed holds its whole estimate."""


class PendingRequest(Model):
    """The dispatcher request an engagement waits on, and why it sent it."""

    request_id: str
    purpose: str
    sent_at: datetime
    request: AssignmentRequest | None = None
    force: ForceAssignRequest | None = None
    parked: bool = False
    """The dispatcher parked it (nobody fits yet) and will answer when someone does."""


# Models that name a later one are completed here, at import, not on first use: the first use
# may be in workflow code, where the module namespace pydantic would look in is the sandbox's.
SnapshotInput.model_rebuild()
CollectedHoldings.model_rebuild()
EngagementInput.model_rebuild()
AssignmentNotice.model_rebuild()
HoldingsSync.model_rebuild()
DispatcherInput.model_rebuild()
EngagementState.model_rebuild()
EngagementHoldings.model_rebuild()


# --- recurring work (Schedules) and PM polling ------------------------------------------------


class SpawnerInput(Model):
    """What a recurring template's Schedule starts: which template, of which firm."""

    firm_id: str
    template_id: str
    fire_time: datetime | None = None
    """The nominal fire time; None means the Schedule's ``TemporalScheduledStartTime`` (for a
    backfill, the backfilled time), else the workflow's start time."""


class RecurringPlanInput(Model):
    template_id: str
    fire_time: datetime


class PlannedPeriod(Model):
    """One period of a template whose engagement is due to be created by this fire."""

    period_key: str
    period_start: date
    period_end: date
    due_date: date
    trigger_date: date
    trigger_at: datetime
    """The trigger date's working-day start in the firm's time zone, as UTC."""
    details: EngagementDetails
    """The engagement as it will be dispatched (source ``recurring`` until a PM job exists)."""
    create_in_pm: bool


class RecurringPlan(Model):
    template_id: str
    fire_date: date
    """The fire time as a firm-local date: its month is the month whose triggers this fire owns."""
    periods: list[PlannedPeriod] = Field(default_factory=list)
    note: str = ""
    """Why nothing is planned, or what is skipped (e.g. the PM cannot create jobs)."""


class PmJobInput(Model):
    """Create (or find) the PM system's job for one period of a recurring template."""

    template_id: str
    period_key: str
    details: EngagementDetails


class PmJobRef(Model):
    source: str
    external_id: str
    created: bool
    """False when the job already existed (a repeated fire, or a retried activity)."""
    pm_url: str | None = None
    client_email: str | None = None


class StartEngagementsInput(Model):
    """Engagements to start idempotently (``engagement-{source}-{external_id}``, USE_EXISTING)."""

    engagements: list[EngagementInput]


class StartedEngagement(Model):
    workflow_id: str
    started: bool
    """False when it already existed (running, or closed: a finished one is never reopened)."""


class StartEngagementsResult(Model):
    engagements: list[StartedEngagement]


class SpawnOutcome(Model):
    period_key: str
    due_date: date
    workflow_id: str | None = None
    started: bool = False
    pm_job: PmJobRef | None = None
    error: str | None = None
    skipped: str | None = None


class SpawnerStatus(Model):
    """The spawner's ``status`` query and its result."""

    template_id: str
    fire_time: datetime | None = None
    fire_date: date | None = None
    waiting_for: str | None = None
    """The period whose trigger date the spawner is sleeping until."""
    waiting_until: datetime | None = None
    outcomes: list[SpawnOutcome] = Field(default_factory=list)
    note: str = ""


class PollerInput(Model):
    firm_id: str


class JobProblem(Model):
    external_id: str
    problem: str


class PollResult(Model):
    window: ListJobsInput
    started: list[str] = Field(default_factory=list)
    existing: list[str] = Field(default_factory=list)
    problems: list[JobProblem] = Field(default_factory=list)


__all__ = [
    "Absence",
    "AssignmentNotice",
    "AssignmentRequest",
    "AssignmentResponse",
    "AssignmentResult",
    "BlockReason",
    "BookingsView",
    "CalendarBlockInput",
    "CalendarBlockResult",
    "CalendarRemoveInput",
    "CalendarRemoveResult",
    "CandidateScore",
    "CapacitySnapshot",
    "ChatResult",
    "ClientConfirmationInput",
    "Contacts",
    "ContactsInput",
    "CrmLogInput",
    "CrmLogResult",
    "Decision",
    "DispatchStatus",
    "DispatcherInput",
    "DispatcherState",
    "EmailResult",
    "EngagementContext",
    "EngagementContextInput",
    "EngagementDetails",
    "EngagementInput",
    "EngagementState",
    "EngagementSummary",
    "ForceAssignRequest",
    "JobHours",
    "JobHoursInput",
    "JobList",
    "JobProblem",
    "ListJobsInput",
    "LoadEngagementInput",
    "MessageRef",
    "NoticeKind",
    "OptimizeBatchInput",
    "OptimizedBatch",
    "PartnerDecision",
    "PartnerOption",
    "PartnerReviewNotice",
    "PlannedPeriod",
    "PlannedRole",
    "PmJob",
    "PmJobInput",
    "PmJobRef",
    "PmUpdate",
    "PmWriteBackInput",
    "PmWriteBackResult",
    "PollResult",
    "PollerInput",
    "RecurringPlan",
    "RecurringPlanInput",
    "ReleaseRequest",
    "Reservation",
    "ReservationProgress",
    "ResponseOutcome",
    "Role",
    "SideEffect",
    "SnapshotInput",
    "SpawnOutcome",
    "SpawnerInput",
    "SpawnerStatus",
    "StaffBooking",
    "StaffCapacity",
    "StaffNotice",
    "StaffRef",
    "StartEngagementsInput",
    "StartEngagementsResult",
    "StartedEngagement",
    "TimelineEntry",
    "TrackerReadInput",
    "TrackerReadResult",
    "TrackerStaff",
    "TrackerUserHours",
]
