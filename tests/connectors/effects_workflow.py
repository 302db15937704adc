"""A workflow that runs one connector activity with retries, for tests through a real worker.

Kept apart from the test modules so the workflow sandbox imports nothing but this.
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
    max_attempts: int = 40


@workflow.defn
class EffectWorkflow:
    @workflow.run
    async def run(self, call: EffectCall) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            call.activity,
            call.arg,
            start_to_close_timeout=timedelta(seconds=call.attempt_timeout),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=100),
                backoff_coefficient=1.5,
                maximum_interval=timedelta(seconds=1),
                maximum_attempts=call.max_attempts,
            ),
            result_type=dict,
        )
        return result
