"""Where an engagement's time goes, read from workflow histories and (optionally) py-spy.

From a history: how many workflow tasks and activities it took, how long tasks waited in the
queue for a worker (scheduled -> started), how long the worker held them (started ->
completed), and the same for activities. For the dispatcher: its workflow tasks during the
burst. py-spy (``--py-spy``) samples the worker processes; its raw output is summed by function.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

_SCHEDULED = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED: "wft",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activity",
}


@dataclass
class TaskTimes:
    """Per kind (``wft`` / ``activity``): count, queue wait and run time, in seconds."""

    count: Counter[str] = field(default_factory=Counter)
    waited: dict[str, float] = field(default_factory=lambda: {"wft": 0.0, "activity": 0.0})
    ran: dict[str, float] = field(default_factory=lambda: {"wft": 0.0, "activity": 0.0})
    longest_run: dict[str, float] = field(default_factory=lambda: {"wft": 0.0, "activity": 0.0})
    activities: Counter[str] = field(default_factory=Counter)
    activity_time: dict[str, float] = field(default_factory=dict)
    """Seconds per activity type, schedule to completion (retries and queueing included)."""
    events: int = 0
    moved: int = 0
    """Workflow tasks run by another worker than the one before: each replays the history."""
    failed: Counter[str] = field(default_factory=Counter)
    """Failed or timed-out workflow tasks, by cause."""
    last_failure: str = ""


def _at(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime().replace(tzinfo=UTC)


def task_times(events: list[HistoryEvent], since: datetime | None = None) -> TaskTimes:
    times = TaskTimes()
    scheduled: dict[int, tuple[str, datetime]] = {}
    started: dict[int, datetime] = {}
    names: dict[int, str] = {}
    last_identity = ""
    for event in events:
        kind = _SCHEDULED.get(event.event_type)
        if kind is not None:
            scheduled[event.event_id] = (kind, _at(event))
            if kind == "activity":
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                times.activities[name] += 1
                names[event.event_id] = name
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started[event.event_id] = _at(event)
            attrs = event.workflow_task_started_event_attributes
            _waited(times, scheduled.get(attrs.scheduled_event_id), _at(event), since)
            counted = since is None or _at(event) >= since
            if counted and last_identity and attrs.identity != last_identity:
                times.moved += 1
            last_identity = attrs.identity
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes
            times.failed[WorkflowTaskFailedCause.Name(failure.cause)] += 1
            times.last_failure = failure.failure.message[:300]
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            times.failed["timed out"] += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[event.event_id] = _at(event)
            attrs_a = event.activity_task_started_event_attributes
            _waited(times, scheduled.get(attrs_a.scheduled_event_id), _at(event), since)
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            attrs_c = event.workflow_task_completed_event_attributes
            _ran(times, "wft", started.get(attrs_c.started_event_id), _at(event), since)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs_d = event.activity_task_completed_event_attributes
            _ran(times, "activity", started.get(attrs_d.started_event_id), _at(event), since)
            first = scheduled.get(attrs_d.scheduled_event_id)
            name = names.get(attrs_d.scheduled_event_id, "?")
            if first is not None:
                took = (_at(event) - first[1]).total_seconds()
                times.activity_time[name] = times.activity_time.get(name, 0.0) + took
    return times


def _waited(
    times: TaskTimes, scheduled: tuple[str, datetime] | None, at: datetime, since: datetime | None
) -> None:
    if scheduled is None or (since is not None and at < since):
        return
    kind, when = scheduled
    times.count[kind] += 1
    times.waited[kind] += (at - when).total_seconds()


def _ran(
    times: TaskTimes, kind: str, started: datetime | None, at: datetime, since: datetime | None
) -> None:
    if started is None or (since is not None and at < since):
        return
    took = (at - started).total_seconds()
    times.ran[kind] += took
    times.longest_run[kind] = max(times.longest_run[kind], took)


async def history_events(client: Client, workflow_id: str) -> list[HistoryEvent]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return list(history.events)


@dataclass
class Breakdown:
    engagements: int
    per_engagement: dict[str, float]
    activities: Counter[str]
    activity_time: dict[str, float]
    dispatcher: TaskTimes | None


async def breakdown(
    client: Client, engagement_ids: list[str], dispatcher_id: str | None, since: datetime
) -> Breakdown:
    """Means per engagement over ``engagement_ids``; the dispatcher's tasks after ``since``."""
    histories = await asyncio.gather(*(history_events(client, i) for i in engagement_ids))
    each = [task_times(events) for events in histories]
    n = max(1, len(each))

    def mean(get: str, kind: str) -> float:
        return sum(float(getattr(t, get)[kind]) for t in each) / n

    per = {
        "history events": sum(len(events) for events in histories) / n,
        "tasks run by another worker": sum(t.moved for t in each) / n,
        "workflow tasks": sum(t.count["wft"] for t in each) / n,
        "activities": sum(t.count["activity"] for t in each) / n,
        "workflow task queue wait s": mean("waited", "wft"),
        "workflow task run s": mean("ran", "wft"),
        "activity queue wait s": mean("waited", "activity"),
        "activity run s": mean("ran", "activity"),
    }
    activities: Counter[str] = Counter()
    spent: dict[str, float] = {}
    for t in each:
        activities.update(t.activities)
        for name, took in t.activity_time.items():
            spent[name] = spent.get(name, 0.0) + took
    dispatcher = None
    if dispatcher_id is not None:
        events = await history_events(client, dispatcher_id)
        dispatcher = task_times(events, since)
        dispatcher.events = len(events)
    return Breakdown(len(each), per, activities, spent, dispatcher)


