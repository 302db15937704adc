"""The firm's dispatcher: the one place that chooses people and owns every reservation.

Why an entity workflow, and why signals (DESIGN §3.1, §7): choice and reservation must happen
in one place so concurrent arrivals cannot double-book. Temporal runs one workflow task at a
time per execution, and ``decide_batch`` runs without an ``await`` between reading the ledger
and writing it, so no two decisions can interleave. Engagements talk to it by signal, not by
Update: a month-end burst of Updates hits the server's limit of 10 in-flight Updates per
workflow and callers storm with retries, while signals queue without limit and every workflow
task drains all that arrived, deciding them as one batch (the hook for joint optimisation).
Results go back to each engagement as signals, all sent concurrently.

Idempotency: a request carries ``{workflow_id}:req-{n}``; a repeat gets the cached answer.
Releases are keyed by engagement and role, so releasing twice is harmless.
Requests nobody can take are parked and retried whenever capacity is released or the
capacity snapshot is refreshed; the engagement hears again when one fits.

The batching window (``Policy.batch_window_seconds``; 0, the default, turns it off and leaves
everything above exactly as it is). With a window, the first new request of a batch starts a
durable timer; everything arriving until it fires joins the batch, which then goes, with the
parked requests due a retry, to the ``optimize_assignments`` activity (CP-SAT, in
``dispatch.optimizer``). The plan comes back as who-takes-which-role; the dispatcher applies it
with ``apply_plan``, re-checking every planned person against the ledger as it is then
(releases and partner decisions that arrived during the solve are applied first), and anything
that no longer fits, or an optimiser that fails or falls back, is decided by the greedy rule.
The latency trade-off: each engagement in a batch hears its answer after the window plus the
solve (up to ``optimizer_time_limit_seconds``, typically ~1-2 s for a month-end burst of 150)
instead of within a second; in exchange a burst is assigned jointly, so an early job does not
take the only specialist a later job needs, and more of the burst's hours are placed. A
window of a few seconds costs nothing a person notices in a workflow measured in days; with
webhook sources that coalesce (Karbon: 60 s) a window of that order gathers whole bursts.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.firm import FirmActivities
    from dispatch.decision import Ledger, decide, partner_assignment
    from dispatch.models import (
        AssignmentRequest,
        AssignmentResult,
        BookingsView,
        CapacitySnapshot,
        DispatcherInput,
        DispatcherState,
        ForceAssignRequest,
        OptimizeBatchInput,
        OptimizedBatch,
        ReleaseRequest,
        Reservation,
        Role,
        SnapshotInput,
        StaffBooking,
    )
    from dispatch.optimizer import apply_plan
    from workflows import options

RESULT_SIGNAL = "assignment_decided"
"""The engagement's signal that receives an AssignmentResult (named, to avoid an import cycle)."""

RESULT_CACHE = 2000
BATCH_LIMIT = 150
"""Decisions per workflow task. A decision costs ~1-2 ms on a 15-person firm; the cap keeps a
month-end burst far from the 2 s deadlock detector, and the rest follows in the next task."""
HISTORY_PER_CLIENT = 5
OPTIMIZE_ACTIVITY = "optimize_assignments"
"""``activities.optimizer.OptimizerActivities`` (named here, so this module never imports the
solver)."""

Ordered = list[tuple[int, int, AssignmentRequest]]
"""(kind: 0 parked / 1 new, position, request), earliest due first, parked first on a tie."""


