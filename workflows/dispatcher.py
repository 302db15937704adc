"""The firm's dispatcher: the one place that chooses people, so nobody is double-booked.

Why an entity workflow, and why signals (DESIGN §3.1, §7): choice and reservation must happen
in one place so concurrent arrivals cannot double-book. Temporal runs one workflow task at a
time per execution, and a batch is decided without an ``await`` between reading the ledger and
writing it. Engagements talk to it by signal, not Update: a month-end burst of Updates hits the
server's limit of 10 in-flight Updates per workflow, while signals queue without limit and each
workflow task drains all that arrived, deciding them as one batch. Answers go back as signals,
all sent concurrently.

The ledger cannot be lost (DESIGN §3.7). Each engagement owns its reservations (they are in its
state); the dispatcher's ledger (``dispatch.ledger.FirmLedger``) is a cache of them, ordered by
the engagements' request numbers, that is:

* rebuilt from the engagements on every fresh start (first start, after a terminate, a reset or
  a failure), before anything is decided: each running engagement is asked, by Update, what it
  holds and what it waits for, and is told the new ledger's epoch so it refuses answers from the
  one that was lost;
* reconciled daily against the engagements, and hourly against the engagements that closed
  (a terminated engagement never says goodbye);
* carried across continue-as-new packed (ids, numbers, dates: never the capacity snapshot, never
  explanations), so the carried input stays far below the payload limit at 5,000 engagements;
* never failed by an activity: a time-tracker outage degrades to the last tracker figures (their
  age in every decision, the managing partner told once, the tracker read again until it is
  back, with or without work waiting, and the partner told so), a failed rebuild is retried before
  anything is decided, a failed housekeeping step waits for the next round.

Requests nobody can take are parked (one per engagement, the newest) and retried whenever
capacity is released or re-read; the engagement hears again when one fits.

The batching window (``Policy.batch_window_seconds``; 0, the default, turns it off): the first
new request of a batch starts a durable timer; everything arriving until it fires is assigned
jointly by the ``optimize_assignments`` activity (CP-SAT, ``dispatch.optimizer``), whose plan is
re-checked against the ledger as it is when the plan comes back; anything that no longer fits,
or a failed solve, is decided by the greedy rule.

Upgrading (README "Upgrading during tax season"): the dispatcher continues as new at least once
a day, so it moves to new code within a day; changes to this file follow the ``patched()``
discipline and are replay-tested against the histories in tests/histories/.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from datetime import date, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.firm import FirmActivities
    from dispatch.capacity import day_left_at
    from dispatch.decision import (
        decide,
        merged_history,
        partner_assignment,
        partner_options,
        staff_ref,
    )
    from dispatch.ledger import FirmLedger, Request
    from dispatch.models import (
        AssignmentRequest,
        AssignmentResult,
        BookingsView,
        CapacityOutageNotice,
        CapacitySnapshot,
        ClosedEngagementsInput,
        CollectHoldingsInput,
        Decision,
        DispatcherInput,
        EngagementHoldings,
        ForceAssignRequest,
        HoldingsSync,
        LedgerQuery,
        LedgerView,
        OptimizeBatchInput,
        OptimizedBatch,
        PartnerOption,
        ReleaseRequest,
        Reservation,
        ReservationProgress,
        Role,
        SnapshotInput,
        StaffBooking,
        TrackerFigures,
    )
    from dispatch.optimizer import apply_plan
    from workflows import options

RESULT_SIGNAL = "assignment_decided"
"""The engagement's signal that receives an AssignmentResult (named, to avoid an import cycle)."""

BATCH_LIMIT = 100
"""Decisions per workflow task at most; the rest follows in the next task."""
BATCH_WORK = 1000
"""Decisions x staff per workflow task. A decision with the season's levers costs ~0.1-0.3 ms
per staff member on an idle 2-core machine and up to ~1 ms when the machine is loaded
(benchmarks/decision_cost.py), so a task stays near 0.1-0.3 s idle and about 1 s under heavy
load: inside the 2 s deadlock detector for a 5-person firm and a 50-person one alike."""
LEGACY_BATCH_WORK = 3000
"""The limit before patch ``dispatch-batch-work-1000``; dispatchers replaying older history."""
CANDIDATES_SENT = 25
"""Candidates kept per decision in an answer: the eligible first, then the closest blocked
(every candidate for firms of up to 25 people). The answer travels in two histories; a
50-person firm's full list would make each answer ~25 KB and the dispatcher's history fill
twice as fast."""
RECENT_ANSWERS = 500
"""Full answers kept in memory (not carried) for a resent request."""
SETTLE = timedelta(seconds=3)
"""A fresh ledger waits this long before listing engagements, so one started moments before the
old dispatcher was lost is listed (visibility is eventually consistent)."""
REBUILD_RETRY = (timedelta(seconds=5), timedelta(minutes=5))
SNAPSHOT_RETRY = timedelta(seconds=60)
"""While the tracker fails (or no snapshot could be read), read again this often (sooner when
the firm's snapshot time to live is shorter, but never more than every 5 s; later when the
tracker said when to ask again)."""
CLOSED_CHECK = timedelta(hours=1)
RECONCILE = timedelta(hours=24)
REBUILD_PAGES = 100
"""Pages of 500 engagements: a rebuild reads at most 50,000 (never a loop bounded by input)."""
OPTIMIZE_ACTIVITY = "optimize_assignments"
"""``activities.optimizer.OptimizerActivities`` (named here, so this module never imports the
solver)."""

