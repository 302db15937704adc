"""Scenario generator: the firm's people, clients and the season's jobs, from a seed.

Everything a run needs is drawn here, before any policy runs, so every policy meets the same
season: the same jobs arriving at the same moments with the same true durations, the same
absences and the same answers to "accept or decline" (drawn per job and per offer). What
differs between policies is only who gets the work (true hours scale with the person's speed).

Each job's draws come from its own random stream, keyed by the seed and the job's id, so a
job is the same job at every load level and a thinned or extended book shares its common jobs.

Load calibration (dispatch-anchors.md §4.4): the *load* is the expected hours of work that
becomes ready in the ten peak weeks (preparation, review and expected rework, at the
estimates' means) divided by the firm's chargeable capacity in those weeks (weekly hours x
chargeable fraction, less planned leave and the expected 1.5 % sick days). When the profile's
book is below the target the gap is filled with clean-up and advisory work, split so each tier
is about equally loaded; above it, clients are dropped at random (nested: a client kept at
load 0.80 is kept at 0.95).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date

from dispatch.config import Tier
from simulation import calendar as cal
from simulation.catalogue import (
    ADVISORY,
    BY_ID,
    CLEANUP,
    CORPORATE,
    EXTENSION_FOR,
    FIDUCIARY,
    IND_COMPLEX,
    IND_SIMPLE,
    INDUSTRIES,
    MONTHLY_CLOSE,
    PASS_THROUGH,
    PAYROLL_Q,
    SALES_TAX,
    VOUCHER,
    JobType,
)
from simulation.profiles import Profile

# --- people ---------------------------------------------------------------------------------

PEAK_WEEKLY_HOURS = 50.0
LONG_WEEK_HOURS = 55.0
LONG_WEEK_P = 0.3
"""Staff and seniors opt into 55-hour peak weeks with this probability."""
CHARGEABLE = {Tier.PARTNER: 0.50, Tier.MANAGER: 0.70, Tier.SENIOR: 0.85, Tier.STAFF: 0.90}
SPEED_SIGMA = 0.15
SICK_DAY_P = 0.015
PTO_DAYS = 3

SKILL_COVERAGE: dict[str, dict[Tier, float]] = {
    # Share of each tier holding the skill [A]. Coverage is then topped up so every skill has
    # at least two preparers and a reviewer (a firm would not take work nobody can do).
    "individual_tax": {Tier.STAFF: 0.8, Tier.SENIOR: 0.9, Tier.MANAGER: 1.0, Tier.PARTNER: 1.0},
    "business_tax": {Tier.STAFF: 0.2, Tier.SENIOR: 0.7, Tier.MANAGER: 1.0, Tier.PARTNER: 1.0},
    "corporate_tax": {Tier.STAFF: 0.0, Tier.SENIOR: 0.4, Tier.MANAGER: 0.7, Tier.PARTNER: 0.8},
    "fiduciary": {Tier.STAFF: 0.0, Tier.SENIOR: 0.3, Tier.MANAGER: 0.6, Tier.PARTNER: 0.6},
    "multistate": {Tier.STAFF: 0.1, Tier.SENIOR: 0.4, Tier.MANAGER: 0.7, Tier.PARTNER: 0.7},
    "bookkeeping": {Tier.STAFF: 0.6, Tier.SENIOR: 0.5, Tier.MANAGER: 0.4, Tier.PARTNER: 0.3},
    "payroll": {Tier.STAFF: 0.4, Tier.SENIOR: 0.4, Tier.MANAGER: 0.3, Tier.PARTNER: 0.2},
    "sales_tax": {Tier.STAFF: 0.4, Tier.SENIOR: 0.4, Tier.MANAGER: 0.4, Tier.PARTNER: 0.2},
    "advisory": {Tier.STAFF: 0.0, Tier.SENIOR: 0.4, Tier.MANAGER: 0.8, Tier.PARTNER: 1.0},
}
INDUSTRY_P = 0.25
"""Seniors and up hold each industry specialisation with this probability."""

TIER_CODE = {Tier.PARTNER: "pa", Tier.MANAGER: "ma", Tier.SENIOR: "se", Tier.STAFF: "st"}


@dataclass(frozen=True)
class StaffPlan:
    id: str
    name: str
    tier: Tier
    skills: tuple[str, ...]
    weekly_hours: float
    """Hours at work per peak week."""
    chargeable_hours: float
    """Of those, the chargeable hours: what the time tracker calls weekly capacity."""
    speed: float
    """True duration multiplier (mean 1), unknown to every policy."""
    planned_leave: tuple[tuple[int, int], ...]
    """(first day, last day) of planned leave, known to the firm in advance."""
    sick_days: frozenset[int]
    """Unplanned: known on the morning of the day."""

    def absent(self, day: int) -> bool:
        return day in self.sick_days or any(a <= day <= b for a, b in self.planned_leave)

    def daily_hours(self, day: int) -> float:
        if not cal.is_working_day(day) or self.absent(day):
            return 0.0
        return self.chargeable_hours / 5.0


@dataclass(frozen=True)
class ClientPlan:
    id: str
    prior_preparer: str | None
    """Last year's preparer; may be someone who has left (an id not on the staff list)."""


