"""The physical floor for the burst benchmark: a bare workflow with five no-op activities.

Same server, same worker settings, same burst size: whatever dispatch costs on top of this is
ours; what this costs is the machine and Temporal.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def no_op(step: int) -> int:
    return step


@workflow.defn
class BaselineWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(no_op, step, start_to_close_timeout=timedelta(seconds=30))
                for step in range(5)
            )
        )
        return sum(results) + n
