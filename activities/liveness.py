"""Heartbeats that say only "this worker is alive", for the dispatcher's long activities.

Without a heartbeat timeout the server learns that a worker died mid-activity only when the
attempt's start-to-close timeout runs out: ten minutes for a ledger rebuild, during which the
firm's dispatcher decides nothing. With one (``workflows.options.HEARTBEAT``) it learns within
seconds, and the retry runs on a live worker. These activities read and decide, they send
nothing a retry would repeat, so a beat needs no details: it is sent from a background task for
as long as the body runs, however long any one step of it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

BEAT_EVERY = 2.0
"""Seconds between beats. The SDK sends at most one per 80 % of the heartbeat timeout, so this
only bounds how stale the last one can be."""


@contextlib.asynccontextmanager
async def heartbeating(every: float = BEAT_EVERY) -> AsyncIterator[None]:
    """Beat every ``every`` seconds until the body returns (nothing outside an activity: the
    benchmarks and tests call some of these methods directly)."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    activity.heartbeat()  # at once: a body that never awaits still says it started
    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["BEAT_EVERY", "heartbeating"]
