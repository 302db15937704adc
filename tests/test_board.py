"""The board's read model (filters, capacity) and its sign-in, without Temporal.

Every route here answers before it would talk to Temporal: the Temporal source given to the
router fails the test if it is ever called.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from rich.console import Console
from slack_sdk.signature import SignatureVerifier
from temporalio.client import Client

from app.board import BoardFilters, FilterError, capacity_view, week_starts
from app.board_web import create_board_router, signin_link
from app.board_web.auth import COOKIE, LINK_TTL, SECRET_ENV, NotAllowed, sign
from app.board_web.routes import candidates_of
from app.cli import _board_link, build_parser
from dispatch.config import Absence, Tier
from dispatch.models import (
    BlockReason,
    BookingsView,
    CandidateScore,
    Decision,
    EngagementState,
    Reservation,
    Role,
    StaffBooking,
)
from starter import create_app
from tests.factories import MONDAY, demo_config
from tests.slack_driver import token_headers

SECRET = "board-test-secret-0123456789"
BASE = "http://board.test"


# --- filters ---------------------------------------------------------------------------------


def test_filters_become_one_visibility_query() -> None:
    filters = BoardFilters.parse(
        {
            "status": "NeedsPartnerReview",
            "person": "priya",
            "client": "cl-northwind",
            "service": "audit_prep",
            "due_from": "2026-12-01",
            "due_to": "2026-12-31",
        }
    )
    query = filters.visibility_query("dispatch")
    assert query == (
        'WorkflowType="EngagementWorkflow" AND TaskQueue="dispatch" '
        'AND DispatchStatus="NeedsPartnerReview" AND (Preparer="priya" OR Reviewer="priya") '
        'AND ClientId="cl-northwind" AND ServiceType="audit_prep" '
        'AND DueDate>="2026-12-01T00:00:00+00:00" AND DueDate<="2026-12-31T00:00:00+00:00"'
    )
    assert BoardFilters.parse({"status": "", "person": None}) == BoardFilters()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"client": 'x" OR WorkflowType="DispatcherWorkflow'}, "client"),
        ({"status": "Sleeping"}, "status"),
        ({"person": "a" * 101}, "person"),
        ({"due_from": "tomorrow"}, "due_from"),
        ({"due_from": "2026-12-02", "due_to": "2026-12-01"}, "due_to"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(raw: dict[str, str], field: str) -> None:
    with pytest.raises(FilterError) as caught:
        BoardFilters.parse(raw)
    assert caught.value.field == field


# --- capacity --------------------------------------------------------------------------------


def _reservation(staff: str, hours: float, start: date, due: date) -> Reservation:
    return Reservation(
        workflow_id=f"engagement-relay-{staff}-{hours}",
        role=Role.PREPARER,
        staff_id=staff,
        hours=hours,
        start=start,
        due=due,
        client_id="cl-x",
    )


def test_capacity_spreads_each_booking_over_its_working_days() -> None:
    config = demo_config()
    friday_next = MONDAY + timedelta(days=11)
    view = BookingsView(
        firm_id=config.firm.id,
        staff=[
            StaffBooking(
                staff_id="priya",
                name="Priya",
                weekly_capacity_hours=40,
                reserved_hours=30,
                # Ten working days (two weeks): 10 h in each week.
                reservations=[
                    _reservation("priya", 20, MONDAY, friday_next),
                    # Already overdue: all of it lands today.
                    _reservation(
                        "priya", 10, MONDAY - timedelta(days=10), MONDAY - timedelta(days=3)
                    ),
                ],
            )
        ],
        parked=[],
        batches=0,
        decided=0,
    )
    people, weeks = capacity_view(view, config, MONDAY, weeks=4)
    assert weeks == week_starts(MONDAY, 4) and weeks[0] == MONDAY
    (priya,) = people
    assert [w.booked for w in priya.weeks] == [20.0, 10.0, 0.0, 0.0]
    # The fourth week holds the firm's Christmas holiday.
    assert [w.capacity for w in priya.weeks] == [40.0, 40.0, 40.0, 32.0]
    assert [w.heat for w in priya.weeks] == [2, 1, 0, 0]

    # Midweek, the rest of the week is what is left; an absence takes its days out.
    away = config.staff_by_id("priya").model_copy(
        update={
            "absences": [Absence(start=MONDAY + timedelta(days=7), end=MONDAY + timedelta(days=8))]
        }
    )
    staff = [away if s.id == "priya" else s for s in config.staff]
    firm = config.model_copy(update={"staff": staff})
    people, _ = capacity_view(view, firm, MONDAY + timedelta(days=2), weeks=2)
    assert [w.capacity for w in people[0].weeks] == [24.0, 24.0]


def test_over_capacity_is_the_hottest_cell() -> None:
    config = demo_config()
    view = BookingsView(
        firm_id=config.firm.id,
        staff=[
            StaffBooking(
                staff_id="noah",
                name="Noah",
                weekly_capacity_hours=10,
                reserved_hours=25,
                reservations=[_reservation("noah", 25, MONDAY, MONDAY + timedelta(days=4))],
            )
        ],
        parked=[],
        batches=0,
        decided=0,
    )
    (noah,) = capacity_view(view, config, MONDAY, weeks=1)[0]
    assert noah.weeks[0].heat == 5 and noah.weeks[0].ratio == 2.5


# --- sign-in ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def no_temporal() -> Client:
    raise AssertionError("this request must be answered before Temporal is called")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return Clock()


@pytest_asyncio.fixture(loop_scope="session")
async def http(clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(create_board_router(demo_config(), no_temporal, task_queue="q", clock=clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def with_cookie(http: httpx.AsyncClient, value: str) -> httpx.Response:
    """A board page with this session cookie, whatever it holds: 401 when it signs nobody
    in, else 422 (the filter is refused, which happens only after the session is accepted
    and before Temporal is asked)."""
    http.cookies.set(COOKIE, value, domain="board.test", path="/board")
    try:
        return await http.get("/board?status=Nonsense")
    finally:
        http.cookies.clear()


def token_of(link: str) -> str:
    return link.split("?t=", 1)[1]


async def signed_in(http: httpx.AsyncClient, clock: Clock, staff_id: str) -> None:
    link = signin_link(demo_config(), staff_id, clock(), base=BASE)
    page = await http.get(link.removeprefix(BASE))
    assert page.status_code == 200 and "Open the board as" in page.text
    done = await http.post("/board/signin", data={"t": token_of(link)})
    assert done.status_code == 303 and done.headers["location"] == "/board"
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/board" in cookie


async def test_nothing_is_shown_without_signing_in(http: httpx.AsyncClient, clock: Clock) -> None:
    for path in ("/board", "/board/e/engagement-relay-E1", "/board/audit.csv"):
        page = await http.get(path)
        assert page.status_code == 401, path
        assert "engagement-relay" not in page.text
    forged = await with_cookie(
        http, sign("another-secret-xx", "session", "ava", clock.now + timedelta(hours=1))
    )
    assert forged.status_code == 401


async def test_a_tampered_cookie_signs_nobody_in(http: httpx.AsyncClient, clock: Clock) -> None:
    good = sign(SECRET, "session", "mia", clock.now + timedelta(hours=1))
    assert (await with_cookie(http, good)).status_code == 422  # the control: it does sign in
    body, mac = good.split(".")
    # The same signature on claims naming a partner instead.
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["s"] = "ava"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for value in (f"{forged_body}.{mac}", good[:-2] + "xx", "junk", good.replace(".", "")):
        page = await with_cookie(http, value)
        assert page.status_code == 401, value
    # A sign-in link is not a session either, however valid.
    link_token = sign(SECRET, "signin", "ava", clock.now + timedelta(minutes=5))
    assert (await with_cookie(http, link_token)).status_code == 401


async def test_an_expired_link_or_session_is_refused(http: httpx.AsyncClient, clock: Clock) -> None:
    link = signin_link(demo_config(), "ava", clock(), base=BASE)
    clock.now += LINK_TTL + timedelta(seconds=1)
    page = await http.post("/board/signin", data={"t": token_of(link)})
    assert page.status_code == 410 and "expired" in page.text
    assert COOKIE not in page.headers.get("set-cookie", "")

    session = sign(SECRET, "session", "ava", clock.now + timedelta(seconds=30))
    assert (await with_cookie(http, session)).status_code == 422
    clock.now += timedelta(seconds=31)
    assert (await with_cookie(http, session)).status_code == 401


async def test_a_link_signs_in_once(http: httpx.AsyncClient, clock: Clock) -> None:
    link = signin_link(demo_config(), "ava", clock(), base=BASE)
    # Another site posting someone's link (signing a victim's browser in as them) is refused,
    # and the link is not spent by it.
    elsewhere = await http.post(
        "/board/signin", data={"t": token_of(link)}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403 and COOKIE not in elsewhere.headers.get("set-cookie", "")
    assert (await http.post("/board/signin", data={"t": token_of(link)})).status_code == 303
    again = await http.post("/board/signin", data={"t": token_of(link)})
    assert again.status_code == 409


def test_links_are_only_for_partners_and_managers(clock: Clock) -> None:
    config = demo_config()
    assert signin_link(config, "mia", clock(), base=BASE).startswith(f"{BASE}/board/signin?t=")
    for staff_id, reason in (("noah", "partners and managers"), ("nobody", "staff list")):
        with pytest.raises(NotAllowed, match=reason):
            signin_link(config, staff_id, clock(), base=BASE)


def test_no_link_without_the_secret(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(NotAllowed, match=SECRET_ENV):
        signin_link(demo_config(), "ava", clock(), base=BASE)


async def test_only_a_partner_may_act_and_only_from_the_board(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    await signed_in(http, clock, "mia")  # a manager: may look, may not decide
    form = {"staff_id": "priya", "event": "e" * 24}
    no_csrf = await http.post("/board/e/engagement-relay-E1/decide", data=form)
    assert no_csrf.status_code == 403 and "out of date" in no_csrf.text
    csrf = await _csrf(http)
    refused = await http.post("/board/e/engagement-relay-E1/decide", data={**form, "csrf": csrf})
    assert refused.status_code == 403 and "deciding partners" in refused.text

    http.cookies.clear()
    await signed_in(http, clock, "ava")  # the managing partner
    csrf = await _csrf(http)
    for origin in ("https://evil.example", "null"):  # "null": a sandboxed frame's form
        elsewhere = await http.post(
            "/board/e/engagement-relay-E1/decide",
            data={**form, "csrf": csrf},
            headers={"Origin": origin},
        )
        assert elsewhere.status_code == 403 and "did not come from the board" in elsewhere.text
    bad_staff = await http.post(
        "/board/e/engagement-relay-E1/decide", data={**form, "csrf": csrf, "staff_id": "zed"}
    )
    assert bad_staff.status_code == 422 and "staff_id" in bad_staff.text
    bad_event = await http.post(
        "/board/e/engagement-relay-E1/decide", data={**form, "csrf": csrf, "event": "x"}
    )
    assert bad_event.status_code == 422 and "event" in bad_event.text


async def _csrf(http: httpx.AsyncClient) -> str:
    """The session's CSRF token, as the page's sign-out form carries it."""
    page = await http.get("/board?status=Nonsense")  # a 422 page: rendered before Temporal
    assert page.status_code == 422 and "Filter status" in page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_bad_audit_dates_are_refused_naming_the_field(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    await signed_in(http, clock, "ava")
    page = await http.get("/board/audit.csv", params={"from": "last week"})
    assert page.status_code == 422 and "Field from" in page.text
    page = await http.get("/board/audit.json", params={"from": "2026-12-02", "to": "2026-12-01"})
    assert page.status_code == 422 and "Field to" in page.text
    assert (await http.get("/board/audit.xml")).status_code == 404


async def test_pages_are_not_cached_framed_or_given_a_referer(
    http: httpx.AsyncClient, clock: Clock
) -> None:
    link = signin_link(demo_config(), "ava", clock(), base=BASE)
    page = await http.get(link.removeprefix(BASE))
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = await http.get("/board/static/board.js")
    assert script.status_code == 200 and "fetch(" in script.text
    assert (await http.get("/board/static/..%2Fauth.py")).status_code == 404


# --- "Open the board": the Slack command and the operator's CLI ----------------------------


def slash_command(user: str, command: str = "/board") -> tuple[bytes, dict[str, str]]:
    body = urlencode(
        {
            "token": "legacy",
            "team_id": "T0HARBOR",
            "channel_id": "D0DM",
            "user_id": user,
            "command": command,
            "text": "",
            "response_url": "https://hooks.slack.com/commands/T0HARBOR/1/abc",
            "trigger_id": "1.2.3",
        }
    ).encode()
    stamp = str(int(time.time()))
    signature = SignatureVerifier(os.environ["SLACK_SIGNING_SECRET"]).generate_signature(
        timestamp=stamp, body=body
    )
    assert signature is not None
    return body, token_headers(stamp, signature)


async def test_the_board_command_in_slack_answers_only_its_asker_with_a_link(
    clock: Clock,
) -> None:
    app = create_app(demo_config(), no_temporal)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        body, headers = slash_command("U01AVA")  # Ava, the managing partner
        answer = await http.post("/slack/events", content=body, headers=headers)
        assert answer.status_code == 200
        reply = answer.json()
        assert reply["response_type"] == "ephemeral"
        found = re.search(r"<([^|>]+)\|Open the board>", reply["text"])
        assert found is not None
        link = found.group(1)
        # The link is real: it signs Ava in on this server.
        token = token_of(link)
        signed = await http.post("/board/signin", data={"t": token})
        assert signed.status_code == 303

        body, headers = slash_command("U05PRIYA")  # a senior: not for the board
        reply = (await http.post("/slack/events", content=body, headers=headers)).json()
        assert "partners and managers" in reply["text"] and "/board/signin" not in reply["text"]

        body, headers = slash_command("U01AVA")
        forged = await http.post(
            "/slack/events",
            content=body,
            headers={**headers, "X-Slack-Signature": "v0=" + "0" * 64},
        )
        assert forged.status_code == 401


def test_the_operator_prints_a_link_for_a_partner(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["board", "--link", "--as", "ben", "--base-url", BASE])
    console = Console(file=io.StringIO())
    assert _board_link(args, console) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"{BASE}/board/signin?t=")
    args = build_parser().parse_args(["board", "--link", "--as", "noah"])
    assert _board_link(args, console) == 2
    assert "partners and managers" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_weekend_shows_the_coming_week_first() -> None:
    config = demo_config()
    view = BookingsView(firm_id=config.firm.id, staff=[], parked=[], batches=0, decided=0)
    sunday = MONDAY - timedelta(days=1)
    assert capacity_view(view, config, sunday, weeks=2)[1] == [MONDAY, MONDAY + timedelta(days=7)]


def test_the_partner_sees_those_only_capacity_blocks_first() -> None:
    def candidate(staff_id: str, hours: float, *blocked: BlockReason) -> CandidateScore:
        return CandidateScore(
            staff_id=staff_id,
            name=staff_id.title(),
            tier=Tier.SENIOR,
            eligible=not blocked,
            blocked=list(blocked),
            available_hours=hours,
        )

    decision = Decision(
        role=Role.PREPARER,
        outcome="blocked",
        reason="No preparer fits",
        required_hours=30,
        window_start=MONDAY,
        window_end=MONDAY + timedelta(days=2),
        candidates=[
            candidate("emma", 16, BlockReason.SKILL, BlockReason.CAPACITY),
            candidate("lucas", 12, BlockReason.CAPACITY),
            candidate("omar", 15, BlockReason.CAPACITY),
            candidate("omar", 15, BlockReason.CAPACITY),
        ],
    )
    state = EngagementState(
        workflow_id="engagement-relay-E1",
        firm_id="f",
        source="relay",
        external_id="E1",
        decisions=[decision],
    )
    found = candidates_of(state)
    assert [(c.staff_id, c.anyway) for c in found] == [
        ("omar", True),
        ("lucas", True),
        ("emma", False),
    ]
    assert [c.staff_id for c in candidates_of(state, 1)] == ["omar"]
    assert "capacity" in found[2].blocked and "skill" in found[2].blocked