@dataclass(frozen=True)
class JobPlan:
    """One job as the simulator knows it. Policies see only the estimate, never the truths."""

    id: str
    client_id: str
    type_id: str
    created_t: float
    """When the PM system creates it and asks for people."""
    ready_t: float
    """When its documents are in and preparation can start (>= created_t)."""
    due: date
    est_hours: float
    required_skills: tuple[str, ...]
    specializations: tuple[str, ...]
    prep_noise: float
    review_noise: float
    rework: bool
    rework_noise: float
    pause_fraction: float | None
    """Waiting on the client once this share of preparation is done (None: never)."""
    pause_days: float
    """Business days the client takes to answer."""
    offer_u: tuple[float, ...]
    """One uniform draw per offer: below the acceptance probability means Accept."""
    offer_delay: tuple[float, ...]
    """Business hours until the assignee answers each offer."""
    extended_due: date | None = None
    """A return's extended due date, should the firm file an extension."""
    exogenous: bool = False
    """An extension filed because the client never sent documents (not the firm's doing)."""

    @property
    def job_type(self) -> JobType:
        return BY_ID[self.type_id]


@dataclass(frozen=True)
class Scenario:
    profile: str
    seed: int
    load: float
    staff: tuple[StaffPlan, ...]
    clients: dict[str, ClientPlan]
    jobs: tuple[JobPlan, ...]
    capacity_hours: float
    """Chargeable capacity in the ten peak weeks (the load's denominator)."""
    demand_hours: float
    """Expected hours of work ready in those weeks (the load's numerator)."""
    extensions: dict[str, JobPlan] = field(default_factory=dict)
    """Per return: the extension job the firm files if the return is not ready on its date."""
    notes: list[str] = field(default_factory=list)


# --- shapes -----------------------------------------------------------------------------------

