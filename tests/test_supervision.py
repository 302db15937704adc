"""The stack's supervisor, on real child processes that exit on their own.

A child that keeps dying is restarted with a pause that doubles up to a cap, and the crash loop
is reported once with the child's last log lines; a child that stayed up long enough starts
over at the first pause. Short pauses here; the defaults are 1 s doubling to 30 s.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from app.stack import Process, RestartPolicy, Stack, terminate_all
from dispatch.config import load_firm_config
from tests.harness import eventually


def found(pattern: str, line: str) -> tuple[str, ...]:
    match = re.search(pattern, line)
    assert match is not None, line
    return match.groups()


async def supervised(
    tmp_path: Path, policy: RestartPolicy, role: str, script: str, exits: int
) -> list[str]:
    """What the supervisor reports about a child running ``script``, over ``exits`` exits."""
    stack = Stack(load_firm_config(), tmp_path / "firm.yaml", data=tmp_path, policy=policy)
    stack.spawn(f"{role}-1", role, [sys.executable, "-c", script])
    reports: list[str] = []

    async def loop() -> None:
        while sum(1 for r in reports if "exited:" in r) < exits:
            await stack.check_children(reports.append)
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(loop(), timeout=120)
    finally:
        await stack.stop()
    return reports


async def test_a_crash_loop_backs_off_to_the_cap_and_is_reported_once(tmp_path: Path) -> None:
    policy = RestartPolicy(first_delay=0.2, max_delay=0.8, healthy_after=30, crash_loop=3)
    script = "print('worker: cannot reach the time tracker'); raise SystemExit(3)"
    reports = await supervised(tmp_path, policy, "worker", script, exits=5)

    exits = [r for r in reports if "exited:" in r]
    assert all("exit status 3" in r for r in exits)
    assert [found(r"restart (\d+) in ([\d.]+)s", r) for r in exits[:5]] == [
        ("1", "0.2"),
        ("2", "0.4"),
        ("3", "0.8"),
        ("4", "0.8"),
        ("5", "0.8"),
    ]
    restarts = [r for r in reports if "restarted" in r]
    assert [found(r"restart (\d+)\)", r) for r in restarts[:4]] == [("1",), ("2",), ("3",), ("4",)]
    loops = [r for r in reports if "crash-looping" in r]
    assert len(loops) == 3  # from the third exit in a row on
    assert "3 exits in a row" in loops[0] and "cannot reach the time tracker" in loops[0]
    assert all("cannot reach" not in r for r in loops[1:])  # the log tail is shown once


async def test_a_child_that_stayed_up_starts_over_at_the_first_pause(tmp_path: Path) -> None:
    policy = RestartPolicy(first_delay=0.2, max_delay=5, healthy_after=0.5, crash_loop=2)
    script = "import time; time.sleep(1.0); raise SystemExit(1)"
    reports = await supervised(tmp_path, policy, "starter", script, exits=3)

    exits = [r for r in reports if "exited:" in r]
    assert all(r.endswith("in 0.2s") for r in exits), exits
    assert not [r for r in reports if "crash-looping" in r]


async def test_a_child_that_ignores_sigterm_is_killed_after_its_grace(tmp_path: Path) -> None:
    stack = Stack(load_firm_config(), tmp_path / "firm.yaml", data=tmp_path)
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child: Process = stack.spawn("sandbox", "sandbox", [sys.executable, "-c", script])

    async def ready() -> bool | None:
        return True if "ready" in child.log_since_start() else None

    await eventually(ready, what="the child to ignore SIGTERM")
    assert await terminate_all([child], grace=0.5) == [-9]