DAY_LEFT_PATCH = "dispatch-day-left"
"""Decisions count only the share of today's working hours still ahead (the firm's clock from
the snapshot); before it, and on snapshots without the firm's clock, the whole day."""
OPEN_HOURS_PATCH = "open-hours-ledger"
"""``ReservationProgress`` from the engagements sets a role's open hours on the ledger (the
estimate less the hours logged, nothing once handed over); released hours retry parked work."""
PARTNER_OPTIONS_PATCH = "partner-options"
"""A request nobody can take is answered with the partner's options for the blocked role."""
CONTINUE_WHEN_BUSY_PATCH = "dispatch-continue-when-busy"
"""Continue as new when the history is long even while requests keep arriving (they are carried);
before it the dispatcher waited until it was idle, which a busy season may never give it."""
NOTICE_BESIDE_PATCH = "outage-notice-beside-decisions"
"""The managing partner's notice that the time tracker is down (or back) is sent beside the
decisions, not before them: a chat outage at the same moment held dispatch for the notice's
retries (up to ``options.CHAT_NOTICE.total``, five minutes)."""
PROBE_PATCH = "tracker-probe-while-down"
"""While an outage the managing partner was told of is open, the tracker is read again every
retry interval even when no work needs it, so the partner hears it is back when it heals; before
it, only the next engagement (or parked work) read it, and a quiet weekend hid the end."""
HISTORY_EVENTS_MAX = 2000
"""Continue as new past this many events whatever the server suggests: a worker that lost the
dispatcher from its cache replays the whole history inside one workflow task, and that replay
must stay far inside the 2 s deadlock detector on a loaded machine."""

Ordered = list[tuple[int, int, Request]]
"""(kind: 0 parked / 1 new, position, request), earliest due first, parked first on a tie."""


def _due(request: Request) -> date:
    return request.due_date if isinstance(request, AssignmentRequest) else request.due


