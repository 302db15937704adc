"""The shared command line of the ``why_*`` tools: replay seasons, count causes, print shares."""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable, Sequence

from simulation.engine import simulate
from simulation.events import Record
from simulation.policies import make_policy
from simulation.runner import scenario

Causes = Callable[[list[Record]], collections.Counter[str]]


def main(description: str, causes: Causes, counted: str, argv: Sequence[str] | None) -> int:
    """Replay ``--seeds`` seasons of ``--profile`` under ``--policy`` and print each cause's
    count and share; ``counted`` names what the total counts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="M15")
    parser.add_argument("--policy", default="P3")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--load", type=float, default=0.95)
    args = parser.parse_args(argv)
    total: collections.Counter[str] = collections.Counter()
    for seed in range(1, args.seeds + 1):
        season = scenario(args.profile, seed, args.load)
        total += causes(simulate(season, make_policy(args.policy, seed=seed)))
    found = sum(total.values())
    print(f"{args.profile}, load {args.load}, {args.policy}, seeds 1-{args.seeds}:")
    for cause, n in total.most_common():
        print(f"{n:6d}  {100 * n / max(found, 1):5.1f} %  {cause}")
    print(f"{found:6d}  {counted}")
    return 0
