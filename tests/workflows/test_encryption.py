"""Client data never reaches Temporal in clear, and the Web UI's codec endpoint decodes it."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import (
    GetWorkflowExecutionHistoryRequest,
    ListWorkflowExecutionsRequest,
)
from temporalio.client import Client

from app.codec_server import TOKEN_ENV
from dispatch.models import DispatchStatus
from starter import create_app
from tests.harness import RunningWorker, details, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm

SECRETS = [b"Marlowquist", b"dana.marlowquist@mail.example", b"estate trust restructuring"]


async def raw_history(client: Client, workflow_id: str) -> bytes:
    """The history as the server stores it: no data converter, no codec."""
    raw = b""
    token = b""
    while True:
        page = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id),
                next_page_token=token,
            )
        )
        raw += page.history.SerializeToString()
        token = page.next_page_token
        if not token:
            return raw


async def assigned_engagement(worker: RunningWorker, name: str) -> str:
    eng = details(name, due=workdays_ahead(worker.config, 6)).model_copy(
        update={
            "title": "Marlowquist 2026 return",
            "client_name": "Dana Marlowquist",
            "client_email": "dana.marlowquist@mail.example",
            "scope_summary": "Marlowquist estate trust restructuring",
        }
    )
    handle = await worker.start(eng)
    await worker.wait_state(
        handle.id,
        lambda s: (
            s.status is DispatchStatus.ASSIGNED
            and not any(e.state == "pending" for e in s.side_effects)
        ),
    )
    return handle.id


async def test_no_client_data_in_clear_in_histories_memo_or_visibility(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as worker:
        workflow_id = await assigned_engagement(worker, "enc-history")
        stored = await raw_history(client, workflow_id)
        stored += await raw_history(client, worker.dispatcher.id)
        listed = await client.workflow_service.list_workflow_executions(
            ListWorkflowExecutionsRequest(
                namespace=client.namespace, query=f'WorkflowId="{workflow_id}"'
            )
        )
        stored += listed.SerializeToString()
        for secret in SECRETS:
            assert secret not in stored, f"{secret!r} is stored in clear"
        # ... and yet the workflow reads it (the worker holds the keys).
        state = await worker.state(workflow_id)
        assert state.client_name == "Dana Marlowquist"


def codec_http(worker: RunningWorker, client_host: str) -> httpx.AsyncClient:
    app = create_app(worker.config, worker.client, task_queue=worker.task_queue)
    transport = httpx.ASGITransport(app=app, client=(client_host, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://starter")


async def a_stored_payload(client: Client, workflow_id: str) -> dict[str, Any]:
    page = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    started = page.history.events[0].workflow_execution_started_event_attributes
    stored = started.input.payloads[0]
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in stored.metadata.items()},
        "data": base64.b64encode(stored.data).decode(),
    }


async def test_the_web_ui_codec_endpoint_decodes_for_this_machine_and_token_holders(
    client: Client, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as worker:
        workflow_id = await assigned_engagement(worker, "enc-codec")
        body = {"payloads": [await a_stored_payload(client, workflow_id)]}

        async with codec_http(worker, "127.0.0.1") as http:
            decoded = await http.post("/codec/decode", json=body)
            assert decoded.status_code == 200
            data = base64.b64decode(decoded.json()["payloads"][0]["data"])
            assert b"dana.marlowquist@mail.example" in data
            preflight = await http.options(
                "/codec/decode",
                headers={
                    "Origin": "http://localhost:8233",
                    "Access-Control-Request-Method": "POST",
                },
            )
            assert preflight.headers["access-control-allow-origin"] == "http://localhost:8233"
            foreign = await http.options(
                "/codec/decode", headers={"Origin": "https://evil.example"}
            )
            assert "access-control-allow-origin" not in foreign.headers

        async with codec_http(worker, "203.0.113.7") as http:
            assert (await http.post("/codec/decode", json=body)).status_code == 401
            monkeypatch.setenv(TOKEN_ENV, "s3cret-codec-token")
            wrong = await http.post(
                "/codec/decode", json=body, headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            right = await http.post(
                "/codec/decode",
                json=body,
                headers={"Authorization": "Bearer s3cret-codec-token"},
            )
            assert right.status_code == 200
            bad = await http.post(
                "/codec/decode",
                content=b"{x",
                headers={"Authorization": "Bearer s3cret-codec-token"},
            )
            assert bad.status_code == 400
