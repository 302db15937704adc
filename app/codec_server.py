"""The codec endpoint the Temporal Web UI calls to show encrypted payloads decoded.

Temporal's remote codec protocol: ``POST {endpoint}/decode`` (and ``/encode``) with
``{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}``, answered in
the same shape. Point the UI at it with ``temporal server start-dev --ui-codec-endpoint
http://127.0.0.1:8000/codec`` (``dispatch up`` does), or in the UI's settings.

Who may decode: anyone on this machine (the local Web UI runs in a browser here) or on the
networks in ``DISPATCH_CODEC_ALLOW_NETWORKS``, and anyone else only with ``Authorization: Bearer
$DISPATCH_CODEC_TOKEN`` — a UI behind a login (Temporal Cloud, or a self-hosted UI with auth)
passes its user's token when "pass access token" is on.
Browsers are allowed only from the UI's origins (``DISPATCH_CODEC_CORS_ORIGINS``).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from temporalio.api.common.v1 import Payload

from dispatch.codec import CodecKeyError, EncryptionCodec

TOKEN_ENV = "DISPATCH_CODEC_TOKEN"
ORIGINS_ENV = "DISPATCH_CODEC_CORS_ORIGINS"
NETWORKS_ENV = "DISPATCH_CODEC_ALLOW_NETWORKS"
"""CIDRs whose browsers may decode without the token (e.g. the Docker network a self-hosted UI's
users reach the webhook server through); default: this machine only."""
DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
MAX_BODY = 4_000_000
MAX_PAYLOADS = 1000

log = logging.getLogger("dispatch.codec")


def _origins() -> set[str]:
    setting = os.environ.get(ORIGINS_ENV, "")
    found = {o.strip().rstrip("/") for o in setting.split(",") if o.strip()}
    return found or set(DEFAULT_ORIGINS)


def _trusted(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in ("localhost", "testclient")
    if address.is_loopback:
        return True
    for cidr in os.environ.get(NETWORKS_ENV, "").split(","):
        if cidr.strip():
            try:
                if address in ipaddress.ip_network(cidr.strip(), strict=False):
                    return True
            except ValueError:
                log.warning("%s: %r is not a network; ignored", NETWORKS_ENV, cidr.strip()[:50])
    return False


def _authorized(request: Request) -> bool:
    """From a trusted network, or with the bearer token (when one is configured)."""
    if _trusted(request):
        return True
    token = os.environ.get(TOKEN_ENV, "")
    given = request.headers.get("authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _cors(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin", "").rstrip("/")
    if origin not in _origins():
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Namespace",
        "Vary": "Origin",
    }


def _payloads_from(body: Any) -> list[Payload]:
    if not isinstance(body, dict) or not isinstance(body.get("payloads"), list):
        raise ValueError('the body must be {"payloads": [...]}')
    items = body["payloads"]
    if len(items) > MAX_PAYLOADS:
        raise ValueError(f"at most {MAX_PAYLOADS} payloads per request")
    payloads = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("each payload must be an object")
        metadata = item.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("payload metadata must be an object")
        payloads.append(
            Payload(
                metadata={str(k): base64.b64decode(str(v)) for k, v in metadata.items()},
                data=base64.b64decode(str(item.get("data") or "")),
            )
        )
    return payloads


def _payloads_json(payloads: list[Payload]) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def create_codec_router(codec: EncryptionCodec | None) -> APIRouter:
    """``/codec/encode`` and ``/codec/decode``; 404 when this firm runs without encryption."""
    router = APIRouter(prefix="/codec", include_in_schema=False)

    async def handle(request: Request, direction: str) -> Response:
        headers = _cors(request)
        if codec is None:
            return JSONResponse(
                {"error": "payloads are not encrypted here"}, status_code=404, headers=headers
            )
        if not _authorized(request):
            log.warning("codec %s refused: not authorized", direction)
            return JSONResponse({"error": "not authorized"}, status_code=401, headers=headers)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413, headers=headers)
        try:
            payloads = _payloads_from(_json(raw))
            done = await (
                codec.decode(payloads) if direction == "decode" else codec.encode(payloads)
            )
        except (ValueError, CodecKeyError) as err:
            return JSONResponse({"error": str(err)[:300]}, status_code=400, headers=headers)
        return JSONResponse(_payloads_json(done), headers=headers)

    @router.options("/{direction}")
    async def preflight(request: Request, direction: str) -> Response:
        return Response(status_code=204, headers=_cors(request))

    @router.post("/decode")
    async def decode(request: Request) -> Response:
        return await handle(request, "decode")

    @router.post("/encode")
    async def encode(request: Request) -> Response:
        return await handle(request, "encode")

    return router


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None


__all__ = ["NETWORKS_ENV", "ORIGINS_ENV", "TOKEN_ENV", "create_codec_router"]
