"""The webhook server: PM webhooks in, engagement workflows started or signalled, 202 out.

    python starter.py           # port 8000 (DISPATCH_PORT), firm from DISPATCH_FIRM_CONFIG

Routes: ``POST /webhooks/karbon``, ``POST /webhooks/engagements``, ``POST /slack/events``
(Slack buttons), ``GET /healthz``, ``GET /openapi.json``. Every start is idempotent
(deterministic workflow id, USE_EXISTING), so a webhook delivered five times makes one
workflow. When Temporal cannot record a webhook the answer is 503 with Retry-After, so the
sender retries and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.signing import verify_hex_signature
from dispatch import TASK_QUEUE
from dispatch import search_attributes as sa
from dispatch.config import FirmConfig, FirmConfigError, load_firm_config
from dispatch.ids import engagement_workflow_id
from dispatch.links import LinkClaims, LinkOutcome, create_links_router
from dispatch.models import EngagementDetails, EngagementInput, PmUpdate
from dispatch.responses import deliver_link
from dispatch.slack_app import create_slack_handler
from dispatch.temporal import connect
from dispatch.webhooks import (
    EngagementEvent,
    KarbonNotification,
    PayloadError,
    details_from,
    json_schema,
    parse_engagement_event,
    parse_karbon,
)
from workflows.engagement import EngagementWorkflow

log = logging.getLogger("dispatch.starter")

MAX_BODY = 1_000_000
RETRY_AFTER_SECONDS = "5"

ClientFactory = Callable[[], Awaitable[Client]]


class TemporalUnavailable(Exception):
    pass


class TemporalGateway:
    """A lazily connected client; a failed connection is retried on the next webhook."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(self._factory(), timeout=5)
                except (RuntimeError, OSError, TimeoutError) as err:
                    raise TemporalUnavailable(str(err)) from None
            return self._client


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _unavailable(err: Exception) -> JSONResponse:
    log.warning("temporal unavailable: %s", type(err).__name__)
    return _error(503, "the workflow service is unavailable; retry later")


def _is_unavailable(err: RPCError) -> bool:
    return err.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
    )


