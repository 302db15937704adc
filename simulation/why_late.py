"""Which jobs are late under production and under "most hours free", job by job.

    .venv/bin/python -m simulation.why_late --profile M15 --seeds 10 --load 0.80

Plays each seed under P2 and P3 (the same jobs, the same people) and sorts the jobs not on time
into late under both, late only under P3 and late only under P2 (and how many of the P3-only
ones waited for a partner). Jobs late under both are what neither rule saves; P3's lead over
P2 is the P2-only jobs less the P3-only ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from simulation.metrics import late_jobs
from simulation.why import replay, season_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = season_parser(__doc__.split("\n\n")[0], load=0.80)
    parser.add_argument("--against", default="P2")
    parser.add_argument("--policy", default="P3")
    args = parser.parse_args(argv)
    both = only_policy = only_base = waited = 0
    for seed in range(1, args.seeds + 1):
        log = replay(args.profile, seed, args.load, args.policy)
        late = late_jobs(log)
        base = late_jobs(replay(args.profile, seed, args.load, args.against))
        both += len(late & base)
        only_policy += len(late - base)
        only_base += len(base - late)
        to_partner = {r.job for r in log if r.type == "npr_raised"}
        waited += len((late - base) & to_partner)
    total = both + only_policy + only_base
    print(f"{args.profile}, load {args.load}, seeds 1-{args.seeds}: jobs not on time")
    print(f"{both:6d}  {100 * both / max(total, 1):5.1f} %  under both")
    print(f"{only_policy:6d}  {100 * only_policy / max(total, 1):5.1f} %  only under {args.policy}")
    print(f"{'':6s}  {100 * waited / max(only_policy, 1):5.1f} %  of those went to partner review")
    print(f"{only_base:6d}  {100 * only_base / max(total, 1):5.1f} %  only under {args.against}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