INDIVIDUAL_WEEKS = {1: 4, 2: 6, 3: 8, 4: 10, 5: 11, 6: 11, 7: 12, 8: 13, 9: 13, 10: 12}
"""Share (%) of individual returns ready in each season week [anchors §4.5]."""
BUSINESS_WEEKS = {0: 10, 1: 15, 2: 20, 3: 22, 4: 20, 5: 13}
"""Pass-through returns (due March 15, the Monday of week 6): the six weeks before it."""
CORPORATE_WEEKS = {w: 1 for w in range(2, 10)}
"""1120 and 1041 (due April 15): evenly over weeks 2-9 [A]."""
NEVER_READY = {"individual": 0.12, "business": 0.15}
INDIVIDUAL_COMPLEX_SHARE = 0.4
MULTISTATE_SHARE = 0.25
PASS_THROUGH_SHARE = 0.8
FIDUCIARY_PER_INDIVIDUAL = 0.04
INDUSTRY_JOB_SHARE = 0.3
RETURNING_CLIENTS = 0.85
PRIOR_PREPARER = 0.70
DEPARTED = 0.10
SALES_TAX_SHARE = 0.5
VOUCHER_SHARE = 0.25
PAUSE_P = 0.20
PAUSE_MEDIAN_DAYS = 3.0
NOISE_SIGMA = 0.35
OFFERS = 6
RESPONSE_MEDIAN_H = 1.0
RESPONSE_P90_H = 4.0
CLOSE_DELAY_MEDIAN = 2.0
CLOSE_DELAY_P90 = 5.0
MONTH_STARTS = (date(2027, 2, 1), date(2027, 3, 1), date(2027, 4, 1), date(2027, 5, 3))
"""First working day of each month in the simulated window (May 1 is a Saturday)."""


def _lognormal_mean1(rng: random.Random, sigma: float) -> float:
    """A log-normal multiplier with mean 1 (so estimates are unbiased on average)."""
    return math.exp(rng.gauss(-(sigma**2) / 2, sigma))


def _estimate(rng: random.Random, job_type: JobType) -> float:
    raw = job_type.prep_median * math.exp(rng.gauss(0.0, job_type.sigma))
    return round(min(max(raw, 0.1), 8 * job_type.prep_median), 2)


def _roll_back(d: date) -> date:
    return cal.date_of_day(cal.working_day_on_or_before(cal.day_of_date(d)))


def _time_in_week(rng: random.Random, week: int, *, last_weekday: int = 4) -> float:
    day = cal.week_start_day(week) + rng.randint(0, last_weekday)
    return cal.opening(day) + rng.random() * cal.DAY_SPAN


def _pick_week(rng: random.Random, shares: dict[int, int]) -> int:
    weeks = list(shares)
    return rng.choices(weeks, weights=[shares[w] for w in weeks])[0]


# --- generation -------------------------------------------------------------------------------


def generate(profile: Profile, seed: int, load: float) -> Scenario:
    """The season for this firm, seed and load. Same arguments, same scenario."""
    staff = _staff(profile, seed)
    capacity = _season_capacity(staff)
    book = _Book(profile, seed, staff)
    base = book.base_jobs()
    base_hours = _demand(base)
    target = load * capacity
    notes: list[str] = []
    if profile.fill_with_recurring:
        jobs = base + book.filler(max(target - base_hours, 0.0), staff, base)
    elif target >= base_hours:
        jobs = base + book.filler(target - base_hours, staff, base)
    else:
        keep = target / base_hours
        jobs = [j for j in base if book.client_u(j.client_id) < keep]
        notes.append(f"book thinned to {keep:.0%} of its clients to reach load {load:.2f}")
    jobs.sort(key=lambda j: (j.created_t, j.id))
    used = {j.client_id for j in jobs}
    clients = {cid: c for cid, c in book.clients.items() if cid in used}
    extensions = {j.id: book.extension(j) for j in jobs if j.extended_due is not None}
    return Scenario(
        profile=profile.name,
        seed=seed,
        load=load,
        staff=tuple(staff),
        clients=clients,
        jobs=tuple(jobs),
        capacity_hours=round(capacity, 1),
        demand_hours=round(_demand(jobs), 1),
        extensions=extensions,
        notes=notes,
    )


