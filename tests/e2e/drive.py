"""Driving a stack on free ports from outside: its demo firm, Karbon work items and webhooks,
an engagement's state, the sandbox's request log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import yaml

from activities.signing import hmac_sha256_hex
from app.secrets_demo import demo_secret
from app.stack import Ports, Stack
from app.temporal import connect
from dispatch.config import KarbonConnector, load_firm_config, rebase_connectors
from dispatch.models import DispatchStatus, EngagementState
from tests.harness import eventually, karbon_work_item
from tests.sandbox_server import DEMO_BASE, free_port
from workflows.engagement import EngagementWorkflow


def free_ports() -> Ports:
    return Ports(temporal=free_port(), ui=free_port(), starter=free_port(), sandbox=free_port())


def sandbox_firm_file(folder: Path, ports: Ports) -> Path:
    """The demo firm on ``ports``' sandbox; Karbon (the emulator) sends its Work webhooks to
    this stack's webhook server."""
    config = rebase_connectors(load_firm_config(), DEMO_BASE, f"http://127.0.0.1:{ports.sandbox}")
    pm = config.connectors.pm
    assert isinstance(pm, KarbonConnector)
    target = f"http://127.0.0.1:{ports.starter}/webhooks/karbon"
    connectors = config.connectors.model_copy(
        update={"pm": pm.model_copy(update={"webhook_target_url": target})}
    )
    config = config.model_copy(update={"connectors": connectors})
    firm_file = folder / "firm.yaml"
    firm_file.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
    return firm_file


async def new_work_item(
    stack: Stack, title: str, client_id: str, work_type: str, due_in: int
) -> str:
    return await karbon_work_item(stack.config, title, client_id, work_type, due_in)


async def send_inserted(stack: Stack, key: str) -> httpx.Response:
    body = json.dumps(
        {
            "ResourcePermaKey": key,
            "ResourceType": "Work",
            "ActionType": "Inserted",
            "TimeStamp": "2026-11-30T10:00:00Z",
        }
    ).encode()
    signature = hmac_sha256_hex(demo_secret("KARBON_WEBHOOK_SIGNING_KEY"), body)
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{stack.starter_url}/webhooks/karbon",
            content=body,
            headers={"Signature": signature, "Content-Type": "application/json"},
        )


async def state_of(stack: Stack, workflow_id: str) -> EngagementState:
    client = await connect(stack.temporal_address)
    return await client.get_workflow_handle(workflow_id).query(EngagementWorkflow.state)


async def settled(stack: Stack, workflow_id: str, timeout: float = 60) -> EngagementState:
    async def probe() -> EngagementState | None:
        try:
            state = await state_of(stack, workflow_id)
        except Exception:
            return None
        done = state.status is DispatchStatus.ASSIGNED and any(
            e.kind == "crm_log" and e.state == "done" for e in state.side_effects
        )
        return state if done else None

    return await eventually(probe, timeout=timeout, what=f"{workflow_id} to be assigned")


def sandbox_log(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.sandbox_base}/_sandbox/requests", params={"prefix": prefix})
    return list(response.json()["requests"])
