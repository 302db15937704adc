"""The reference for the webhook benchmark: what Temporal and the machine cost on their own.

A bare workflow of five sequential no-op activities, started through a webhook endpoint as thin
as ours (FastAPI under uvicorn, the raw body read, an HMAC-SHA256 signature checked, the JSON
validated with pydantic, one ``start_workflow`` with a deterministic id, 202), run by worker
processes on its own task queue, on the same server as the stack. Whatever dispatch costs on
top of this is ours.

    python -m benchmarks.reference                   # a worker: TEMPORAL_ADDRESS, until SIGTERM
    python -m benchmarks.reference_web --port P      # the endpoint: REFERENCE_SECRET signs bodies
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow

# Only the standard library and temporalio at the top: the workflow sandbox re-imports this
# module, and the reference must not pay for imports the workflow does not use (the endpoint
# is in benchmarks/reference_web.py).

TASK_QUEUE = "reference"
SECRET_ENV = "REFERENCE_SECRET"
READY = "polling task queue"
"""What a reference worker logs when it is ready (as ours do)."""


@activity.defn
async def no_op(step: int) -> int:
    return step


@workflow.defn
class ReferenceWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        done = 0
        for step in range(5):
            done += await workflow.execute_activity(
                no_op, step, start_to_close_timeout=timedelta(seconds=30)
            )
        return done


def workflow_id(request_id: str) -> str:
    return f"reference-{request_id}"


async def run_worker() -> None:
    from temporalio.worker import Worker

    from app.temporal import connect

    client = await connect()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with Worker(
        client, task_queue=TASK_QUEUE, workflows=[ReferenceWorkflow], activities=[no_op]
    ):
        print(f"reference worker {READY} {TASK_QUEUE!r}", flush=True)
        await stop.wait()


def main() -> None:
    logging.basicConfig(level="WARNING")
    asyncio.run(run_worker())
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
