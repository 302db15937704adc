"""Property-based fuzz of the inbound routes and of the web board, in every ``make test``.

A few hundred derandomized cases (the same ones on every run) from benchmarks/fuzz_routes.py
and benchmarks/fuzz_board.py, sent to the real app with a real dev server and the sandbox:
no 5xx, valid requests accepted, unsigned ones refused, nothing started without a 202, no
decision without a partner's session and token, no client data in the logs.
``python -m benchmarks.fuzz_routes`` runs the full set (10,000+ cases each).
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime

import httpx
import pytest
from temporalio.client import Client

from app.board_web.auth import COOKIE, board_secret, csrf_token, verify
from benchmarks.fuzz_board import PENDING, BoardCase, Minter, board_case_strategy
from benchmarks.fuzz_routes import (
    FUZZ_TODAY,
    case_strategy,
    draw_cases,
    run_board,
    run_cases,
    run_label,
    terminate_all,
)
from starter import create_app
from tests.conftest import start_dev_server
from tests.sandbox_server import RunningSandbox

CASES = 300
BOARD_CASES = 500


async def test_no_input_gets_a_5xx_starts_a_workflow_unasked_or_logs_client_data(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = sandbox.config
    today = FUZZ_TODAY
    cases = draw_cases(case_strategy(config, today, sandbox.base_url, "00"), CASES)
    per_route = collections.Counter(case.route for case in cases)
    assert min(per_route.values()) >= 50, per_route  # every route gets its share
    queue = f"fuzz-{run_label()}"
    try:
        findings = await run_cases(cases, config, client, today, queue)
    finally:
        await terminate_all(client, queue)
    assert findings.problems() == [], "\n".join(findings.problems()[:20])
    assert findings.started_ids, "no valid case was accepted: the fuzz checks nothing"
    answered = {status for (_, status) in findings.statuses}
    assert {200, 202, 400, 401, 422} <= answered, answered


async def test_no_board_request_gets_a_5xx_or_decides_without_a_partner(
    sandbox: RunningSandbox,
) -> None:
    # Its own dev server: the audit export asks every engagement on the server for its
    # decisions, and on the shared one other tests' engagements have no worker left to answer.
    config = sandbox.config
    cases = draw_cases(board_case_strategy(config), BOARD_CASES)
    per_route = collections.Counter(case.route for case in cases)
    assert len(per_route) == 10 and min(per_route.values()) >= 5, per_route
    # However the draw falls, one honest sign-in, so the session checks see both sides.
    honest = BoardCase(
        "POST /board/signin", "POST", "/board/signin", token="valid",
        fields=(("t", "{token}"),), kind="valid",
    )  # fmt: skip
    cases.append(honest)
    env = await start_dev_server()
    try:
        findings = await run_board(cases, config, env.client, FUZZ_TODAY, f"fuzz-{run_label()}")
    finally:
        await env.shutdown()
    assert findings.problems() == [], "\n".join(findings.problems()[:20])
    # The checks saw both sides: partners' well-formed decisions reached Temporal (and were
    # refused there: the engagement does not run), and links signed people in.
    assert findings.updates_sent >= 10, findings.updates_sent
    assert findings.sessions_issued >= 1, findings.sessions_issued
    answered = {status for (_, status) in findings.statuses}
    assert {200, 303, 400, 401, 403, 404, 409, 410, 422} <= answered, answered
    # Findings whose fix is in routes.py are counted apart; nothing else may be among them.
    assert set(findings.pending) <= {p.name for p in PENDING}


# --- what the board fuzz found in app/board_web/routes.py, kept fixed ---------------------------


async def _as_partner(
    client: Client,
    sandbox: RunningSandbox,
    path: str,
    *,
    form: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET ``path`` (POST ``form`` with the session's CSRF token) as a deciding partner."""
    key = board_secret()
    assert key is not None
    minter = Minter.for_config(key, sandbox.config)
    cookie = minter.sign("session", minter.partner, 3600)
    csrf = csrf_token(key, verify(key, "session", cookie, datetime.now(UTC)))
    app = create_app(sandbox.config, client, today=lambda: FUZZ_TODAY)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://starter",
        cookies={COOKIE: cookie},
    ) as http:
        if form is not None:
            return await http.post(path, data={**form, "csrf": csrf}, headers=headers)
        return await http.get(path, params=params, headers=headers)


async def test_a_form_from_an_origin_that_is_not_a_url_is_refused(
    client: Client, sandbox: RunningSandbox
) -> None:
    answer = await _as_partner(
        client, sandbox, "/board/signout", form={}, headers={"Origin": "http://["}
    )
    assert answer.status_code == 403


@pytest.mark.parametrize("span", [("9999-12-30", "9999-12-31"), ("0999-12-01", "0999-12-02")])
async def test_an_audit_window_at_the_calendar_edge_is_refused_naming_the_field(
    client: Client, sandbox: RunningSandbox, span: tuple[str, str]
) -> None:
    params = {"from": span[0], "to": span[1]}
    answer = await _as_partner(client, sandbox, "/board/audit.csv", params=params)
    assert answer.status_code == 422 and "Field " in answer.text


async def test_a_decision_whose_event_ends_in_a_newline_is_refused(
    client: Client, sandbox: RunningSandbox
) -> None:
    form = {"staff_id": "mia", "event": "e" * 24 + "\n"}
    answer = await _as_partner(client, sandbox, "/board/e/engagement-fzb-E1/decide", form=form)
    assert answer.status_code == 422 and "event" in answer.text
