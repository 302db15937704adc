"""The ``dispatch`` command: ``up``, ``demo``, ``board``, ``schedules``, ``simulate``, ``sandbox``.

dispatch up [--workers N]   # the whole stack on the demo firm (or DISPATCH_FIRM_CONFIG),
                            # supervised: a process that exits is restarted
dispatch demo [--once]      # the month-end story; --once exits 0 only if all went as expected
              [--batch-window S]  # assign the burst jointly (batch optimizer)
dispatch board [--status S] # the dispatch board from Temporal (same read model as /board)
dispatch board --link --as ID  # a sign-in link to the web board for a partner or manager
dispatch audit export --from YYYY-MM-DD --to YYYY-MM-DD [--csv|--json] [--out FILE]
                            # every assignment decision and override in the window
dispatch sandbox            # only the emulators, on :8100
dispatch simulate [--profile M15 --seeds 10]  # the tax-season benchmark (policies compared)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

import yaml
from rich.console import Console
from rich.markup import escape

from app import schedules
from app.secrets_demo import SecretsRefused
from app.stack import Stack, StackError, default_workers, metrics_base
from dispatch import TASK_QUEUE
from dispatch.config import (
    CONFIG_ENV,
    DEMO_FIRM_PATH,
    FirmConfig,
    FirmConfigError,
    load_firm_config,
)
from simulation import cli as simulation_cli

T = TypeVar("T")


def _firm_path(given: str | None) -> Path:
    if given:
        os.environ[CONFIG_ENV] = str(Path(given).resolve())
    return Path(os.environ.get(CONFIG_ENV) or DEMO_FIRM_PATH).resolve()


def _window(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 300:
        raise argparse.ArgumentTypeError("must be between 0 and 300 seconds")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1024 <= value <= 65535 - 64:
        raise argparse.ArgumentTypeError("must be between 1024 and 65471 (room for 64 workers)")
    return value


def _demo_twin(args: argparse.Namespace, stack: Stack) -> tuple[FirmConfig, Path]:
    """The demo always runs against the sandbox: the firm's demo twin, written beside the dev
    server's data so the worker and webhook server read the same file."""
    from app import demo as demo_story

    config = demo_story.in_sandbox(stack.config, stack.sandbox_base, stack.starter_url)
    if args.batch_window is not None:
        policy = config.policy.model_copy(update={"batch_window_seconds": args.batch_window})
        config = config.model_copy(update={"policy": policy})
    path = stack.data_dir / "demo-firm.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False),
        encoding="utf-8",
    )
    return config, path