@workflow.defn
class DispatcherWorkflow:
    @workflow.init
    def __init__(self, input: DispatcherInput) -> None:
        self._firm_id = input.firm_id
        self._state = input.state or DispatcherState()
        self._pending: list[AssignmentRequest] = []
        self._releases: list[ReleaseRequest] = []
        self._forced: list[ForceAssignRequest] = []
        self._batch_open = False
        """A batching window (or its solve) is running: see ``release``."""
        self._in_flight: list[AssignmentRequest] = []
        self._withdrawn: set[str] = set()
        self._arrived: dict[str, datetime] = {}
        """When each pending request first arrived (workflow time): a window closes ``window``
        seconds after the oldest one, so requests carried over a full batch wait no longer."""

    # --- messages ------------------------------------------------------------------------

    @workflow.signal
    def request_assignment(self, request: AssignmentRequest) -> None:
        self._pending.append(request)
        self._arrived.setdefault(request.request_id, workflow.now())

    @workflow.signal
    def release(self, request: ReleaseRequest) -> None:
        self._releases.append(request)
        if self._batch_open and request.withdraw_request:
            # A window lets a release overtake the unanswered request it follows: the
            # engagement is gone, so its waiting request is withdrawn. A request sent after
            # the release (a re-dispatch) is not, as it is not here yet.
            self._withdrawn.update(
                r.request_id
                for r in [*self._pending, *self._in_flight]
                if r.workflow_id == request.workflow_id
            )

    @workflow.signal
    def force_assign(self, request: ForceAssignRequest) -> None:
        self._forced.append(request)

    @workflow.query
    def bookings(self) -> BookingsView:
        snapshot = self._state.snapshot
        staff = []
        for cap in snapshot.staff if snapshot else []:
            mine = [r for r in self._state.reservations if r.staff_id == cap.member.id]
            staff.append(
                StaffBooking(
                    staff_id=cap.member.id,
                    name=cap.member.name,
                    weekly_capacity_hours=cap.weekly_capacity_hours,
                    reserved_hours=round(sum(r.hours for r in mine), 2),
                    reservations=mine,
                )
            )
        return BookingsView(
            firm_id=self._firm_id,
            staff=staff,
            parked=[r.workflow_id for r in self._state.parked],
            batches=self._state.batches,
            decided=self._state.decided,
        )

    @workflow.query
    def snapshot(self) -> CapacitySnapshot | None:
        return self._state.snapshot

    # --- main loop -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DispatcherInput) -> None:
        while True:
            await workflow.wait_condition(
                lambda: (
                    bool(self._pending or self._releases or self._forced)
                    or workflow.info().is_continue_as_new_suggested()
                )
            )
            if self._pending or self._releases or self._forced:
                await self._process()
                continue
            # Nothing queued and the history is long: start afresh with the state carried over.
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not (self._pending or self._releases or self._forced):
                workflow.continue_as_new(DispatcherInput(firm_id=self._firm_id, state=self._state))

    async def _process(self) -> None:
        capacity_changed = self._apply_releases()
        fresh = await self._ensure_snapshot(
            needed=bool(self._pending or self._forced or (capacity_changed and self._state.parked))
        )
        window = self._window_seconds()
        if window > 0 and self._has_new_requests():
            await self._process_window(window, capacity_changed, fresh)
            return
        # Requests that arrived while the snapshot was read join this batch.
        capacity_changed = self._apply_releases() or capacity_changed
        batch = self._take_batch()
        forced, self._forced = self._forced, []
        outgoing: list[AssignmentResult] = []

        outgoing += self._apply_forced(forced)

        new = self._new_requests(batch, outgoing)

        retry_parked = capacity_changed or fresh
        room = max(BATCH_LIMIT - len(new), 0)
        parked = sorted(self._state.parked, key=lambda p: p.due_date)[:room] if retry_parked else []
        snapshot = self._state.snapshot
        if snapshot is not None and (new or parked):
            outgoing += self._decide(new, parked, snapshot)
        self._state.batches += 1
        await self._send(outgoing)

    def _decide(
        self,
        new: list[AssignmentRequest],
        parked: list[AssignmentRequest],
        snapshot: CapacitySnapshot,
    ) -> list[AssignmentResult]:
        """Greedy, earliest due date first; parked requests go before new ones of the same date.

        Runs without awaiting: reading the ledger and writing it is one atomic step.
        """
        return self._decide_ordered(self._ordered(new, parked), snapshot)

    @staticmethod
    def _ordered(new: list[AssignmentRequest], parked: list[AssignmentRequest]) -> Ordered:
        return sorted(
            [(0, i, r) for i, r in enumerate(parked)] + [(1, i, r) for i, r in enumerate(new)],
            key=lambda t: (t[2].due_date, t[0], t[1]),
        )

    def _decide_ordered(
        self, ordered: Ordered, snapshot: CapacitySnapshot
    ) -> list[AssignmentResult]:
        ledger = Ledger(list(self._state.reservations))
        now = workflow.now()
        outgoing: list[AssignmentResult] = []
        for kind, _, request in ordered:
            result, reservations = decide(request, snapshot, ledger, self._state.client_history)
            if result.outcome == "assigned":
                for reservation in reservations:
                    ledger.add(reservation)
            self._record(kind, request, result, reservations, now, outgoing)
        self._state.reservations = ledger.reservations
        return outgoing

    def _record(
        self,
        kind: int,
        request: AssignmentRequest,
        result: AssignmentResult,
        reservations: list[Reservation],
        now: datetime,
        outgoing: list[AssignmentResult],
    ) -> None:
        """Book-keeping for one decision whose reservations are already in the ledger."""
        result.decided_at = now
        for decision in result.decisions:
            decision.decided_at = now
        if result.outcome == "assigned":
            self._remember_client(
                request.client_id, [r.staff_id for r in reservations if r.role is Role.PREPARER]
            )
            self._state.parked = [
                p for p in self._state.parked if p.request_id != request.request_id
            ]
            self._cache(result)
            outgoing.append(result)
        elif kind == 1:
            # First time nobody fits: tell the engagement once, then keep trying quietly.
            self._state.parked.append(request)
            self._cache(result)
            outgoing.append(result)
        self._state.decided += 1

    def _take_batch(self) -> list[AssignmentRequest]:
        batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
        left = {r.request_id for r in self._pending}
        for request in batch:
            if request.request_id not in left:
                self._arrived.pop(request.request_id, None)
        return batch

    # --- batching window -------------------------------------------------------------------

    def _window_seconds(self) -> float:
        snapshot = self._state.snapshot
        return snapshot.policy.batch_window_seconds if snapshot is not None else 0.0

    def _has_new_requests(self) -> bool:
        """Anything pending that is neither a resend of a decided request nor already parked."""
        parked = {p.request_id for p in self._state.parked}
        return any(
            r.request_id not in self._state.results and r.request_id not in parked
            for r in self._pending
        )

    def _new_requests(
        self, batch: list[AssignmentRequest], outgoing: list[AssignmentResult]
    ) -> list[AssignmentRequest]:
        """A resend gets its cached answer, a parked one waits its turn (and a withdrawn one,
        only possible with a window, is dropped)."""
        new: list[AssignmentRequest] = []
        for request in batch:
            cached = self._state.results.get(request.request_id)
            if cached is not None:
                outgoing.append(cached)  # a resend: same answer, no new decision
            elif any(p.request_id == request.request_id for p in self._state.parked):
                continue
            elif request.request_id not in self._withdrawn:
                new.append(request)
        return new

    def _window_left(self, window: float) -> timedelta:
        """What is left of the window of the oldest pending request. Requests left over from a
        full batch (``BATCH_LIMIT``) or that arrived during a solve have waited already: their
        window is shorter, or over, so a burst of 500 does not wait a window per 150."""
        oldest = min(
            (self._arrived[r.request_id] for r in self._pending if r.request_id in self._arrived),
            default=workflow.now(),
        )
        return max(oldest + timedelta(seconds=window) - workflow.now(), timedelta(0))

    async def _process_window(self, window: float, capacity_changed: bool, fresh: bool) -> None:
        """Collect a batch for ``window`` seconds, then assign it jointly (see the module doc)."""
        self._batch_open = True
        outgoing: list[AssignmentResult] = []
        try:
            left = self._window_left(window)
            if left > timedelta(0):
                await workflow.sleep(left, summary="batching window")
            capacity_changed = self._apply_releases() or capacity_changed
            fresh = await self._ensure_snapshot(needed=True) or fresh
            capacity_changed = self._apply_releases() or capacity_changed
            self._pending = [p for p in self._pending if p.request_id not in self._withdrawn]
            batch = self._take_batch()
            forced, self._forced = self._forced, []
            outgoing += self._apply_forced(forced)
            # A resend that arrived within the window is the same request: decide it once
            # (two copies would make the optimiser see one engagement twice).
            new = list({r.request_id: r for r in self._new_requests(batch, outgoing)}.values())
            room = max(BATCH_LIMIT - len(new), 0)
            retry = capacity_changed or fresh
            parked = sorted(self._state.parked, key=lambda p: p.due_date)[:room] if retry else []
            snapshot = self._state.snapshot
            if snapshot is not None and (new or parked):
                ordered = self._ordered(new, parked)
                self._in_flight = [r for _, _, r in ordered]
                plan = await self._optimize(ordered, snapshot)
                # The ledger as it is now: what was released or decided by a partner while
                # the solver ran counts before the plan is applied.
                freed = self._apply_releases()
                late, self._forced = self._forced, []
                outgoing += self._apply_forced(late)
                ordered = [t for t in ordered if t[2].request_id not in self._withdrawn]
                ordered = [
                    t
                    for t in ordered
                    if t[0] == 1 or any(p.request_id == t[2].request_id for p in self._state.parked)
                ]
                if plan is None or plan.fallback is not None:
                    outgoing += self._decide_ordered(ordered, snapshot)
                else:
                    outgoing += self._apply_plan(ordered, snapshot, plan)
                if freed:
                    # Capacity came back during the solve: parked requests get their retry.
                    decided = {r.request_id for _, _, r in ordered}
                    rest = [p for p in self._state.parked if p.request_id not in decided]
                    rest = sorted(rest, key=lambda p: p.due_date)[: BATCH_LIMIT - len(ordered)]
                    outgoing += self._decide([], rest, snapshot)
        finally:
            self._batch_open = False
            self._in_flight = []
            self._pending = [p for p in self._pending if p.request_id not in self._withdrawn]
            for request_id in self._withdrawn:
                self._arrived.pop(request_id, None)
            self._withdrawn.clear()
        self._state.batches += 1
        await self._send(outgoing)

    async def _optimize(
        self, ordered: Ordered, snapshot: CapacitySnapshot
    ) -> OptimizedBatch | None:
        """The solver, in an activity. None when it fails: the greedy rule decides instead."""
        limit = snapshot.policy.optimizer_time_limit_seconds
        try:
            plan: OptimizedBatch = await workflow.execute_activity(
                OPTIMIZE_ACTIVITY,
                OptimizeBatchInput(
                    requests=[r for _, _, r in ordered],
                    snapshot=snapshot,
                    reservations=list(self._state.reservations),
                    client_history=self._state.client_history,
                    time_limit_seconds=limit,
                ),
                result_type=OptimizedBatch,
                # The solve stops itself at the limit; the rest is building the model.
                start_to_close_timeout=timedelta(seconds=2 * limit + 30),
                # Bounded overall too: a worker without the optimiser (or none polling) must
                # not hold the firm's dispatch; the greedy rule answers instead.
                schedule_to_close_timeout=timedelta(seconds=4 * limit + 90),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary=f"assign {len(ordered)} jointly",
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
        ledger = Ledger(list(self._state.reservations))
        applied = apply_plan(
            [r for _, _, r in ordered], snapshot, ledger, self._state.client_history, planned
        )
        if applied.replanned:
            workflow.logger.info(
                "%d planned assignment(s) no longer fit; decided by the greedy rule",
                len(applied.replanned),
            )
        now = workflow.now()
        outgoing: list[AssignmentResult] = []
        for (kind, _, request), (result, reservations) in zip(
            ordered, applied.outcomes, strict=True
        ):
            self._record(kind, request, result, reservations, now, outgoing)
        self._state.reservations = ledger.reservations
        return outgoing

    def _apply_releases(self) -> bool:
        releases, self._releases = self._releases, []
        changed = False
        for release in releases:
            before = len(self._state.reservations)
            self._state.reservations = [
                r
                for r in self._state.reservations
                if not (r.workflow_id == release.workflow_id and r.role in release.roles)
            ]
            changed = changed or len(self._state.reservations) != before
            if release.withdraw_request:
                self._state.parked = [
                    p for p in self._state.parked if p.workflow_id != release.workflow_id
                ]
        return changed

    def _apply_forced(self, forced: list[ForceAssignRequest]) -> list[AssignmentResult]:
        """A partner's decision. Recorded as such; an over-capacity one only when explicit."""
        outgoing = []
        snapshot = self._state.snapshot
        for request in forced:
            cached = self._state.results.get(request.request_id)
            if cached is None and snapshot is not None:
                ledger = Ledger(list(self._state.reservations))
                cached, reservation = partner_assignment(request, snapshot, ledger)
                cached.decided_at = workflow.now()
                if reservation is not None:
                    ledger.add(reservation)
                    self._state.reservations = ledger.reservations
                    self._state.parked = [
                        p for p in self._state.parked if p.workflow_id != request.workflow_id
                    ]
                    self._remember_client(request.client_id, [request.staff_id])
                self._cache(cached)
            if cached is not None:
                outgoing.append(cached)
        return outgoing

    async def _ensure_snapshot(self, needed: bool) -> bool:
        """Read capacity again when the last snapshot is older than the policy allows."""
        if not needed:
            return False
        snapshot = self._state.snapshot
        ttl = timedelta(seconds=snapshot.policy.snapshot_ttl_seconds) if snapshot else None
        taken = self._state.snapshot_at
        if (
            snapshot is not None
            and ttl is not None
            and taken is not None
            and workflow.now() - taken < ttl
        ):
            return False
        self._state.snapshot = await options.FIRM.run(
            FirmActivities.capacity_snapshot,
            SnapshotInput(firm_id=self._firm_id),
            "capacity snapshot",
        )
        self._state.snapshot_at = workflow.now()
        return True

    async def _send(self, results: list[AssignmentResult]) -> None:
        """Signal every engagement its answer concurrently (one by one was 4x slower in §7)."""
        if not results:
            return
        outcomes = await asyncio.gather(*(self._signal(r) for r in results))
        for result, delivered in zip(results, outcomes, strict=True):
            if not delivered and result.outcome == "assigned":
                # The engagement is gone (terminated or closed): give the hours back.
                self._releases.append(
                    ReleaseRequest(workflow_id=result.workflow_id, reason="engagement not running")
                )

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

    def _cache(self, result: AssignmentResult) -> None:
        if result.request_id not in self._state.results:
            self._state.result_order.append(result.request_id)
        self._state.results[result.request_id] = result
        while len(self._state.result_order) > RESULT_CACHE:
            self._state.results.pop(self._state.result_order.pop(0), None)

    def _remember_client(self, client_id: str, staff_ids: list[str]) -> None:
        if not staff_ids:
            return
        known = self._state.client_history.get(client_id, [])
        self._state.client_history[client_id] = list(dict.fromkeys([*staff_ids, *known]))[
            :HISTORY_PER_CLIENT
        ]


__all__ = ["OPTIMIZE_ACTIVITY", "RESULT_SIGNAL", "DispatcherWorkflow"]
