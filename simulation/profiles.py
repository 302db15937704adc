"""Firm profiles (dispatch-anchors.md §4.2, §4.4): who works at the firm and its client book.

Headcounts and books are the anchors' defaults. The seed-replica preset is M15's people with
the seed scenario's 180 individual + 40 business returns; the rest of its load is monthly close,
clean-up and advisory work.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.config import Tier


@dataclass(frozen=True)
class Profile:
    name: str
    partners: int
    managers: int
    seniors: int
    staff: int
    admin: int
    individual_returns: int
    business_returns: int
    monthly_close_clients: int
    payroll_clients: int
    fill_with_recurring: bool = False
    """Seed replica: reach the load with monthly close clients and filler, not by scaling the
    return book (which stays at the seed's 180 + 40)."""
    part_time_staff: int = 0
    """How many of the staff tier work part time (``part_time_hours`` a week, all season)."""
    part_time_hours: float = 25.0
    coverage: tuple[tuple[str, Tier, float], ...] = ()
    """Skill coverage that differs from the default (skill, tier, share holding it)."""

    def headcount(self, tier: Tier) -> int:
        return {
            Tier.PARTNER: self.partners,
            Tier.MANAGER: self.managers,
            Tier.SENIOR: self.seniors,
            Tier.STAFF: self.staff,
        }[tier]

    @property
    def assignable(self) -> int:
        return self.partners + self.managers + self.seniors + self.staff


PROFILES: dict[str, Profile] = {
    "S5": Profile("S5", 1, 1, 1, 2, 0, 180, 40, 20, 15),
    "M15": Profile("M15", 2, 2, 4, 6, 1, 550, 120, 60, 40),
    "seed-replica": Profile("seed-replica", 2, 2, 4, 6, 1, 180, 40, 60, 40, True),
    "L35": Profile("L35", 4, 5, 10, 14, 2, 1250, 260, 150, 100),
    "XL50": Profile("XL50", 6, 7, 14, 20, 3, 1800, 380, 200, 150),
    # A client-accounting practice [A]: most of its work is monthly bookkeeping and payroll,
    # done by staff, three of whom work part time; one manager reviews the tax work.
    "B12": Profile(
        "B12",
        1,
        1,
        2,
        7,
        1,
        150,
        20,
        100,
        60,
        part_time_staff=3,
        coverage=(
            ("bookkeeping", Tier.STAFF, 0.9),
            ("bookkeeping", Tier.SENIOR, 0.8),
            ("payroll", Tier.STAFF, 0.6),
            ("sales_tax", Tier.STAFF, 0.6),
        ),
    ),
}


def profile(name: str) -> Profile:
    for key, value in PROFILES.items():
        if key.lower() == name.lower():
            return value
    raise KeyError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
