"""Utilisation by tier: where the spread between people comes from, per policy.

    .venv/bin/python -m simulation.spread --profile M15 --policies P2,P3 --seeds 10 --load 0.95

Replays the seasons and prints, per policy and tier, the mean of each person's peak-week
utilisation (``simulation.metrics``' own per-person figures) and its lowest and highest person.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence

from simulation.events import Record
from simulation.metrics import compute
from simulation.why import replay, season_parser


def by_tier(log: list[Record]) -> dict[str, list[float]]:
    """Each person's mean peak-week utilisation, grouped by their tier."""
    tiers = {r.person: str(r.get("tier")) for r in log if r.type == "staff"}
    out: dict[str, list[float]] = collections.defaultdict(list)
    for person, row in compute(log).utilisation.items():
        weeks = [v for v in row if v is not None]
        if weeks and person in tiers:
            out[tiers[person]].append(statistics.mean(weeks))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = season_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default="P2,P3")
    args = parser.parse_args(argv)
    print(f"{args.profile}, load {args.load}, seeds 1-{args.seeds}: utilisation %, mean (min-max)")
    for policy in args.policies.split(","):
        pooled: dict[str, list[float]] = collections.defaultdict(list)
        for seed in range(1, args.seeds + 1):
            for tier, values in by_tier(replay(args.profile, seed, args.load, policy)).items():
                pooled[tier].extend(values)
        cells = [
            f"{tier} {100 * statistics.mean(v):.1f} ({100 * min(v):.0f}-{100 * max(v):.0f})"
            for tier, v in sorted(pooled.items())
        ]
        print(f"{policy:>10}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
