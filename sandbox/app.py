"""The sandbox ASGI app: vendor emulators under their prefixes, plus ``/_sandbox`` controls.

Control routes (never part of any vendor contract):

- ``GET /_sandbox/requests?prefix=/slack&method=POST&since=0`` - the request log
- ``DELETE /_sandbox/requests`` - clear it
- ``GET|POST|DELETE /_sandbox/faults`` - list, set (``{"rules": [...]}``, ``?append=true``), clear;
  a rule with ``"phase": "after"`` lets the request through and then loses or delays the answer
- ``POST /_sandbox/reset`` - back to the seed (stores, log and faults)
- ``GET /_sandbox/state/{system}`` - a vendor store's contents, for assertions
- ``GET /_sandbox/health``
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from types import ModuleType
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.context import SandboxContext
from sandbox.faults import Fault, FaultRules
from sandbox.recorder import RecordedRequest
from sandbox.seed import SandboxSeed

CORE_MODULES = {"app", "context", "faults", "recorder", "seed", "__main__"}


def _load_vendors() -> list[ModuleType]:
    """Every module of this package that is an emulator (it defines NAME and create_router).

    Adding a vendor is adding one module; nothing here lists them.
    """
    import sandbox

    vendors = []
    for info in sorted(pkgutil.iter_modules(sandbox.__path__), key=lambda m: m.name):
        if info.name in CORE_MODULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"sandbox.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "create_router"):
            vendors.append(module)
    return vendors


class RecordAndFault:
    """Pure ASGI middleware: record the raw request, then maybe answer with a fault instead."""

    def __init__(self, app: ASGIApp, ctx: SandboxContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry = self.ctx.recorder.record(
            scope["method"], scope["path"], scope.get("query_string", b"").decode(), headers, body
        )

        fault = self.ctx.faults.pick(scope["method"], scope["path"])
        if fault is not None and not fault.after:
            entry.fault = fault.label
            if fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault.status is not None:
                await self._send_fault(scope["path"], fault, entry, send)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        if fault is None:
            await self.app(scope, replay, capture)
            return

        # An "after" fault: the emulator handles the request, then its answer is lost or late.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            held.append(message)

        await self.app(scope, replay, hold)
        entry.fault = f"{fault.label} (the emulator answered {entry.status})"
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.status is not None:
            await self._send_fault(scope["path"], fault, entry, send)
            return
        for message in held:
            await send(message)

    async def _send_fault(
        self, path: str, fault: Fault, entry: RecordedRequest, send: Send
    ) -> None:
        payload, media_type = self.ctx.faults.render(path, fault.status or 500, fault.retry_after)
        headers = [(b"content-type", media_type.encode())]
        if fault.retry_after is not None:
            headers.append((b"retry-after", str(fault.retry_after).encode()))
        entry.status = fault.status or 500
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def create_app(seed: SandboxSeed | None = None, base_url: str = "http://127.0.0.1:8100") -> FastAPI:
    ctx = SandboxContext(seed=seed or SandboxSeed(), base_url=base_url)
    vendors = _load_vendors()
    app = FastAPI(title="Dispatch sandbox emulators", docs_url=None, redoc_url=None)
    app.state.sandbox = ctx

    def reset() -> None:
        for vendor in vendors:
            ctx.stores[vendor.NAME] = vendor.create_store(ctx.seed)

    reset()
    for vendor in vendors:
        app.include_router(vendor.create_router(ctx))
        ctx.faults.register_renderer(f"/{vendor.NAME}", vendor.render_fault)

    @app.get("/_sandbox/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "systems": [v.NAME for v in vendors], "today": ctx.seed.today}

    @app.get("/_sandbox/requests")
    async def requests(
        prefix: str | None = None, method: str | None = None, since: int = Query(0, ge=0)
    ) -> dict[str, Any]:
        found = ctx.recorder.select(prefix=prefix, method=method, since=since)
        return {"requests": [r.as_dict() for r in found]}

    @app.delete("/_sandbox/requests")
    async def clear_requests() -> dict[str, bool]:
        ctx.recorder.clear()
        return {"ok": True}

    @app.get("/_sandbox/faults")
    async def list_faults() -> dict[str, Any]:
        return {"rules": ctx.faults.describe()}

    @app.post("/_sandbox/faults")
    async def set_faults(rules: FaultRules, append: bool = False) -> dict[str, Any]:
        ctx.faults.set_rules(rules.rules, append=append)
        return {"rules": ctx.faults.describe()}

    @app.delete("/_sandbox/faults")
    async def clear_faults() -> dict[str, bool]:
        ctx.faults.clear()
        return {"ok": True}

    @app.post("/_sandbox/reset")
    async def reset_all() -> dict[str, bool]:
        reset()
        ctx.recorder.clear()
        ctx.faults.clear()
        return {"ok": True}

    @app.get("/_sandbox/state/{system}")
    async def state(system: str) -> Any:
        store = ctx.stores.get(system)
        if store is None:
            raise HTTPException(404, f"no emulator named {system!r}")
        return store.dump()

    app.add_middleware(RecordAndFault, ctx=ctx)
    return app
