"""The batch optimiser as an activity: CP-SAT runs here, never in workflow code.

A solve takes up to the policy's time limit of CPU (seconds), far past the 2 s a workflow task
may take, and it is not replay-safe code to run in the workflow sandbox. It runs in a thread
(``asyncio.to_thread``) so the worker's event loop keeps serving other activities meanwhile,
and keeps beating (``activities.liveness``): CP-SAT releases the GIL while it searches.

The result is only the plan (who takes which role) plus the solver's status: the dispatcher
rebuilds each explained decision itself with ``dispatch.optimizer.apply_plan``, re-checking
every planned person against its ledger as it is when the plan comes back. That keeps the
payload small (a full ``AssignmentResult`` per request carries every candidate's scores, which
for a large firm and batch would pass Temporal's payload size limit).
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.liveness import heartbeating
from dispatch.decision import Ledger
from dispatch.models import OptimizeBatchInput, OptimizedBatch, PlannedRole
from dispatch.optimizer import OptimizerWeights, optimize_batch

ACTIVITY_NAME = "optimize_assignments"


class OptimizerActivities:
    def __init__(self, weights: OptimizerWeights | None = None) -> None:
        """``weights``: the soft objective; by default derived from the firm's ranking weights."""
        self._weights = weights

    @activity.defn(name=ACTIVITY_NAME)
    async def optimize_assignments(self, input: OptimizeBatchInput) -> OptimizedBatch:
        """Assign a batch jointly (or say why the greedy rule's plan is the answer)."""
        async with heartbeating():
            return await asyncio.to_thread(self._optimize, input)

    def _optimize(self, input: OptimizeBatchInput) -> OptimizedBatch:
        plan = optimize_batch(
            input.requests,
            input.snapshot,
            Ledger(input.reservations),
            input.client_history,
            time_limit_s=input.time_limit_seconds,
            seed=input.seed,
            weights=self._weights,
            current_plan={(r.workflow_id, r.role): r.staff_id for r in input.current_plan},
            day_left=input.day_left,
        )
        by_request = {r.request_id: r.workflow_id for r in input.requests}
        assignments = [
            PlannedRole(
                request_id=request_id,
                workflow_id=by_request[request_id],
                role=role,
                staff_id=staff_id,
            )
            for request_id, roles in plan.assignments.items()
            for role, staff_id in roles.items()
        ]
        activity.logger.info(
            "batch of %d: %s, %.1f h assigned (greedy %.1f h)%s",
            len(input.requests),
            plan.solver_status,
            plan.assigned_hours,
            plan.greedy_assigned_hours,
            f"; greedy rule used: {plan.fallback}" if plan.fallback else "",
        )
        return OptimizedBatch(
            assignments=assignments,
            solver_status=plan.solver_status,
            objective=plan.objective,
            fallback=plan.fallback,
            assigned_hours=plan.assigned_hours,
            greedy_assigned_hours=plan.greedy_assigned_hours,
            solve_seconds=plan.solve_seconds,
            deterministic=plan.deterministic,
        )


__all__ = ["ACTIVITY_NAME", "OptimizerActivities"]
