"""The dispatch board's read model: one source for ``dispatch board`` and the web board.

A page is answered with one visibility list (the engagements' search attributes and memo, ids
only) and one query of the firm's dispatcher (``bookings``: every reservation and each
person's capacity) — never one query per engagement, so a season of hundreds of engagements
costs the same two calls. The partner-review queue's candidates come from the same list (each
waiting engagement keeps its short list in its memo). Only an engagement's own page queries
that engagement (``state``).

Names come from the firm file (staff ids -> names); client names never come from visibility,
which holds ids only, so the list shows client ids and the engagement page the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.client import Client, WorkflowExecution

from dispatch import partner_review
from dispatch import search_attributes as sa
from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig
from dispatch.ids import dispatcher_workflow_id
from dispatch.models import BookingsView, DispatchStatus, EngagementState, Reservation
from workflows.dispatcher import DispatcherWorkflow

STATUS_STYLE = {
    "Assigned": "green",
    "Accepted": "green",
    "InProgress": "cyan",
    "ReadyForReview": "cyan",
    "InReview": "cyan",
    "Completed": "dim",
    "Cancelled": "dim",
    "NeedsPartnerReview": "bold yellow",
    "Received": "white",
}
WEEKS_SHOWN = 6
"""The capacity view's horizon: the month-end and the weeks after it."""
DEFAULT_LIMIT = 500
QUERY_TIMEOUT = timedelta(seconds=5)
_FILTER_VALUE = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")
"""Ids only: a filter value goes into a visibility query, so nothing that could end a quote."""


class FilterError(ValueError):
    """A filter the board cannot use: ``field`` names it, ``reason`` says why (a 422)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class BoardFilters:
    status: str | None = None
    person: str | None = None
    """A staff id: engagements where they are preparer or reviewer."""
    client: str | None = None
    service: str | None = None
    due_from: date | None = None
    due_to: date | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, str | None]) -> BoardFilters:
        """From query parameters (empty means no filter); ``FilterError`` names a bad one."""
        values: dict[str, Any] = {}
        for name in ("status", "person", "client", "service"):
            value = (raw.get(name) or "").strip()
            if not value:
                continue
            if not _FILTER_VALUE.match(value):
                raise FilterError(name, "letters, digits and _ . : @ - only, at most 100")
            values[name] = value
        if "status" in values and values["status"] not in {s.value for s in DispatchStatus}:
            known = ", ".join(s.value for s in DispatchStatus)
            raise FilterError("status", f"unknown status (known: {known})")
        for name in ("due_from", "due_to"):
            value = (raw.get(name) or "").strip()
            if value:
                try:
                    values[name] = date.fromisoformat(value)
                except ValueError:
                    raise FilterError(name, "a date as YYYY-MM-DD") from None
        filters = cls(**values)
        if filters.due_from and filters.due_to and filters.due_to < filters.due_from:
            raise FilterError("due_to", "before due_from")
        return filters

    def as_params(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if v is not None}

    def visibility_query(self, task_queue: str | None) -> str:
        """The list filter. Values were checked by ``parse`` (ids and dates only)."""
        parts = ['WorkflowType="EngagementWorkflow"']
        if task_queue:
            parts.append(f'TaskQueue="{task_queue}"')
        if self.status:
            parts.append(f'{sa.DISPATCH_STATUS.name}="{self.status}"')
        if self.person:
            parts.append(
                f'({sa.PREPARER.name}="{self.person}" OR {sa.REVIEWER.name}="{self.person}")'
            )
        if self.client:
            parts.append(f'{sa.CLIENT_ID.name}="{self.client}"')
        if self.service:
            parts.append(f'{sa.SERVICE_TYPE.name}="{self.service}"')
        if self.due_from:
            parts.append(f'{sa.DUE_DATE.name}>="{_midnight(self.due_from).isoformat()}"')
        if self.due_to:
            parts.append(f'{sa.DUE_DATE.name}<="{_midnight(self.due_to).isoformat()}"')
        return " AND ".join(parts)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True)
class QueueCandidate:
    """Someone a partner could give waiting work to, as the engagement's memo lists them."""

    staff_id: str
    name: str
    tier: str
    available_hours: float
    blocked: str
    anyway: bool
    """Only capacity blocks them: the action books them over capacity, explicitly."""