def _console_report(console: Console) -> Callable[[str], None]:
    def report(line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        console.print(f"[yellow]{stamp}[/] {escape(line)}", soft_wrap=True)

    return report


async def _until(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None when ``stop`` is set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _up(args: argparse.Namespace, console: Console, demo: bool) -> int:
    from app import demo as demo_story
    from app.temporal import connect

    path, root = args.firm_path, args.root_path
    config = load_firm_config(path)
    shown = path.name
    try:
        metrics = metrics_base(args.metrics_port)
    except StackError as err:
        console.print(f"[red]{escape(str(err))}[/]", soft_wrap=True)
        return 2
    options = {"root": root, "data": args.data_path, "workers": args.workers, "metrics": metrics}
    stack = Stack(config, path, **options)
    if demo:
        config, path = _demo_twin(args, stack)
        stack = Stack(config, path, **options)
    # Before anything starts: a firm whose real connectors lack secrets is refused here.
    stack.check_secrets()
    stop = asyncio.Event()

    def asked_to_stop() -> None:
        if stop.is_set():  # asked again while stopping: do not wait for the children
            stack.kill_all()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, asked_to_stop)
    report = _console_report(console)
    console.print(f"[bold]Starting[/] engagement dispatch for {config.firm.name} ({shown})...")
    supervisor: asyncio.Task[None] | None = None
    code = 0
    try:
        try:
            started = await _until(stop, _started(stack, fresh_demo=demo))
        except StackError as err:
            console.print(f"[red]could not start the stack:[/] {escape(str(err))}", soft_wrap=True)
            return 1
        if not started:
            return 0
        _print_started(stack, config, console)
        supervisor = asyncio.create_task(stack.supervise(report, stop))
        if demo:
            client = await connect(stack.temporal_address)
            story = demo_story.run(config, client, stack.starter_url, console)
            problems = await _until(stop, story)
            if problems is None:
                return 0
            if stack.ui_url:
                console.print(
                    f"\nOpen the Web UI: {stack.ui_url}/namespaces/default/workflows"
                    "?query=DispatchStatus%3D%22NeedsPartnerReview%22"
                )
            if problems:
                console.print("[red bold]Not every engagement reached its expected state:[/]")
                for problem in problems:
                    console.print(f"  - {escape(problem)}")
                code = 1
            else:
                console.print("[green bold]Every engagement reached its expected state.[/]")
            if args.once:
                return code
        console.print("\nRunning. Press Ctrl-C to stop.")
        await stop.wait()
        return code
    finally:
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        console.print("Stopping...")
        await stack.stop(report)


async def _started(stack: Stack, fresh_demo: bool) -> bool:
    await stack.start(fresh_demo=fresh_demo)
    return True


def _print_started(stack: Stack, config: FirmConfig, console: Console) -> None:
    for note in stack.notes:
        console.print(f"  [dim]{escape(note)}[/]")
    if config.policy.batch_window_seconds > 0:
        console.print(
            f"  batching:  arrivals within {config.policy.batch_window_seconds:g} s are assigned "
            "jointly (batch optimizer)"
        )
    console.print("  processes: " + ", ".join(f"{p.name} (pid {p.pid})" for p in stack.processes))
    console.print(
        f"  webhooks:  {stack.starter_url}/webhooks/karbon, "
        f"{stack.starter_url}/webhooks/engagements"
    )
    if stack.ui_url:
        console.print(f"  Web UI:    {stack.ui_url}/namespaces/default/workflows")
    console.print(f"  board:     {stack.starter_url}/board")
    _print_demo_signin(stack, config, console)
    workers = [p.name for p in stack.processes if p.role == "worker"]
    if stack.metrics is not None:
        endpoints = (f"{w} http://{stack.metrics_address(w)}/metrics" for w in workers)
        console.print("  metrics:   " + ", ".join(endpoints))
    console.print(f"  logs:      {stack.data_dir / 'logs'}")


def _local_temporal() -> str | None:
    """The dev server ``dispatch up`` starts, when its port was moved and no address is set."""
    port = os.environ.get("DISPATCH_TEMPORAL_PORT")
    if port and not os.environ.get("TEMPORAL_ADDRESS"):
        return f"localhost:{port}"
    return None


def _print_demo_signin(stack: Stack, config: FirmConfig, console: Console) -> None:
    """On the sandbox firm, a sign-in link for the managing partner. A real firm's links are
    bearer credentials and never go to a stream that may be logged: `dispatch board --link`."""
    from app.board_web import NotAllowed, signin_link
    from app.secrets_demo import BOARD_SECRET_ENV, DEMO_SECRETS

    if os.environ.get(BOARD_SECRET_ENV) != DEMO_SECRETS[BOARD_SECRET_ENV]:
        console.print("  [dim]board sign-in: dispatch board --link --as <partner id>[/]")
        return
    partner = config.escalation.managing_partner
    try:
        link = signin_link(config, partner, datetime.now(UTC), base=stack.starter_url)
    except NotAllowed as refused:
        console.print(f"  [dim]board sign-in: {escape(str(refused))}[/]")
        return
    # One line, never wrapped: a link broken in two does not open.
    console.print(
        f"  sign in:   {link}  (as {partner}, once, within 15 minutes)",
        soft_wrap=True,
        highlight=False,
    )


def _board_link(args: argparse.Namespace, console: Console) -> int:
    from app.board_web import NotAllowed, signin_link

    if not args.as_staff:
        console.print("[red]--link needs --as <staff id>[/] (a partner or manager)")
        return 2
    config = load_firm_config()
    try:
        link = signin_link(config, args.as_staff, datetime.now(UTC), base=args.base_url)
    except NotAllowed as err:
        console.print(f"[red]no link:[/] {escape(str(err))}")
        return 2
    # The link is a bearer credential until it is used or expires (15 minutes): print it
    # only to the operator's terminal, never to a log.
    print(link)
    return 0


async def _board(args: argparse.Namespace, console: Console) -> int:
    from app import board
    from app.temporal import connect

    try:
        filters = board.BoardFilters.parse(
            {
                "status": args.status,
                "person": args.person,
                "client": args.client,
                "service": args.service,
                "due_from": args.due_from,
                "due_to": args.due_to,
            }
        )
    except board.FilterError as err:
        console.print(f"[red]--{err.field.replace('_', '-')}:[/] {escape(err.reason)}")
        return 2
    config = load_firm_config()
    try:
        client = await connect(_local_temporal())
    except RuntimeError as err:
        console.print(f"[red]cannot reach Temporal:[/] {err}")
        return 1
    today = config.firm.today_at(datetime.now(UTC))
    view = await board.read_board(
        client,
        firm_id=config.firm.id,
        config=config,
        filters=filters,
        today=today,
        task_queue=args.task_queue,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in view.engagements], indent=2))
    else:
        board.render([board.row_from_listing(r) for r in view.engagements], console)
        board.render_capacity(view, console)
    return 0


def _audit_window(args: argparse.Namespace) -> tuple[date, date]:
    """The export's days, or ValueError naming the flag and the reason."""
    from app.audit import check_window

    days = []
    for flag, text in (("--from", args.start), ("--to", args.end)):
        try:
            days.append(date.fromisoformat(text))
        except ValueError:
            raise ValueError(f"{flag}: not a date (YYYY-MM-DD): {text!r}") from None
        if len(text) != 10:
            raise ValueError(f"{flag}: not a date (YYYY-MM-DD): {text!r}")
    start, end = days
    check_window(start, end)
    return start, end


