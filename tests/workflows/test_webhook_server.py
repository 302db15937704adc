"""The webhook server against the dev server: signatures, bad input, idempotency, outages."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.karbon import KarbonClient
from activities.signing import dispatch_signature_header, hmac_sha256_hex
from dispatch.config import FirmConfig, KarbonConnector
from dispatch.ids import engagement_workflow_id
from dispatch.models import DispatchStatus
from starter import create_app
from tests.harness import (
    RunningWorker,
    chat_posts,
    firm_today,
    karbon_work_item,
    running_worker,
    workdays_ahead,
)
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm

SECRET = os.environ["DISPATCH_WEBHOOK_SECRET"]
KARBON_KEY = os.environ["KARBON_WEBHOOK_SIGNING_KEY"]


@pytest_asyncio.fixture(loop_scope="session")
async def relay(client: Client, sandbox: RunningSandbox) -> AsyncIterator[RunningWorker]:
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as worker:
        yield worker


def http_for(worker: RunningWorker) -> httpx.AsyncClient:
    app = create_app(worker.config, worker.client, task_queue=worker.task_queue)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://starter")


def relay_event(external_id: str, due: date, **engagement: Any) -> dict[str, Any]:
    return {
        "event": "engagement.created",
        "event_id": f"evt-{external_id}",
        "source": "taxdome",
        "engagement": {
            "external_id": external_id,
            "title": f"Return {external_id}",
            "client": {
                "id": "cl-marlow-family",
                "name": "Dana & Sam Marlow",
                "email": "marlow.family@mail.example",
            },
            "service_type": "individual_tax",
            "due_date": due.isoformat(),
            **engagement,
        },
    }


async def post_signed(
    http: httpx.AsyncClient, body: dict[str, Any], secret: str = SECRET
) -> httpx.Response:
    raw = json.dumps(body).encode()
    return await http.post(
        "/webhooks/engagements",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Dispatch-Signature": dispatch_signature_header(secret, raw),
        },
    )


def karbon_client(sandbox: RunningSandbox) -> KarbonClient:
    pm = sandbox.config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    return KarbonClient(pm)


async def marlow_work_item(config: FirmConfig) -> str:
    """A Karbon work item for an individual return, assigned to Ava, due in ten workdays."""
    return await karbon_work_item(
        config,
        "2026 Form 1040 - Marlow household",
        "cl-marlow-family",
        "Tax Return - Individual",
        10,
    )


def app_without_temporal(worker: RunningWorker) -> httpx.AsyncClient:
    """The webhook server of ``worker``'s firm, with nothing listening where Temporal should."""

    async def down() -> Client:
        return await Client.connect("127.0.0.1:1")

    app = create_app(worker.config, down, task_queue=worker.task_queue)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://starter")


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_bad_input_is_refused_and_starts_nothing(relay: RunningWorker) -> None:
    due = workdays_ahead(relay.config, 5)
    async with http_for(relay) as http:
        raw = json.dumps(relay_event("BAD-1", due)).encode()
        unsigned = await http.post("/webhooks/engagements", content=raw)
        wrong = await http.post(
            "/webhooks/engagements",
            content=raw,
            headers={"X-Dispatch-Signature": dispatch_signature_header("not-the-secret-xxxx", raw)},
        )
        assert (unsigned.status_code, wrong.status_code) == (401, 401)
        assert unsigned.json() == {"error": "invalid signature"}

        bad: dict[str, tuple[dict[str, Any], str]] = {
            "BAD-2": ({"service_type": "crypto"}, "engagement.service_type"),
            "BAD-3": ({"estimated_hours": -2}, "engagement.estimated_hours"),
            "BAD-4": (
                {"due_date": (firm_today(relay.config) - timedelta(days=1)).isoformat()},
                "engagement.due_date",
            ),
        }
        for external_id, (change, field) in bad.items():
            response = await post_signed(http, relay_event(external_id, due, **change))
            assert response.status_code == 422, response.text
            assert field in [f["field"] for f in response.json()["fields"]]
        malformed = b'{"event": "engagement.created", "engagement": '
        response = await http.post(
            "/webhooks/engagements",
            content=malformed,
            headers={"X-Dispatch-Signature": dispatch_signature_header(SECRET, malformed)},
        )
        assert response.status_code == 422

        karbon_raw = b'{"ResourcePermaKey":"K-1","ResourceType":"Work","ActionType":"Inserted"}'
        bad_karbon = await http.post(
            "/webhooks/karbon", content=karbon_raw, headers={"Signature": "00" * 32}
        )
        assert bad_karbon.status_code == 401
        no_key = b'{"ResourceType":"Work","ActionType":"Inserted"}'
        response = await http.post(
            "/webhooks/karbon",
            content=no_key,
            headers={"Signature": hmac_sha256_hex(KARBON_KEY, no_key)},
        )
        assert response.status_code == 422
        assert response.json()["fields"][0]["field"] == "ResourcePermaKey"

    for external_id in ("BAD-1", "BAD-2", "BAD-3", "BAD-4"):
        assert not await exists(relay.client, engagement_workflow_id("taxdome", external_id))
    assert not await exists(relay.client, engagement_workflow_id("karbon", "K-1"))


