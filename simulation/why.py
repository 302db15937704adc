"""The shared command line of the ``why_*`` tools (and ``spread``): replay seasons, count
causes, print shares."""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable, Sequence

from simulation.engine import simulate
from simulation.events import Record
from simulation.policies import make_policy
from simulation.runner import scenario

Causes = Callable[[list[Record]], collections.Counter[str]]


def season_parser(description: str, load: float = 0.95) -> argparse.ArgumentParser:
    """``--profile``, ``--seeds`` and ``--load``: which seasons a tool replays."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="M15")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--load", type=float, default=load)
    return parser


def replay(profile: str, seed: int, load: float, policy: str) -> list[Record]:
    """One season's event log under ``policy`` (the same jobs and people for every policy)."""
    return simulate(scenario(profile, seed, load), make_policy(policy, seed=seed))


def main(description: str, causes: Causes, counted: str, argv: Sequence[str] | None) -> int:
    """Replay ``--seeds`` seasons of ``--profile`` under ``--policy`` and print each cause's
    count and share; ``counted`` names what the total counts."""
    parser = season_parser(description)
    parser.add_argument("--policy", default="P3")
    args = parser.parse_args(argv)
    total: collections.Counter[str] = collections.Counter()
    for seed in range(1, args.seeds + 1):
        total += causes(replay(args.profile, seed, args.load, args.policy))
    found = sum(total.values())
    print(f"{args.profile}, load {args.load}, {args.policy}, seeds 1-{args.seeds}:")
    for cause, n in total.most_common():
        print(f"{n:6d}  {100 * n / max(found, 1):5.1f} %  {cause}")
    print(f"{found:6d}  {counted}")
    return 0
