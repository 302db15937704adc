"""Temporal Schedules for recurring work and PM polling, kept in step with the firm config.

    dispatch schedules sync [--firm F] [--task-queue Q]   # make Temporal match the firm file
    dispatch schedules list [--firm F]                    # what is scheduled, and when next

* One Schedule per active recurring template, id ``recurring-{firm}-{template}``. It fires at
  00:00 firm time on the 1st of each month a trigger date can fall in (a calendar spec in the
  firm's time zone: a "last business day" cannot be written as a spec, temporal#5811) and
  starts :class:`~workflows.recurring.RecurringSpawnerWorkflow`, which sleeps until the exact
  trigger date. Overlap ``SKIP``: a fire never starts a second spawner while one still runs.
* When the firm's PM is Xero Practice Manager (no webhooks), one Schedule ``pm-poller-{firm}``
  every ``poll_minutes`` starts :class:`~workflows.pm_poller.PmPollerWorkflow`.

Catch-up window: one day, not Temporal's default of a year. After an outage Temporal runs the
fires it missed within the window; with a year, a server restored (or a schedule unpaused)
after months would spawn every missed month at once. A fire late by up to a day still lands in
its month and plans the same periods; beyond that, the operator backfills the gap
(``temporal schedule backfill --schedule-id recurring-... --start-time ... --end-time ...``),
which is safe because every start is idempotent. The poller only needs its latest poll (each
poll looks back ``lookback_days``), so its window is one poll interval.

``sync`` is idempotent: a Schedule whose fingerprint (kept in its action's memo) matches the
config is left alone, a changed one is updated in place (keeping an operator's pause), and
Schedules of removed or inactive templates are deleted — only ours: the id prefix *and* the
Schedule memo must name this firm.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from dispatch import TASK_QUEUE
from dispatch.config import (
    CONFIG_ENV,
    FirmConfig,
    FirmConfigError,
    RecurringTemplate,
    XpmConnector,
    load_firm_config,
)
from dispatch.models import PollerInput, SpawnerInput
from dispatch.recurrence import Recurrence

RECURRING_PREFIX = "recurring"
POLLER_PREFIX = "pm-poller"
CATCHUP_WINDOW = timedelta(days=1)
FINGERPRINT_MEMO = "dispatch_fingerprint"
FINGERPRINT_VERSION = 1
"""Bump when the shape of what sync writes changes, so every schedule is rewritten once."""
NOTE = "Managed by `dispatch schedules sync` from the firm config; edits here are overwritten."

Outcome = Literal["created", "updated", "unchanged"]


def recurring_schedule_id(firm_id: str, template_id: str) -> str:
    return f"{RECURRING_PREFIX}-{firm_id}-{template_id}"


def poller_schedule_id(firm_id: str) -> str:
    return f"{POLLER_PREFIX}-{firm_id}"


@dataclass(frozen=True)
class DesiredSchedule:
    id: str
    schedule: Schedule
    memo: dict[str, str]
    fingerprint: str
    summary: str
    """One line for people: what fires when."""


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def _fingerprint(parts: dict[str, Any]) -> str:
    text = json.dumps({"v": FINGERPRINT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


_MONTH_NAMES = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _recurring(config: FirmConfig, template: RecurringTemplate, task_queue: str) -> DesiredSchedule:
    firm = config.firm
    schedule_id = recurring_schedule_id(firm.id, template.id)
    months = Recurrence.of(template, config).trigger_months()
    spawner_input = SpawnerInput(firm_id=firm.id, template_id=template.id)
    fingerprint = _fingerprint(
        {
            "kind": RECURRING_PREFIX,
            "input": spawner_input.model_dump(mode="json"),
            "task_queue": task_queue,
            "months": months,
            "time_zone": firm.time_zone,
            "catchup_seconds": CATCHUP_WINDOW.total_seconds(),
        }
    )
    from workflows.recurring import RecurringSpawnerWorkflow

    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RecurringSpawnerWorkflow.run,
            spawner_input,
            id=schedule_id,
            task_queue=task_queue,
            memo={FINGERPRINT_MEMO: fingerprint, "template": template.id},
            static_summary=f"Recurring {template.service_type} for {template.client}",
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=[ScheduleRange(0)],
                    minute=[ScheduleRange(0)],
                    hour=[ScheduleRange(0)],
                    day_of_month=[ScheduleRange(1)],
                    month=[ScheduleRange(m) for m in months],
                    comment="the 1st of each month a trigger date can fall in; "
                    "the spawner sleeps until the trigger date",
                )
            ],
            time_zone_name=firm.time_zone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(note=NOTE),
    )
    if len(months) == 12:
        when = "every month"
    else:
        when = ", ".join(_MONTH_NAMES[m - 1] for m in months)
    return DesiredSchedule(
        id=schedule_id,
        schedule=schedule,
        memo={"dispatch": RECURRING_PREFIX, "firm": firm.id, "template": template.id},
        fingerprint=fingerprint,
        summary=f"{template.cadence} {template.service_type} for {template.client}: "
        f"1st of {when} ({firm.time_zone})",
    )


def _poller(config: FirmConfig, connector: XpmConnector, task_queue: str) -> DesiredSchedule:
    firm = config.firm
    schedule_id = poller_schedule_id(firm.id)
    every = timedelta(minutes=connector.poll_minutes)
    poller_input = PollerInput(firm_id=firm.id)
    fingerprint = _fingerprint(
        {
            "kind": POLLER_PREFIX,
            "input": poller_input.model_dump(mode="json"),
            "task_queue": task_queue,
            "every_seconds": every.total_seconds(),
        }
    )
    from workflows.pm_poller import PmPollerWorkflow

    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            PmPollerWorkflow.run,
            poller_input,
            id=schedule_id,
            task_queue=task_queue,
            memo={FINGERPRINT_MEMO: fingerprint},
            static_summary="Poll the PM system for new jobs",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A missed poll is covered by the next one (each looks back lookback_days).
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
        state=ScheduleState(note=NOTE),
    )
    return DesiredSchedule(
        id=schedule_id,
        schedule=schedule,
        memo={"dispatch": POLLER_PREFIX, "firm": firm.id},
        fingerprint=fingerprint,
        summary=f"poll {connector.kind} every {connector.poll_minutes} min",
    )


def desired_schedules(
    config: FirmConfig, task_queue: str = TASK_QUEUE
) -> dict[str, DesiredSchedule]:
    """Every Schedule the firm config calls for, by id."""
    wanted = [_recurring(config, t, task_queue) for t in config.recurring if t.active]
    pm = config.connectors.pm
    if isinstance(pm, XpmConnector):
        wanted.append(_poller(config, pm, task_queue))
    return {w.id: w for w in wanted}


def _owned_by(firm_id: str, schedule_id: str) -> bool:
    return schedule_id.startswith(f"{RECURRING_PREFIX}-{firm_id}-") or schedule_id == (
        poller_schedule_id(firm_id)
    )


async def owned_schedule_ids(client: Client, firm_id: str) -> list[str]:
    """This firm's Schedules on the server: the id prefix matches and the memo names the firm
    (firm ``acme`` must not touch ``recurring-acme-west-...`` of firm ``acme-west``).

    Listing is eventually consistent: a Schedule created a moment ago may be missing.
    """
    found: list[str] = []
    async for entry in await client.list_schedules():
        if not _owned_by(firm_id, entry.id):
            continue
        memo = await entry.memo()
        if memo.get("firm") == firm_id:
            found.append(entry.id)
    return sorted(found)


async def _current_fingerprint(client: Client, description: ScheduleDescription) -> str | None:
    action = description.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not action.memo:
        return None
    value = action.memo.get(FINGERPRINT_MEMO)
    if isinstance(value, Payload):
        decoded = await client.data_converter.decode([value], [str])
        value = decoded[0]
    return value if isinstance(value, str) else None


async def _apply(client: Client, want: DesiredSchedule) -> Outcome:
    handle = client.get_schedule_handle(want.id)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
        try:
            await client.create_schedule(want.id, want.schedule, memo=want.memo)
            return "created"
        except ScheduleAlreadyRunningError:  # another sync created it a moment ago
            description = await handle.describe()
    if await _current_fingerprint(client, description) == want.fingerprint:
        return "unchanged"

    def replace(update: ScheduleUpdateInput) -> ScheduleUpdate:
        # Keep the current state: an operator's pause (and its note) survives a sync.
        current_state = update.description.schedule.state
        return ScheduleUpdate(schedule=dataclasses.replace(want.schedule, state=current_state))

    await handle.update(replace)
    return "updated"


async def sync(client: Client, config: FirmConfig, task_queue: str = TASK_QUEUE) -> SyncReport:
    """Create, update and delete this firm's Schedules so they match the firm config."""
    desired = desired_schedules(config, task_queue)
    report = SyncReport()
    for schedule_id, want in desired.items():
        outcome = await _apply(client, want)
        getattr(report, outcome).append(schedule_id)
    for schedule_id in await owned_schedule_ids(client, config.firm.id):
        if schedule_id in desired:
            continue
        try:
            await client.get_schedule_handle(schedule_id).delete()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:  # already gone: listing lags
                raise
            continue
        report.deleted.append(schedule_id)
    return report