async def _audit(args: argparse.Namespace) -> int:
    from app import audit
    from app.temporal import connect

    try:
        start, end = _audit_window(args)
    except ValueError as err:
        print(f"dispatch audit export: {err}", file=sys.stderr)
        return 2
    try:
        client = await connect(_local_temporal())
        records = await audit.collect_decisions(client, start, end)
    except (RuntimeError, audit.AuditUnavailable) as err:
        print(f"dispatch audit export: {err}", file=sys.stderr)
        return 1
    text = audit.render_audit(records, "json" if args.json else "csv")
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    partial = out.with_name(f".{out.name}.partial")
    try:
        # Written whole or not at all: an auditor never gets half a file.
        partial.write_text(text, encoding="utf-8", newline="")
        partial.replace(out)
    except OSError as err:
        partial.unlink(missing_ok=True)
        print(f"dispatch audit export: cannot write {out}: {err.strerror}", file=sys.stderr)
        return 2
    print(f"{len(records)} records from {start} to {end} written to {out}", file=sys.stderr)
    return 0


def _add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("audit", help="export every assignment decision (for an auditor)")
    actions = a.add_subparsers(dest="audit_command", required=True)
    export = actions.add_parser(
        "export",
        help="decisions and overrides from --from to --to (UTC days, both included)",
    )
    export.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD")
    export.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD")
    fmt = export.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one row per record (the default)")
    fmt.add_argument("--json", action="store_true", help="every record with its candidates")
    export.add_argument("--out", metavar="FILE", help="write here instead of standard output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "run the whole stack"),
        ("demo", "run the stack and play the month-end story"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--firm", help=f"firm config YAML (default: ${CONFIG_ENV} or the demo firm)")
        p.add_argument("--root", default=".", help="project folder (worker.py, .data/)")
        p.add_argument(
            "--data", help="where the dev server's database and the logs go (default: ROOT/.data)"
        )
        p.add_argument(
            "--workers",
            type=_workers,
            default=default_workers(),
            metavar="N",
            help="worker processes on the task queue (default: one per CPU, here "
            f"{default_workers()})",
        )
        p.add_argument(
            "--metrics-port",
            type=_port,
            metavar="BASE",
            help="serve each worker's Prometheus metrics on 127.0.0.1: worker-1 on BASE, "
            "worker-2 on BASE+1, ... (default: from DISPATCH_METRICS_ADDRESS host:port, else off)",
        )
        if name == "demo":
            p.add_argument(
                "--once",
                action="store_true",
                help="exit after the story: 0 only if every engagement reached its expected state",
            )
            p.add_argument(
                "--batch-window",
                type=_window,
                metavar="SECONDS",
                help="assign arrivals within this many seconds jointly (the batch optimizer); "
                "default: the firm file's policy.batch_window_seconds",
            )
    b = sub.add_parser("board", help="print the dispatch board, or a sign-in link to the web one")
    b.add_argument("--status", help="only this DispatchStatus (e.g. NeedsPartnerReview)")
    b.add_argument("--person", help="staff id: engagements where they prepare or review")
    b.add_argument("--client", help="client id")
    b.add_argument("--service", help="service type id")
    b.add_argument("--due-from", help="due on or after (YYYY-MM-DD)")
    b.add_argument("--due-to", help="due on or before (YYYY-MM-DD)")
    b.add_argument("--task-queue", default=TASK_QUEUE, help="the workers' task queue")
    b.add_argument("--limit", type=int, default=500)
    b.add_argument("--json", action="store_true")
    b.add_argument(
        "--link", action="store_true", help="print a sign-in link to the web board (/board)"
    )
    b.add_argument("--as", dest="as_staff", metavar="STAFF_ID", help="who the link signs in")
    b.add_argument(
        "--base-url", help="where people reach the webhook server (default: $DISPATCH_BOARD_URL)"
    )
    _add_audit_parser(sub)
    schedules.add_parser(sub)
    simulation_cli.add_parser(sub)
    s = sub.add_parser("sandbox", help="run only the sandbox emulators")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Piped output (CI logs) gets a board wide enough to read; terminals keep their width.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    if args.command == "sandbox":
        from sandbox.__main__ import main as sandbox_main

        sandbox_main(args.rest)
        return
    try:
        if args.command == "schedules":
            code = asyncio.run(schedules.run(args))
        elif args.command == "simulate":
            code = simulation_cli.run(args)
        elif args.command == "audit":
            code = asyncio.run(_audit(args))
        elif args.command in ("up", "demo"):
            args.firm_path = _firm_path(args.firm)
            args.root_path = Path(args.root).resolve()
            args.data_path = Path(args.data).resolve() if args.data else None
            code = asyncio.run(_up(args, console, demo=args.command == "demo"))
        elif args.link:
            code = _board_link(args, console)
        else:
            code = asyncio.run(_board(args, console))
    except (FirmConfigError, SecretsRefused) as err:
        console.print(f"[red]{escape(str(err))}[/]", soft_wrap=True)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal core runtime can abort during interpreter finalization; leave directly.
    os._exit(code)


if __name__ == "__main__":
    main()