async def test_same_webhook_five_times_is_one_of_everything(
    client: Client, sandbox: RunningSandbox
) -> None:
    """Invariant 2 through the front door: five deliveries, one workflow, one of each effect."""
    sandbox.reset()
    config = sandbox.config
    karbon = karbon_client(sandbox)
    key = await marlow_work_item(config)
    body = json.dumps(
        {
            "ResourcePermaKey": key,
            "ResourceType": "Work",
            "ActionType": "Inserted",
            "TimeStamp": "2026-11-30T10:00:00Z",
        }
    ).encode()
    headers = {"Content-Type": "application/json", "Signature": hmac_sha256_hex(KARBON_KEY, body)}
    async with running_worker(client, config) as worker, http_for(worker) as http:
        responses = await asyncio.gather(
            *(http.post("/webhooks/karbon", content=body, headers=headers) for _ in range(5))
        )
        assert [r.status_code for r in responses] == [202] * 5
        ids = {r.json()["workflow_id"] for r in responses}
        assert ids == {engagement_workflow_id("karbon", key)}
        assert sum(1 for r in responses if not r.json()["duplicate"]) == 1
        workflow_id = ids.pop()
        state = await worker.wait_state(
            workflow_id,
            lambda s: (
                s.status is DispatchStatus.ASSIGNED
                and any(e.kind == "crm_log" and e.state == "done" for e in s.side_effects)
                and all(e.state != "pending" for e in s.side_effects)
            ),
        )
        # And once more after it all happened.
        late = await http.post("/webhooks/karbon", content=body, headers=headers)
        assert late.status_code == 202 and late.json()["duplicate"] is True
        await asyncio.sleep(0.5)
    await karbon.aclose()

    runs = [w async for w in client.list_workflows(f'WorkflowId="{workflow_id}"')]
    assert len(runs) == 1
    roles = 2 if state.reviewer else 1
    assert len(chat_posts(sandbox)) == roles
    assert len(sandbox.requests(prefix="/google/calendar/v3", method="POST")) == roles
    assert len(sandbox.requests(prefix="/sendgrid/v3/mail/send")) == 1
    assert len(sandbox.requests(prefix="/crm/records", method="POST")) == 1
    writes = [
        r
        for r in sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}")
        if r["method"] in ("PUT", "PATCH")
    ]
    # Assignee and status go in one full PUT (status cannot be PATCHed): written once.
    assert [w["method"] for w in writes] == ["PUT"], writes


