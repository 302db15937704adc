"""Property-based fuzz of the webhook server's inbound routes, against a real Temporal server.

    .venv/bin/python -m benchmarks.fuzz_routes --cases 10000 [--board-cases N]

Generates requests for ``POST /webhooks/karbon``, ``POST /webhooks/engagements`` and
``POST /slack/events`` with hypothesis — valid ones, valid ones with one to three mutations
(wrong types, edge dates, blank or control-character text, over-long strings and lists, unsafe
ids, unknown and missing fields), random JSON and random bytes — signed, unsigned and wrongly
signed, and sends each one to the real ASGI app, which talks to a real dev server (no worker:
nothing runs, we only look at what was started) and to the in-process sandbox (Slack).

Properties checked on every case:

- no 5xx, whatever the body or signature;
- valid, signed requests are accepted (202 for webhooks, 200 for Slack clicks);
- unsigned or wrongly signed requests are 401 (or 413 when too large) and change nothing;
- nothing is started that was not answered 202 with its workflow id, and everything answered
  202 as a new start passes the same validation on its own (visibility is listed at the end);
- no client data in any log line written during the run (every client-data field carries a
  marker that must never appear in a log).

The web board's routes (``/board``) are fuzzed first, on the same fresh server, by
benchmarks/fuzz_board.py (``--board-cases``, default ``--cases``): see its docstring.

Generation is derandomized (``derandomize=True``, no example database): the same
``--cases`` gives the same requests on every machine, so CI never fails at random. The test
suite runs a few hundred cases (tests/workflows/test_fuzz_routes.py); this script runs the full
set and prints the figures recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

from activities.signing import dispatch_signature_header, hmac_sha256_hex
from app.board_web.auth import board_secret
from app.webhooks import PayloadError, parse_engagement_event, parse_karbon
from benchmarks.fuzz_board import (
    MARKER,
    BoardCase,
    BoardFindings,
    board_case_strategy,
    run_board_cases,
)
from benchmarks.fuzz_board import report as report_board
from dispatch import limits
from dispatch.config import FirmConfig, SlackConnector, secret
from starter import create_app

Route = Literal["/webhooks/karbon", "/webhooks/engagements", "/slack/events"]
Signing = Literal["valid", "none", "wrong", "malformed"]

FUZZ_TODAY = date(2027, 1, 4)
"""The app's "today" during the fuzz (``create_app(today=...)``), so the cases do not change
with the calendar."""
KARBON_SECRET_ENV = "KARBON_WEBHOOK_SIGNING_KEY"


@dataclass(frozen=True)
class Case:
    route: Route
    body: bytes
    signing: Signing
    kind: str
    """Which generator made it (``valid``, ``mutated``, ``json``, ``bytes``)."""


# --- generators ------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)

_EDGE_TEXT = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "line\nbreak",
    "bidi \u202eevil",
    "emoji 🧾",
    "\u200d",
    "../../etc/passwd",
    "a/b",
    "..",
    ".",
    "-x",
    "_x",
    "%2e%2e%2f",
    "<script>x</script>",
    "x" * 129,
    "x" * 301,
    "x" * 4001,
]


def _pii(draw: st.DrawFn, what: str) -> str:
    """Client data: plausible text carrying the marker."""
    words = draw(st.lists(st.sampled_from(["Dana", "Sam", "Marlow", "Ruiz", "& Co"]), max_size=3))
    return " ".join([what, MARKER, *words])


@st.composite
def valid_events(draw: st.DrawFn, config: FirmConfig, today: date, run: str) -> dict[str, Any]:
    service = draw(st.sampled_from([t.id for t in config.service_types]))
    due = today + timedelta(days=draw(st.integers(min_value=0, max_value=365 * 3)))
    event: dict[str, Any] = {
        "event": draw(
            st.sampled_from(
                ["engagement.created"] * 4
                + ["engagement.updated", "engagement.cancelled", "engagement.completed"]
            )
        ),
        "event_id": f"evt-{draw(st.integers(min_value=0, max_value=10**9))}",
        "source": f"fz{run}",
        "engagement": {
            "external_id": f"E-{draw(st.integers(min_value=0, max_value=10**9))}",
            "title": _pii(draw, "Return"),
            "client": {
                "id": draw(st.from_regex(r"\Acl-[a-z0-9]{1,20}\Z")),
                "name": _pii(draw, "Client"),
            },
            "service_type": service,
            "due_date": due.isoformat(),
        },
    }
    eng = event["engagement"]
    if draw(st.booleans()):
        eng["client"]["email"] = f"{MARKER.lower()}.{draw(st.integers(0, 999))}@mail.example"
    if draw(st.booleans()):
        eng["client"]["contact_name"] = _pii(draw, "Contact")
    if draw(st.booleans()):
        start = due - timedelta(days=draw(st.integers(min_value=0, max_value=60)))
        eng["start_date"] = max(start, limits.EARLIEST_DATE).isoformat()
    if draw(st.booleans()):
        eng["estimated_hours"] = draw(
            st.one_of(
                st.integers(min_value=1, max_value=2000),
                st.floats(min_value=0.25, max_value=2000, allow_nan=False),
            )
        )
    if draw(st.booleans()):
        eng["scope_summary"] = _pii(draw, "Scope") + "\nSecond line."
    if draw(st.booleans()):
        eng["documents_needed"] = [_pii(draw, "Doc") for _ in range(draw(st.integers(0, 5)))]
    if draw(st.booleans()):
        eng["required_skills"] = draw(st.lists(st.sampled_from(["s_corp", "payroll"]), max_size=2))
    if draw(st.booleans()):
        eng["url"] = "https://app.relay.example/jobs/1"
    return event


_EVENT_PATHS = [
    ("event",),
    ("event_id",),
    ("source",),
    ("engagement",),
    ("engagement", "external_id"),
    ("engagement", "title"),
    ("engagement", "client"),
    ("engagement", "client", "id"),
    ("engagement", "client", "name"),
    ("engagement", "client", "email"),
    ("engagement", "client", "contact_name"),
    ("engagement", "service_type"),
    ("engagement", "due_date"),
    ("engagement", "start_date"),
    ("engagement", "estimated_hours"),
    ("engagement", "required_skills"),
    ("engagement", "specializations"),
    ("engagement", "documents_needed"),
    ("engagement", "scope_summary"),
    ("engagement", "url"),
    ("engagement", "status"),
]


def _edge_values(today: date) -> list[Any]:
    return [
        *_EDGE_TEXT,
        True,
        False,
        0,
        -1,
        2000,
        2000.0001,
        1e308,
        "5",
        "9999-12-31",
        "0001-01-01",
        "1970-01-01",
        "2027-02-30",
        "2027-01-01T00:00:00",
        (today - timedelta(days=1)).isoformat(),
        (limits.latest_due(today) + timedelta(days=1)).isoformat(),
        limits.latest_due(today).isoformat(),
        ["x"] * 31,
        ["y" * 301],
        [],
        {},
        None,
    ]


@st.composite
def mutated(
    draw: st.DrawFn,
    base: st.SearchStrategy[dict[str, Any]],
    paths: Sequence[tuple[str, ...]],
    edges: list[Any],
) -> dict[str, Any]:
    """A valid body with one to three things wrong (or, by chance, still right)."""
    body: dict[str, Any] = json.loads(json.dumps(draw(base)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths))
        parent: Any = body
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["edge", "edge", "random", "delete", "extra"]))
        if action == "delete":
            parent.pop(path[-1], None)
        elif action == "extra":
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
        elif action == "random":
            parent[path[-1]] = draw(json_values)
        else:
            parent[path[-1]] = draw(st.sampled_from(edges))
    return body


@st.composite
def valid_karbon(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ResourcePermaKey": draw(st.from_regex(r"\Afz[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z")),
        "ResourceType": draw(st.sampled_from(["Work"] * 5 + ["Contact", "Organization"])),
        "ActionType": draw(st.sampled_from(["Inserted"] * 3 + ["Updated", "Deleted", "Noted"])),
    }
    if draw(st.booleans()):
        body["TimeStamp"] = "2026-11-30T10:00:00Z"
    return body


_KARBON_PATHS = [("ResourcePermaKey",), ("ResourceType",), ("ActionType",), ("TimeStamp",)]


@st.composite
def valid_clicks(
    draw: st.DrawFn, config: FirmConfig, sandbox_base: str, run: str
) -> dict[str, Any]:
    staff = [s for s in config.staff if s.slack_id]
    user = draw(st.sampled_from([s.slack_id for s in staff] + ["U0NOBODY"]))
    # Never an engagement the fuzz started: with no worker, an Update would wait its budget.
    target = f"engagement-fzc{run}-E-{draw(st.integers(min_value=0, max_value=10**6))}"
    action_id, value = draw(
        st.sampled_from(
            [
                ("assignment_accept", target),
                ("assignment_reassign", target),
                (f"partner_assign:{staff[0].id}", f"{target}|{staff[0].id}"),
                (f"partner_force:{staff[-1].id}", f"{target}|{staff[-1].id}"),
                ("assignment_accept", ""),
                ("someone_elses_button", target),
            ]
        )
    )
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "name": "someone"},
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "message": {
            "ts": "1700000000.000100",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": _pii(draw, "C")}}],
        },
        "actions": [
            {
                "action_id": action_id,
                "value": value,
                "type": "button",
                "action_ts": f"{draw(st.integers(1_700_000_000, 1_800_000_000))}.000001",
            }
        ],
    }
    where = draw(st.sampled_from(["response_url", "channel", "modal", "foreign"]))
    if where == "response_url":
        payload["response_url"] = f"{sandbox_base}/slack/response/fz{run}"
    elif where == "channel":
        payload["container"]["channel_id"] = "D0NOBODY"
    elif where == "foreign":
        payload["response_url"] = "https://collector.invalid/hook"
    return payload


_CLICK_PATHS = [
    ("type",),
    ("user",),
    ("user", "id"),
    ("actions",),
    ("container",),
    ("message",),
    ("response_url",),
]


def _click_edges() -> list[Any]:
    return [
        *_EDGE_TEXT,
        [],
        [{}],
        [{"action_id": "assignment_accept"}],
        [{"action_id": "assignment_accept", "value": 5}],
        [{"action_id": "partner_assign:" + "x" * 300}],
        {"id": 5},
        None,
        "block_actions",
        "view_submission",
    ]


# --- requests --------------------------------------------------------------------------------


def _encode(value: Any) -> bytes:
    ascii_only = isinstance(value, dict) and len(value) % 2 == 0
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", errors="surrogatepass")


def _slack_form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def case_strategy(
    config: FirmConfig, today: date, sandbox_base: str, run: str
) -> st.SearchStrategy[Case]:
    events = valid_events(config, today, run)
    edges = _edge_values(today)
    kinds_of_signing: list[Signing] = [
        "valid",
        "valid",
        "valid",
        "valid",
        "valid",
        "valid",
        "none",
        "wrong",
        "malformed",
    ]
    signings = st.sampled_from(kinds_of_signing)

    def make(route: Route, kind: str) -> Callable[[tuple[bytes, Signing]], Case]:
        return lambda pair: Case(route, pair[0], pair[1], kind)

    mutated_events = st.tuples(mutated(events, _EVENT_PATHS, edges).map(_encode), signings).map(
        make("/webhooks/engagements", "mutated")
    )
    engagement = st.one_of(
        st.tuples(events.map(_encode), signings).map(make("/webhooks/engagements", "valid")),
        mutated_events,
        mutated_events,  # the richest source of findings: drawn twice as often
        st.tuples(json_values.map(_encode), signings).map(make("/webhooks/engagements", "json")),
        st.tuples(st.binary(max_size=200), signings).map(make("/webhooks/engagements", "bytes")),
    )
    karbon = st.one_of(
        st.tuples(valid_karbon().map(_encode), signings).map(make("/webhooks/karbon", "valid")),
        st.tuples(mutated(valid_karbon(), _KARBON_PATHS, edges).map(_encode), signings).map(
            make("/webhooks/karbon", "mutated")
        ),
        st.tuples(json_values.map(_encode), signings).map(make("/webhooks/karbon", "json")),
        st.tuples(st.binary(max_size=200), signings).map(make("/webhooks/karbon", "bytes")),
    )
    clicks = valid_clicks(config, sandbox_base, run)
    slack = st.one_of(
        st.tuples(clicks.map(_slack_form), signings).map(make("/slack/events", "valid")),
        st.tuples(mutated(clicks, _CLICK_PATHS, _click_edges()).map(_slack_form), signings).map(
            make("/slack/events", "mutated")
        ),
        st.tuples(json_values.map(_slack_form), signings).map(make("/slack/events", "json")),
        st.tuples(st.binary(max_size=200), signings).map(make("/slack/events", "bytes")),
    )
    return st.one_of(engagement, karbon, slack)


@contextmanager
def _strategies_only() -> Iterator[None]:
    """Hypothesis also draws literals it finds in the project's loaded modules, and which
    modules are loaded differs between ``make test``, one test file and this script (and with
    every commit), so the cases would too. While drawing, the pool of such literals is empty:
    the cases depend on the strategies above alone. (Internal API: if it moves, generation
    still works, it is only less stable across invocations.)"""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # pragma: no cover - a future hypothesis
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or cache is None:  # pragma: no cover - a future hypothesis
        yield
        return
    setattr(providers, "_get_local_constants", Constants)  # noqa: B010 - an internal hook
    cache.cache.clear()
    try:
        yield
    finally:
        setattr(providers, "_get_local_constants", original)  # noqa: B010
        cache.cache.clear()


C = TypeVar("C")


def draw_cases(strategy: st.SearchStrategy[C], n: int) -> list[C]:
    """``n`` cases, the same ones on every run (no shrinking: each case is checked later)."""
    found: list[C] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: C) -> None:
        found.append(case)

    with _strategies_only():
        collect()
    return found


def headers_for(case: Case, config: FirmConfig) -> dict[str, str]:
    body = case.body
    if case.route == "/slack/events":
        chat = config.connectors.chat
        assert isinstance(chat, SlackConnector)
        key = secret(chat.signing_secret_env) or ""
        if case.signing == "wrong":
            key = "not-the-slack-signing-secret"
        stamp = str(int(time.time()))
        digest = hmac.new(key.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
        signature = f"v0={digest.hexdigest()}"
        base = {"Content-Type": "application/x-www-form-urlencoded"}
        if case.signing == "none":
            return base
        if case.signing == "malformed":
            return {**base, "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=zz"}
        return {**base, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
    if case.route == "/webhooks/karbon":
        key = secret(KARBON_SECRET_ENV) or ""
        header = {
            "valid": hmac_sha256_hex(key, body),
            "wrong": hmac_sha256_hex("not-the-karbon-key-0000", body),
            "malformed": "sha256=\x7fnot-hex",
            "none": "",
        }[case.signing]
        return {"Content-Type": "application/json", **({"Signature": header} if header else {})}
    key = secret("DISPATCH_WEBHOOK_SECRET") or ""
    header = {
        "valid": dispatch_signature_header(key, body),
        "wrong": dispatch_signature_header("not-the-relay-secret-00", body),
        "malformed": "sha256",
        "none": "",
    }[case.signing]
    return {
        "Content-Type": "application/json",
        **({"X-Dispatch-Signature": header} if header else {}),
    }


# --- running ---------------------------------------------------------------------------------


class LogTap(logging.Handler):
    """Every log line written during the run (the sandbox's own loggers excepted)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("sandbox"):
            return
        try:
            self.lines.append(f"{record.levelname} {record.name} {record.getMessage()}")
        except Exception:  # a record that cannot format is a finding too
            self.lines.append(f"UNFORMATTABLE {record.name} {record.msg!r}")


@contextmanager
def tapped_logs() -> Iterator[LogTap]:
    tap = LogTap()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(tap)
    root.setLevel(min(previous, logging.INFO) if previous else logging.INFO)
    try:
        yield tap
    finally:
        root.removeHandler(tap)
        root.setLevel(previous)


@dataclass
class Findings:
    cases: int = 0
    seconds: float = 0.0
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    kinds: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)
    started_ids: set[str] = field(default_factory=set)
    """Workflow ids answered 202 as a new start."""
    accepted_ids: set[str] = field(default_factory=set)
    unexpected_workflows: list[str] = field(default_factory=list)
    pii_lines: list[str] = field(default_factory=list)
    log_lines: int = 0
    log_bytes: int = 0
    route_seconds: collections.defaultdict[str, float] = field(
        default_factory=lambda: collections.defaultdict(float)
    )
    slowest: tuple[float, str] = (0.0, "")

    def problems(self) -> list[str]:
        return [
            *(f"5xx: {e}" for e in self.server_errors),
            *(f"wrong answer: {e}" for e in self.wrong_answers),
            *(f"started without a 202: {w}" for w in self.unexpected_workflows),
            *(f"client data in a log line: {line[:200]}" for line in self.pii_lines),
        ]


