"""``dispatch up`` keeps the stack running: killed workers come back, and only SIGTERM stops it.

The real command, as a user starts it (two worker processes, on free ports), its console read
line by line. Both workers are SIGKILLed while the dispatcher rebuilds its ledger (the firm's
dispatch waits on that activity); the stack reports each exit and restart, the rebuild is retried
once the heartbeat timeout notices the dead worker (not when its ten-minute attempt runs out), and
an engagement sent afterwards is assigned with its side effects. SIGTERM then stops every child,
webhooks first, and the command exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.client import Client

from app.stack import Ports, Stack
from app.temporal import connect
from dispatch.config import load_firm_config
from dispatch.ids import dispatcher_workflow_id
from tests.e2e.drive import free_ports, new_work_item, sandbox_firm_file, send_inserted, settled
from tests.harness import eventually
from workflows.dispatcher import DispatcherWorkflow

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
COLLECT = "firm_collect_holdings"


@dataclass
class Console:
    """What the command printed so far (a thread drains its output as it comes)."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    async def shows(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        async def probe() -> re.Match[str] | None:
            if self.process.poll() is not None and not re.search(pattern, self.text()):
                raise AssertionError(f"dispatch up exited:\n{self.text()}")
            return re.search(pattern, self.text())

        return await eventually(probe, timeout=timeout, interval=0.3, what=f"console: {pattern}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent has not reaped it yet).
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


async def rebuild_in_flight(client: Client, firm_id: str) -> None:
    """Ask the dispatcher for a ledger rebuild and return while a worker runs its collection
    (the activity waits 3 s for visibility to settle first, so a 0.1 s probe sees it)."""
    handle = client.get_workflow_handle(dispatcher_workflow_id(firm_id))

    async def running() -> bool | None:
        pending = (await handle.describe()).raw_description.pending_activities
        started = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        return any(a.activity_type.name == COLLECT and a.state == started for a in pending) or None

    for _ in range(5):
        await handle.signal(DispatcherWorkflow.rebuild_ledger)
        try:
            await eventually(running, timeout=20, interval=0.1, what="a rebuild in flight")
            return
        except AssertionError:
            continue  # it finished between two probes: ask again
    raise AssertionError("never saw the dispatcher's ledger collection running")


async def retried_after_heartbeat_timeout(client: Client, firm_id: str) -> bool:
    """Some collection's attempt was retried because its worker stopped beating."""
    handle = client.get_workflow_handle(dispatcher_workflow_id(firm_id))
    scheduled: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            timeout = started.last_failure.timeout_failure_info.timeout_type
            if (
                scheduled.get(started.scheduled_event_id) == COLLECT
                and started.attempt > 1
                and timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
            ):
                return True
    return False


@pytest.fixture
def dispatch_up(tmp_path: Path) -> Iterator[tuple[Console, Ports, Path]]:
    ports = free_ports()
    firm_file = sandbox_firm_file(tmp_path, ports)
    env = {
        **os.environ,
        "DISPATCH_TEMPORAL_PORT": str(ports.temporal),
        "DISPATCH_UI_PORT": str(ports.ui),
        "DISPATCH_PORT": str(ports.starter),
        "DISPATCH_SANDBOX_PORT": str(ports.sandbox),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("TEMPORAL_ADDRESS", None)
    argv = [sys.executable, "-m", "app.cli", "up", "--firm", str(firm_file)]
    process = subprocess.Popen(
        [*argv, "--root", str(ROOT), "--data", str(tmp_path / "data"), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        yield Console(process), ports, firm_file
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_killed_workers_are_restarted_and_dispatching_goes_on(
    dispatch_up: tuple[Console, Ports, Path],
) -> None:
    console, ports, firm_file = dispatch_up
    await console.shows(r"Running\. Press Ctrl-C to stop\.")
    listed = await console.shows(r"processes: (.*)")
    pids = {name: int(pid) for name, pid in re.findall(r"([\w-]+) \(pid (\d+)\)", listed[1])}
    assert set(pids) == {"temporal", "sandbox", "worker-1", "worker-2", "starter"}
    firm_id = load_firm_config(firm_file).firm.id
    client = await connect(f"localhost:{ports.temporal}")

    await rebuild_in_flight(client, firm_id)
    for name in ("worker-1", "worker-2"):
        os.kill(pids[name], signal.SIGKILL)
    for name in ("worker-1", "worker-2"):
        await console.shows(
            rf"{name} \(pid {pids[name]}\) exited: killed by SIGKILL after [\d.]+s; "
            r"restart 1 in 1s"
        )
        await console.shows(rf"{name} restarted \(pid \d+, restart 1\)")
        await console.shows(rf"{name} is back")
    assert "crash-looping" not in console.text()

    stack = Stack(load_firm_config(firm_file), firm_file, ports=ports)
    stack.temporal_address = f"localhost:{ports.temporal}"
    key = await new_work_item(
        stack, "2026 1040 - Marlow household", "cl-marlow-family", "Tax Return - Individual", 12
    )
    response = await send_inserted(stack, key)
    assert response.status_code == 202, response.text
    # Well inside the rebuild attempt's ten minutes: the dead worker's silence was noticed.
    state = await settled(stack, response.json()["workflow_id"], timeout=90)
    assert state.preparer is not None
    assert await retried_after_heartbeat_timeout(client, firm_id)

    restarted = {
        name: int(pid)
        for name, pid in re.findall(r"(worker-\d) restarted \(pid (\d+)", console.text())
    }
    children = [pid for name, pid in pids.items() if not name.startswith("worker")]
    children += list(restarted.values())
    console.process.send_signal(signal.SIGTERM)
    assert console.process.wait(timeout=90) == 0
    out = console.text()
    order = [
        out.index(f"stopped {name}") for name in ("starter", "worker-1", "sandbox", "temporal")
    ]
    assert order == sorted(order), out
    assert "worker-1 (exit status 0), worker-2 (exit status 0)" in out
    assert not [pid for pid in children if alive(pid)]
