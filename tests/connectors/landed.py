"""Waiting for an effect to reach an emulator's store, when its answer is lost on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sized

LANDED_TIMEOUT = 15.0


async def landed(read: Callable[[], Sized], count: int = 1) -> None:
    """Wait until ``read()`` holds ``count`` items: a client that gave up early may still be
    ahead of the server, which handles the request a moment later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LANDED_TIMEOUT
    while len(read()) < count:
        if loop.time() > deadline:
            raise AssertionError(f"the effect never reached the emulator ({len(read())} found)")
        await asyncio.sleep(0.05)
