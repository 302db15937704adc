"""What a partner sees for an engagement nobody has room for: its candidates, each once, in the
order a partner weighs them, and why each one is blocked.

Shared by every surface (the Slack and Teams messages, the board's queue and engagement page)
and by the engagement workflow, which keeps the queue's short list in its memo so the board
reads the whole queue from one visibility list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dispatch.models import BlockReason, CandidateScore, Decision

MEMO_KEY = "review"
"""The memo entry of an engagement waiting for a partner: ``{"round": n, "candidates": [...]}``."""


def blocked_reason(candidate: CandidateScore) -> str:
    if candidate.why_blocked:
        return candidate.why_blocked
    if candidate.blocked:
        return ", ".join(reason.value for reason in candidate.blocked)
    return "eligible"


def only_capacity(candidate: CandidateScore) -> bool:
    """Blocked by capacity and nothing else: the only case a partner may book anyway."""
    return candidate.blocked == [BlockReason.CAPACITY]


def partner_candidates(
    decisions: Sequence[Decision], limit: int | None = None
) -> list[CandidateScore]:
    """The latest blocked decision's candidates, each once; those only capacity blocks first,
    then the most hours free, then by name."""
    blocked = next((d for d in reversed(decisions) if d.outcome == "blocked"), None)
    if blocked is None:
        return []
    seen: set[str] = set()
    found: list[CandidateScore] = []
    for c in blocked.candidates:
        if c.staff_id not in seen:
            seen.add(c.staff_id)
            found.append(c)
    found.sort(key=lambda c: (not only_capacity(c), -c.available_hours, c.name))
    return found[:limit] if limit is not None else found


def review_memo(round_: int, candidates: Sequence[CandidateScore]) -> dict[str, Any]:
    """Ids, hours and reasons only: the memo is readable wherever the workflow list is."""
    return {
        "round": round_,
        "candidates": [
            {
                "id": c.staff_id,
                "tier": c.tier.value,
                "hours": round(c.available_hours, 1),
                "blocked": blocked_reason(c)[:200],
                "anyway": only_capacity(c),
            }
            for c in candidates
        ],
    }
