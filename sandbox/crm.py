"""The generic CRM/billing webhook (our own contract): ``POST /crm/records``, ``GET /crm/records``.

Contract, as a receiving CRM or billing system should implement it:

- ``X-Dispatch-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the shared
  secret>`` (``CRM_WEBHOOK_SECRET``); a missing or wrong signature is ``401 {"error": "bad
  signature"}``.
- ``Idempotency-Key`` is required (``400`` without it). The first request with a key is stored
  and answered ``201 {"id": ...}``; a repeat is answered ``200 {"id": <same>, "duplicate": true}``
  and stores nothing.
- The body is JSON with at least ``event`` and ``engagement.workflow_id``; otherwise ``422
  {"error": "missing field", "field": ...}``.

``GET /crm/records`` lists what was stored; it is an emulator convenience with no auth.
The signature is checked with the standard library here, independently of the sender's code,
so a bug in the sender's signing cannot hide itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.secrets_demo import demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "crm"
SECRET_ENV = "CRM_WEBHOOK_SECRET"
REQUIRED_FIELDS = ("event", "engagement.workflow_id")


class CrmStore:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.by_key: dict[str, str] = {}

    def dump(self) -> dict[str, Any]:
        return {"records": self.records}


def create_store(seed: SandboxSeed) -> CrmStore:
    return CrmStore()


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    try:
        phrase = HTTPStatus(status).phrase.lower()
    except ValueError:
        phrase = "error"
    return {"error": phrase}, "application/json"


def _signed(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().lower().encode())


def _missing(payload: dict[str, Any]) -> str | None:
    for path in REQUIRED_FIELDS:
        node: Any = payload
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or node == "":
            return path
    return None


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["crm"])

    def store() -> CrmStore:
        found: CrmStore = ctx.stores[NAME]
        return found

    @router.post(f"/{NAME}/records")
    async def create_record(request: Request) -> Response:
        body = await request.body()
        if not _signed(
            demo_secret(SECRET_ENV), body, request.headers.get("x-dispatch-signature", "")
        ):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        key = request.headers.get("idempotency-key", "").strip()
        if not key:
            return JSONResponse({"error": "Idempotency-Key header is required"}, status_code=400)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(payload, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=422)
        if (field := _missing(payload)) is not None:
            return JSONResponse({"error": "missing field", "field": field}, status_code=422)
        current = store()
        if key in current.by_key:
            return JSONResponse({"id": current.by_key[key], "duplicate": True}, status_code=200)
        record_id = f"rec_{len(current.records) + 1:06d}"
        current.by_key[key] = record_id
        current.records.append(
            {
                "id": record_id,
                "idempotency_key": key,
                "received_at": datetime.now(UTC).isoformat(),
                "record": payload,
            }
        )
        return JSONResponse({"id": record_id}, status_code=201)

    @router.get(f"/{NAME}/records")
    async def list_records() -> dict[str, Any]:
        return {"records": store().records}

    return router
