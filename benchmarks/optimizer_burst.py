"""Month-end burst: the greedy rule against the batch optimiser, on the same input.

    .venv/bin/python -m benchmarks.optimizer_burst --seeds 5 --load 0.8 0.95 1.1

Pure functions, no Temporal: for each load and seed it books the firm's earlier work (by the
greedy rule), then builds one month-end burst (at most ``BATCH_LIMIT`` engagements, what the
dispatcher hands the optimiser in one batch) and decides it twice from the same ledger: with
``dispatch.decision.decide_batch`` (production's greedy rule, earliest due first) and with
``dispatch.optimizer.optimize_batch`` (CP-SAT, the firm policy's time limit). Prints, per load,
the medians over the seeds and the ratio optimiser / greedy.

The firm is the demo firm (15 people, ``dispatch/data/demo_firm.yaml``) or ``--firm FILE``.
Assumptions of the burst (documented, not measured from a firm): the service mix below, hours
= the service's default estimate x a log-normal factor (sigma 0.35), due dates 2-10 working days
out skewed to month-end, one engagement in five needs a specialty someone in the firm has, and
two clients in three have a person they worked with before (a random colleague who knows the
service). ``--load`` is all work due in the next 10 working days (earlier work plus the burst)
over the firm's capacity in that time; the earlier work is ``--booked`` of that capacity.

Metrics:
* ``assigned`` / ``hours``: engagements and hours (preparer + reviewer) placed;
* ``partner``: engagements sent to partner review (nobody fits);
* ``urgent_h``: hours of engagements due within 5 working days left for partner review (the
  predicted lateness: placed work is on time by construction of the capacity rule, so work is
  late when nobody holds it);
* ``late``: placed engagements whose estimated completion is after their due date (0 expected);
* ``seconds``: wall time of the decision (greedy: the batch; optimiser: model, two solves,
  re-check).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from dispatch.capacity import WorkCalendar
from dispatch.config import FirmConfig, Tier, load_firm_config
from dispatch.decision import Ledger, calendar_of, decide_batch
from dispatch.models import AssignmentRequest, AssignmentResult, CapacitySnapshot, StaffCapacity
from dispatch.optimizer import optimize_batch

TODAY = date(2026, 11, 23)
"""A Monday, a week before month-end (fixed: the same seed gives the same burst)."""
HORIZON_DAYS = 10
BATCH_LIMIT = 150
"""The dispatcher's ``BATCH_LIMIT``: the most one optimiser call sees."""
MIX = {
    "individual_tax": 0.35,
    "monthly_bookkeeping": 0.2,
    "s_corp_return": 0.15,
    "payroll": 0.1,
    "partnership_return": 0.1,
    "audit_prep": 0.05,
}
DUE_DAYS = [2, 3, 4, 5, 5, 6, 7, 8, 8, 9, 10, 10, 10]
URGENT_DAYS = 5
METRICS = ("assigned", "hours", "partner", "urgent_h", "late", "seconds")


def snapshot_of(config: FirmConfig, today: date = TODAY) -> CapacitySnapshot:
    """What ``FirmActivities.capacity_snapshot`` reads, from the firm file alone (no tracker)."""
    return CapacitySnapshot(
        taken_at=datetime.combine(today, datetime.min.time(), tzinfo=UTC),
        today=today,
        week_start=today,
        workdays=config.firm.workday_numbers,
        holidays=config.firm.holidays,
        staff=[
            StaffCapacity(member=m, weekly_capacity_hours=m.weekly_capacity_hours or 40.0)
            for m in config.staff
        ],
        service_types=config.service_types,
        policy=config.policy,
        client_history={c.id: c.history for c in config.clients if c.history},
        managing_partner=config.escalation.managing_partner,
        source="benchmark",
    )


@dataclass
class Burst:
    earlier: list[AssignmentRequest]
    burst: list[AssignmentRequest]
    history: dict[str, list[str]]


