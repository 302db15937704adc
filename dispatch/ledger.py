"""The firm's ledger as the dispatcher keeps it: a cache of what every live engagement holds.

Pure (no Temporal, no I/O): the dispatcher workflow drives it, the tests and benchmarks call it.

Who owns what. Each engagement owns its reservations: they are in its state, and it tells the
dispatcher whenever they change (``HoldingsSync``). The dispatcher serialises decisions (choice
and reservation in one step, so nobody is double-booked) and keeps this ledger as a cache that
can always be rebuilt from the engagements (``rebuild``). Nothing here is the only copy of a
fact except the learned client history, which is a preference, not a promise.

Ordering. Every request an engagement sends carries its number (``seq``), and every entry here
remembers the number that set it. A decision for request ``k`` sets the entry to ``(k, what was
booked)``; a sync ``(s, holdings)`` from the engagement replaces it only when ``s >= k``. So a
sync that overtakes a decision still in flight cannot erase it, and a decision for a request
the engagement has since superseded is corrected by the engagement's next sync. Requests at or
below the entry's number are answered from what is booked, never decided twice.

Size. ``pack`` keeps what continue-as-new carries small: ids, numbers and dates only, zlib'd
(about 20 bytes per live engagement at 50 staff; see tests/test_ledger.py).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from dispatch.decision import Ledger, open_hours
from dispatch.models import (
    AssignmentRequest,
    CarriedLedger,
    DispatcherState,
    EngagementHoldings,
    ForceAssignRequest,
    HoldingsSync,
    LedgerEntryView,
    Reservation,
    ReservationProgress,
    Role,
    TrackerFigures,
)

PACK_FORMAT = 1
TOMBSTONES = 2000
"""Closed engagements remembered (their last request number), so a request that arrives after
the engagement closed is ignored. Older ones are forgotten: a late request then books, the
answer cannot be delivered and the booking is released again."""
CLIENTS_REMEMBERED = 5000
HISTORY_PER_CLIENT = 5

Request = AssignmentRequest | ForceAssignRequest


def progress_hours(message: ReservationProgress) -> float:
    """The hours a role holds after ``message``: what the engagement reports among its
    holdings and what the ledger books, computed once, here, so the two always agree."""
    return round(open_hours(message.estimate, message.logged, handed_over=message.handed_over), 2)


@dataclass
class Entry:
    seq: int
    holdings: list[Reservation]


@dataclass
class Parked:
    request: AssignmentRequest
    reason: str = ""
    since: datetime | None = None
    """When it was first parked (the partner-review queue's age)."""


class WorkingLedger(Ledger):
    """``decision.Ledger`` that can also give hours back (an engagement's whole entry)."""

    def remove_engagement(self, workflow_id: str) -> None:
        for role in (Role.PREPARER, Role.REVIEWER):
            self.remove(workflow_id, role)


@dataclass
class FirmLedger:
    """The dispatcher's book: entries, live and parked requests, history, tracker figures."""

    epoch: str
    entries: dict[str, Entry] = field(default_factory=dict)
    live: dict[str, Request] = field(default_factory=dict)
    """At most one request per engagement waiting to be decided: the newest."""
    parked: dict[str, Parked] = field(default_factory=dict)
    """Requests nobody could take yet, retried when capacity is released or re-read."""
    tombstones: OrderedDict[str, int] = field(default_factory=OrderedDict)
    client_history: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)
    tracker: list[TrackerFigures] = field(default_factory=list)
    tracker_as_of: datetime | None = None
    outage_since: datetime | None = None
    """When the time tracker began failing, while it still fails: carried, so a run that
    continues as new mid-outage neither tells the partner again nor forgets to say it is back."""
    counters: dict[str, int] = field(default_factory=dict)
    rebuilt_at: datetime | None = None
    reconciled_at: datetime | None = None
    closed_checked_at: datetime | None = None
    working: WorkingLedger = field(default_factory=WorkingLedger)

    def __post_init__(self) -> None:
        for workflow_id, entry in self.entries.items():
            self._book(workflow_id, entry.holdings)

    # --- reading -----------------------------------------------------------------------------

    def floor(self, workflow_id: str) -> int:
        """The highest request number of this engagement already reflected here."""
        entry = self.entries.get(workflow_id)
        if entry is not None:
            return entry.seq
        return self.tombstones.get(workflow_id, 0)

    def holdings(self, workflow_id: str) -> list[Reservation]:
        entry = self.entries.get(workflow_id)
        return list(entry.holdings) if entry else []

    def reservations(self) -> Iterator[Reservation]:
        for entry in self.entries.values():
            yield from entry.holdings

    def view(self, offset: int, limit: int) -> list[LedgerEntryView]:
        ids = sorted(self.entries)[offset : offset + limit]
        return [
            LedgerEntryView(workflow_id=w, seq=self.entries[w].seq, holdings=self.holdings(w))
            for w in ids
        ]

    def history_of(self) -> dict[str, list[str]]:
        return dict(self.client_history)

    # --- requests ----------------------------------------------------------------------------

    def offer(self, request: Request) -> str:
        """A request arrives. Returns "new" (to decide), "booked" (already decided: answer from
        the entry), "parked" (already waiting) or "stale" (superseded: ignore)."""
        workflow_id = request.workflow_id
        seq = request.sequence
        floor = self.floor(workflow_id)
        if seq <= floor:
            return "booked" if workflow_id in self.entries and seq == floor else "stale"
        parked = self.parked.get(workflow_id)
        if parked is not None:
            if parked.request.sequence == seq:
                return "parked"
            if parked.request.sequence > seq:
                return "stale"
            del self.parked[workflow_id]  # superseded by a newer request of the same engagement
        current = self.live.get(workflow_id)
        if current is not None and current.sequence >= seq:
            return "stale" if current.sequence > seq else "parked"
        self.live[workflow_id] = request
        return "new"

    def take_live(self, limit: int) -> list[Request]:
        """Up to ``limit`` live requests, oldest arrival first (dict order)."""
        taken = []
        for workflow_id in list(self.live)[:limit]:
            taken.append(self.live.pop(workflow_id))
        return taken

    def park(self, request: AssignmentRequest, reason: str, since: datetime | None = None) -> None:
        if request.sequence > self.floor(request.workflow_id):
            before = self.parked.get(request.workflow_id)
            first = before.since if before is not None and before.since else since
            self.parked[request.workflow_id] = Parked(request, reason, first)

    def parked_due_first(self, limit: int) -> list[AssignmentRequest]:
        ordered = sorted(
            self.parked.values(), key=lambda p: (p.request.due_date, p.request.workflow_id)
        )
        return [p.request for p in ordered[:limit]]

    # --- bookings ----------------------------------------------------------------------------

    def book(self, request: Request, reservations: list[Reservation], *, partial: bool) -> None:
        """A decision for ``request``. ``partial`` (a partner's pick of the preparer) keeps the
        engagement's other role; otherwise the decision is everything it holds."""
        workflow_id = request.workflow_id
        kept = []
        if partial:
            roles = {r.role for r in reservations}
            kept = [r for r in self.holdings(workflow_id) if r.role not in roles]
        self._set(workflow_id, request.sequence, [*kept, *reservations])
        self.parked.pop(workflow_id, None)
        self.live.pop(workflow_id, None)
        self.count("decided")

    def sync(self, message: HoldingsSync) -> bool:
        """The engagement says what it holds. True when the ledger changed."""
        workflow_id = message.workflow_id
        floor = self.floor(workflow_id)
        if message.withdraw:
            self._withdraw(workflow_id, message.seq)
        if message.seq < floor:
            return False
        before = self.holdings(workflow_id)
        if not message.holdings and message.withdraw:
            self._forget(workflow_id, message.seq)
        else:
            self._set(workflow_id, message.seq, list(message.holdings))
        return before != self.holdings(workflow_id)

    def progress(self, message: ReservationProgress) -> bool:
        """The engagement says how far one role has come: the ledger holds that role's open
        hours from now on (``decision.open_hours``). True when it now holds fewer hours
        (capacity was released: parked requests deserve another try).

        Applied only to the reservation this ledger already holds for that role and person,
        set by request ``message.seq`` or older: a report about a decision the engagement has
        not seen yet (a newer entry) is refused, the engagement reports again once it takes
        that answer; and a released or forgotten reservation is never brought back."""
        entry = self.entries.get(message.workflow_id)
        if entry is None or message.seq < entry.seq:
            return False
        held = next(
            (
                r
                for r in entry.holdings
                if r.role is message.role and r.staff_id == message.staff_id
            ),
            None,
        )
        if held is None:
            return False
        hours = progress_hours(message)
        if hours == held.hours:
            return False
        entry.holdings = [
            r.model_copy(update={"hours": hours}) if r is held else r for r in entry.holdings
        ]
        self.working.set_open_hours(message.workflow_id, message.role, hours)
        return hours < held.hours

    def release_roles(self, workflow_id: str, roles: Iterable[Role], withdraw: bool) -> bool:
        """A release from an engagement of the first protocol (no request number): applied as
        it comes, as that protocol did."""
        roles = set(roles)
        before = self.holdings(workflow_id)
        entry = self.entries.get(workflow_id)
        if withdraw:
            self._withdraw(workflow_id, None)
        if entry is not None:
            left = [r for r in entry.holdings if r.role not in roles]
            self._set(workflow_id, entry.seq, left)
            if not left and withdraw:
                self._forget(workflow_id, entry.seq)
        return before != self.holdings(workflow_id)

    def forget(self, workflow_id: str) -> bool:
        """The engagement is gone (closed, terminated, or not running to take its answer)."""
        had = workflow_id in self.entries
        self._withdraw(workflow_id, None)
        self._forget(workflow_id, self.floor(workflow_id))
        return had

    def rebuild(self, facts: Iterable[EngagementHoldings], keep_newer: bool) -> list[Request]:
        """Replace the book with what the engagements hold. Returns their live requests.

        ``keep_newer``: a reconciliation while deciding goes on keeps entries this ledger set
        after the engagement answered (a higher request number); a rebuild starts from the facts.
        """
        seen: set[str] = set()
        requests: list[Request] = []
        for fact in facts:
            seen.add(fact.workflow_id)
            if fact.closed:
                self.forget(fact.workflow_id)
                continue
            if keep_newer and fact.seq < self.floor(fact.workflow_id):
                continue
            self._set(fact.workflow_id, fact.seq, list(fact.holdings))
            pending = fact.force or fact.request
            if pending is not None and pending.sequence > fact.seq:
                requests.append(pending)
            if fact.client_id and fact.holdings:
                self.remember(
                    fact.client_id, [r.staff_id for r in fact.holdings if r.role is Role.PREPARER]
                )
        if not keep_newer:
            for workflow_id in [w for w in self.entries if w not in seen]:
                self._forget(workflow_id, self.entries[workflow_id].seq)
        return requests

    def remember(self, client_id: str, staff_ids: list[str]) -> None:
        if not staff_ids:
            return
        known = self.client_history.pop(client_id, [])
        self.client_history[client_id] = list(dict.fromkeys([*staff_ids, *known]))[
            :HISTORY_PER_CLIENT
        ]
        while len(self.client_history) > CLIENTS_REMEMBERED:
            self.client_history.popitem(last=False)

    def count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    # --- internals ---------------------------------------------------------------------------

    def _set(self, workflow_id: str, seq: int, holdings: list[Reservation]) -> None:
        self.tombstones.pop(workflow_id, None)
        self.entries[workflow_id] = Entry(seq, holdings)
        self.working.remove_engagement(workflow_id)
        self._book(workflow_id, holdings)

    def _book(self, workflow_id: str, holdings: list[Reservation]) -> None:
        for reservation in holdings:
            if reservation.workflow_id == workflow_id:
                self.working.add(reservation)

    def _forget(self, workflow_id: str, seq: int) -> None:
        self.entries.pop(workflow_id, None)
        self.working.remove_engagement(workflow_id)
        self.tombstones.pop(workflow_id, None)
        self.tombstones[workflow_id] = seq
        while len(self.tombstones) > TOMBSTONES:
            self.tombstones.popitem(last=False)

    def _withdraw(self, workflow_id: str, up_to: int | None) -> None:
        live = self.live.get(workflow_id)
        if live is not None and (up_to is None or live.sequence <= up_to):
            del self.live[workflow_id]
        parked = self.parked.get(workflow_id)
        if parked is not None and (up_to is None or parked.request.sequence <= up_to):
            del self.parked[workflow_id]

    # --- continue-as-new ---------------------------------------------------------------------

    def pack(self) -> CarriedLedger:
        staff: dict[str, int] = {}

        def sid(staff_id: str) -> int:
            return staff.setdefault(staff_id, len(staff))

        entries = []
        for workflow_id, entry in self.entries.items():
            client = entry.holdings[0].client_id if entry.holdings else ""
            entries.append(
                [
                    _short(workflow_id),
                    entry.seq,
                    client,
                    [
                        [
                            0 if r.role is Role.PREPARER else 1,
                            sid(r.staff_id),
                            r.hours,
                            r.start.toordinal(),
                            r.due.toordinal(),
                            int(r.forced),
                        ]
                        for r in entry.holdings
                    ],
                ]
            )
        body: dict[str, Any] = {
            "e": entries,
            "l": [_request_json(r) for r in self.live.values()],
            "p": [
                [_request_json(p.request), p.reason, _time(p.since)] for p in self.parked.values()
            ],
            "t": [[_short(w), s] for w, s in self.tombstones.items()],
            "h": [[c, [sid(s) for s in people]] for c, people in self.client_history.items()],
            "k": [f.model_dump(mode="json") for f in self.tracker],
            "ka": _time(self.tracker_as_of),
            "c": self.counters,
            "ra": _time(self.rebuilt_at),
            "rc": _time(self.reconciled_at),
            "cc": _time(self.closed_checked_at),
        }
        if self.outage_since is not None:  # only then: packs without an outage are unchanged
            body["os"] = _time(self.outage_since)
        body["s"] = list(staff)
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        packed = base64.b64encode(zlib.compress(raw, 6)).decode("ascii")
        return CarriedLedger(format=PACK_FORMAT, epoch=self.epoch, packed=packed)

    @classmethod
    def unpack(cls, carried: CarriedLedger) -> FirmLedger:
        if carried.format != PACK_FORMAT:
            raise ValueError(f"unknown carried ledger format {carried.format}")
        body = json.loads(zlib.decompress(base64.b64decode(carried.packed)))
        staff: list[str] = body["s"]
        entries: dict[str, Entry] = {}
        for short, seq, client, rows in body["e"]:
            workflow_id = _long(short)
            entries[workflow_id] = Entry(
                seq,
                [
                    Reservation(
                        workflow_id=workflow_id,
                        role=Role.PREPARER if role == 0 else Role.REVIEWER,
                        staff_id=staff[who],
                        hours=hours,
                        start=date.fromordinal(start),
                        due=date.fromordinal(due),
                        client_id=client,
                        forced=bool(forced),
                    )
                    for role, who, hours, start, due, forced in rows
                ],
            )
        live: dict[str, Request] = {}
        for item in body["l"]:
            request = _request_from(item)
            live[request.workflow_id] = request
        parked = {}
        for item, reason, *since in body["p"]:
            request = _request_from(item)
            assert isinstance(request, AssignmentRequest)
            parked[request.workflow_id] = Parked(
                request, reason, _parse_time(since[0]) if since else None
            )
        return cls(
            epoch=carried.epoch,
            entries=entries,
            live=live,
            parked=parked,
            tombstones=OrderedDict((_long(w), s) for w, s in body["t"]),
            client_history=OrderedDict((c, [staff[i] for i in people]) for c, people in body["h"]),
            tracker=[TrackerFigures.model_validate(f) for f in body["k"]],
            tracker_as_of=_parse_time(body["ka"]),
            outage_since=_parse_time(body.get("os")),
            counters=dict(body["c"]),
            rebuilt_at=_parse_time(body["ra"]),
            reconciled_at=_parse_time(body["rc"]),
            closed_checked_at=_parse_time(body["cc"]),
        )

    @classmethod
    def from_legacy(cls, state: DispatcherState, epoch: str) -> FirmLedger:
        """A dispatcher of the first protocol continued as new into this one."""
        from dispatch.models import request_sequence

        book = cls(epoch=epoch)
        by_workflow: dict[str, list[Reservation]] = {}
        for reservation in state.reservations:
            by_workflow.setdefault(reservation.workflow_id, []).append(reservation)
        latest: dict[str, int] = {}
        for request_id in state.results:
            workflow_id, _, _ = request_id.rpartition(":req-")
            latest[workflow_id] = max(latest.get(workflow_id, 0), request_sequence(request_id))
        for workflow_id, holdings in by_workflow.items():
            book._set(workflow_id, latest.get(workflow_id, 0), holdings)
        for request in state.parked:
            book.park(request, "")
        for client, people in state.client_history.items():
            book.remember(client, people)
        return book


_PREFIX = "engagement-"


def _short(workflow_id: str) -> str:
    return (
        workflow_id.removeprefix(_PREFIX) if workflow_id.startswith(_PREFIX) else "=" + workflow_id
    )


def _long(short: str) -> str:
    return short[1:] if short.startswith("=") else _PREFIX + short


def _request_json(request: Request) -> dict[str, Any]:
    kind = "force" if isinstance(request, ForceAssignRequest) else "assign"
    return {"kind": kind, **request.model_dump(mode="json", exclude_defaults=True)}


def _request_from(item: dict[str, Any]) -> Request:
    data = {k: v for k, v in item.items() if k != "kind"}
    if item.get("kind") == "force":
        return ForceAssignRequest.model_validate(data)
    return AssignmentRequest.model_validate(data)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


__all__ = ["FirmLedger", "Parked", "Request", "WorkingLedger", "progress_hours"]
