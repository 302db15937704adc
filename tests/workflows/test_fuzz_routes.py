"""Property-based fuzz of the three inbound routes, in every ``make test``.

A few hundred derandomized cases (the same ones on every run) from benchmarks/fuzz_routes.py,
sent to the real app with the session's dev server and the sandbox: no 5xx, valid requests
accepted, unsigned ones refused, nothing started without a 202, no client data in the logs.
``python -m benchmarks.fuzz_routes`` runs the full set (10,000+ cases).
"""

from __future__ import annotations

import collections

from temporalio.client import Client

from benchmarks.fuzz_routes import (
    FUZZ_TODAY,
    case_strategy,
    draw_cases,
    run_cases,
    run_label,
    terminate_all,
)
from tests.sandbox_server import RunningSandbox

CASES = 300


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
