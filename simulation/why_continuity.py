"""Why a client's job went to someone other than their prior preparer, from the event log.

    .venv/bin/python -m simulation.why_continuity --profile M15 --policy P3 --seeds 10 --load 0.95

Replays the seasons and, for every job ``client_continuity`` counts (its prior preparer still
at the firm and qualified) whose final preparer is someone else, says why from production's
own decision record: the prior preparer had no room by the due date, was absent, had declined,
yielded the client to a nearly idle junior (``continuity_yields_to_free_share``), was eligible
but ranked below someone who served the client more recently this season, or a partner chose;
or the prior preparer got the job and it moved later (they asked to be reassigned).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from dispatch.models import Role
from simulation import why
from simulation.events import Record


def causes(log: list[Record]) -> collections.Counter[str]:
    """Jobs whose client changed preparer, by cause, for one season's log."""
    jobs = {r.job: r for r in log if r.type == "job_created" and r.get("prior_eligible")}
    assignments: dict[str, list[Record]] = collections.defaultdict(list)
    for r in log:
        if r.type == "assigned" and r.role == "preparer" and r.job in jobs:
            assignments[str(r.job)].append(r)
    found: collections.Counter[str] = collections.Counter()
    for job, given in assignments.items():
        prior = jobs[job].get("prior_preparer")
        if given[-1].person == prior:
            continue
        if any(r.person == prior for r in given):
            found["the prior preparer had it, then it moved (they asked to be reassigned)"] += 1
            continue
        first = given[0]
        if first.get("forced"):
            found["a partner chose someone else"] += 1
            continue
        found[_cause(first.get("explanation"), str(prior))] += 1
    return found


def _cause(explanation: Any, prior: str) -> str:
    for decision in getattr(explanation, "decisions", None) or []:
        if decision.role is not Role.PREPARER:
            continue
        for candidate in decision.candidates:
            if candidate.staff_id != prior:
                continue
            if candidate.blocked:
                return "the prior preparer was blocked: " + ", ".join(
                    sorted(b.value for b in candidate.blocked)
                )
            history = candidate.scores.get("client_history", 0.0)
            if history == 0.0:
                return "the prior preparer yielded the client to a nearly idle junior"
            if history < 1.0:
                return "someone served the client more recently this season"
            return "the prior preparer was eligible and ranked lower"
    return "the prior preparer was not among the candidates"


def main(argv: Sequence[str] | None = None) -> int:
    return why.main(__doc__.split("\n\n")[0], causes, "jobs whose client changed preparer", argv)


if __name__ == "__main__":
    raise SystemExit(main())