@workflow.defn
class DispatcherWorkflow:
    @workflow.init
    def __init__(self, input: DispatcherInput) -> None:
        self._firm_id = input.firm_id
        self._ready = input.carried is not None
        """The ledger reflects the engagements. False until the first rebuild of a fresh start
        completes: nothing is decided on a ledger that might be missing someone's hours."""
        if input.carried is not None:
            self._book = FirmLedger.unpack(input.carried)
        else:
            epoch = f"{workflow.now():%Y%m%dT%H%M%S.%f}-{workflow.uuid4().hex[:8]}"
            self._book = (
                FirmLedger.from_legacy(input.state, epoch)
                if input.state is not None
                else FirmLedger(epoch=epoch)
            )
        self._inbox: list[Request] = []
        self._syncs: list[HoldingsSync | ReleaseRequest | ReservationProgress] = []
        self._snapshot: CapacitySnapshot | None = None
        self._snapshot_at: datetime | None = None
        self._snapshot_failed_at: datetime | None = None
        self._notice: asyncio.Task[None] | None = None
        """The partner's last outage notice; each waits for the one before, so while this one
        is not done some notice is owed, and a run does not continue as new."""
        self._recent: OrderedDict[str, AssignmentResult] = OrderedDict()
        self._arrived: dict[str, datetime] = {}
        self._rebuild_asked = False
        self._rebuild_after: datetime | None = None
        self._reset_handled = False
        self._continue = False
        self._resends: list[AssignmentResult] = []

    # --- messages ------------------------------------------------------------------------

    @workflow.signal
    def request_assignment(self, request: AssignmentRequest) -> None:
        self._inbox.append(request)

    @workflow.signal
    def force_assign(self, request: ForceAssignRequest) -> None:
        self._inbox.append(request)

    @workflow.signal
    def sync_holdings(self, message: HoldingsSync) -> None:
        self._syncs.append(message)

    @workflow.signal
    def reservation_progress(self, message: ReservationProgress) -> None:
        """An engagement reports how far a role has come: the ledger holds its open hours."""
        self._syncs.append(message)

    @workflow.signal
    def release(self, request: ReleaseRequest) -> None:
        """Engagements of the first protocol (before request numbers) give hours back here."""
        self._syncs.append(request)

    @workflow.signal
    def rebuild_ledger(self) -> None:
        """An operator asks for the ledger to be rebuilt from the engagements now."""
        self._rebuild_asked = True

    @workflow.query
    def bookings(self) -> BookingsView:
        snapshot = self._snapshot
        by_staff: dict[str, list[Reservation]] = {}
        for reservation in self._book.reservations():
            by_staff.setdefault(reservation.staff_id, []).append(reservation)
        # Names and capacity from the snapshot; after a continue-as-new (no snapshot read yet)
        # from the carried tracker figures, so the ledger is never hidden by a missing read.
        known = (
            {c.member.id: (c.member.name, c.weekly_capacity_hours) for c in snapshot.staff}
            if snapshot
            else {}
        )
        figures = {f.staff_id: f.weekly_capacity_hours or 0.0 for f in self._book.tracker}
        for staff_id in by_staff:
            known.setdefault(staff_id, (staff_id, figures.get(staff_id, 0.0)))
        staff = []
        for staff_id, (name, weekly) in known.items():
            mine = by_staff.get(staff_id, [])
            staff.append(
                StaffBooking(
                    staff_id=staff_id,
                    name=name,
                    weekly_capacity_hours=weekly,
                    reserved_hours=round(sum(r.hours for r in mine), 2),
                    reservations=mine,
                )
            )
        return BookingsView(
            firm_id=self._firm_id,
            staff=staff,
            parked=sorted(self._book.parked),
            batches=self._book.counters.get("batches", 0),
            decided=self._book.counters.get("decided", 0),
            epoch=self._book.epoch,
            capacity_as_of=self._book.tracker_as_of,
            capacity_note=self._capacity_note(),
        )

    @workflow.query
    def ledger(self, query: LedgerQuery) -> LedgerView:
        book = self._book
        return LedgerView(
            epoch=book.epoch,
            entries=book.view(query.offset, query.limit),
            total=len(book.entries),
            offset=query.offset,
            live_requests=sorted(book.live),
            parked=sorted(book.parked),
            capacity_as_of=book.tracker_as_of,
            capacity_note=self._capacity_note(),
            rebuilt_at=book.rebuilt_at,
            reconciled_at=book.reconciled_at,
            carried_bytes=book.counters.get("carried_bytes", 0),
            continued=book.counters.get("continued", 0),
        )

    @workflow.query
    def snapshot(self) -> CapacitySnapshot | None:
        return self._snapshot

    # --- main loop -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DispatcherInput) -> None:
        while True:
            await self._rebuild_if_needed()
            if not self._ready:
                continue
            if (
                self._history_long()
                and not self._notice_owed()
                and workflow.patched(CONTINUE_WHEN_BUSY_PATCH)
            ):
                await self._continue_while_busy()
            if self._inbox or self._syncs or self._book.live:
                await self._process()
                continue
            if await self._housekeeping():
                continue
            if self._continue or workflow.info().is_continue_as_new_suggested():
                if self._notice_owed():
                    await self._notice_or_message()
                    continue
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (self._inbox or self._syncs or self._book.live):
                    self._continue_as_new()
            await self._idle()

    async def _continue_while_busy(self) -> None:
        """Fold every message into the book (live requests are carried) and continue as new.
        Nothing awaits between the last fold and the continue-as-new, so no signal is left in
        the inbox of a run that ends."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._take_inbox()
        await self._send(self._drain_resends())
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._take_inbox()
        self._continue_as_new()

    @staticmethod
    def _history_long() -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > HISTORY_EVENTS_MAX
        )

    async def _idle(self) -> None:
        """Wait for a message, or for the next timer (tracker retry, housekeeping)."""
        deadline = self._next_deadline()
        timeout = max(deadline - workflow.now(), timedelta(0)) if deadline else None
        try:
            await workflow.wait_condition(
                lambda: bool(
                    self._inbox
                    or self._syncs
                    or self._rebuild_asked
                    or workflow.info().is_continue_as_new_suggested()
                ),
                timeout=timeout,
                timeout_summary="dispatcher housekeeping",
            )
        except TimeoutError:
            pass

    def _next_deadline(self) -> datetime | None:
        book = self._book
        moments = []
        if book.entries:
            moments.append((book.closed_checked_at or workflow.now()) + CLOSED_CHECK)
            moments.append((book.reconciled_at or book.rebuilt_at or workflow.now()) + RECONCILE)
        if self._degraded() and book.parked and self._snapshot_failed_at is not None:
            moments.append(self._snapshot_failed_at + self._retry_interval())
        probe = self._probe_at()
        if probe is not None:
            moments.append(probe)
        return min(moments) if moments else None

    def _probe_at(self) -> datetime | None:
        """When to read the tracker again during an outage, so its end is told when it comes,
        not with the next engagement; at once in a run that has not read it yet (the outage
        was carried from the run before)."""
        if self._book.outage_since is None:
            return None
        if not workflow.patched(PROBE_PATCH):
            return None
        failed = self._snapshot_failed_at
        return failed + self._retry_interval() if failed is not None else workflow.now()

    def _continue_as_new(self) -> None:
        self._book.count("continued")
        carried = self._book.pack()
        self._book.counters["carried_bytes"] = len(carried.packed)
        carried = self._book.pack()
        workflow.logger.info(
            "dispatcher continues as new: %d engagements, %d bytes carried",
            len(self._book.entries),
            len(carried.packed),
        )
        workflow.continue_as_new(DispatcherInput(firm_id=self._firm_id, carried=carried))

    # --- deciding --------------------------------------------------------------------------

    async def _process(self) -> None:
        changed = self._take_inbox()
        snapshot, fresh = await self._ensure_snapshot(
            needed=bool(self._book.live or (changed and self._book.parked))
        )
        changed = self._take_inbox() or changed or fresh
        await self._rebuild_if_needed()
        if snapshot is None or not self._ready:
            await self._send(self._drain_resends())
            if self._book.live:
                # Nothing can be decided yet: wait for the next read instead of spinning.
                await self._wait_for_retry()
            return
        window = snapshot.policy.batch_window_seconds
        if window > 0 and self._book.live:
            await self._decide_in_window(window, changed)
            return
        limit = self._batch_limit(snapshot)
        batch = self._book.take_live(limit)
        room = max(limit - len(batch), 0)
        parked = self._book.parked_due_first(room) if changed else []
        outgoing = self._decide(self._ordered(batch, parked), snapshot)
        self._book.count("batches")
        await self._send(outgoing)

    @staticmethod
    def _batch_limit(snapshot: CapacitySnapshot) -> int:
        # The batch decides which signals a task sends: a smaller one must not change a task
        # recorded before it.
        work = BATCH_WORK if workflow.patched("dispatch-batch-work-1000") else LEGACY_BATCH_WORK
        return max(10, min(BATCH_LIMIT, work // max(len(snapshot.staff), 1)))

    async def _wait_for_retry(self) -> None:
        try:
            await workflow.wait_condition(
                lambda: bool(self._syncs or self._rebuild_asked),
                timeout=self._retry_interval(),
                timeout_summary="capacity unavailable: retry",
            )
        except TimeoutError:
            pass

    def _take_inbox(self) -> bool:
        """Apply what arrived: holdings first (they free capacity), then requests.
        True when capacity changed (parked requests deserve another try)."""
        changed = False
        syncs, self._syncs = self._syncs, []
        for message in syncs:
            if isinstance(message, HoldingsSync):
                changed = self._book.sync(message) or changed
            elif isinstance(message, ReservationProgress):
                if workflow.patched(OPEN_HOURS_PATCH):
                    changed = self._book.progress(message) or changed
            else:
                changed = (
                    self._book.release_roles(
                        message.workflow_id, message.roles, message.withdraw_request
                    )
                    or changed
                )
        inbox, self._inbox = self._inbox, []
        answers = []
        for request in inbox:
            verdict = self._book.offer(request)
            if verdict == "new":
                self._arrived.setdefault(request.workflow_id, workflow.now())
            elif verdict == "booked":
                answer = self._answer_again(request)
                if answer is not None:
                    answers.append(answer)
        # A resend of a decided request: the same answer, no new decision.
        self._resends += answers
        return changed

    @staticmethod
    def _ordered(new: list[Request], parked: list[AssignmentRequest]) -> Ordered:
        both: Ordered = [(0, i, r) for i, r in enumerate(parked)]
        both += [(1, i, r) for i, r in enumerate(new)]
        return sorted(both, key=lambda t: (_due(t[2]), t[0], t[1]))

    def _decide(self, ordered: Ordered, snapshot: CapacitySnapshot) -> list[AssignmentResult]:
        """Greedy, earliest due date first; runs without awaiting (read and book atomically)."""
        outgoing = self._drain_resends()
        day_left = self._day_left(snapshot) if ordered else 1.0
        for kind, _, request in ordered:
            if isinstance(request, ForceAssignRequest):
                outgoing.append(self._force(request, snapshot, day_left))
                continue
            result, reservations = decide(
                request, snapshot, self._book.working, self._book.history_of(), day_left=day_left
            )
            self._record(kind, request, result, reservations, snapshot, outgoing)
        return outgoing

    def _force(
        self, request: ForceAssignRequest, snapshot: CapacitySnapshot, day_left: float
    ) -> AssignmentResult:
        """A partner's decision. Recorded as such; an over-capacity one only when explicit."""
        result, reservation = partner_assignment(
            request, snapshot, self._book.working, day_left=day_left
        )
        if reservation is not None:
            self._book.book(request, [reservation], partial=True)
            self._book.remember(request.client_id, [request.staff_id])
        return self._stamp(result, snapshot)

    def _record(
        self,
        kind: int,
        request: AssignmentRequest,
        result: AssignmentResult,
        reservations: list[Reservation],
        snapshot: CapacitySnapshot,
        outgoing: list[AssignmentResult],
    ) -> None:
        if result.outcome == "assigned":
            self._book.book(request, reservations, partial=False)
            self._book.remember(
                request.client_id, [r.staff_id for r in reservations if r.role is Role.PREPARER]
            )
            outgoing.append(self._stamp(result, snapshot))
        elif kind == 1:
            # First time nobody fits: tell the engagement once, then keep trying quietly.
            if workflow.patched(PARTNER_OPTIONS_PATCH):
                result.options = self._options(request, result, snapshot)
            self._book.park(request, result.reason, since=workflow.now())
            self._book.count("decided")
            outgoing.append(self._stamp(result, snapshot))
        self._arrived.pop(request.workflow_id, None)

    def _options(
        self, request: AssignmentRequest, result: AssignmentResult, snapshot: CapacitySnapshot
    ) -> list[PartnerOption]:
        """The partner's choices for the role nobody could take (the last one decided)."""
        blocked = result.decisions[-1].role if result.decisions else Role.PREPARER
        if blocked is Role.REVIEWER:
            chosen = [d.chosen for d in result.decisions if d.role is Role.PREPARER]
            other = chosen[0] if chosen else request.keep_preparer
        else:
            other = request.keep_reviewer
        return partner_options(
            request,
            snapshot,
            self._book.working,
            role=blocked,
            other_role_holder=other,
            day_left=self._day_left(snapshot),
            limit=snapshot.policy.partner_candidates_shown,
            history=merged_history(
                request.client_id, self._book.history_of(), snapshot.client_history
            ),
        )

    def _day_left(self, snapshot: CapacitySnapshot) -> float:
        """The share of today's working hours still ahead on the firm's clock (1: all of it,
        also for a snapshot that does not carry the firm's clock)."""
        if snapshot.time_zone is None or snapshot.workday_start_hour is None:
            return 1.0
        if not workflow.patched(DAY_LEFT_PATCH):
            return 1.0
        share = day_left_at(
            workflow.now(),
            snapshot.time_zone,
            snapshot.workday_start_hour,
            snapshot.policy.workday_end_hour,
        )
        # Whole hundredths of the working day, rounded down (never more time than is left), so
        # the capacity arithmetic's caches stay warm from one batch to the next (a new share
        # every second would make each batch's first decisions recompute every person).
        return math.floor(share * 100) / 100

    def _stamp(self, result: AssignmentResult, snapshot: CapacitySnapshot) -> AssignmentResult:
        now = workflow.now()
        result.decided_at = now
        result.epoch = self._book.epoch
        result.capacity_as_of = snapshot.tracker_as_of or snapshot.taken_at
        result.capacity_note = self._capacity_note()
        result.decisions = [self._trimmed(d, now) for d in result.decisions]
        self._recent[result.request_id] = result
        while len(self._recent) > RECENT_ANSWERS:
            self._recent.popitem(last=False)
        return result

    @staticmethod
    def _trimmed(decision: Decision, now: datetime) -> Decision:
        decision.decided_at = now
        if len(decision.candidates) > CANDIDATES_SENT:
            decision.candidates = decision.candidates[:CANDIDATES_SENT]
        return decision

    def _answer_again(self, request: Request) -> AssignmentResult | None:
        """The answer to a request decided before: the full one if remembered, else rebuilt
        from what the ledger holds (decided before a continue-as-new)."""
        cached = self._recent.get(request.request_id)
        if cached is not None:
            return cached
        holdings = self._book.holdings(request.workflow_id)
        snapshot = self._snapshot
        if not holdings or snapshot is None:
            return None
        staff = {c.member.id: c.member for c in snapshot.staff}
        by_role = {r.role: r for r in holdings}
        preparer = by_role.get(Role.PREPARER)
        reviewer = by_role.get(Role.REVIEWER)
        if preparer is None or preparer.staff_id not in staff:
            return None
        return AssignmentResult(
            request_id=request.request_id,
            workflow_id=request.workflow_id,
            outcome="assigned",
            preparer=staff_ref(staff[preparer.staff_id]),
            reviewer=staff_ref(staff[reviewer.staff_id])
            if reviewer and reviewer.staff_id in staff
            else None,
            preparer_hours=preparer.hours,
            reviewer_hours=reviewer.hours if reviewer else 0.0,
            reason="decided earlier (the full explanation was sent with the first answer)",
            decided_at=workflow.now(),
            epoch=self._book.epoch,
        )

    def _drain_resends(self) -> list[AssignmentResult]:
        resends, self._resends = self._resends, []
        return resends

    # --- batching window -------------------------------------------------------------------

    async def _decide_in_window(self, window: float, changed: bool) -> None:
        """Collect a batch for ``window`` seconds, then assign it jointly (see the module doc)."""
        oldest = min(
            (self._arrived.get(w, workflow.now()) for w in self._book.live),
            default=workflow.now(),
        )
        left = oldest + timedelta(seconds=window) - workflow.now()
        if left > timedelta(0):
            await workflow.sleep(left, summary="batching window")
        changed = self._take_inbox() or changed
        snapshot, fresh = await self._ensure_snapshot(needed=True)
        changed = self._take_inbox() or changed or fresh
        if snapshot is None:
            return
        limit = self._batch_limit(snapshot)
        batch = self._book.take_live(limit)
        room = max(limit - len(batch), 0)
        parked = self._book.parked_due_first(room) if changed else []
        ordered = self._ordered(batch, parked)
        outgoing: list[AssignmentResult] = []
        plain = [t for t in ordered if isinstance(t[2], AssignmentRequest)]
        plan = await self._optimize(plain, snapshot) if plain else None
        # The ledger as it is now: releases and partner picks that arrived during the solve
        # count before the plan is applied; superseded or withdrawn requests drop out.
        freed = self._take_inbox()
        ordered = [t for t in ordered if self._still_current(t[2], t[0])]
        forced = [t for t in ordered if isinstance(t[2], ForceAssignRequest)]
        plain = [t for t in ordered if isinstance(t[2], AssignmentRequest)]
        outgoing += self._decide(forced, snapshot)
        if plan is None or plan.fallback is not None:
            outgoing += self._decide(plain, snapshot)
        else:
            outgoing += self._apply_plan(plain, snapshot, plan)
        if freed:
            decided = {t[2].workflow_id for t in ordered}
            rest = [p for p in self._book.parked_due_first(limit) if p.workflow_id not in decided]
            outgoing += self._decide(
                self._ordered([], rest[: max(limit - len(ordered), 0)]), snapshot
            )
        self._book.count("batches")
        await self._send(outgoing)

    def _still_current(self, request: Request, kind: int) -> bool:
        """Not withdrawn or superseded while the batch waited (window or solve)."""
        book = self._book
        if book.floor(request.workflow_id) >= request.sequence:
            return False
        newer = book.live.get(request.workflow_id)
        if newer is not None and newer.sequence > request.sequence:
            return False
        if kind == 0:
            parked = book.parked.get(request.workflow_id)
            return parked is not None and parked.request.sequence == request.sequence
        return True

    async def _optimize(
        self, ordered: Ordered, snapshot: CapacitySnapshot
    ) -> OptimizedBatch | None:
        """The solver, in an activity. None when it fails: the greedy rule decides instead."""
        limit = snapshot.policy.optimizer_time_limit_seconds
        requests = [r for _, _, r in ordered if isinstance(r, AssignmentRequest)]
        try:
            plan: OptimizedBatch = await workflow.execute_activity(
                OPTIMIZE_ACTIVITY,
                OptimizeBatchInput(
                    requests=requests,
                    snapshot=snapshot,
                    reservations=list(self._book.reservations()),
                    client_history=self._book.history_of(),
                    time_limit_seconds=limit,
                    day_left=self._day_left(snapshot),
                ),
                result_type=OptimizedBatch,
                start_to_close_timeout=timedelta(seconds=2 * limit + 30),
                # Bounded overall: a worker without the optimiser (or none polling) must not
                # hold the firm's dispatch; the greedy rule answers instead.
                schedule_to_close_timeout=timedelta(seconds=4 * limit + 90),
                heartbeat_timeout=options.HEARTBEAT,
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary=f"assign {len(requests)} jointly",
            )
        except ActivityError as err:
            workflow.logger.warning("optimizer unavailable, deciding greedily: %s", err)
            return None
        return plan

    def _apply_plan(
        self, ordered: Ordered, snapshot: CapacitySnapshot, plan: OptimizedBatch
    ) -> list[AssignmentResult]:
        """The plan, re-checked against the ledger as it is; runs without awaiting."""
        planned: dict[str, dict[Role, str]] = {}
        for role in plan.assignments:
            planned.setdefault(role.request_id, {})[role.role] = role.staff_id
        requests = [r for _, _, r in ordered if isinstance(r, AssignmentRequest)]
        applied = apply_plan(
            requests,
            snapshot,
            self._book.working,
            self._book.history_of(),
            planned,
            day_left=self._day_left(snapshot),
        )
        if applied.replanned:
            workflow.logger.info(
                "%d planned assignment(s) no longer fit; decided by the greedy rule",
                len(applied.replanned),
            )
        outgoing = self._drain_resends()
        for (kind, _, request), (result, reservations) in zip(
            ordered, applied.outcomes, strict=True
        ):
            assert isinstance(request, AssignmentRequest)
            self._record(kind, request, result, reservations, snapshot, outgoing)
        return outgoing

    # --- capacity ----------------------------------------------------------------------------

    def _retry_interval(self) -> timedelta:
        snapshot = self._snapshot
        if snapshot is None:
            return SNAPSHOT_RETRY
        ttl = timedelta(seconds=snapshot.policy.snapshot_ttl_seconds)
        interval = max(min(SNAPSHOT_RETRY, ttl), timedelta(seconds=5))
        # A tracker that said when to ask again (rate limit, quota) is not asked sooner. Only
        # snapshots read by this code carry it, so histories recorded before replay unchanged.
        asked = None if snapshot.tracker_ok else snapshot.tracker_retry_after_seconds
        return max(interval, timedelta(seconds=asked)) if asked else interval

    def _degraded(self) -> bool:
        snapshot = self._snapshot
        return snapshot is None or not snapshot.tracker_ok

    def _capacity_note(self) -> str | None:
        snapshot = self._snapshot
        if snapshot is None or snapshot.tracker_ok:
            return None
        as_of = snapshot.tracker_as_of
        since = f"read at {as_of:%Y-%m-%d %H:%M} UTC" if as_of else "the firm file's weekly hours"
        return (
            f"the time tracker is unavailable ({snapshot.tracker_error or 'no answer'}); "
            f"capacity uses the last figures ({since})"
        )

    async def _ensure_snapshot(self, needed: bool) -> tuple[CapacitySnapshot | None, bool]:
        """The capacity snapshot (and whether it was read just now), read again when older than
        the policy allows. Never raises: a failure keeps the snapshot in hand, its age shown in
        every decision, and the next read is tried after ``self._retry_interval()``."""
        snapshot = self._snapshot
        if not needed:
            return snapshot, False
        now = workflow.now()
        if snapshot is not None and self._snapshot_at is not None:
            ttl = timedelta(seconds=snapshot.policy.snapshot_ttl_seconds)
            if snapshot.tracker_ok and now - self._snapshot_at < ttl:
                return snapshot, False
        if (
            self._snapshot_failed_at is not None
            and now - self._snapshot_failed_at < self._retry_interval()
        ):
            return snapshot, False
        try:
            fresh = await options.SNAPSHOT.run(
                FirmActivities.capacity_snapshot,
                SnapshotInput(
                    firm_id=self._firm_id,
                    last_tracker=self._book.tracker or None,
                    last_tracker_at=self._book.tracker_as_of,
                ),
                "capacity snapshot",
            )
        except ActivityError as err:
            self._snapshot_failed_at = workflow.now()
            workflow.logger.warning("capacity snapshot failed; keeping the last one: %s", err)
            return snapshot, False
        self._snapshot = fresh
        self._snapshot_at = workflow.now()
        self._snapshot_failed_at = None
        if fresh.tracker_ok:
            self._book.tracker = [
                TrackerFigures(
                    staff_id=c.member.id,
                    weekly_capacity_hours=c.weekly_capacity_hours,
                    logged_this_week=c.logged_this_week,
                    logged_last_week=c.logged_last_week,
                )
                for c in fresh.staff
            ]
            self._book.tracker_as_of = fresh.taken_at
            if self._book.outage_since is not None:
                await self._tell(fresh, recovered=True)
            self._book.outage_since = None
        else:
            self._snapshot_failed_at = workflow.now()
            if self._book.outage_since is None:
                # A new outage. One carried from the run before was told there (a run with a
                # notice owed does not continue as new).
                self._book.outage_since = workflow.now()
                await self._tell(fresh, recovered=False)
        return fresh, True

    async def _tell(self, snapshot: CapacitySnapshot, *, recovered: bool) -> None:
        """Once per outage (and once when it heals): the managing partner hears of it, in the
        background, in order (an outage's end is never told before its start)."""
        since = self._book.outage_since or workflow.now()
        if not workflow.patched(NOTICE_BESIDE_PATCH):
            await self._tell_outage(snapshot, recovered=recovered, since=since)
            return
        earlier = self._notice

        async def in_turn() -> None:
            if earlier is not None:
                await earlier
            await self._tell_outage(snapshot, recovered=recovered, since=since)

        self._notice = asyncio.create_task(in_turn())

    def _notice_owed(self) -> bool:
        return self._notice is not None and not self._notice.done()

    async def _notice_or_message(self) -> None:
        """Time to continue as new, but a notice is still on its way (a run that ended would
        drop it): go on deciding meanwhile. Bounded by the notice's own total timeout."""
        await workflow.wait_condition(
            lambda: (
                not self._notice_owed() or bool(self._inbox or self._syncs or self._rebuild_asked)
            ),
        )

    async def _tell_outage(
        self, snapshot: CapacitySnapshot, *, recovered: bool, since: datetime
    ) -> None:
        try:
            await options.CHAT_NOTICE.run(
                FirmActivities.capacity_outage_notice,
                CapacityOutageNotice(
                    key=f"{workflow.info().workflow_id}:tracker:{since:%Y%m%dT%H%M%S}"
                    + (":recovered" if recovered else ""),
                    since=since,
                    capacity_as_of=self._book.tracker_as_of,
                    detail=snapshot.tracker_error or "",
                    recovered=recovered,
                ),
                "tell the managing partner about the time tracker",
            )
        except ActivityError as err:
            workflow.logger.warning("could not tell the managing partner: %s", err)

    # --- the ledger's own life ---------------------------------------------------------------

    async def _rebuild_if_needed(self) -> None:
        """Rebuild on a fresh start, after a reset, or when an operator asks: a new epoch, every
        running engagement asked (and told), the ledger replaced by what they hold."""
        if self._reset_detected() or self._rebuild_asked:
            self._ready = False
            self._rebuild_asked = False
        if self._ready:
            return
        if self._rebuild_after is not None and workflow.now() < self._rebuild_after:
            await workflow.sleep(self._rebuild_after - workflow.now(), summary="retry rebuild")
        # A new epoch: engagements told of it refuse answers from the ledger that was lost.
        self._book.epoch = f"{workflow.now():%Y%m%dT%H%M%S.%f}-{workflow.uuid4().hex[:8]}"
        if await self._collect(update=True, settle=SETTLE):
            self._ready = True
            self._rebuild_after = None
            self._book.count("rebuilds")
        else:
            delay = REBUILD_RETRY[0] if self._rebuild_after is None else REBUILD_RETRY[1]
            self._rebuild_after = workflow.now() + delay

    async def _collect(self, *, update: bool, settle: timedelta) -> bool:
        """Read every running engagement's holdings (and live request) and rebuild from them."""
        facts: list[EngagementHoldings] = []
        token: str | None = None
        unanswered: list[str] = []
        for page in range(REBUILD_PAGES):
            try:
                collected = await options.LEDGER.run(
                    FirmActivities.collect_holdings,
                    CollectHoldingsInput(
                        firm_id=self._firm_id,
                        epoch=self._book.epoch if update else None,
                        page_token=token,
                        settle_seconds=settle.total_seconds() if page == 0 else 0.0,
                    ),
                    "collect the engagements' holdings",
                )
            except ActivityError as err:
                workflow.logger.warning("ledger rebuild failed, will retry: %s", err)
                return False
            facts += collected.engagements
            unanswered += collected.unanswered
            token = collected.next_page_token
            if token is None:
                break
        requests = self._book.rebuild(facts, keep_newer=not update)
        for request in requests:
            self._book.offer(request)
        now = workflow.now()
        if update:
            self._book.rebuilt_at = now
        self._book.reconciled_at = now
        self._book.closed_checked_at = now
        workflow.logger.info(
            "ledger %s from %d engagements (%d live requests, %d did not answer)",
            "rebuilt" if update else "reconciled",
            len(facts),
            len(requests),
            len(unanswered),
        )
        return True

    def _reset_detected(self) -> bool:
        """True once, in the first workflow task this run executes after a reset.

        A reset run replays the old run's history up to the reset point, then goes on. The
        check asks ``patched`` with an id naming this run and the current history length:
        while replaying the copied history no such marker exists and it answers False (the
        code decides nothing differently from that history); in the first task past the reset
        point it records the marker and answers True, and every later replay finds the marker
        at the same length. Runs that were never reset (original run id) never ask.
        """
        info = workflow.info()
        original = info.original_execution_run_id
        if self._reset_handled or not original or info.run_id == original:
            return False
        length = info.get_current_history_length()
        if workflow.patched(f"ledger-rebuild-after-reset-{info.run_id}-{length}"):
            self._reset_handled = True
            workflow.logger.info("dispatcher was reset: rebuilding the ledger")
            return True
        return False

    async def _housekeeping(self) -> bool:
        """Hourly: release what closed engagements held. Daily: reconcile with every engagement
        and continue as new (the daily upgrade point). True when something ran."""
        now = workflow.now()
        book = self._book
        probe = self._probe_at()
        if probe is not None and now >= probe:
            # Always a read: the outage keeps the snapshot stale, and its retry time is due. A
            # failed read moves the next probe on, a good one ends the outage (no spin either way).
            await self._read_tracker_again()
            return True
        if not book.entries and not book.parked:
            return False
        if now - (book.reconciled_at or book.rebuilt_at or now) >= RECONCILE:
            if await self._collect(update=False, settle=timedelta(0)):
                book.count("reconciliations")
                self._continue = True
            else:
                book.reconciled_at = now  # try again tomorrow; the hourly check goes on
            return True
        since = book.closed_checked_at or now
        if now - since >= CLOSED_CHECK:
            await self._release_closed(since)
            return True
        failed = self._snapshot_failed_at
        if self._degraded() and book.parked and failed and now - failed >= self._retry_interval():
            await self._read_tracker_again()
            return True
        return False

    async def _read_tracker_again(self) -> None:
        """Retried in the background: when the tracker is back, parked work gets its try."""
        snapshot, fresh = await self._ensure_snapshot(needed=True)
        book = self._book
        if snapshot is not None and fresh and book.parked:
            parked = self._ordered([], book.parked_due_first(self._batch_limit(snapshot)))
            await self._send(self._decide(parked, snapshot))

    async def _release_closed(self, since: datetime) -> None:
        """Engagements that closed without giving their hours back (terminated, timed out)."""
        started = workflow.now()
        try:
            closed = await options.LEDGER.run(
                FirmActivities.closed_engagements,
                ClosedEngagementsInput(firm_id=self._firm_id, since=since - timedelta(minutes=5)),
                "engagements closed since the last check",
            )
        except ActivityError as err:
            workflow.logger.warning("closed-engagement check failed: %s", err)
            self._book.closed_checked_at = started
            return
        released = sum(1 for w in closed.workflow_ids if self._book.forget(w))
        self._book.closed_checked_at = started
        if released:
            workflow.logger.info("released the hours of %d closed engagement(s)", released)
            self._book.count("released_closed", released)

    # --- answering -----------------------------------------------------------------------------

    async def _send(self, results: list[AssignmentResult]) -> None:
        """Signal every engagement its answer concurrently (one by one was 4x slower in §7)."""
        if not results:
            return
        self._report()
        outcomes = await asyncio.gather(*(self._signal(r) for r in results))
        for result, delivered in zip(results, outcomes, strict=True):
            if not delivered:
                # The engagement is gone (terminated or closed): give its hours back.
                self._book.forget(result.workflow_id)

    def _report(self) -> None:
        """The partner-review queue and each person's booked hours, for the operator's
        dashboard (metrics are not recorded while replaying)."""
        meter = workflow.metric_meter()
        book = self._book
        now = workflow.now()
        waiting = [p.since for p in book.parked.values() if p.since is not None]
        meter.create_gauge("dispatch_partner_review_queue", "engagements waiting").set(
            len(book.parked)
        )
        meter.create_gauge_float(
            "dispatch_partner_review_oldest", "oldest wait for a partner", "s"
        ).set((now - min(waiting)).total_seconds() if waiting else 0.0)
        snapshot = self._snapshot
        if snapshot is None:
            return
        booked = meter.create_gauge_float("dispatch_booked_hours", "hours reserved on open work")
        capacity = meter.create_gauge_float("dispatch_capacity_hours", "weekly capacity")
        totals: dict[str, float] = {}
        for reservation in book.reservations():
            totals[reservation.staff_id] = totals.get(reservation.staff_id, 0.0) + reservation.hours
        for cap in snapshot.staff:
            who = {"staff": cap.member.id}
            booked.with_additional_attributes(who).set(round(totals.get(cap.member.id, 0.0), 2))
            capacity.with_additional_attributes(who).set(cap.weekly_capacity_hours)

    async def _signal(self, result: AssignmentResult) -> bool:
        handle = workflow.get_external_workflow_handle(result.workflow_id)
        try:
            await handle.signal(RESULT_SIGNAL, result)
        except FailureError:
            workflow.logger.warning(
                "engagement %s did not take its assignment result", result.workflow_id
            )
            return False
        return True


__all__ = [
    "CONTINUE_WHEN_BUSY_PATCH",
    "DAY_LEFT_PATCH",
    "NOTICE_BESIDE_PATCH",
    "OPEN_HOURS_PATCH",
    "OPTIMIZE_ACTIVITY",
    "PARTNER_OPTIONS_PATCH",
    "PROBE_PATCH",
    "RESULT_SIGNAL",
    "DispatcherWorkflow",
]