def _staff(profile: Profile, seed: int) -> list[StaffPlan]:
    rng = random.Random(f"{seed}:staff")
    people: list[tuple[str, Tier]] = []
    for tier in (Tier.PARTNER, Tier.MANAGER, Tier.SENIOR, Tier.STAFF):
        for n in range(1, profile.headcount(tier) + 1):
            people.append((f"{TIER_CODE[tier]}{n:02d}", tier))
    skills: dict[str, set[str]] = {pid: set() for pid, _ in people}
    coverage = {(skill, tier): share for skill, tier, share in profile.coverage}
    for pid, tier in people:
        for skill, cover in SKILL_COVERAGE.items():
            if rng.random() < coverage.get((skill, tier), cover[tier]):
                skills[pid].add(skill)
        if tier is not Tier.STAFF:
            for industry in INDUSTRIES:
                if rng.random() < INDUSTRY_P:
                    skills[pid].add(industry)
    _top_up(people, skills, rng)
    q1_days = [
        d
        for d in range(cal.week_start_day(-1), cal.week_start_day(6) - 7 + 5)
        if cal.is_working_day(d)
    ]
    tail_days = [
        d for d in range(cal.week_start_day(11), cal.TOTAL_DAYS - 3) if cal.is_working_day(d)
    ]
    part_time = {pid for pid, tier in people if tier is Tier.STAFF}
    part_time = set(sorted(part_time)[len(part_time) - profile.part_time_staff :])
    plans = []
    for pid, tier in people:
        weekly = PEAK_WEEKLY_HOURS
        if tier in (Tier.STAFF, Tier.SENIOR) and rng.random() < LONG_WEEK_P:
            weekly = LONG_WEEK_HOURS
        if pid in part_time:
            weekly = profile.part_time_hours
        speed = _lognormal_mean1(rng, SPEED_SIGMA)
        leave = []
        start = rng.choice(q1_days[: -PTO_DAYS + 1])
        leave.append((start, cal.add_working_days(start, PTO_DAYS - 1)))
        if rng.random() < 4 / 11:  # Q2 leave lands in the four simulated tail weeks
            start = rng.choice(tail_days[: -PTO_DAYS + 1])
            leave.append((start, cal.add_working_days(start, PTO_DAYS - 1)))
        sick = frozenset(
            d for d in range(cal.TOTAL_DAYS) if cal.is_working_day(d) and rng.random() < SICK_DAY_P
        )
        plans.append(
            StaffPlan(
                id=pid,
                name=f"{tier.value.title()} {pid[2:]}",
                tier=tier,
                skills=tuple(sorted(skills[pid])),
                weekly_hours=weekly,
                chargeable_hours=round(weekly * CHARGEABLE[tier], 2),
                speed=round(speed, 4),
                planned_leave=tuple(leave),
                sick_days=sick,
            )
        )
    return plans


def _top_up(
    people: list[tuple[str, Tier]], skills: dict[str, set[str]], rng: random.Random
) -> None:
    """Every job type can be prepared by two people and reviewed by one more."""
    from simulation.catalogue import CATALOGUE

    needs = [(t, frozenset({t.skill})) for t in CATALOGUE]
    needs.append((IND_COMPLEX, frozenset({IND_COMPLEX.skill, "multistate"})))
    for job_type, wanted in needs:
        max_prep = Tier.PARTNER if job_type.preparer_tier is Tier.PARTNER else Tier.MANAGER
        preparers = [
            pid for pid, t in people if job_type.preparer_tier.rank <= t.rank <= max_prep.rank
        ]
        _cover(preparers, wanted, min(2, len(preparers)), skills, rng)
        if job_type.reviewer_tier is not None:
            reviewers = [pid for pid, t in people if t.rank >= job_type.reviewer_tier.rank]
            _cover(reviewers, wanted, 2, skills, rng)


def _cover(
    pool: list[str],
    wanted: frozenset[str],
    count: int,
    skills: dict[str, set[str]],
    rng: random.Random,
) -> None:
    able = [pid for pid in pool if wanted <= skills[pid]]
    spare = sorted(pid for pid in pool if pid not in able)
    rng.shuffle(spare)
    while len(able) < count and spare:
        pid = spare.pop()
        skills[pid].update(wanted)
        able.append(pid)