def _describe(case: Case, response: httpx.Response) -> str:
    return f"{case.route} {case.kind}/{case.signing} -> {response.status_code} {case.body[:160]!r}"


def _check(
    case: Case, response: httpx.Response, config: FirmConfig, today: date, findings: Findings
) -> None:
    status = response.status_code
    if status >= 500:
        findings.server_errors.append(_describe(case, response))
        return
    if case.signing != "valid":
        if status not in (401, 413):
            findings.wrong_answers.append("unsigned but " + _describe(case, response))
        return
    if case.kind == "valid":
        expected = 200 if case.route == "/slack/events" else 202
        if status != expected:
            findings.wrong_answers.append("valid but " + _describe(case, response))
    if case.route == "/slack/events" or status != 202:
        return
    answer = response.json()
    workflow_id = answer.get("workflow_id")
    if not workflow_id:
        return
    findings.accepted_ids.add(workflow_id)
    if answer.get("duplicate") is False:
        findings.started_ids.add(workflow_id)
        # A new start must be a request that passes validation on its own.
        try:
            if case.route == "/webhooks/karbon":
                parse_karbon(case.body)
            else:
                parse_engagement_event(case.body, config, today)
        except PayloadError as err:
            findings.wrong_answers.append(
                f"started from invalid input ({err}): {case.body[:160]!r}"
            )