@dataclass(frozen=True)
class EngagementRow:
    """One engagement as visibility knows it: ids, people, status, why."""

    workflow_id: str
    status: str
    client_id: str
    service_type: str
    due_date: date | None
    preparer_id: str | None
    reviewer_id: str | None
    preparer: str
    reviewer: str
    why: str
    running: bool
    review_round: int | None = None
    """Waiting for a partner: the engagement's request number (None: no short list in its
    memo, e.g. an engagement from before it kept one; the board then asks the engagement)."""
    candidates: tuple[QueueCandidate, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["due_date"] = self.due_date.isoformat() if self.due_date else None
        return found


@dataclass(frozen=True)
class WeekLoad:
    week_start: date
    booked: float
    capacity: float

    @property
    def ratio(self) -> float:
        if self.capacity <= 0:
            return 0.0 if self.booked <= 0 else 9.99
        return self.booked / self.capacity

    @property
    def heat(self) -> int:
        """0-5 for the heat map: free, light, half, busy, full, over."""
        r = self.ratio
        if r <= 0:
            return 0
        for level, ceiling in enumerate((0.25, 0.5, 0.8, 1.0001), start=1):
            if r <= ceiling:
                return level
        return 5


@dataclass(frozen=True)
class PersonLoad:
    staff_id: str
    name: str
    weekly_capacity: float
    weeks: list[WeekLoad]


@dataclass
class BoardView:
    engagements: list[EngagementRow]
    people: list[PersonLoad]
    weeks: list[date]
    as_of: datetime
    capacity_note: str | None = None
    """Why the capacity view is empty or stale (no dispatcher answer, old capacity)."""
    truncated: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def review_queue(self) -> list[EngagementRow]:
        waiting = [e for e in self.engagements if e.status == "NeedsPartnerReview" and e.running]
        return sorted(waiting, key=lambda e: (e.due_date or date.max, e.workflow_id))


# --- reading ---------------------------------------------------------------------------------


def _keyword(execution: WorkflowExecution, key: Any) -> Any:
    return execution.typed_search_attributes.get(key)


async def row_of(execution: WorkflowExecution, names: Mapping[str, str]) -> EngagementRow:
    memo: Mapping[str, Any] = await execution.memo()
    due = _keyword(execution, sa.DUE_DATE)
    due_date = due.date() if isinstance(due, datetime) else None
    if due_date is None and memo.get("due_date"):
        due_date = date.fromisoformat(str(memo["due_date"]))
    preparer = _keyword(execution, sa.PREPARER) or memo.get("preparer_id")
    reviewer = _keyword(execution, sa.REVIEWER) or memo.get("reviewer_id")
    return EngagementRow(
        workflow_id=execution.id,
        status=str(_keyword(execution, sa.DISPATCH_STATUS) or "Received"),
        client_id=str(_keyword(execution, sa.CLIENT_ID) or memo.get("client_id") or ""),
        service_type=str(_keyword(execution, sa.SERVICE_TYPE) or memo.get("service_type") or ""),
        due_date=due_date,
        preparer_id=str(preparer) if preparer else None,
        reviewer_id=str(reviewer) if reviewer else None,
        preparer=names.get(str(preparer), str(preparer)) if preparer else "-",
        reviewer=names.get(str(reviewer), str(reviewer)) if reviewer else "-",
        why=str(memo.get("why") or ""),
        running=execution.close_time is None,
        **_review(memo.get(partner_review.MEMO_KEY), names),
    )


def _review(entry: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """The memo's partner-review short list, read defensively: a memo is whatever the
    engagement wrote, of any version, and a damaged entry means "ask the engagement"."""
    if not isinstance(entry, dict) or not isinstance(entry.get("round"), int):
        return {}
    found: list[QueueCandidate] = []
    for item in entry.get("candidates") or []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return {}
        hours = item.get("hours")
        found.append(
            QueueCandidate(
                staff_id=item["id"],
                name=names.get(item["id"], item["id"]),
                tier=str(item.get("tier") or ""),
                available_hours=float(hours) if isinstance(hours, int | float) else 0.0,
                blocked=str(item.get("blocked") or ""),
                anyway=item.get("anyway") is True,
            )
        )
    return {"review_round": entry["round"], "candidates": tuple(found)}


async def list_engagements(
    client: Client,
    filters: BoardFilters,
    *,
    names: Mapping[str, str],
    task_queue: str | None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[EngagementRow], bool]:
    """One visibility list (paged by the server); True when ``limit`` cut it short."""
    rows: list[EngagementRow] = []
    query = filters.visibility_query(task_queue)
    async for execution in client.list_workflows(query, limit=limit + 1, page_size=limit + 1):
        rows.append(await row_of(execution, names))
    truncated = len(rows) > limit
    rows = rows[:limit]
    rows.sort(key=lambda r: (not r.running, r.due_date or date.max, r.workflow_id))
    return rows, truncated


async def bookings(client: Client, firm_id: str) -> BookingsView:
    handle = client.get_workflow_handle(dispatcher_workflow_id(firm_id))
    return await handle.query(DispatcherWorkflow.bookings, rpc_timeout=QUERY_TIMEOUT)


def week_starts(
    today: date, weeks: int = WEEKS_SHOWN, calendar: WorkCalendar | None = None
) -> list[date]:
    """Mondays from the week of the next working day (a weekend shows the coming week)."""
    day = today
    if calendar is not None:
        day = calendar.add_working_days(today, 0 if calendar.is_working_day(today) else 1)
    monday = day - timedelta(days=day.weekday())
    return [monday + timedelta(weeks=i) for i in range(weeks)]


def _spread(
    reservation: Reservation, today: date, calendar: WorkCalendar
) -> Iterable[tuple[date, float]]:
    """A reservation's hours, evenly over its working days from today (or its start) to its
    due date; work already overdue lands on today."""
    start = max(reservation.start, today)
    days = calendar.working_days(start, reservation.due) if reservation.due >= start else []
    if not days:
        return [(today, reservation.hours)]
    each = reservation.hours / len(days)
    return [(d, each) for d in days]


def capacity_view(
    view: BookingsView,
    config: FirmConfig | None,
    today: date,
    weeks: int = WEEKS_SHOWN,
) -> tuple[list[PersonLoad], list[date]]:
    """Booked vs capacity per person and week, from the dispatcher's reservations.

    A week's capacity is the weekly figure times the share of its working days still ahead
    (holidays and absences in the firm file taken out)."""
    workdays = config.firm.workday_numbers if config else [0, 1, 2, 3, 4]
    calendar = WorkCalendar.of(workdays, config.firm.holidays if config else ())
    starts = week_starts(today, weeks, calendar)
    horizon = starts[-1] + timedelta(days=6)
    per_week = max(len(set(workdays)), 1)
    members = {s.id: s for s in config.staff} if config else {}
    people: list[PersonLoad] = []
    for staff in sorted(view.staff, key=lambda s: s.name):
        booked = dict.fromkeys(starts, 0.0)
        for reservation in staff.reservations:
            for day, hours in _spread(reservation, today, calendar):
                if day <= horizon:
                    monday = day - timedelta(days=day.weekday())
                    booked[max(monday, starts[0])] += hours
        member = members.get(staff.staff_id)
        away = {
            d
            for a in (member.absences if member else [])
            for d in calendar.working_days(a.start, a.end)
        }
        loads = []
        for monday in starts:
            days = [
                d
                for d in calendar.working_days(max(monday, today), monday + timedelta(days=6))
                if d not in away
            ]
            capacity = staff.weekly_capacity_hours * len(days) / per_week
            loads.append(WeekLoad(monday, round(booked[monday], 1), round(capacity, 1)))
        people.append(PersonLoad(staff.staff_id, staff.name, staff.weekly_capacity_hours, loads))
    return people, starts


async def read_board(
    client: Client,
    *,
    firm_id: str,
    config: FirmConfig | None,
    filters: BoardFilters,
    today: date,
    task_queue: str | None = None,
    limit: int = DEFAULT_LIMIT,
    weeks: int = WEEKS_SHOWN,
) -> BoardView:
    """The whole board: one visibility list and one dispatcher query."""
    names = {s.id: s.name for s in config.staff} if config else {}
    rows, truncated = await list_engagements(
        client, filters, names=names, task_queue=task_queue, limit=limit
    )
    note: str | None = None
    people: list[PersonLoad] = []
    starts = week_starts(today, weeks)
    try:
        booked = await bookings(client, firm_id)
    except Exception as err:  # no dispatcher (yet), no worker to answer, Temporal away
        note = f"capacity unavailable: the dispatcher did not answer ({type(err).__name__})"
    else:
        people, starts = capacity_view(booked, config, today, weeks)
        note = booked.capacity_note
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return BoardView(
        engagements=rows,
        people=people,
        weeks=starts,
        as_of=datetime.now(UTC),
        capacity_note=note,
        truncated=truncated,
        counts=counts,
    )


# --- the terminal board ----------------------------------------------------------------------


@dataclass
class BoardRow:
    workflow_id: str
    title: str
    client: str
    service: str
    preparer: str
    reviewer: str
    why: str
    status: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def row_from_state(state: EngagementState) -> BoardRow:
    if state.needs_partner_review_reason and state.status.value == "NeedsPartnerReview":
        why = state.needs_partner_review_reason
    else:
        why = state.decisions[0].reason if state.decisions else (state.error or "")
    return BoardRow(
        workflow_id=state.workflow_id,
        title=state.title or state.external_id,
        client=state.client_name or state.client_id or "",
        service=state.service_type or "",
        preparer=state.preparer.name if state.preparer else "-",
        reviewer=state.reviewer.name if state.reviewer else "-",
        why=why,
        status=state.status.value,
    )


def row_from_listing(row: EngagementRow) -> BoardRow:
    """The terminal board from the read model: ids where the list has no names."""
    return BoardRow(
        workflow_id=row.workflow_id,
        title=row.workflow_id,
        client=row.client_id,
        service=row.service_type,
        preparer=row.preparer,
        reviewer=row.reviewer,
        why=row.why,
        status=row.status,
    )


def render(
    rows: list[BoardRow], console: Console | None = None, title: str = "Dispatch board"
) -> None:
    console = console or Console()
    table = Table(title=title, show_lines=False, expand=True)
    table.add_column("Engagement", ratio=3)
    table.add_column("Client", ratio=2)
    table.add_column("Service", ratio=2)
    table.add_column("Preparer / reviewer", ratio=2)
    table.add_column("Why", ratio=5)
    table.add_column("Status", ratio=2)
    for row in rows:
        people = row.preparer if row.reviewer == "-" else f"{row.preparer} / {row.reviewer}"
        table.add_row(
            row.title,
            row.client,
            row.service,
            people,
            row.why,
            f"[{STATUS_STYLE.get(row.status, 'white')}]{row.status}[/]",
        )
    console.print(table)


def render_capacity(view: BoardView, console: Console | None = None) -> None:
    """Booked / capacity hours per person and week."""
    console = console or Console()
    if not view.people:
        if view.capacity_note:
            console.print(f"[yellow]{view.capacity_note}[/]")
        return
    table = Table(title="Booked / capacity (hours)", expand=True)
    table.add_column("Person", ratio=3)
    for monday in view.weeks:
        table.add_column(f"wk {monday.strftime('%b %d')}", ratio=2, justify="right")
    styles = ["dim", "green", "green", "yellow", "bold yellow", "bold red"]
    for person in view.people:
        table.add_row(
            person.name,
            *(f"[{styles[w.heat]}]{w.booked:g}/{w.capacity:g}[/]" for w in person.weeks),
        )
    console.print(table)
    if view.capacity_note:
        console.print(f"[yellow]{view.capacity_note}[/]")
