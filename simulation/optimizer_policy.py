"""P4: production's batch optimizer, ``dispatch.optimizer.optimize_batch``, called as it is.

The dispatcher with the optimizer on hands every batch (new requests and parked ones being
retried) to ``optimize_batch`` instead of the greedy loop; the simulator does the same. A
batch is what arrives together: the month-start burst of monthly-close and sales-tax jobs at
08:00 on the first working day, the April 1 payroll burst, extensions filed on a deadline
morning, and the parked requests retried when hours are released. A single request is a batch
of one is decided by production's greedy rule, as P3 would (see ``decide``).

``time_limit_s`` is CP-SAT's deterministic time, so a run gives the same plan on any machine.
A partner's decision on a parked request goes through production's ``partner_assignment``,
exactly as for P3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dispatch.config import Policy
from dispatch.models import AssignmentRequest, CapacitySnapshot, Reservation
from dispatch.optimizer import optimize_batch
from simulation.policies import (
    DispatchView,
    Levers,
    Outcome,
    Pending,
    Production,
    batch_order,
    outcome_of,
    remember,
)


class BatchOptimizer:
    batch_window_hours = 5.0 / 3600.0
    """Five seconds: arrivals that share a moment are decided together."""

    def __init__(
        self,
        *,
        seed: int = 0,
        time_limit_s: float | None = None,
        levers: Levers | None = None,
        name: str = "P4",
    ) -> None:
        self.seed = seed
        self.name = name
        self.time_limit_s = (
            Policy().optimizer_time_limit_seconds if time_limit_s is None else time_limit_s
        )
        self.last_batch: dict[str, Any] | None = None
        self._greedy = Production(levers, name)
        self.levers = self._greedy.levers
        self.ledger = self._greedy.ledger

    def decide(self, view: DispatchView, batch: Sequence[Pending]) -> list[Outcome]:
        if len(batch) < 2:
            # Nothing to decide jointly: a lone request takes production's greedy rule (the
            # anchors' "single new jobs dispatched by P3' between batches"), which keeps P4 -
            # P3 the effect of deciding bursts jointly and nothing else.
            self.last_batch = None
            return self._greedy.decide(view, batch)
        ordered = batch_order(batch)
        ledger = view.ledger()
        history = view.learned_history()
        self._greedy.take_holds(view, ordered)
        plan = optimize_batch(
            [p.request for p in ordered],
            self._greedy.snapshot(view),
            ledger,
            history,
            time_limit_s=self.time_limit_s,
            seed=self.seed,
            day_left=self._greedy.day_left(view),
        )
        booked: dict[str, list[Reservation]] = {}
        for reservation in plan.reservations:
            booked.setdefault(reservation.workflow_id, []).append(reservation)
            ledger.add(reservation)
        clients = {p.request.request_id: p.request.client_id for p in ordered}
        out: list[Outcome] = []
        for result in plan.results:
            if result.outcome == "assigned":
                remember(history, clients[result.request_id], result)
            out.append(outcome_of(result, booked.get(result.workflow_id, [])))
        self.last_batch = {
            "size": len(ordered),
            "status": plan.solver_status,
            "fallback": plan.fallback,
            "assigned_hours": plan.assigned_hours,
            "greedy_assigned_hours": plan.greedy_assigned_hours,
            "solve_seconds": plan.solve_seconds,
        }
        return out

    def partner_assign(self, view: DispatchView, pending: Pending) -> Outcome:
        return self._greedy.partner_assign(view, pending)

    @property
    def replan_budget(self) -> int:
        return self._greedy.replan_budget

    def plan_ahead(self, view: DispatchView) -> None:
        self._greedy.plan_ahead(view)

    def snapshot(self, view: DispatchView) -> CapacitySnapshot:
        return self._greedy.snapshot(view)

    def day_left(self, view: DispatchView) -> float:
        return self._greedy.day_left(view)

    def free_option(self, view: DispatchView, pending: Pending) -> bool:
        return self._greedy.free_option(view, pending)

    def replan(
        self, view: DispatchView, requests: Sequence[AssignmentRequest]
    ) -> list[tuple[AssignmentRequest, Outcome]]:
        return self._greedy.replan(view, requests)