async def run_cases(
    cases: list[Case],
    config: FirmConfig,
    client: Client,
    today: date,
    task_queue: str,
) -> Findings:
    """Send every case to the real app; check each answer, then visibility and the logs."""
    findings = Findings(cases=len(cases))
    app = create_app(config, client, today=lambda: today, task_queue=task_queue)
    began = time.monotonic()
    with tapped_logs() as tap:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://starter",
            timeout=60,
        ) as http:
            for case in cases:
                sent = time.monotonic()
                response = await http.post(
                    case.route, content=case.body, headers=headers_for(case, config)
                )
                findings.slowest = max(findings.slowest, (time.monotonic() - sent, case.route))
                findings.route_seconds[case.route] += time.monotonic() - sent
                findings.statuses[(case.route, response.status_code)] += 1
                findings.kinds[(case.route, case.kind)] += 1
                _check(case, response, config, today, findings)
    findings.seconds = time.monotonic() - began
    findings.log_lines = len(tap.lines)
    findings.log_bytes = sum(len(line) for line in tap.lines)
    markers = (MARKER, MARKER.lower())
    findings.pii_lines = [line for line in tap.lines if any(m in line for m in markers)]
    started = await started_on(client, task_queue, expected=len(findings.started_ids))
    findings.unexpected_workflows = sorted(started - findings.accepted_ids)
    return findings


