"""Activity timeouts and retry policies, one per integration.

Each integration gets a bounded total (``schedule_to_close_timeout``): a side effect that cannot
succeed within it is recorded as failed on the engagement instead of retrying forever.
Non-retryable failures (4xx) are raised with ``non_retryable=True`` by the activities, and a
Retry-After from the vendor replaces the backoff through ``next_retry_delay``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Integration:
    attempt: timedelta
    """start_to_close: one try."""
    total: timedelta
    """schedule_to_close: every try together."""
    max_interval: timedelta
    heartbeat: timedelta | None = None
    """heartbeat_timeout: a worker that dies mid-attempt is noticed this soon (the activity
    beats in the background, ``activities.liveness``), not when ``attempt`` runs out."""

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=self.max_interval,
        )

    def run_local(
        self, activity: Callable[[Any, P], Awaitable[R]], arg: P, summary: str
    ) -> Awaitable[R]:
        """The same as a local activity: for quick reads (the worker's own config, one PM
        record) that need no task-queue round trip; the workflow task waits for them instead.
        Not for side effects: a local activity cannot heartbeat, and the exactly-once email
        records its intent by heartbeat."""
        return workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=self.attempt,
            schedule_to_close_timeout=self.total,
            retry_policy=self.retry_policy,
            summary=summary,
        )

    def run(self, activity: Callable[[Any, P], Awaitable[R]], arg: P, summary: str) -> Awaitable[R]:
        """Schedule the activity with this integration's timeouts and retries."""
        return workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=self.attempt,
            schedule_to_close_timeout=self.total,
            heartbeat_timeout=self.heartbeat,
            retry_policy=self.retry_policy,
            summary=summary,
        )


HEARTBEAT = timedelta(seconds=20)
"""For the dispatcher's own activities: while one of them waits on a dead worker, the firm's
dispatch waits too. Generous against a busy worker's event loop (it beats every 2 s)."""

PM = Integration(timedelta(seconds=30), timedelta(minutes=15), timedelta(seconds=60))
"""Karbon allows ~120 requests/min; bursts meet 429s that Retry-After paces."""

TRACKER = Integration(timedelta(seconds=60), timedelta(minutes=5), timedelta(seconds=30))
"""Reads of logged hours; informational, so a short total."""

CHAT = Integration(timedelta(seconds=20), timedelta(minutes=15), timedelta(seconds=60))
CALENDAR = Integration(timedelta(seconds=30), timedelta(minutes=15), timedelta(seconds=60))
EMAIL = Integration(timedelta(seconds=30), timedelta(minutes=30), timedelta(seconds=120))
CRM = Integration(timedelta(seconds=20), timedelta(minutes=30), timedelta(seconds=120))

FIRM = Integration(timedelta(seconds=90), timedelta(minutes=5), timedelta(seconds=10))
"""Reads of the firm config and the capacity snapshot. The snapshot pages through the time
tracker (Harvest allows 100 requests per 15 s), so one attempt may take a while."""

SNAPSHOT = Integration(
    timedelta(seconds=60), timedelta(minutes=2), timedelta(seconds=10), heartbeat=HEARTBEAT
)
"""The dispatcher's capacity read. The activity degrades a tracker outage to the last figures
itself; this bound only covers a worker that cannot run it at all, and then the dispatcher
keeps the snapshot it has and tries again a minute later."""

LEDGER = Integration(
    timedelta(minutes=10), timedelta(minutes=30), timedelta(seconds=30), heartbeat=HEARTBEAT
)
"""Collecting the engagements' holdings for a rebuild: one page of up to 500 engagements per
attempt, each asked with its own short timeout."""

CHAT_NOTICE = Integration(timedelta(seconds=20), timedelta(minutes=5), timedelta(seconds=30))
