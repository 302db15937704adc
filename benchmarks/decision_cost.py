"""What one dispatch decision costs, by ledger size and by how far away the due date is.

    .venv/bin/python -m benchmarks.decision_cost --runs 7

Pure functions, no Temporal: the work the dispatcher workflow does in its workflow task for
one request, which is building the ``Ledger`` from the reservations it carries and calling
``dispatch.decision.decide`` (eligibility and ranking of every person, the capacity test
against each one's bookings, the estimated completion of the winner). Temporal's deadlock
detector fails a workflow task that holds the thread for 2 s, so this must stay far below 1 s
whatever the ledger holds and whatever date an engagement carries.

The firm: the demo firm's fifteen people cloned to ``--staff`` (50 by default), each with two
absences, and the demo firm's holidays. The ledger: ``--reservations`` (5,000) spread evenly
over everyone, 0.5-3 h each, due over the next 26 weeks. The baseline is the same firm with 10
reservations, measured in the same run. Each row is one request (an individual return, 4 h,
with a reviewer) decided against a fresh ledger; "cold" clears the capacity caches first (a
new worker, or the first decision of a day), "warm" repeats the decision with them filled.
The last rows are a whole workflow task at its limit: ``BATCH_LIMIT`` (150) requests, due
over the next 3 weeks, decided one after the other against one ledger, each seeing the
reservations of the ones before (``decide_batch``). Times are medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta

from benchmarks.optimizer_burst import snapshot_of
from dispatch import capacity
from dispatch.config import Absence, FirmConfig, load_firm_config
from dispatch.decision import Ledger, decide, decide_batch
from dispatch.models import AssignmentRequest, CapacitySnapshot, Reservation, Role

TODAY = date(2026, 11, 23)
BATCH_LIMIT = 150
"""``workflows.dispatcher.BATCH_LIMIT``: the most decisions one workflow task makes."""
DUE = {
    "near (10 working days)": date(2026, 12, 7),
    "far (2 years)": date(2028, 11, 23),
    "9999-12-31": date(9999, 12, 31),
}


def firm(config: FirmConfig, size: int) -> CapacitySnapshot:
    """The demo firm's people cloned to ``size``, each away twice in the next months."""
    rng = random.Random(size)
    members = []
    for k in range(size):
        model = config.staff[k % len(config.staff)]
        away = [TODAY + timedelta(days=rng.randrange(0, 150)) for _ in range(2)]
        members.append(
            model.model_copy(
                update={
                    "id": f"{model.id}-{k}",
                    "email": f"{model.id}-{k}@firm.example",
                    "manager": None,
                    "absences": [Absence(start=d, end=d + timedelta(days=2)) for d in away],
                }
            )
        )
    big = config.model_copy(update={"staff": members})
    return snapshot_of(big, TODAY)


def reservations(snapshot: CapacitySnapshot, count: int) -> list[Reservation]:
    rng = random.Random(count)
    people = [c.member.id for c in snapshot.staff]
    return [
        Reservation(
            workflow_id=f"engagement-booked-{n}",
            role=Role.PREPARER if n % 3 else Role.REVIEWER,
            staff_id=people[n % len(people)],
            hours=rng.choice([0.5, 1.0, 1.5, 2.0, 3.0]),
            start=TODAY,
            due=TODAY + timedelta(days=rng.randrange(1, 26 * 7)),
            client_id=f"cl-{n % 400}",
        )
        for n in range(count)
    ]


def one_request(due: date, n: int = 0) -> AssignmentRequest:
    return AssignmentRequest(
        request_id=f"engagement-new-{n}:req-1",
        workflow_id=f"engagement-new-{n}",
        client_id=f"cl-new-{n}",
        service_type="individual_tax",
        due_date=due,
        estimated_hours=4.0,
    )


def burst() -> list[AssignmentRequest]:
    return [one_request(TODAY + timedelta(days=3 + n % 19), n) for n in range(BATCH_LIMIT)]


def clear_caches() -> None:
    capacity.capacity_between.cache_clear()


def median_ms(fn: Callable[[], object], runs: int, *, cold: bool) -> float:
    times = []
    for _ in range(runs):
        if cold:
            clear_caches()
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--staff", type=int, default=50)
    parser.add_argument("--reservations", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)

    snapshot = firm(load_firm_config(), args.staff)
    sizes = {"baseline": 10, "ledger": args.reservations}
    booked = {name: reservations(snapshot, n) for name, n in sizes.items()}
    print(
        f"one decision, {args.staff} staff, medians of {args.runs} runs (ms); "
        f"baseline = {sizes['baseline']} reservations, ledger = {sizes['ledger']:,}"
    )
    header = f"{'due date':<24} {'reservations':>12} {'cold ms':>9} {'warm ms':>9} {'x base':>7}"
    print(header)
    print("-" * len(header))
    base_cold: float | None = None
    for label, due in DUE.items():
        request = one_request(due)
        for rows in booked.values():

            def decision(
                rows: list[Reservation] = rows, request: AssignmentRequest = request
            ) -> None:
                result, _ = decide(request, snapshot, Ledger(rows), {})
                assert result.outcome == "assigned", result.reason

            cold = median_ms(decision, args.runs, cold=True)
            warm = median_ms(decision, args.runs, cold=False)
            if base_cold is None:
                base_cold = cold
            print(
                f"{label:<24} {len(rows):>12,} {cold:>9.1f} {warm:>9.1f} {cold / base_cold:>7.1f}"
            )
    requests = burst()
    for rows in booked.values():

        def batch(rows: list[Reservation] = rows) -> None:
            decide_batch(requests, snapshot, Ledger(rows), {})

        cold = median_ms(batch, max(args.runs // 2, 1), cold=True)
        warm = median_ms(batch, max(args.runs // 2, 1), cold=False)
        assert base_cold is not None
        print(
            f"{f'task of {BATCH_LIMIT} decisions':<24} {len(rows):>12,} {cold:>9.1f} "
            f"{warm:>9.1f} {cold / base_cold:>7.1f}"
        )
    print("x base: cold time against one decision, near due date, baseline ledger.")


if __name__ == "__main__":
    main()