def render(b: Breakdown) -> list[str]:
    lines = [f"where the time goes (means over {b.engagements} engagements' histories):"]
    lines += [f"  {name:28} {value:8.2f}" for name, value in b.per_engagement.items()]
    n = max(1, b.engagements)
    lines.append("  per activity type: calls per engagement, mean seconds scheduled -> completed")
    for name, calls in b.activities.most_common():
        mean = b.activity_time.get(name, 0.0) / calls
        lines.append(f"    {name:30} {calls / n:5.1f}  {mean:7.2f}")
    if b.dispatcher is not None:
        d = b.dispatcher
        tasks = d.count["wft"]
        lines.append(
            f"  dispatcher: {tasks} workflow tasks, held {d.ran['wft']:.1f}s in all "
            f"(longest {d.longest_run['wft']:.2f}s), waited {d.waited['wft']:.1f}s for a worker; "
            f"{d.events} events in its current run's history; {d.moved} tasks moved to "
            "another worker (each replays the whole history)"
        )
        if d.failed:
            causes = ", ".join(f"{cause} x{n}" for cause, n in d.failed.most_common())
            lines.append(f"  dispatcher workflow tasks failed: {causes}; last: {d.last_failure}")
    return lines


# --- py-spy ----------------------------------------------------------------------------------


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` until stopped (SIGINT makes py-spy write its file)."""
    beside = Path(sys.executable).parent / "py-spy"
    argv = [str(beside) if beside.exists() else "py-spy", "record", "--pid", str(pid)]
    argv += ["--format", "raw", "--rate", "50", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def summarize_py_spy(raw: Path, top: int = 12) -> list[str]:
    """Collapsed stacks -> the share of samples per leaf function and per area of the code."""
    if not raw.exists():
        return [f"  (no py-spy output at {raw})"]
    leaves: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] += count
        areas[_area(frames)] += count
    if not total:
        return ["  (py-spy recorded no samples)"]
    lines = [f"  {raw.name}: {total} samples; by area:"]
    lines += [f"    {100 * n / total:5.1f}%  {area}" for area, n in areas.most_common()]
    lines.append("  top functions (self):")
    lines += [f"    {100 * n / total:5.1f}%  {leaf[:110]}" for leaf, n in leaves.most_common(top)]
    return lines


_AREAS = [
    # Waiting, not working: py-spy counts these threads as active.
    ("EpollSelector.select", "idle: event loop waiting"),
    ("_worker (concurrent/futures/thread.py", "idle: thread pool waiting"),
    ("temporalio/worker/workflow_sandbox", "workflow sandbox (re-imports, restrictions)"),
    ("pydantic", "pydantic (payload conversion, models)"),
    ("temporalio/converter", "Temporal payload converter"),
    ("workflows/", "workflow code"),
    ("dispatch/decision", "decision logic"),
    ("googleapiclient", "Google client"),
    ("httplib2", "Google client"),
    ("slack_sdk", "Slack client"),
    ("sendgrid", "SendGrid client"),
    ("python_http_client", "SendGrid client"),
    ("httpx", "httpx (Karbon, Harvest, CRM)"),
    ("activities/", "activity code"),
    ("temporalio/worker", "Temporal worker (Python side)"),
    ("temporalio/bridge", "Temporal core bridge"),
    ("asyncio", "asyncio event loop"),
    ("threading", "thread pool"),
]


def _area(frames: list[str]) -> str:
    # The innermost frame that belongs to a known area names it.
    for frame in reversed(frames[-1:] + frames):
        for marker, area in _AREAS:
            if marker in frame:
                return area
    return "other"
