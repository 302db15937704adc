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
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

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
        ReleaseRequest,
        Role,
        SnapshotInput,
        StaffBooking,
    )
    from workflows import options

RESULT_SIGNAL = "assignment_decided"
"""The engagement's signal that receives an AssignmentResult (named, to avoid an import cycle)."""

RESULT_CACHE = 2000
BATCH_LIMIT = 150
"""Decisions per workflow task. A decision costs ~1-2 ms on a 15-person firm; the cap keeps a
month-end burst far from the 2 s deadlock detector, and the rest follows in the next task."""
HISTORY_PER_CLIENT = 5


@workflow.defn
class DispatcherWorkflow:
    @workflow.init
    def __init__(self, input: DispatcherInput) -> None:
        self._firm_id = input.firm_id
        self._state = input.state or DispatcherState()
        self._pending: list[AssignmentRequest] = []
        self._releases: list[ReleaseRequest] = []
        self._forced: list[ForceAssignRequest] = []

    # --- messages ------------------------------------------------------------------------

    @workflow.signal
    def request_assignment(self, request: AssignmentRequest) -> None:
        self._pending.append(request)

    @workflow.signal
    def release(self, request: ReleaseRequest) -> None:
        self._releases.append(request)

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
        # Requests that arrived while the snapshot was read join this batch.
        capacity_changed = self._apply_releases() or capacity_changed
        batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
        forced, self._forced = self._forced, []
        outgoing: list[AssignmentResult] = []

        outgoing += self._apply_forced(forced)

        new: list[AssignmentRequest] = []
        for request in batch:
            cached = self._state.results.get(request.request_id)
            if cached is not None:
                outgoing.append(cached)  # a resend: same answer, no new decision
            elif any(p.request_id == request.request_id for p in self._state.parked):
                continue
            else:
                new.append(request)

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
        ledger = Ledger(list(self._state.reservations))
        ordered = sorted(
            [(0, i, r) for i, r in enumerate(parked)] + [(1, i, r) for i, r in enumerate(new)],
            key=lambda t: (t[2].due_date, t[0], t[1]),
        )
        now = workflow.now()
        outgoing: list[AssignmentResult] = []
        for kind, _, request in ordered:
            result, reservations = decide(request, snapshot, ledger, self._state.client_history)
            result.decided_at = now
            for decision in result.decisions:
                decision.decided_at = now
            if result.outcome == "assigned":
                for reservation in reservations:
                    ledger.add(reservation)
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


__all__ = ["RESULT_SIGNAL", "DispatcherWorkflow"]
