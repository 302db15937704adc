"""The dispatcher's long activities beat while they run, and only while they run.

The heartbeat timeout on them (``workflows.options.HEARTBEAT``) lets the server notice a dead
worker in seconds; it would also time out a live one whose beats stopped during a long step
(a settle sleep, a page of the time tracker, a solve in a thread). The end-to-end check, a
worker SIGKILLed mid-rebuild, is ``tests/e2e/test_supervision.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.firm import FirmActivities
from activities.liveness import BEAT_EVERY, heartbeating
from dispatch.config import load_firm_config
from dispatch.models import SnapshotInput
from workflows import options


def beats_recorded() -> tuple[ActivityEnvironment, list[float]]:
    env = ActivityEnvironment()
    beats: list[float] = []

    def on_heartbeat(*details: Any) -> None:
        beats.append(time.monotonic())

    env.on_heartbeat = on_heartbeat
    return env, beats


async def test_beats_go_on_through_a_step_that_blocks_in_a_thread() -> None:
    env, beats = beats_recorded()

    async def long_step() -> None:
        async with heartbeating(every=0.05):
            await asyncio.to_thread(time.sleep, 0.6)  # a solve, a slow page: no await inside

    await env.run(long_step)
    assert len(beats) >= 5, beats
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 0.5, gaps

    after = len(beats)
    await asyncio.sleep(0.2)
    assert len(beats) == after, "beats went on after the activity returned"


async def test_a_failing_body_stops_the_beats_and_raises() -> None:
    env, beats = beats_recorded()

    async def fails() -> None:
        async with heartbeating(every=0.05):
            await asyncio.sleep(0.12)
            raise ValueError("tracker page refused")

    try:
        await env.run(fails)
    except ValueError as err:
        assert "tracker page refused" in str(err)
    else:
        raise AssertionError("the body's error was swallowed")
    after = len(beats)
    assert after >= 2
    await asyncio.sleep(0.15)
    assert len(beats) == after


async def test_outside_an_activity_the_body_just_runs() -> None:
    # Benchmarks and tests call capacity_snapshot directly, with no activity context.
    snapshot = await FirmActivities(load_firm_config(), None).capacity_snapshot(
        SnapshotInput(firm_id="f")
    )
    assert snapshot.staff


async def test_the_capacity_snapshot_beats_inside_an_activity() -> None:
    env, beats = beats_recorded()
    firm = FirmActivities(load_firm_config(), None)
    await env.run(firm.capacity_snapshot, SnapshotInput(firm_id="f"))
    assert beats, "capacity_snapshot sent no heartbeat"


def test_the_dispatchers_long_waits_have_a_heartbeat_timeout() -> None:
    # What the dispatcher waits on with the firm's dispatch held: a dead worker must be noticed
    # well before the attempt (a minute, ten minutes) runs out, and a busy live one must not
    # be taken for dead (several beats fit in the timeout).
    for integration in (options.SNAPSHOT, options.LEDGER):
        assert integration.heartbeat is not None
        assert integration.heartbeat <= integration.attempt / 2
        assert integration.heartbeat.total_seconds() >= 5 * BEAT_EVERY
