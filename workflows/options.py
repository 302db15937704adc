"""Activity timeouts and retry policies, one per integration.

Each integration gets a bounded total (``schedule_to_close_timeout``): a side effect that cannot
succeed within it is recorded as failed on the engagement instead of retrying forever.
Non-retryable failures (4xx) are raised with ``non_retryable=True`` by the activities, and a
Retry-After from the vendor replaces the backoff through ``next_retry_delay``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityConfig


def _policy(max_interval_s: float) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=max_interval_s),
    )


PM = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=15),
    retry_policy=_policy(60),
)
"""Karbon allows ~120 requests/min; bursts meet 429s that Retry-After paces."""

TIME_TRACKER = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=60),
    schedule_to_close_timeout=timedelta(minutes=5),
    retry_policy=_policy(30),
)

CHAT = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=20),
    schedule_to_close_timeout=timedelta(minutes=15),
    retry_policy=_policy(60),
)

CALENDAR = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=15),
    retry_policy=_policy(60),
)

EMAIL = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=_policy(120),
)

CRM = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=20),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=_policy(120),
)

FIRM = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=5),
    retry_policy=_policy(10),
)
"""Reads of the firm config and the capacity snapshot (which calls the time tracker)."""
