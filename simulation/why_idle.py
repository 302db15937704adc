"""Why a qualified person sat idle while work they could do went to someone more senior.

    .venv/bin/python -m simulation.why_idle --profile M15 --policy P3 --seeds 10 --load 0.95

Replays the seasons and, for every preparer assignment that ``idle_while_up_tier`` counts
against someone (a person under half their hours that week, with the job's skills and at
least its preparer tier, below the assignee's tier), says why that person was not chosen,
from the decision's own record in the event log: the client's prior preparer kept the
client, the production rule blocked the idle person (and by what), they were eligible but
ranked lower, or a partner forced the choice.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from dispatch.config import Tier
from dispatch.models import Role
from simulation import calendar as cal
from simulation import why
from simulation.events import Record
from simulation.metrics import IDLE_BELOW, SCORED_WEEKS, compute


def causes(log: list[Record]) -> collections.Counter[str]:
    """(assignment, idle person) pairs by cause, for one season's log."""
    found: collections.Counter[str] = collections.Counter()
    metrics = compute(log)
    jobs = {r.job: r for r in log if r.type == "job_created"}
    people = {
        r.person: (Tier(r.get("tier")).rank, set(r.get("skills") or []))
        for r in log
        if r.type == "staff" and r.person is not None
    }
    idle = {
        (person, week)
        for person, row in metrics.utilisation.items()
        for week, used in zip(SCORED_WEEKS, row, strict=True)
        if used is not None and used < IDLE_BELOW
    }
    for r in log:
        if r.type != "assigned" or r.role != "preparer" or r.job not in jobs or r.person is None:
            continue
        created = jobs[r.job]
        needs = set(created.get("skills") or [])
        floor = Tier(created.get("preparer_tier")).rank
        week = cal.week_of_day(cal.day_of(r.t))
        given = people[r.person][0]
        passed_over = [
            p
            for (p, w) in idle
            if w == week and needs <= people[p][1] and floor <= people[p][0] < given
        ]
        blocked = _blocked(r.get("explanation"))
        for person in passed_over:
            found[_cause(r, created, person, blocked)] += 1
    return found


def _blocked(explanation: Any) -> dict[str, list[str]]:
    """Each candidate's blocks as preparer, from production's ``AssignmentResult`` (None
    for other policies). Only the preparer's decision: the reviewer's has a higher tier floor,
    and reading it would blame a staff member's tier for a job they could prepare."""
    out: dict[str, list[str]] = {}
    for decision in getattr(explanation, "decisions", None) or []:
        if decision.role is not Role.PREPARER:
            continue
        for candidate in decision.candidates:
            out[candidate.staff_id] = sorted(b.value for b in candidate.blocked)
    return out


def _cause(r: Record, created: Record, person: str, blocked: dict[str, list[str]]) -> str:
    if r.get("forced"):
        return "a partner chose"
    if created.get("prior_preparer") == r.person:
        return "continuity: the client's prior preparer kept the client"
    if blocked.get(person):
        return "the idle person was blocked: " + ", ".join(blocked[person])
    if person in blocked:
        return "the idle person was eligible and ranked lower"
    return "the idle person was not among the candidates"


def main(argv: Sequence[str] | None = None) -> int:
    return why.main(
        __doc__.split("\n\n")[0], causes, "(assignment, idle qualified person) pairs", argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
