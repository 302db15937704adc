"""The job catalogue (dispatch-anchors.md §4.3): hours, tiers, skills and deadlines per job type.

Every number is an assumption taken from the anchors unless a comment says otherwise:
preparation hours are log-normal with the given median and 90th percentile, review is
30-40 % of preparation (the Mendlowitz rule of thumb, trimmed for simple returns), business
returns are about three times an itemised 1040.

Each job type becomes a production ``ServiceType`` so the production decision logic reads it
exactly as it reads a firm's configuration: ``review_fraction`` is review hours over
preparation hours at the medians.

Simplifications (also in the README):

* A partner's 0.5 h sign-off on business returns is folded into the review hours: production
  books one reviewer per engagement.
* Only preparers answer Accept / Request reassignment; reviewers take what they are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dispatch.config import ServiceType, Tier

Z90 = 1.2815515655446004
"""The standard normal's 90th percentile: p90 = median * exp(Z90 * sigma)."""

SKILLS = (
    "individual_tax",
    "business_tax",
    "corporate_tax",
    "fiduciary",
    "multistate",
    "bookkeeping",
    "payroll",
    "sales_tax",
    "advisory",
)

INDUSTRIES = ("construction", "restaurants", "real_estate", "medical")
"""Specialisations: preferred, never required (production's "specialisation match")."""


@dataclass(frozen=True)
class JobType:
    id: str
    name: str
    prep_median: float
    prep_p90: float
    review_hours: float
    """Median review hours; 0 means the job has no review."""
    preparer_tier: Tier
    reviewer_tier: Tier | None
    skill: str
    is_return: bool = False

    @property
    def sigma(self) -> float:
        return math.log(self.prep_p90 / self.prep_median) / Z90

    @property
    def prep_mean(self) -> float:
        return self.prep_median * math.exp(self.sigma**2 / 2)

    @property
    def review_fraction(self) -> float:
        return self.review_hours / self.prep_median

    @property
    def expected_hours(self) -> float:
        """Mean preparation + review + rework hours, as the estimates say (for load)."""
        review = self.prep_mean * self.review_fraction if self.reviewer_tier else 0.0
        rework = REWORK_P * (REWORK_PREP_SHARE * self.prep_mean + SECOND_REVIEW_SHARE * review)
        return self.prep_mean + review + (rework if self.reviewer_tier else 0.0)

    def service_type(self) -> ServiceType:
        return ServiceType(
            id=self.id,
            name=self.name,
            required_skills=[self.skill],
            default_estimated_hours=self.prep_median,
            preparer_tier=self.preparer_tier,
            reviewer_tier=self.reviewer_tier,
            review_fraction=round(self.review_fraction, 4) if self.reviewer_tier else 0.35,
            lead_days=0,
        )


REWORK_P = 0.25
"""A reviewer sends the job back with this probability."""
REWORK_PREP_SHARE = 0.15
"""Rework = this share of the preparation hours."""
SECOND_REVIEW_SHARE = 0.30
"""A second review = this share of the first."""

S, SR, M = Tier.STAFF, Tier.SENIOR, Tier.MANAGER

IND_SIMPLE = JobType("ind_simple", "1040 simple", 1.5, 3, 0.5, S, SR, "individual_tax", True)
IND_COMPLEX = JobType("ind_complex", "1040 complex", 4, 9, 1.5, S, M, "individual_tax", True)
PASS_THROUGH = JobType("pass_through", "1120-S / 1065", 8, 18, 3.5, SR, M, "business_tax", True)
CORPORATE = JobType("corporate", "1120", 10, 24, 4.5, SR, M, "corporate_tax", True)
FIDUCIARY = JobType("fiduciary", "1041", 5, 10, 2, SR, M, "fiduciary", True)
MONTHLY_CLOSE = JobType("monthly_close", "Monthly close", 4, 10, 0.5, S, SR, "bookkeeping")
PAYROLL_Q = JobType("payroll_q", "Payroll quarterly (941)", 1, 2, 0.25, S, SR, "payroll")
SALES_TAX = JobType("sales_tax", "Sales tax", 0.75, 1.5, 0, S, None, "sales_tax")
VOUCHER = JobType("est_voucher", "Estimated-tax vouchers", 0.5, 1, 0, S, None, "individual_tax")
EXT_IND = JobType("ext_individual", "Extension 4868", 0.3, 0.6, 0.1, S, SR, "individual_tax")
EXT_BUS = JobType("ext_business", "Extension 7004", 0.3, 0.6, 0.1, S, SR, "business_tax")
EXT_CORP = JobType("ext_corporate", "Extension 7004 (1120)", 0.3, 0.6, 0.1, S, SR, "corporate_tax")
EXT_FID = JobType("ext_fiduciary", "Extension 7004 (1041)", 0.3, 0.6, 0.1, S, SR, "fiduciary")
ADVISORY = JobType("advisory", "Advisory / ad hoc", 6, 20, 0, SR, None, "advisory")
CLEANUP = JobType("cleanup", "Bookkeeping clean-up / onboarding", 3, 8, 0.4, S, SR, "bookkeeping")

CATALOGUE: tuple[JobType, ...] = (
    IND_SIMPLE,
    IND_COMPLEX,
    PASS_THROUGH,
    CORPORATE,
    FIDUCIARY,
    MONTHLY_CLOSE,
    PAYROLL_Q,
    SALES_TAX,
    VOUCHER,
    EXT_IND,
    EXT_BUS,
    EXT_CORP,
    EXT_FID,
    ADVISORY,
    CLEANUP,
)
BY_ID = {t.id: t for t in CATALOGUE}

EXTENSION_FOR = {
    IND_SIMPLE.id: EXT_IND,
    IND_COMPLEX.id: EXT_IND,
    PASS_THROUGH.id: EXT_BUS,
    CORPORATE.id: EXT_CORP,
    FIDUCIARY.id: EXT_FID,
}
"""The extension (Form 4868 / 7004) a return gets when it will not be filed by its date."""


def service_types() -> list[ServiceType]:
    return [t.service_type() for t in CATALOGUE]
