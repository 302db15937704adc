"""Run the sandbox emulators on a free local port inside the test process (a uvicorn thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import uvicorn

from dispatch.config import FirmConfig, load_firm_config, rebase_connectors
from sandbox.app import create_app
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed, seed_from_firm

DEMO_BASE = "http://127.0.0.1:8100"


def free_port() -> int:
    with socket.socket() as s:
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