class BurstMaker:
    def __init__(self, snapshot: CapacitySnapshot) -> None:
        self.snapshot = snapshot
        self.calendar = calendar_of(snapshot)
        services = {s.id: s for s in snapshot.service_types}
        self.mix = {k: v for k, v in MIX.items() if k in services}
        self.services = services
        members = [c.member for c in snapshot.staff if c.member.active]
        required = {s for t in snapshot.service_types for s in t.required_skills}
        # Specialties someone who prepares the service has: a burst the firm could serve.
        self.specialties: dict[str, list[str]] = {}
        self.colleagues: dict[str, list[str]] = {}
        for sid, service in services.items():
            top = Tier.PARTNER if service.preparer_tier is Tier.PARTNER else Tier.MANAGER
            able = [
                m
                for m in members
                if set(service.required_skills) <= set(m.skills)
                and service.preparer_tier.rank <= m.tier.rank <= top.rank
            ]
            self.colleagues[sid] = sorted(m.id for m in able)
            self.specialties[sid] = sorted({s for m in able for s in m.skills} - required)
        last = self.calendar.add_working_days(TODAY, HORIZON_DAYS - 1)
        days = self.calendar.working_days(TODAY, last)
        self.capacity = sum(c.weekly_capacity_hours / 5 for c in snapshot.staff) * len(days)

    def make(self, seed: int, load: float, booked: float) -> Burst:
        rng = random.Random(seed)
        history: dict[str, list[str]] = {}
        earlier = self._jobs(rng, "early", self.capacity * booked, 10_000, history)
        burst = self._jobs(
            rng, "burst", self.capacity * max(load - booked, 0), BATCH_LIMIT, history
        )
        return Burst(earlier, burst, history)

    def _jobs(
        self, rng: random.Random, tag: str, hours: float, most: int, history: dict[str, list[str]]
    ) -> list[AssignmentRequest]:
        jobs: list[AssignmentRequest] = []
        total = 0.0
        kinds, weights = list(self.mix), list(self.mix.values())
        while total < hours and len(jobs) < most:
            sid = rng.choices(kinds, weights)[0]
            service = self.services[sid]
            estimate = max(
                0.5, round(service.default_estimated_hours * rng.lognormvariate(0, 0.35) * 2) / 2
            )
            client = f"cl-{rng.randint(0, 59)}"
            if client not in history and rng.random() < 2 / 3 and self.colleagues[sid]:
                history[client] = [rng.choice(self.colleagues[sid])]
            skills: list[str] = []
            if self.specialties[sid] and rng.random() < 0.2:
                skills = [rng.choice(self.specialties[sid])]
            n = len(jobs)
            jobs.append(
                AssignmentRequest(
                    request_id=f"{tag}-{n}:req-1",
                    workflow_id=f"{tag}-{n}",
                    client_id=client,
                    service_type=sid,
                    due_date=self.calendar.add_working_days(TODAY, rng.choice(DUE_DAYS)),
                    estimated_hours=estimate,
                    required_skills=skills,
                )
            )
            total += estimate * (1 + (service.review_fraction if service.reviewer_tier else 0))
        return jobs


def measure(
    results: Sequence[AssignmentResult],
    requests: Sequence[AssignmentRequest],
    calendar: WorkCalendar,
    seconds: float,
) -> dict[str, float]:
    by_id = {r.request_id: r for r in requests}
    assigned = [r for r in results if r.outcome == "assigned"]
    unplaced = [by_id[r.request_id] for r in results if r.outcome != "assigned"]
    urgent_by = calendar.add_working_days(TODAY, URGENT_DAYS)
    return {
        "assigned": len(assigned),
        "hours": round(sum(r.preparer_hours + r.reviewer_hours for r in assigned), 1),
        "partner": len(unplaced),
        "urgent_h": round(sum(r.estimated_hours for r in unplaced if r.due_date <= urgent_by), 1),
        "late": sum(
            1
            for r in assigned
            if r.estimated_completion is not None
            and r.estimated_completion > by_id[r.request_id].due_date
        ),
        "seconds": round(seconds, 3),
    }