async def started_on(client: Client, task_queue: str, *, expected: int) -> set[str]:
    """The workflow ids visibility lists on ``task_queue`` (waits for it to catch up)."""
    query = f"TaskQueue = '{task_queue}'"
    found: set[str] = set()
    for _ in range(50):
        found = {w.id async for w in client.list_workflows(query)}
        if len(found) >= expected:
            await asyncio.sleep(0.5)  # and a moment more for anything unexpected
            return {w.id async for w in client.list_workflows(query)}
        await asyncio.sleep(0.2)
    return found


async def terminate_all(client: Client, task_queue: str) -> None:
    async for execution in client.list_workflows(
        f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    ):
        await client.get_workflow_handle(execution.id).terminate("fuzz finished")


async def run_board(
    cases: list[BoardCase], config: FirmConfig, client: Client, today: date, task_queue: str
) -> BoardFindings:
    """The board's cases (benchmarks.fuzz_board) against the same app, logs tapped."""
    key = board_secret()
    if key is None:
        raise RuntimeError("the board fuzz needs DISPATCH_BOARD_SECRET")
    with tapped_logs() as tap:
        return await run_board_cases(
            cases,
            config,
            client,
            key,
            lambda tapped: create_app(config, tapped, today=lambda: today, task_queue=task_queue),
            lambda: tap.lines,
        )


