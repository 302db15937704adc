"""The assignment issue's targets, judged on one load's seasons: production (P3) against P2.

``dispatch simulate`` prints these after its tables whenever P2 and P3 both ran, so a reader
sees at once which targets production meets at that load and by how much. Shares are the
metrics' own fractions; differences are paired over the seeds, with their 95 % intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simulation.stats import Summary, paired, summarise

Values = Mapping[str, Mapping[str, Sequence[float]]]
"""policy -> metric -> per-seed values, seeds in the same order for every policy."""


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    met: bool


def _pp(s: Summary) -> str:
    return f"{100 * s.mean:+.1f} ±{100 * (s.high - s.mean):.1f} pp"


def _pct(s: Summary) -> str:
    return f"{100 * s.mean:.1f} %"


def verdicts(values: Values) -> list[Verdict]:
    """The targets P3 meets or misses against P2 (and P4 against P3, when P4 ran)."""
    if "P2" not in values or "P3" not in values:
        return []
    p2, p3 = values["P2"], values["P3"]

    def diff(metric: str, a: Mapping[str, Sequence[float]] = p3) -> Summary:
        return paired(a[metric], p2[metric])

    def mean(metric: str, of: Mapping[str, Sequence[float]] = p3) -> Summary:
        return summarise(of[metric])

    own = {p: max(v["overbooked_hours_auto"], default=math.nan) for p, v in values.items()}
    production = [p for p in ("P3", "P4") if p in values]
    on_time, late = diff("on_time_rate"), diff("late_without_extension_rate")
    review, auto = mean("partner_review_pct"), mean("auto_assigned_pct")
    spread = diff("utilisation_std")
    idle, idle_p2 = mean("idle_while_up_tier"), mean("idle_while_up_tier", p2)
    out = [
        Verdict(
            "booked past capacity by production's own decisions: 0 h in every season",
            ", ".join(f"{p} at most {own[p]:.2f} h" for p in production),
            # To the hundredth of an hour: the ledger's float sums leave ~1e-9 h of noise.
            all(round(own[p], 2) == 0 for p in production),
        ),
        Verdict("on time ≥ P2 + 3 pp", f"P3 - P2 {_pp(on_time)}", on_time.mean >= 0.03),
        Verdict("late without extension ≤ P2's", f"P3 - P2 {_pp(late)}", late.mean <= 0),
        Verdict(
            "partner review ≤ 10 %, auto-assigned ≥ 90 %",
            f"{_pct(review)} to the partner, {_pct(auto)} auto-assigned",
            review.mean <= 0.10 and auto.mean >= 0.90,
        ),
        Verdict("utilisation std ≤ P2's", f"P3 - P2 {_pp(spread)}", spread.mean <= 0),
        Verdict(
            "client continuity ≥ 70 %",
            _pct(mean("client_continuity")),
            mean("client_continuity").mean >= 0.70,
        ),
        Verdict(
            "no qualified person idle while their work went up-tier",
            f"P3 {idle.mean:.1f} person-weeks a season (P2 {idle_p2.mean:.1f})",
            idle.mean == 0,
        ),
    ]
    if "P4" in values:
        later = paired(values["P4"]["on_time_rate"], p3["on_time_rate"])
        partner = paired(values["P4"]["partner_review_pct"], p3["partner_review_pct"])
        out.append(
            Verdict(
                "P4 better than P3 by a margin the seeds resolve",
                f"P4 - P3 on time {_pp(later)}, partner review {_pp(partner)}",
                later.low > 0 or partner.high < 0,
            )
        )
    return out
