"""The reference's webhook endpoint: as thin as ours, in front of a bare workflow.

FastAPI under uvicorn, like the webhook server: the raw body read, an HMAC-SHA256 signature
checked (``REFERENCE_SECRET``), the JSON validated with pydantic, one ``start_workflow`` with a
deterministic id and USE_EXISTING, 202 with the workflow id.

    python -m benchmarks.reference_web --port P
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from activities.signing import verify_hex_signature
from app.temporal import connect
from benchmarks.reference import SECRET_ENV, TASK_QUEUE, ReferenceWorkflow, workflow_id


class ReferenceRequest(BaseModel):
    id: str
    n: int


def create_app(secret: str) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)
    clients: list[Client] = []

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/start", status_code=202)
    async def start(request: Request) -> JSONResponse:
        body = await request.body()
        if not verify_hex_signature(secret, body, request.headers.get("Signature", "")):
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            given = ReferenceRequest.model_validate_json(body)
        except ValidationError:
            return JSONResponse({"error": "invalid payload"}, status_code=422)
        if not clients:
            clients.append(await connect())
        handle = await clients[0].start_workflow(
            ReferenceWorkflow.run,
            given.n,
            id=workflow_id(given.id),
            task_queue=TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return JSONResponse({"workflow_id": handle.id}, status_code=202)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference_web")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level="WARNING")
    app = create_app(os.environ[SECRET_ENV])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