def _season_capacity(staff: list[StaffPlan]) -> float:
    """Chargeable hours in weeks 1-10, less planned leave and expected sick days."""
    first, last = cal.SEASON_START_DAY, cal.SEASON_END_DAY
    total = 0.0
    for person in staff:
        for day in range(first, last):
            if cal.is_working_day(day) and not any(a <= day <= b for a, b in person.planned_leave):
                total += person.chargeable_hours / 5.0
    return total * (1 - SICK_DAY_P)


def _in_season(t: float) -> bool:
    return cal.SEASON_START_DAY <= cal.day_of(t) < cal.SEASON_END_DAY


def _demand(jobs: list[JobPlan]) -> float:
    return sum(j.job_type.expected_hours for j in jobs if _in_season(j.ready_t))


class _Book:
    """The client book and its jobs, each drawn from its own stream."""

    def __init__(self, profile: Profile, seed: int, staff: list[StaffPlan]) -> None:
        self.profile = profile
        self.seed = seed
        self.staff = staff
        self.clients: dict[str, ClientPlan] = {}
        self._u: dict[str, float] = {}

    def client_u(self, client_id: str) -> float:
        return self._u[client_id]

    def _rng(self, key: str) -> random.Random:
        return random.Random(f"{self.seed}:{key}")

    def _client(self, client_id: str, job_type: JobType) -> ClientPlan:
        if client_id in self.clients:
            return self.clients[client_id]
        rng = self._rng(f"client:{client_id}")
        self._u[client_id] = rng.random()
        prior: str | None = None
        if rng.random() < RETURNING_CLIENTS and rng.random() < PRIOR_PREPARER:
            if rng.random() < DEPARTED:
                prior = f"former{rng.randint(1, 99):02d}"
            else:
                able = [
                    p.id
                    for p in self.staff
                    if job_type.skill in p.skills
                    and job_type.preparer_tier.rank <= p.tier.rank <= Tier.MANAGER.rank
                ]
                prior = rng.choice(able) if able else None
        client = ClientPlan(client_id, prior)
        self.clients[client_id] = client
        return client

    def _job(
        self,
        job_id: str,
        client_id: str,
        job_type: JobType,
        created_t: float,
        due: date,
        *,
        ready_t: float | None = None,
        extra_skills: tuple[str, ...] = (),
        specializations: tuple[str, ...] = (),
        extended_due: date | None = None,
        exogenous: bool = False,
    ) -> JobPlan:
        rng = self._rng(f"job:{job_id}")
        est = _estimate(rng, job_type)
        prep_noise = _lognormal_mean1(rng, NOISE_SIGMA)
        review_noise = _lognormal_mean1(rng, NOISE_SIGMA)
        from simulation.catalogue import REWORK_P

        rework = rng.random() < REWORK_P
        rework_noise = _lognormal_mean1(rng, NOISE_SIGMA)
        pause_fraction: float | None = None
        pause_days = 0.0
        if job_type.is_return and rng.random() < PAUSE_P:
            pause_fraction = rng.uniform(0.3, 0.6)
            pause_days = PAUSE_MEDIAN_DAYS * math.exp(rng.gauss(0.0, 0.5))
        delay_sigma = math.log(RESPONSE_P90_H / RESPONSE_MEDIAN_H) / 1.2815515655446004
        offer_u = tuple(rng.random() for _ in range(OFFERS))
        offer_delay = tuple(
            round(RESPONSE_MEDIAN_H * math.exp(rng.gauss(0.0, delay_sigma)), 3)
            for _ in range(OFFERS)
        )
        return JobPlan(
            id=job_id,
            client_id=client_id,
            type_id=job_type.id,
            created_t=created_t,
            ready_t=created_t if ready_t is None else ready_t,
            due=due,
            est_hours=est,
            required_skills=extra_skills,
            specializations=specializations,
            prep_noise=round(prep_noise, 4),
            review_noise=round(review_noise, 4),
            rework=rework,
            rework_noise=round(rework_noise, 4),
            pause_fraction=pause_fraction,
            pause_days=round(pause_days, 3),
            offer_u=offer_u,
            offer_delay=offer_delay,
            extended_due=extended_due,
            exogenous=exogenous,
        )

    def extension(self, job: JobPlan) -> JobPlan:
        """Filed on the due date's morning when the return's preparation is not done."""
        ext = EXTENSION_FOR[job.type_id]
        created = cal.opening(cal.day_of_date(job.due))
        return self._job(f"{job.id}-ext", job.client_id, ext, created, job.due)

    def _return(
        self,
        client_id: str,
        job_type: JobType,
        due: date,
        extended: date,
        weeks: dict[int, int],
        never_ready: float,
        extra: tuple[str, ...] = (),
        industry_share: float = 0.0,
    ) -> list[JobPlan]:
        self._client(client_id, job_type)
        rng = self._rng(f"arrival:{client_id}:{job_type.id}")
        specializations: tuple[str, ...] = ()
        if rng.random() < industry_share:
            specializations = (rng.choice(INDUSTRIES),)
        if rng.random() < never_ready:
            # Documents never complete: the firm files an extension a week before the date.
            ext_day = cal.working_day_on_or_before(cal.day_of_date(due) - 7)
            t = cal.opening(ext_day) + rng.random() * cal.DAY_SPAN
            ext = EXTENSION_FOR[job_type.id]
            return [self._job(f"{client_id}-{ext.id}", client_id, ext, t, due, exogenous=True)]
        week = _pick_week(rng, weeks)
        due_day = cal.day_of_date(due)
        t = _time_in_week(rng, week)
        # Documents arriving on (or after) the due date itself come in the day before.
        t = min(t, cal.opening(cal.working_day_on_or_before(due_day - 1)) + rng.random() * 9.0)
        return [
            self._job(
                f"{client_id}-{job_type.id}",
                client_id,
                job_type,
                t,
                due,
                extra_skills=extra,
                specializations=specializations,
                extended_due=extended,
            )
        ]

    def base_jobs(self) -> list[JobPlan]:
        p = self.profile
        april15, march15 = date(2027, 4, 15), date(2027, 3, 15)
        oct15, sep15 = date(2027, 10, 15), date(2027, 9, 15)
        jobs: list[JobPlan] = []
        for n in range(p.individual_returns):
            cid = f"ci{n:04d}"
            rng = self._rng(f"mix:{cid}")
            complex_ = rng.random() < INDIVIDUAL_COMPLEX_SHARE
            job_type = IND_COMPLEX if complex_ else IND_SIMPLE
            extra = ("multistate",) if complex_ and rng.random() < MULTISTATE_SHARE else ()
            jobs += self._return(
                cid, job_type, april15, oct15, INDIVIDUAL_WEEKS, NEVER_READY["individual"], extra
            )
            if rng.random() < VOUCHER_SHARE:
                t = _time_in_week(rng, rng.randint(6, 9))
                jobs.append(self._job(f"{cid}-{VOUCHER.id}", cid, VOUCHER, t, april15))
        for n in range(round(p.individual_returns * FIDUCIARY_PER_INDIVIDUAL)):
            cid = f"cf{n:04d}"
            jobs += self._return(
                cid, FIDUCIARY, april15, sep15, CORPORATE_WEEKS, NEVER_READY["individual"]
            )
        for n in range(p.business_returns):
            cid = f"cb{n:04d}"
            rng = self._rng(f"mix:{cid}")
            if rng.random() < PASS_THROUGH_SHARE:
                jobs += self._return(
                    cid,
                    PASS_THROUGH,
                    march15,
                    sep15,
                    BUSINESS_WEEKS,
                    NEVER_READY["business"],
                    industry_share=INDUSTRY_JOB_SHARE,
                )
            else:
                jobs += self._return(
                    cid,
                    CORPORATE,
                    april15,
                    oct15,
                    CORPORATE_WEEKS,
                    NEVER_READY["business"],
                    industry_share=INDUSTRY_JOB_SHARE,
                )
        jobs += self._recurring(p.monthly_close_clients, p.payroll_clients)
        return jobs

    def _recurring(self, close_clients: int, payroll_clients: int, first: int = 0) -> list[JobPlan]:
        jobs: list[JobPlan] = []
        sigma = math.log(CLOSE_DELAY_P90 / CLOSE_DELAY_MEDIAN) / 1.2815515655446004
        for n in range(first, first + close_clients):
            cid = f"cm{n:04d}"
            self._client(cid, MONTHLY_CLOSE)
            rng = self._rng(f"mix:{cid}")
            sales_tax = rng.random() < SALES_TAX_SHARE
            for start in MONTH_STARTS:
                # Month-start burst: every close is created at 08:00 on the first working day;
                # the client's statements arrive over the following days (right-skewed).
                created = cal.opening(cal.day_of_date(start))
                delay = min(7, max(1, round(CLOSE_DELAY_MEDIAN * math.exp(rng.gauss(0, sigma)))))
                ready_day = cal.add_working_days(cal.day_of_date(start), delay)
                ready = cal.opening(ready_day) + rng.random() * cal.DAY_SPAN
                due = _roll_back(date(start.year, start.month, 15))
                tag = f"{start.month:02d}"
                jobs.append(
                    self._job(
                        f"{cid}-{MONTHLY_CLOSE.id}-{tag}",
                        cid,
                        MONTHLY_CLOSE,
                        created,
                        due,
                        ready_t=ready,
                    )
                )
                if sales_tax:
                    jobs.append(
                        self._job(
                            f"{cid}-{SALES_TAX.id}-{tag}",
                            cid,
                            SALES_TAX,
                            created,
                            _roll_back(date(start.year, start.month, 20)),
                        )
                    )
        for n in range(payroll_clients):
            cid = f"cp{n:04d}"
            self._client(cid, PAYROLL_Q)
            created = cal.opening(cal.day_of_date(date(2027, 4, 1)))
            jobs.append(
                self._job(f"{cid}-{PAYROLL_Q.id}-q1", cid, PAYROLL_Q, created, date(2027, 4, 30))
            )
        return jobs

    def filler(self, hours: float, staff: list[StaffPlan], base: list[JobPlan]) -> list[JobPlan]:
        """Clean-up and advisory work arriving evenly over the peak weeks, ``hours`` in all.

        Split between staff-level clean-up and senior-level advisory in proportion to what
        each level has left after the base book, so the filler does not overload one tier.
        """
        if hours <= 0:
            return []
        season = [
            d for d in range(cal.SEASON_START_DAY, cal.SEASON_END_DAY) if cal.is_working_day(d)
        ]
        staff_cap = sum(p.chargeable_hours for p in staff if p.tier is Tier.STAFF)
        senior_cap = sum(p.chargeable_hours for p in staff if p.tier is not Tier.STAFF)
        advisory_share = senior_cap / (staff_cap + senior_cap)
        jobs: list[JobPlan] = []
        for kind, share in ((CLEANUP, 1 - advisory_share), (ADVISORY, advisory_share)):
            count = round(hours * share / kind.expected_hours)
            for k in range(count):
                rng = self._rng(f"filler:{kind.id}:{k}")
                cid = f"cx{kind.id[:3]}{k:04d}"
                self._client(cid, kind)
                day = rng.choice(season)
                t = cal.opening(day) + rng.random() * cal.DAY_SPAN
                days = 30 if kind is ADVISORY else 21
                due = _roll_back(cal.date_of_day(day + days))
                jobs.append(self._job(f"{cid}-{kind.id}", cid, kind, t, due))
        return jobs
