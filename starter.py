"""The webhook server: PM webhooks in, engagement workflows started or signalled, 202 out.

    python starter.py           # 127.0.0.1:8000 (DISPATCH_HOST, DISPATCH_PORT)

Routes: ``POST /webhooks/karbon``, ``POST /webhooks/engagements``, ``POST /slack/events``
(Slack buttons), ``GET /healthz``, ``GET /openapi.json``, the board (``/board``). Every start
is idempotent (deterministic workflow id, USE_EXISTING), so a webhook delivered five times
makes one workflow. When Temporal cannot record a webhook (stopped, hung, overloaded) the
answer is 503 with Retry-After within a second or two, so the sender retries and nothing is
lost.

Hostile input is met at the door: each route has a body-size limit (413), every field a limit
(``dispatch.limits``, 422 naming the field), and no request, whatever its content or signature,
gets a 5xx from its content. Log lines carry ids and reasons, never bodies or client data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.engagement_start import start_engagement
from activities.signing import verify_hex_signature
from app.board_web import create_board_router
from app.codec_server import create_codec_router
from app.links import LinkOutcome, create_links_router, sendgrid_code_sender
from app.responses import RPC_TIMEOUT, ServiceUnavailable, bounded, deliver_link
from app.slack_app import create_slack_handler
from app.telemetry import setup_tracing
from app.temporal import EncryptionNotConfigured, connect, require_encryption
from app.web_metrics import WebMetrics
from app.webhooks import (
    EngagementEvent,
    FieldError,
    KarbonNotification,
    PayloadError,
    details_from,
    json_schema,
    parse_engagement_event,
    parse_karbon,
)
from dispatch import TASK_QUEUE, limits
from dispatch.codec import CodecKeyError, EncryptionCodec, KeyRing
from dispatch.config import FirmConfig, FirmConfigError, load_firm_config
from dispatch.ids import engagement_workflow_id
from dispatch.links import LinkClaims
from dispatch.models import EngagementDetails, EngagementInput, PmUpdate
from worker import configure_logging
from workflows.engagement import EngagementWorkflow

log = logging.getLogger("dispatch.starter")

RETRY_AFTER_SECONDS = "5"
CONNECT_TIMEOUT_SECONDS = 3.0
DEFAULT_HOST = "127.0.0.1"
"""Loopback unless told otherwise: expose the server through a TLS proxy (README)."""

ClientFactory = Callable[[], Awaitable[Client]]


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
                    self._client = await asyncio.wait_for(
                        self._factory(), timeout=CONNECT_TIMEOUT_SECONDS
                    )
                except (RuntimeError, OSError, TimeoutError, RPCError) as err:
                    raise ServiceUnavailable(type(err).__name__) from None
            return self._client


# --- answers ---------------------------------------------------------------------------------


class Accepted(BaseModel):
    workflow_id: str
    duplicate: bool | None = None
    """Present on a start: true when the engagement already existed (a redelivery)."""


class Ignored(BaseModel):
    ignored: str


class ErrorBody(BaseModel):
    error: str
    fields: list[FieldError] | None = None
    """On 422: every field at fault, with the reason."""


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _unavailable(err: Exception) -> JSONResponse:
    log.warning("temporal unavailable: %s", err)
    return _error(503, "the workflow service is unavailable; retry later")


def _refused(err: PayloadError, route: str) -> JSONResponse:
    # Field names and reasons only: reasons never quote the value (it may be client data).
    named = ", ".join(e.field for e in err.errors[:10])
    log.info("refused a %s webhook: invalid %s", route, named)
    return _error(422, "invalid payload", fields=[e.model_dump() for e in err.errors])


_LOGGABLE_PATH = re.compile(r"[^A-Za-z0-9/_.:-]")
"""A path is the sender's text: only characters a route of ours could hold reach the log."""


