"""CRM / billing log through a generic signed webhook: one JSON record per assignment event.

The receiver's contract (see ``sandbox/crm.py``): ``X-Dispatch-Signature: sha256=<hex HMAC of the
raw body>`` and an ``Idempotency-Key`` that is stable per workflow event, so a retried POST is
recognised (``200 {"duplicate": true}``) instead of logging the assignment twice.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, transport_error
from activities.roles import CrmActivities
from activities.signing import dispatch_signature_header
from activities.transport import FreshTransport
from dispatch.config import FirmConfigError, WebhookCrm, secret
from dispatch.models import CrmLogInput, CrmLogResult, StaffRef

SYSTEM = "CRM"
OPERATION = "POST record"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class WebhookCrmActivities(CrmActivities):
    def __init__(self, connector: WebhookCrm, http: httpx.AsyncClient | None = None) -> None:
        self._connector = connector
        self._http = http
        self._transport: FreshTransport | None = None

    def _client(self) -> httpx.AsyncClient:
        # Created on first use, inside the worker's event loop, and shared by all attempts.
        # Every call here is idempotent, so a dead keep-alive connection may be retried once.
        if self._http is None:
            self._transport = FreshTransport()
            self._http = httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport)
        return self._http

    @property
    def dead_connections(self) -> int:
        """Reused connections the server had closed (each was replaced, the call went on)."""
        return self._transport.dead_connections if self._transport else 0

    @activity.defn(name="crm_log")
    async def log(self, input: CrmLogInput) -> CrmLogResult:
        try:
            key = secret(self._connector.secret_env)
        except FirmConfigError as err:
            raise ApplicationError(str(err), type="CrmConfigError", non_retryable=True) from None
        assert key is not None  # required=True raises instead of returning None
        body = json.dumps(crm_record(input), separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": input.idempotency_key,
            "X-Dispatch-Signature": dispatch_signature_header(key, body),
        }
        try:
            response = await self._client().post(self._connector.url, content=body, headers=headers)
        except httpx.TransportError as err:
            raise transport_error(SYSTEM, OPERATION, err) from None
        if response.status_code not in (200, 201):
            raise error_for_status(
                SYSTEM,
                response.status_code,
                response.headers,
                _reason(response),
                operation=OPERATION,
            )
        answer = _json(response)
        record_id = str(answer.get("id", "")) or "unknown id"
        if answer.get("duplicate"):
            return CrmLogResult(logged=True, detail=f"already logged as {record_id}")
        return CrmLogResult(logged=True, detail=f"logged as {record_id}")


def crm_record(input: CrmLogInput) -> dict[str, Any]:
    s = input.summary
    return {
        "event": input.event,
        "occurred_at": input.occurred_at.isoformat(),
        "engagement": {
            "workflow_id": s.workflow_id,
            "title": s.title,
            "client_id": s.client_id,
            "client_name": s.client_name,
            "service_type": s.service_type,
            "due_date": s.due_date.isoformat(),
            "estimated_hours": s.estimated_hours,
            "pm_url": s.pm_url,
        },
        "status": input.status.value,
        "preparer": _person(input.preparer),
        "reviewer": _person(input.reviewer),
        "hours": {"preparer": input.preparer_hours, "reviewer": input.reviewer_hours},
    }


def _person(person: StaffRef | None) -> dict[str, str] | None:
    if person is None:
        return None
    return {"id": person.id, "name": person.name, "email": person.email}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reason(response: httpx.Response) -> str:
    data = _json(response)
    error = data.get("error")
    if error is None:
        return response.text[:200] or response.reason_phrase
    field = data.get("field")
    return f"{error} ({field})" if field else str(error)
