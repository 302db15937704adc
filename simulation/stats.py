"""Means and 95 % confidence intervals across seeds (Student's t), and paired differences.

Seeds are independent replications; policies are compared on the same seeds, so a difference
between two policies is best judged on the per-seed differences (paired), which cancels the
season-to-season noise they share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""Two-sided 95 % critical values of Student's t for 1-30 degrees of freedom."""


def t_critical(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.96 + 2.4 / df  # within 0.002 of the exact value beyond 30


@dataclass(frozen=True)
class Summary:
    mean: float
    half_width: float
    """Half the 95 % interval (NaN with a single seed)."""
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def summarise(values: Sequence[float]) -> Summary:
    clean = [v for v in values if not math.isnan(v)]
    n = len(clean)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = sum(clean) / n
    if n == 1:
        return Summary(mean, math.nan, 1)
    var = sum((v - mean) ** 2 for v in clean) / (n - 1)
    return Summary(mean, t_critical(n - 1) * math.sqrt(var / n), n)


def paired(a: Sequence[float], b: Sequence[float]) -> Summary:
    """Mean of a - b over the seeds both have, with its 95 % interval."""
    diffs = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    return summarise(diffs)