class NoTracebacks:
    """A bug of ours becomes a plain 500, never a traceback: the log line gets the error's type
    and where it happened, never its message (it may quote the payload), never the body.

    (FastAPI's own exception handlers answer but then re-raise to the server, which logs the
    whole traceback.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def watched(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as err:
            frame = traceback.extract_tb(err.__traceback__)[-1:]
            where = f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
            # The route's first two segments, never what follows (ids, a sender's text).
            path = _LOGGABLE_PATH.sub("?", "/".join(str(scope.get("path", "")).split("/")[:3]))
            log.error("unexpected %s on %s at %s", type(err).__name__, path, where)
            if not answered:
                response = _error(500, "internal error; the request was not recorded")
                await response(scope, receive, send)


async def read_limited(request: Request, limit: int) -> bytes | JSONResponse:
    """The body, or a 413 naming the route's limit."""
    body = await limits.read_limited(request, limit)
    if body is None:
        log.info("refused a body over %d bytes on %s", limit, request.url.path)
        return _error(413, f"body larger than {limit} bytes (the limit for {request.url.path})")
    return body


_COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: started, signalled, or ignored with the reason",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/Accepted"},
                        {"$ref": "#/components/schemas/Ignored"},
                    ]
                }
            }
        },
    },
    401: {
        "description": "Bad or missing signature",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    },
    413: {
        "description": "Body larger than the route's limit",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    },
    422: {
        "description": "Invalid payload; ``fields`` names each field at fault and why",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    },
    503: {
        "description": "Temporal unavailable, or the route's secret not configured: retry "
        "after Retry-After seconds",
        "headers": {
            "Retry-After": {
                "schema": {"type": "integer"},
                "description": "seconds to wait before retrying",
            }
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    },
}


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
    firm_today = today or (lambda: config.firm.today_at(datetime.now(UTC)))

    app = FastAPI(
        title="Engagement dispatch webhooks",
        version="1",
        description="Receives engagement events from practice-management systems and relays.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.config = config

    app.add_middleware(NoTracebacks)
    metrics = WebMetrics()
    app.add_middleware(metrics.middleware)  # outermost: times and counts every answer
    app.add_api_route("/metrics", metrics.exposition, methods=["GET"], include_in_schema=False)

    async def start(
        workflow_id: str, input: EngagementInput, details: EngagementDetails | None
    ) -> tuple[str, bool]:
        """Start (or find) the engagement. Returns (workflow id, whether it already existed)."""
        client = await gateway.client()
        try:
            started = await bounded(
                client,
                start_engagement(client, input, workflow_id, task_queue, rpc_timeout=RPC_TIMEOUT),
            )
        except WorkflowAlreadyStartedError:
            return workflow_id, True
        return workflow_id, not started

    async def signal(workflow_id: str, update: PmUpdate) -> bool:
        """Signal a running engagement; False when there is none (closed or never started)."""
        client = await gateway.client()
        handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id)
        try:
            await bounded(
                client,
                handle.signal(EngagementWorkflow.pm_updated, update, rpc_timeout=RPC_TIMEOUT),
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def guarded(work: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
        try:
            return await work()
        except ServiceUnavailable as err:
            return _unavailable(err)
        except RPCError as err:
            # Anything else Temporal refuses is not the sender's fault either; retrying later
            # is the safe answer (every start and signal is idempotent).
            log.error("temporal refused a call: %s", err.status.name)
            return _unavailable(ServiceUnavailable(err.status.name))

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
        responses=_COMMON_RESPONSES,
    )
    async def karbon_webhook(request: Request) -> JSONResponse:
        body = await read_limited(request, limits.KARBON_BODY)
        if isinstance(body, JSONResponse):
            return body
        key = os.environ.get(_karbon_key_env(config), "")
        if not key:
            log.error("Karbon webhook received but its signing key is not configured")
            return _error(503, "webhook signing key not configured")
        if not verify_hex_signature(key, body, request.headers.get("Signature", "")):
            log.info("refused a Karbon webhook: bad or missing signature")
            return _error(401, "invalid signature")
        try:
            note = parse_karbon(body)
        except PayloadError as err:
            return _refused(err, "Karbon")
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
        responses=_COMMON_RESPONSES,
    )
    async def engagement_webhook(request: Request) -> JSONResponse:
        body = await read_limited(request, limits.ENGAGEMENT_BODY)
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
            log.info("refused an engagement webhook: bad or missing signature")
            return _error(401, "invalid signature")
        try:
            event = parse_engagement_event(body, config, firm_today())
        except PayloadError as err:
            return _refused(err, "relay")
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
            except ServiceUnavailable:
                return LinkOutcome("unavailable", "The dispatch service is unavailable.")
            return await deliver_link(client, claims)

        app.include_router(
            create_links_router(config, deliver, send_code=sendgrid_code_sender(config))
        )
    app.include_router(create_board_router(config, gateway.client, task_queue=task_queue))
    ring = KeyRing.from_env()
    app.include_router(create_codec_router(EncryptionCodec(ring) if ring else None))
    if chat.kind == "slack":
        slack = create_slack_handler(config, chat, gateway.client)

        @app.post(
            "/slack/events",
            summary="Slack interactivity (buttons): signed by Slack, dispatched by Bolt",
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "payload": {
                                        "type": "string",
                                        "description": "Slack's block_actions payload (JSON)",
                                    }
                                },
                                "required": ["payload"],
                            }
                        }
                    },
                },
                "parameters": [
                    {
                        "name": "X-Slack-Signature",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "v0=<hex HMAC-SHA256 of v0:timestamp:body with "
                        "SLACK_SIGNING_SECRET>",
                    },
                    {
                        "name": "X-Slack-Request-Timestamp",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "Unix seconds; older than five minutes is refused",
                    },
                ],
            },
            responses={
                200: {
                    "description": "Acknowledged (the outcome is told to the person in "
                    "Slack; clicks that are not ours are ignored)"
                },
                400: {
                    "description": "Signed, but not a click this service understands",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                },
                401: _COMMON_RESPONSES[401],
                413: _COMMON_RESPONSES[413],
            },
        )
        async def slack_events(request: Request) -> Response:
            body = await read_limited(request, limits.SLACK_BODY)
            if isinstance(body, JSONResponse):
                return body
            return await slack.handle(request, body)

    class Health(BaseModel):
        status: str
        temporal: str

    @app.get(
        "/healthz", summary="Liveness, and whether Temporal is reachable", response_model=Health
    )
    async def healthz() -> Health:
        try:
            client = await gateway.client()
            await asyncio.wait_for(client.service_client.check_health(), timeout=2)
            temporal = "reachable"
        except (ServiceUnavailable, RPCError, TimeoutError, RuntimeError):
            temporal = "unreachable"
        return Health(status="ok", temporal=temporal)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the request-body models' ``$defs`` and our answer models
    moved into ``components/schemas``, so every ``$ref`` resolves."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Accepted, Ignored, ErrorBody):
        found = json_schema(model)
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                body_schema = media.get("schema", {})
                components.update(body_schema.pop("$defs", {}))
                title = body_schema.get("title")
                if title and body_schema.get("type") == "object" and "properties" in body_schema:
                    components[title] = dict(body_schema)
                    media["schema"] = {"$ref": f"#/components/schemas/{title}"}
    app.openapi_schema = schema
    return schema


def _karbon_key_env(config: FirmConfig) -> str:
    pm = config.connectors.pm
    return pm.webhook_signing_key_env if pm.kind == "karbon" else "KARBON_WEBHOOK_SIGNING_KEY"


def main() -> None:
    configure_logging()
    try:
        # A missing secret the routes need (Slack's signing secret, SendGrid's key for link
        # codes, the encryption keys) is a one-line error at start, not a traceback later.
        require_encryption()
        setup_tracing("dispatch-webhooks")
        app = create_app(load_firm_config())
    except (FirmConfigError, EncryptionNotConfigured, CodecKeyError) as err:
        print(f"starter: {err}", file=sys.stderr)
        sys.exit(2)
    host = os.environ.get("DISPATCH_HOST", DEFAULT_HOST)
    port = int(os.environ.get("DISPATCH_PORT", "8000"))
    uvicorn.run(app, host=host, port=port, log_level="warning")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