def create_app(
    config: FirmConfig,
    client: Client | ClientFactory | None = None,
    today: Callable[[], date] | None = None,
    task_queue: str = TASK_QUEUE,
) -> FastAPI:
    """The ASGI app. ``client`` may be a connected client, a factory, or None (connect lazily)."""
    if isinstance(client, Client):
        connected = client

        async def given() -> Client:
            return connected

        factory: ClientFactory = given
    else:
        factory = client or connect
    gateway = TemporalGateway(factory)
    zone = ZoneInfo(config.firm.time_zone)
    firm_today = today or (lambda: datetime.now(UTC).astimezone(zone).date())

    app = FastAPI(
        title="Engagement dispatch webhooks",
        version="1",
        description="Receives engagement events from practice-management systems and relays.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.config = config

    async def read_body(request: Request) -> bytes | JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        return body

    async def start(
        workflow_id: str, input: EngagementInput, details: EngagementDetails | None
    ) -> tuple[str, bool]:
        """Start (or find) the engagement. Returns (workflow id, whether it already existed)."""
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.DISPATCH_STATUS, "Received"),
        ]
        if details is not None:
            pairs += [
                SearchAttributePair(sa.CLIENT_ID, details.client_id),
                SearchAttributePair(sa.SERVICE_TYPE, details.service_type),
                SearchAttributePair(
                    sa.DUE_DATE, datetime.combine(details.due_date, time(), tzinfo=UTC)
                ),
            ]
        client = await gateway.client()
        try:
            handle = await client.start_workflow(
                EngagementWorkflow.run,
                input,
                id=workflow_id,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                # A replayed "created" webhook must not reopen a finished engagement.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(pairs),
                memo={
                    "title": details.title if details else None,
                    "client_name": details.client_name if details else None,
                },
            )
        except WorkflowAlreadyStartedError:
            return workflow_id, True
        # USE_EXISTING answers with the running workflow; the response says whether it started.
        response = getattr(handle, "_start_workflow_response", None)
        started = bool(getattr(response, "started", True))
        return handle.id, not started

    async def signal(workflow_id: str, update: PmUpdate) -> bool:
        """Signal a running engagement; False when there is none (closed or never started)."""
        client = await gateway.client()
        handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id)
        try:
            await handle.signal(EngagementWorkflow.pm_updated, update)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def guarded(work: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
        try:
            return await work()
        except TemporalUnavailable as err:
            return _unavailable(err)
        except RPCError as err:
            if _is_unavailable(err):
                return _unavailable(err)
            raise

    @app.post(
        "/webhooks/karbon",
        status_code=202,
        summary="Karbon Work webhook",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": json_schema(KarbonNotification)}},
            },
            "parameters": [
                {
                    "name": "Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "hex HMAC-SHA256 of the raw body with the "
                    "subscription's signing key",
                }
            ],
        },
        responses={
            401: {"description": "bad or missing signature"},
            422: {"description": "invalid payload; the body names the field"},
            503: {"description": "Temporal unavailable; retry"},
        },
    )
    async def karbon_webhook(request: Request) -> JSONResponse:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        key = os.environ.get(_karbon_key_env(config), "")
        if not key:
            log.error("Karbon webhook received but its signing key is not configured")
            return _error(503, "webhook signing key not configured")
        if not verify_hex_signature(key, body, request.headers.get("Signature", "")):
            return _error(401, "invalid signature")
        try:
            note = parse_karbon(body)
        except PayloadError as err:
            return _error(422, "invalid payload", fields=[e.model_dump() for e in err.errors])
        if note.ResourceType != "Work":
            return JSONResponse({"ignored": f"resource type {note.ResourceType}"}, status_code=202)
        workflow_id = engagement_workflow_id("karbon", note.ResourcePermaKey)

        async def work() -> JSONResponse:
            if note.ActionType == "Inserted":
                wf_id, existed = await start(
                    workflow_id,
                    EngagementInput(
                        firm_id=config.firm.id, source="karbon", external_id=note.ResourcePermaKey
                    ),
                    None,
                )
                return JSONResponse({"workflow_id": wf_id, "duplicate": existed}, status_code=202)
            if note.ActionType in ("Updated", "Deleted"):
                delivered = await signal(
                    workflow_id, PmUpdate(event_key=note.event_key, action=note.ActionType)
                )
                body = (
                    {"workflow_id": workflow_id}
                    if delivered
                    else {"ignored": "no running engagement for this work item"}
                )
                return JSONResponse(body, status_code=202)
            return JSONResponse({"ignored": f"action {note.ActionType}"}, status_code=202)

        return await guarded(work)

    @app.post(
        "/webhooks/engagements",
        status_code=202,
        summary="Engagement event from any relay (TaxDome, Canopy, Zapier, ...)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": json_schema(EngagementEvent)}},
            },
            "parameters": [
                {
                    "name": "X-Dispatch-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "sha256=<hex HMAC-SHA256 of the raw body with "
                    "DISPATCH_WEBHOOK_SECRET>",
                }
            ],
        },
        responses={
            401: {"description": "bad or missing signature"},
            422: {"description": "invalid payload; the body names the field"},
            503: {"description": "Temporal unavailable; retry"},
        },
    )
    async def engagement_webhook(request: Request) -> JSONResponse:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        secret = os.environ.get("DISPATCH_WEBHOOK_SECRET", "")
        if not secret:
            log.error("engagement webhook received but DISPATCH_WEBHOOK_SECRET is not set")
            return _error(503, "webhook secret not configured")
        given = request.headers.get("X-Dispatch-Signature", "")
        if not given.startswith("sha256=") or not verify_hex_signature(
            secret, body, given.removeprefix("sha256=")
        ):
            return _error(401, "invalid signature")
        try:
            event = parse_engagement_event(body, config, firm_today())
        except PayloadError as err:
            return _error(422, "invalid payload", fields=[e.model_dump() for e in err.errors])
        details = details_from(event, config)
        workflow_id = engagement_workflow_id(event.source, event.engagement.external_id)

        async def work() -> JSONResponse:
            if event.event == "engagement.created":
                wf_id, existed = await start(
                    workflow_id,
                    EngagementInput(
                        firm_id=config.firm.id,
                        source=event.source,
                        external_id=event.engagement.external_id,
                        details=details,
                    ),
                    details,
                )
                return JSONResponse({"workflow_id": wf_id, "duplicate": existed}, status_code=202)
            action = {"engagement.cancelled": "Deleted", "engagement.completed": "Completed"}.get(
                event.event, "Updated"
            )
            delivered = await signal(
                workflow_id,
                PmUpdate(
                    event_key=f"{event.source}:{event.event_id}", action=action, details=details
                ),
            )
            body = (
                {"workflow_id": workflow_id}
                if delivered
                else {"ignored": "no running engagement with this id"}
            )
            return JSONResponse(body, status_code=202)

        return await guarded(work)

    chat = config.connectors.chat
    if chat.kind == "teams":

        async def deliver(claims: LinkClaims) -> LinkOutcome:
            try:
                client = await gateway.client()
            except TemporalUnavailable:
                return LinkOutcome("unavailable", "The dispatch service is unavailable.")
            return await deliver_link(client, claims)

        app.include_router(create_links_router(config, deliver))
    if chat.kind == "slack":
        slack = create_slack_handler(config, chat, gateway.client)

        @app.post("/slack/events", summary="Slack interactivity (buttons), verified by Bolt",
                  include_in_schema=True)
        async def slack_events(request: Request) -> Response:
            return await slack.handle(request)

    @app.get("/healthz", summary="Liveness, and whether Temporal is reachable")
    async def healthz() -> dict[str, str]:
        try:
            client = await gateway.client()
            await asyncio.wait_for(client.service_client.check_health(), timeout=2)
            temporal = "reachable"
        except (TemporalUnavailable, RPCError, TimeoutError, RuntimeError):
            temporal = "unreachable"
        return {"status": "ok", "temporal": temporal}

    return app


def _karbon_key_env(config: FirmConfig) -> str:
    pm = config.connectors.pm
    return pm.webhook_signing_key_env if pm.kind == "karbon" else "KARBON_WEBHOOK_SIGNING_KEY"


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("DISPATCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_firm_config()
    except FirmConfigError as err:
        print(f"starter: {err}", file=sys.stderr)
        sys.exit(2)
    host = os.environ.get("DISPATCH_HOST", "0.0.0.0")
    port = int(os.environ.get("DISPATCH_PORT", "8000"))
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
