"""Why dispatch requests went to the partner, from each decision's own record.

    .venv/bin/python -m simulation.why_partner --profile M15 --policy P3 --seeds 10 --load 0.95

Replays the seasons and sorts every request production sent to partner review: the role
nobody could take, how long the job's window was (arrival to due date), and by how many hours
the closest qualified person fell short, or the person-to-person reason when no role was
blocked (two "Request reassignment" answers, a date already past).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from dispatch.models import BlockReason
from simulation import why
from simulation.events import Record

SHORT_WINDOW_DAYS = 3
NEAR_MISS_HOURS = 2.0


def causes(log: list[Record]) -> collections.Counter[str]:
    """Partner-review requests by cause, for one season's log."""
    found: collections.Counter[str] = collections.Counter()
    for r in log:
        if r.type == "npr_raised":
            found[_cause(r.get("explanation"), str(r.get("reason") or ""))] += 1
    return found


def _cause(explanation: Any, reason: str) -> str:
    blocked = [d for d in getattr(explanation, "decisions", None) or [] if d.outcome == "blocked"]
    if not blocked:
        first = reason.split(";")[0].split("(")[0].strip() or "no reason recorded"
        return f"no role blocked: {first}"
    decision = blocked[0]
    only_capacity = [c for c in decision.candidates if c.blocked == [BlockReason.CAPACITY]]
    if not only_capacity:
        return f"{decision.role.value}: nobody qualified at all"
    days = (decision.window_end - decision.window_start).days
    window = f"due within {SHORT_WINDOW_DAYS} days" if days <= SHORT_WINDOW_DAYS else "longer"
    best = max(c.available_hours for c in only_capacity)
    short = decision.required_hours - best
    gap = f"short by ≤ {NEAR_MISS_HOURS:g} h" if short <= NEAR_MISS_HOURS else "short by more"
    return f"{decision.role.value}: no room, {window}, {gap}"


def main(argv: Sequence[str] | None = None) -> int:
    return why.main(__doc__.split("\n\n")[0], causes, "requests sent to partner review", argv)


if __name__ == "__main__":
    raise SystemExit(main())
