"""Run the sandbox emulators on a free local port inside the test process (a uvicorn thread)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from dispatch.config import FirmConfig, load_firm_config, rebase_connectors
from sandbox.app import create_app
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed, seed_from_firm

DEMO_BASE = "http://127.0.0.1:8100"


_PICKED: set[int] = set()
_PICKER = random.SystemRandom()  # independent of the tests' seeded ``random``


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS starts at 49152


def free_port() -> int:
    """A local port that is free now, below the kernel's ephemeral range and never handed out
    twice in this process. ``bind(0)`` picks from the ephemeral range, where any outgoing
    connection (a worker's to Temporal, a webhook to the sandbox) can take the port between
    the pick and the bind by the process it was picked for: the webhook server then fails with
    "address already in use"."""
    high = _ephemeral_ports_start()
    low = max(10000, high - 20000)
    for _ in range(500 if high - low >= 1000 else 0):
        port = _PICKER.randrange(low, high)
        if port in _PICKED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PICKED.add(port)
        return port
    with socket.socket() as s:  # no room below the ephemeral range: take the kernel's pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningSandbox:
    base_url: str
    ctx: SandboxContext
    config: FirmConfig
    """The demo firm with every connector pointed at this sandbox."""

    def requests(
        self, prefix: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.ctx.recorder.select(prefix=prefix, method=method)]

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/_sandbox/reset").raise_for_status()

    def faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the fault rules (``sandbox/faults.py``); ``[]`` heals every vendor."""
        answer = httpx.post(f"{self.base_url}/_sandbox/faults", json={"rules": rules})
        answer.raise_for_status()


@contextmanager
def run_sandbox(
    seed: SandboxSeed | None = None, config: FirmConfig | None = None, today: date | None = None
) -> Iterator[RunningSandbox]:
    firm = config or load_firm_config()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(seed or seed_from_firm(firm, today=today), base_url=base)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sandbox server did not start")
        time.sleep(0.02)
    try:
        yield RunningSandbox(base, app.state.sandbox, rebase_connectors(firm, DEMO_BASE, base))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
