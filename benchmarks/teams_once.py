"""How often does a Teams card get posted twice when the worker dies mid-flight?

    .venv/bin/python -m benchmarks.teams_once --cards 600 --kill-every 1.0

A Teams Workflows webhook has no idempotency key and no way to read back what it posted, so a
card whose post succeeded but whose activity completion never reached Temporal (the worker
was killed in between) is posted again on the retry. This measures that residual rate with
the real activity (``chat_notify_assignment`` of ``activities.teams``), a real dev server and
the Teams emulator: N cards are posted by N small workflows while the worker process is
SIGKILLed once it has been polling for about ``--kill-every`` seconds (0.5-1.5x, seeded)
and restarted at once, until every card is done. The
baseline is the same run without kills (it must show no duplicate at all); a third run stops
the worker with SIGTERM instead (a deploy: the worker drains its activities first). Prints
cards, stops, duplicate posts and the rate for each.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta

from temporalio import workflow
from temporalio.client import Client, WorkflowHandle

with workflow.unsafe.imports_passed_through():
    from activities.roles import ChatActivities
    from dispatch.config import Tier
    from dispatch.models import (
        AssignmentNotice,
        ChatResult,
        EngagementSummary,
        Role,
        StaffRef,
    )
    from workflows import options

FLOW = "/teams/workflows/dispatch-channel"
PUBLIC = "https://dispatch.example.com"


@workflow.defn
class TeamsCardWorkflow:
    """One assignment card, with the engagement's own retry options for chat."""

    @workflow.run
    async def run(self, notice: AssignmentNotice) -> ChatResult:
        return await options.CHAT.run(ChatActivities.notify_assignment, notice, "notify")


def notice(n: int, run: str) -> AssignmentNotice:
    person = StaffRef(
        id="priya", name="Priya Shah", email="priya@harborfinch.example", tier=Tier.SENIOR
    )
    return AssignmentNotice(
        summary=EngagementSummary(
            workflow_id=f"engagement-bench-{run}-{n}",
            title=f"Card {run}-{n}",
            client_id="cl-bench",
            client_name="Bench Client",
            service_type="individual_tax",
            service_name="Individual tax return (1040)",
            due_date=date.today() + timedelta(days=10),
            estimated_hours=4,
        ),
        recipient=person,
        role=Role.PREPARER,
    )


# --- the worker process ----------------------------------------------------------------------


async def serve(address: str, queue: str, sandbox_base: str) -> None:
    from temporalio.worker import Worker

    from activities.teams import TeamsActivities
    from app.temporal import data_converter
    from dispatch.config import TeamsConnector, load_firm_config, rebase_connectors
    from tests.sandbox_server import DEMO_BASE

    config = rebase_connectors(load_firm_config(), DEMO_BASE, sandbox_base)
    teams = TeamsActivities(config, TeamsConnector(kind="teams", public_base_url=PUBLIC))
    client = await Client.connect(address, data_converter=data_converter())
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[TeamsCardWorkflow],
        activities=[teams.notify_assignment],
        graceful_shutdown_timeout=timedelta(seconds=20),  # as worker.py
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        print("ready", flush=True)  # the benchmark times its stop from here
        await stop.wait()


# --- the benchmark ---------------------------------------------------------------------------


def spawn_worker(address: str, queue: str, sandbox_base: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.teams_once", "--worker", address, queue, sandbox_base],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


async def ready(worker: subprocess.Popen[bytes]) -> None:
    """Until the worker says it is polling (Python start-up alone can take a second)."""
    assert worker.stdout is not None
    line = await asyncio.to_thread(worker.stdout.readline)
    if line.strip() != b"ready":
        raise RuntimeError("the worker did not start")


async def one_run(
    client: Client,
    address: str,
    sandbox_base: str,
    posts: list[dict[str, object]],
    cards: int,
    kill_every: float | None,
    how: signal.Signals = signal.SIGKILL,
) -> tuple[int, int, float]:
    """(duplicate posts, stops, seconds to drain) for one batch of cards; the worker is
    stopped with ``how`` (SIGKILL: a crash; SIGTERM: a deploy, which drains first)."""
    run = uuid.uuid4().hex[:6]
    queue = f"teams-once-{run}"
    worker = spawn_worker(address, queue, sandbox_base)
    began = time.monotonic()
    handles: list[WorkflowHandle[TeamsCardWorkflow, ChatResult]] = [
        await client.start_workflow(
            TeamsCardWorkflow.run, notice(n, run), id=f"teams-once-{run}-{n}", task_queue=queue
        )
        for n in range(cards)
    ]
    done = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
    kills = 0
    chance = random.Random(7)  # kill moments vary, the same way on every run
    try:
        await ready(worker)
        while not done.done():
            up_for = (kill_every or 3600) * chance.uniform(0.5, 1.5)
            await asyncio.wait({done}, timeout=up_for)
            if kill_every is not None and not done.done():
                os.kill(worker.pid, how)
                await asyncio.to_thread(worker.wait)
                kills += 1
                worker = spawn_worker(address, queue, sandbox_base)
                await ready(worker)
        await done
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    seconds = time.monotonic() - began
    per_card = collections.Counter(
        str(p["card"]).split(f"Card {run}-", 1)[1].split("'", 1)[0]
        for p in posts
        if f"Card {run}-" in json.dumps(p["card"])
    )
    missing = cards - len(per_card)
    assert missing == 0, f"{missing} cards never posted"
    return sum(count - 1 for count in per_card.values()), kills, seconds


async def main(cards: int, kill_every: float) -> None:
    from app.secrets_demo import export_demo_secrets
    from tests.conftest import start_dev_server
    from tests.sandbox_server import run_sandbox

    export_demo_secrets()
    with run_sandbox() as sandbox:
        os.environ["TEAMS_WEBHOOK_URL"] = f"{sandbox.base_url}{FLOW}"
        env = await start_dev_server()
        try:
            address = env.client.service_client.config.target_host
            posts = sandbox.ctx.stores["teams"].posts
            base_dupes, _, base_seconds = await one_run(
                env.client, address, sandbox.base_url, posts, cards, None
            )
            runs = {
                how: await one_run(
                    env.client, address, sandbox.base_url, posts, cards, kill_every, how
                )
                for how in (signal.SIGTERM, signal.SIGKILL)
            }
        finally:
            await env.shutdown()
    print(f"cards per run: {cards}")
    print(f"baseline (no stops): {base_dupes} duplicate posts, drained in {base_seconds:.1f} s")
    for how, (dupes, stops, seconds) in runs.items():
        print(
            f"worker {how.name} about every {kill_every:g} s of polling ({stops} stops): "
            f"{dupes} duplicate posts = {100 * dupes / cards:.2f} % of cards, "
            f"drained in {seconds:.1f} s"
        )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        from app.secrets_demo import export_demo_secrets

        export_demo_secrets()
        os.environ.setdefault("TEAMS_WEBHOOK_URL", f"{sys.argv[4]}{FLOW}")
        asyncio.run(serve(sys.argv[2], sys.argv[3], sys.argv[4]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cards", type=int, default=600)
    parser.add_argument("--kill-every", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.cards, args.kill_every))
