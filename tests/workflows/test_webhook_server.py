"""The webhook server against the dev server: signatures, bad input, idempotency, outages."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.karbon import KarbonClient
from activities.signing import dispatch_signature_header, hmac_sha256_hex
from dispatch.config import KarbonConnector
from dispatch.ids import engagement_workflow_id
from dispatch.models import DispatchStatus
from sandbox.karbon import client_type_for
from starter import create_app
from tests.harness import RunningWorker, chat_posts, firm_today, running_worker, workdays_ahead
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
    pm = config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    karbon = KarbonClient(pm)
    item = await karbon.create_work_item(
        {
            "Title": "2026 Form 1040 - Marlow household",
            "ClientKey": "cl-marlow-family",
            "ClientType": client_type_for("cl-marlow-family"),
            "AssigneeEmailAddress": "ava@harborfinch.example",
            "StartDate": f"{firm_today(config).isoformat()}T00:00:00Z",
            "DueDate": f"{workdays_ahead(config, 10).isoformat()}T00:00:00Z",
            "WorkType": "Tax Return - Individual",
        }
    )
    key = str(item["WorkItemKey"])
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
    async def down() -> Client:
        return await Client.connect("127.0.0.1:1")

    app = create_app(relay.config, down, task_queue=relay.task_queue)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://starter"
    ) as http:
        response = await post_signed(http, relay_event("DOWN-1", workdays_ahead(relay.config, 5)))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["temporal"] == "unreachable"


async def test_openapi_documents_the_routes(relay: RunningWorker) -> None:
    async with http_for(relay) as http:
        spec = (await http.get("/openapi.json")).json()
    assert {"/webhooks/karbon", "/webhooks/engagements", "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/webhooks/engagements"]["post"]["requestBody"]
    assert "engagement" in json.dumps(body)