async def test_temporal_unreachable_answers_503(relay: RunningWorker) -> None:
    async with app_without_temporal(relay) as http:
        response = await post_signed(http, relay_event("DOWN-1", workdays_ahead(relay.config, 5)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["temporal"] == "unreachable"


# --- hostile input at the door (each case started a workflow or answered 500 before) --------


async def test_out_of_bounds_fields_are_422_and_start_nothing(relay: RunningWorker) -> None:
    due = workdays_ahead(relay.config, 5)
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "LIM-1": ({"due_date": "9999-12-31"}, "engagement.due_date"),
        "LIM-2": ({"estimated_hours": True}, "engagement.estimated_hours"),
        "LIM-3": ({"start_date": 0}, "engagement.start_date"),
        "LIM-4": ({"title": "   "}, "engagement.title"),
        "LIM-5": ({"title": "Return\u0000"}, "engagement.title"),
        "LIM-6": ({"client": {"id": "cl-1", "name": " "}}, "engagement.client.name"),
        "LIM-7": ({"client": {"id": "cl-1", "name": "A\u0000B"}}, "engagement.client.name"),
        "LIM-8": ({"client": {"id": "../../etc/passwd", "name": "N"}}, "engagement.client.id"),
        "LIM-9": ({"scope_summary": "x" * 4001}, "engagement.scope_summary"),
    }
    async with http_for(relay) as http:
        for external_id, (change, field) in cases.items():
            response = await post_signed(http, relay_event(external_id, due, **change))
            assert response.status_code == 422, (external_id, response.text)
            assert field in [f["field"] for f in response.json()["fields"]], response.text
        for key in (".", "..", "-x", "_x"):
            raw = json.dumps(
                {"ResourcePermaKey": key, "ResourceType": "Work", "ActionType": "Inserted"}
            ).encode()
            response = await http.post(
                "/webhooks/karbon",
                content=raw,
                headers={"Signature": hmac_sha256_hex(KARBON_KEY, raw)},
            )
            assert response.status_code == 422, (key, response.text)
            assert response.json()["fields"][0]["field"] == "ResourcePermaKey"
    for external_id in cases:
        assert not await exists(relay.client, f"engagement-taxdome-{external_id}")


async def test_bodies_over_the_route_limit_are_413(relay: RunningWorker) -> None:
    due = workdays_ahead(relay.config, 5)
    big = relay_event("BIG-1", due, scope_summary="x" * 100_000)
    async with http_for(relay) as http:
        response = await post_signed(http, big)
        assert response.status_code == 413 and "limit" in response.json()["error"]
        karbon = b'{"ResourcePermaKey":"K-1","ResourceType":"Work","ActionType":"Inserted","x":"'
        karbon += b"y" * 20_000 + b'"}'
        response = await http.post(
            "/webhooks/karbon",
            content=karbon,
            headers={"Signature": hmac_sha256_hex(KARBON_KEY, karbon)},
        )
        assert response.status_code == 413

        async def chunks() -> Any:  # no Content-Length: the stream itself is cut at the limit
            for _ in range(100):
                yield b"x" * 10_000

        response = await http.post("/webhooks/engagements", content=chunks())
        assert response.status_code == 413
    assert not await exists(relay.client, engagement_workflow_id("taxdome", "BIG-1"))


def refs_in(node: Any) -> list[str]:
    """Every ``$ref`` anywhere in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs_in(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs_in(value)]
    return []


def resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = spec
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


async def test_openapi_is_complete_and_every_ref_resolves(relay: RunningWorker) -> None:
    async with http_for(relay) as http:
        spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    refs = refs_in(spec)
    assert "#/components/schemas/ClientInfo" in refs
    assert "#/components/schemas/EngagementPayload" in refs
    for ref in refs:
        assert isinstance(resolve(spec, ref), dict)
    assert "$defs" not in json.dumps(spec), "nested $defs: their refs point elsewhere"
    paths = spec["paths"]
    assert {"/webhooks/karbon", "/webhooks/engagements", "/slack/events", "/healthz"} <= set(paths)
    for route in ("/webhooks/karbon", "/webhooks/engagements"):
        statuses = set(paths[route]["post"]["responses"])
        assert {"202", "401", "413", "422", "503"} <= statuses, (route, statuses)
        assert "Retry-After" in paths[route]["post"]["responses"]["503"]["headers"]
    assert {"200", "400", "401", "413"} <= set(paths["/slack/events"]["post"]["responses"])
    body = paths["/webhooks/engagements"]["post"]["requestBody"]["content"]["application/json"]
    event = resolve(spec, body["schema"]["$ref"])
    assert "engagement" in event["properties"]
    payload = resolve(spec, "#/components/schemas/EngagementPayload")
    assert payload["properties"]["title"]["maxLength"] == 300


async def test_a_bug_is_a_plain_500_with_no_message_in_the_log(
    relay: RunningWorker, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(relay.config, relay.client, task_queue=relay.task_queue)

    async def broken() -> None:
        raise ValueError("Dana Marlow's scope")  # what a bug's message might quote

    app.add_api_route("/broken", broken, methods=["POST"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://starter"
    ) as http:
        response = await http.post("/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the request was not recorded"}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "ValueError" in text and "Marlow" not in text