def run_label() -> str:
    return uuid.uuid4().hex[:6]


# --- the full run ----------------------------------------------------------------------------


async def main(n: int, board_n: int) -> int:
    from app.secrets_demo import export_demo_secrets
    from tests.conftest import start_dev_server
    from tests.sandbox_server import run_sandbox

    export_demo_secrets()
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the tap reads INFO; the console shows warnings
    with run_sandbox() as sandbox:
        config = sandbox.config
        today = FUZZ_TODAY
        env = await start_dev_server()
        try:
            queue = f"fuzz-{run_label()}"
            # The board first, while the server holds no engagement: the audit export asks
            # every engagement for its decisions, and with no worker none would answer.
            began = time.monotonic()
            board_cases = draw_cases(board_case_strategy(config), board_n)
            board_drawn = time.monotonic() - began
            board = await run_board(board_cases, config, env.client, today, queue)
            began = time.monotonic()
            cases = draw_cases(case_strategy(config, today, sandbox.base_url, "00"), n)
            drawn = time.monotonic() - began
            findings = await run_cases(cases, config, env.client, today, queue)
            await terminate_all(env.client, queue)
        finally:
            await env.shutdown()
    report(findings, drawn)
    print(f"board cases generated in {board_drawn:.1f} s (derandomized)")
    report_board(board)
    return 1 if findings.problems() or board.problems() else 0