def run_one(
    maker: BurstMaker, seed: int, load: float, booked: float, time_limit: float
) -> tuple[dict[str, float], dict[str, float], int, str]:
    made = maker.make(seed, load, booked)
    snapshot = maker.snapshot
    ledger = Ledger()
    decide_batch(made.earlier, snapshot, ledger, made.history)

    started = time.perf_counter()
    greedy = decide_batch(made.burst, snapshot, Ledger(ledger.reservations), made.history)
    greedy_s = time.perf_counter() - started

    started = time.perf_counter()
    plan = optimize_batch(
        made.burst,
        snapshot,
        Ledger(ledger.reservations),
        made.history,
        time_limit_s=time_limit,
        seed=seed,
    )
    optimizer_s = time.perf_counter() - started
    status = plan.solver_status + (" (fallback)" if plan.fallback else "")
    return (
        measure(greedy, made.burst, maker.calendar, greedy_s),
        measure(plan.results, made.burst, maker.calendar, optimizer_s),
        len(made.burst),
        status,
    )


def ratio(a: float, b: float) -> str:
    if b == 0:
        return "=" if a == 0 else "inf"
    return f"{a / b:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--load", type=float, nargs="+", default=[0.8, 0.95, 1.1])
    parser.add_argument("--booked", type=float, default=0.4, help="earlier work / capacity")
    parser.add_argument("--time-limit", type=float, default=None, help="default: the policy's")
    parser.add_argument("--firm", default=None, help="firm config file (default: the demo firm)")
    args = parser.parse_args(argv)

    config = load_firm_config(args.firm)
    snapshot = snapshot_of(config)
    limit = args.time_limit or snapshot.policy.optimizer_time_limit_seconds
    maker = BurstMaker(snapshot)
    print(
        f"firm {config.firm.id}: {len(snapshot.staff)} people, {maker.capacity:.0f} h over "
        f"{HORIZON_DAYS} working days; earlier work {args.booked:.0%} of it; "
        f"{args.seeds} seeds; time limit {limit:g} s"
    )
    for load in args.load:
        rows: dict[str, list[dict[str, float]]] = {"greedy": [], "optimizer": []}
        sizes: list[int] = []
        statuses: list[str] = []
        for seed in range(args.seeds):
            g, o, size, status = run_one(maker, seed, load, args.booked, limit)
            rows["greedy"].append(g)
            rows["optimizer"].append(o)
            sizes.append(size)
            statuses.append(status)
        med = {
            name: {m: statistics.median(r[m] for r in runs) for m in METRICS}
            for name, runs in rows.items()
        }
        print(
            f"\nload {load:.2f}: burst of {statistics.median(sizes):.0f} engagements (median); "
            f"solver: {', '.join(sorted(set(statuses)))}"
        )
        print(f"{'':<10}" + "".join(f"{m:>10}" for m in METRICS))
        for name in ("greedy", "optimizer"):
            print(f"{name:<10}" + "".join(f"{med[name][m]:>10g}" for m in METRICS))
        print(
            f"{'ratio':<10}"
            + "".join(f"{ratio(med['optimizer'][m], med['greedy'][m]):>10}" for m in METRICS)
        )
        pairs = list(zip(rows["greedy"], rows["optimizer"], strict=True))
        gained = [o["hours"] - g["hours"] for g, o in pairs]
        fewer = [g["partner"] - o["partner"] for g, o in pairs]
        print(
            f"per seed, optimiser - greedy: hours {[round(x, 1) for x in gained]}, "
            f"partner reviews avoided {fewer}"
        )
        if any(math.isnan(v) for v in med["optimizer"].values()):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
