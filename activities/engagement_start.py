"""Start an engagement workflow idempotently: the one place the webhook server, the recurring
spawner and the PM poller all start engagements from.

``engagement-{source}-{external_id}`` with USE_EXISTING (a redelivered webhook or a repeated
fire finds the running one) and REJECT_DUPLICATE (a finished engagement is never reopened).
Search attributes and memo carry ids only (DESIGN §3.6); the title, client and service go in
the static summary and details the Web UI shows, which travel through the payload codec like
every other payload.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from dispatch import search_attributes as sa
from dispatch.models import DispatchStatus, EngagementDetails, EngagementInput

ENGAGEMENT_WORKFLOW = "EngagementWorkflow"


def start_metadata(details: EngagementDetails | None) -> tuple[str | None, str | None]:
    """(static summary, static details) for the Web UI's list and detail views."""
    if details is None:
        return None, None
    summary = f"{details.title} · {details.service_type} · due {details.due_date.isoformat()}"
    lines = [
        f"**{details.title}**",
        f"Client: {details.client_id}",
        f"Service: {details.service_type}",
        f"Due: {details.due_date.isoformat()}",
        f"Estimate: {details.estimated_hours:g} h",
        f"Source: {details.source} {details.external_id}",
    ]
    return summary[:200], "\n\n".join(lines)


async def start_engagement(
    client: Client,
    engagement: EngagementInput,
    workflow_id: str,
    task_queue: str,
    rpc_timeout: timedelta | None = None,
) -> bool:
    """Start one engagement; True when this call started it (False: it already existed,
    running or finished)."""
    details = engagement.details
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(sa.DISPATCH_STATUS, DispatchStatus.RECEIVED.value)
    ]
    memo: dict[str, Any] = {}
    if details is not None:
        pairs += [
            SearchAttributePair(sa.CLIENT_ID, details.client_id),
            SearchAttributePair(sa.SERVICE_TYPE, details.service_type),
            SearchAttributePair(
                sa.DUE_DATE, datetime.combine(details.due_date, time(), tzinfo=UTC)
            ),
        ]
        memo = {"client_id": details.client_id, "service_type": details.service_type}
    summary, static_details = start_metadata(details)
    try:
        handle = await client.start_workflow(
            ENGAGEMENT_WORKFLOW,
            engagement,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(pairs),
            memo=memo,
            static_summary=summary,
            static_details=static_details,
            rpc_timeout=rpc_timeout,
        )
    except WorkflowAlreadyStartedError:
        return False
    # USE_EXISTING answers with the running workflow; only the start response says whether
    # this call started it (the SDK keeps it on the handle, unexposed).
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


__all__ = ["ENGAGEMENT_WORKFLOW", "start_engagement", "start_metadata"]
