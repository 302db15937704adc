"""The worker: runs the engagement and dispatcher workflows and every activity.

    python worker.py            # firm from DISPATCH_FIRM_CONFIG (or the demo firm)

Temporal comes from TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (default localhost:7233, default).
Secrets come from the environment variables the firm config names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.karbon import ensure_work_subscription
from activities.registry import build_activities
from app import schedules
from app.telemetry import setup_tracing
from app.temporal import EncryptionNotConfigured, connect, require_encryption
from dispatch import TASK_QUEUE
from dispatch.codec import CodecKeyError
from dispatch.config import FirmConfig, FirmConfigError, load_firm_config
from dispatch.ids import dispatcher_workflow_id
from dispatch.models import DispatcherInput
from workflows.dispatcher import DispatcherWorkflow
from workflows.engagement import EngagementWorkflow
from workflows.pm_poller import PmPollerWorkflow
from workflows.recurring import RecurringSpawnerWorkflow

log = logging.getLogger("dispatch.worker")

WORKFLOWS = [EngagementWorkflow, DispatcherWorkflow, RecurringSpawnerWorkflow, PmPollerWorkflow]


CACHE_ENV = "DISPATCH_WORKFLOW_CACHE"
DEFAULT_CACHE = 2000
"""Workflows kept in memory between tasks. An engagement evicted from the cache is replayed in
full at its next task (a checkpoint, a click): a firm's open engagements should fit
(docs/benchmarks.md measures the memory this takes)."""


WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)
"""The sandbox re-imported the workflow modules for every new workflow run: a fifth of a
worker's CPU in a month-end burst (py-spy, docs/benchmarks.md). They hold no module state, so
they are imported once; what the sandbox's import isolation guarded in them (no clock, random,
I/O or threads in workflow code) is checked by ``tests/test_layers.py`` over every workflow
module instead."""


def build_worker(
    client: Client,
    config: FirmConfig,
    task_queue: str = TASK_QUEUE,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        interceptors=interceptors,
        workflows=WORKFLOWS,
        activities=build_activities(config),
        # Blocking SDKs (SendGrid, Google) run in threads via asyncio.to_thread.
        activity_executor=ThreadPoolExecutor(max_workers=32),
        graceful_shutdown_timeout=timedelta(seconds=20),
        max_cached_workflows=int(os.environ.get(CACHE_ENV, DEFAULT_CACHE)),
        workflow_runner=WORKFLOW_RUNNER,
    )


async def ensure_dispatcher(
    client: Client, config: FirmConfig, task_queue: str = TASK_QUEUE
) -> None:
    """Start the firm's dispatcher if it is not running yet (idempotent)."""
    await client.start_workflow(
        DispatcherWorkflow.run,
        DispatcherInput(firm_id=config.firm.id),
        id=dispatcher_workflow_id(config.firm.id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def ensure_pm_webhooks(config: FirmConfig) -> None:
    """Karbon: re-create the Work webhook subscription if Karbon dropped it."""
    pm = config.connectors.pm
    if pm.kind != "karbon" or not pm.webhook_target_url:
        return
    try:
        await ensure_work_subscription(pm, pm.webhook_target_url)
    except (ApplicationError, FirmConfigError) as err:
        # Not fatal: engagements already running keep going, and the next start retries.
        log.warning("could not check the Karbon webhook subscription: %s", err)


async def sync_schedules(client: Client, config: FirmConfig) -> None:
    """Recurring templates and the PM poller follow the firm file on every start."""
    try:
        report = await schedules.sync(client, config)
    except RPCError as err:
        log.warning("could not sync schedules: %s", err)
        return
    log.info(
        "schedules: %d created, %d updated, %d deleted, %d unchanged",
        len(report.created),
        len(report.updated),
        len(report.deleted),
        len(report.unchanged),
    )


async def run_worker(
    config: FirmConfig, client: Client | None = None, stop: asyncio.Event | None = None
) -> None:
    setup_tracing("dispatch-worker")
    client = client or await connect(metrics=True)
    stop = stop or asyncio.Event()
    await ensure_dispatcher(client, config)
    await ensure_pm_webhooks(config)
    await sync_schedules(client, config)
    async with build_worker(client, config):
        log.info("worker polling task queue %r for firm %s", TASK_QUEUE, config.firm.id)
        await stop.wait()
    log.info("worker stopped")


def configure_logging() -> None:
    """The worker's and the webhook server's logging: ``DISPATCH_LOG_LEVEL`` (default INFO)."""
    logging.basicConfig(
        level=os.environ.get("DISPATCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # slack_sdk logs every request body at DEBUG (message text: client names). Never, even for
    # a firm debugging at DEBUG; above INFO the root's level holds.
    root = logging.getLogger().getEffectiveLevel()
    logging.getLogger("slack_sdk").setLevel(max(logging.INFO, root))


async def _main() -> int:
    configure_logging()
    try:
        require_encryption()
        config = load_firm_config()
    except (FirmConfigError, EncryptionNotConfigured, CodecKeyError) as err:
        print(f"worker: {err}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_worker(config, stop=stop)
    except RuntimeError as err:  # e.g. Temporal unreachable at start-up
        print(f"worker: {err}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    code = asyncio.run(_main())
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal core runtime can abort there.
    os._exit(code)


if __name__ == "__main__":
    main()