def report(findings: Findings, drawn: float) -> None:
    print(f"cases: {findings.cases} (generated in {drawn:.1f} s, derandomized)")
    print(f"sent in {findings.seconds:.1f} s: {findings.cases / findings.seconds:.0f} requests/s")
    for route in ("/webhooks/engagements", "/webhooks/karbon", "/slack/events"):
        kinds = {k: c for (r, k), c in sorted(findings.kinds.items()) if r == route}
        statuses = {s: c for (r, s), c in sorted(findings.statuses.items()) if r == route}
        per = findings.route_seconds[route] / max(sum(kinds.values()), 1) * 1000
        print(
            f"  {route}: {sum(kinds.values())} cases {kinds}; answers {statuses}; "
            f"{per:.0f} ms per request"
        )
    print(f"slowest request: {findings.slowest[0] * 1000:.0f} ms ({findings.slowest[1]})")
    print(f"5xx answers: {len(findings.server_errors)}")
    wrong = collections.Counter(" ".join(w.split(" ", 2)[:2]) for w in findings.wrong_answers)
    print(
        f"wrong answers (valid refused, unsigned accepted, invalid started): "
        f"{len(findings.wrong_answers)} {dict(wrong)}"
    )
    print(
        f"workflows started: {len(findings.started_ids)}; started without a 202: "
        f"{len(findings.unexpected_workflows)}"
    )
    print(
        f"log lines: {findings.log_lines} ({findings.log_bytes} bytes, "
        f"{findings.log_bytes / max(findings.cases, 1):.0f} bytes per request); "
        f"with client data: {len(findings.pii_lines)}"
    )
    for problem in findings.problems()[:20]:
        print("  " + problem)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument(
        "--board-cases", type=int, default=None, help="cases for /board (default: --cases)"
    )
    args = parser.parse_args()
    board_n = args.cases if args.board_cases is None else args.board_cases
    raise SystemExit(asyncio.run(main(args.cases, board_n)))
