"""A workflow that runs one connector activity with retries, for tests through a real worker.

Kept apart from the test modules so the workflow sandbox imports nothing but this. The defaults
retry fast for tests; the chaos benchmark passes the engagement workflow's own timeouts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy


class EffectCall(BaseModel):
    activity: str
    arg: dict[str, Any]
    attempt_timeout: float = 10.0
    """Seconds: start-to-close of one attempt."""
    total_timeout: float | None = None
    """Seconds: schedule-to-close of all attempts together (None: bounded by attempts)."""
    initial_interval: float = 0.1
    backoff: float = 1.5
    max_interval: float = 1.0
    max_attempts: int = 40
    """0: unlimited (then ``total_timeout`` bounds the retries)."""


@workflow.defn
class EffectWorkflow:
    @workflow.run
    async def run(self, call: EffectCall) -> dict[str, Any]:
        total = call.total_timeout
        result: dict[str, Any] = await workflow.execute_activity(
            call.activity,
            call.arg,
            start_to_close_timeout=timedelta(seconds=call.attempt_timeout),
            schedule_to_close_timeout=timedelta(seconds=total) if total else None,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=call.initial_interval),
                backoff_coefficient=call.backoff,
                maximum_interval=timedelta(seconds=call.max_interval),
                maximum_attempts=call.max_attempts,
            ),
            result_type=dict,
        )
        return result