# --- CLI -------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Mount ``schedules sync|list`` on the ``dispatch`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--firm", help=f"firm config YAML (default: ${CONFIG_ENV} or the demo firm)"
    )
    common.add_argument(
        "--task-queue", default=TASK_QUEUE, help=f"where the worker listens (default {TASK_QUEUE})"
    )
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schedules", help="recurring-work and PM-poller schedules"
    )
    actions = parser.add_subparsers(dest="schedules_command", required=True)
    actions.add_parser(
        "sync", parents=[common], help="create, update and delete schedules to match the config"
    )
    actions.add_parser("list", parents=[common], help="this firm's schedules and their next fires")
    return parser


async def run(args: argparse.Namespace, client: Client | None = None) -> int:
    """``dispatch schedules sync|list``; the exit status (0 ok, 1 Temporal, 2 config)."""
    try:
        config = load_firm_config(args.firm)
    except FirmConfigError as err:
        print(f"schedules: {err}", file=sys.stderr)
        return 2
    if client is None:
        from app.temporal import connect

        try:
            client = await connect()
        except RuntimeError as err:
            print(f"schedules: cannot reach Temporal: {err}", file=sys.stderr)
            return 1
    if args.schedules_command == "sync":
        report = await sync(client, config, args.task_queue)
        for label, ids in (
            ("created", report.created),
            ("updated", report.updated),
            ("deleted", report.deleted),
            ("unchanged", report.unchanged),
        ):
            for schedule_id in ids:
                print(f"{label:<10} {schedule_id}")
        print(
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.deleted)} deleted, {len(report.unchanged)} unchanged"
        )
        return 0
    return await _list(client, config, args.task_queue)


async def _list(client: Client, config: FirmConfig, task_queue: str) -> int:
    zone = ZoneInfo(config.firm.time_zone)
    desired = desired_schedules(config, task_queue)
    ids = sorted(set(await owned_schedule_ids(client, config.firm.id)) | set(desired))
    if not ids:
        print(f"no schedules for firm {config.firm.id}")
        return 0
    for schedule_id in ids:
        want = desired.get(schedule_id)
        try:
            description = await client.get_schedule_handle(schedule_id).describe()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            print(f"{schedule_id}: missing (run `dispatch schedules sync`)")
            continue
        if want is None:
            state = "not in the config (run `dispatch schedules sync`)"
        elif await _current_fingerprint(client, description) != want.fingerprint:
            state = "out of date (run `dispatch schedules sync`)"
        else:
            state = "paused" if description.schedule.state.paused else "active"
        upcoming = description.info.next_action_times[:1]
        next_fire = (
            upcoming[0].astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if upcoming else "none"
        )
        print(f"{schedule_id}: {state}; next {next_fire}")
        if want is not None:
            print(f"    {want.summary}")
    return 0
