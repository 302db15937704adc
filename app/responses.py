"""Talking to Temporal from the front door: bounded calls, and answers people can read.

Every call the webhook server makes (start, signal, update, query) goes through ``bounded``:
a call that has not finished after a moment makes us ask the server, without retries, whether
it is there at all. A stopped server answers that at once and a hung one not within a second,
so either way the caller hears "unavailable" (HTTP 503 with Retry-After) in a second or two
instead of waiting out the client's own retries (10 s) or a hung call (30 s and a 500).

A person's answer (Accept / Request reassignment, a partner's pick or new due date) is an
Update on the engagement workflow with the surface's event id as the Update id, so a redelivered
click counts once. The workflow's validator refuses the wrong person (or a closed engagement) before
anything is recorded; only those deliberate refusals are passed on word for word. Anything else
Temporal says (a missing handler, a payload problem, a server error) becomes a plain sentence:
internals never reach the person who clicked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from app.links import LinkOutcome, decision_for, response_for
from dispatch.links import LinkClaims
from dispatch.models import AssignmentResponse, DueDateMove, PartnerDecision, ResponseOutcome
from workflows.engagement import EngagementWorkflow

log = logging.getLogger("app.responses")

T = TypeVar("T")
A = TypeVar("A", AssignmentResponse, PartnerDecision, DueDateMove)

CALL_BUDGET_SECONDS = 10.0
"""The longest a healthy but busy server may take for one call (start, signal, update)."""
PROBE_AFTER_SECONDS = 0.5
"""A call slower than this makes us check that the server is there at all."""
PROBE_TIMEOUT = timedelta(seconds=1)
RPC_TIMEOUT = timedelta(seconds=CALL_BUDGET_SECONDS)
"""Per-call gRPC deadline, so no call outlives its budget inside the client either."""

UNAVAILABLE_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
    }
)
"""Statuses that say "not now" rather than "no": the sender should retry later."""

REFUSAL_TYPES = frozenset(
    {"Closed", "NotAssigned", "NotAssignee", "Started", "NotPartner", "NotWaiting", "BadDate"}
)
"""ApplicationError types the engagement's validators raise on purpose, with messages written
for the person who clicked. Any other failure is described in our own words."""

CLOSED = "This engagement is closed or no longer exists."
NOT_RECORDED = "That answer could not be recorded for this engagement."
BUSY = "The dispatch service is busy; your answer was not recorded. Try again in a minute."


class ServiceUnavailable(Exception):
    """Temporal cannot take the call now (stopped, hung, overloaded): retry later."""


class Refused(Exception):
    """The engagement said no; ``str(err)`` is the explanation for the person."""


class UnknownEngagement(Exception):
    """No running engagement with that id (never existed, or already closed)."""


def is_unavailable(err: RPCError) -> bool:
    return err.status in UNAVAILABLE_STATUSES


async def reachable(client: Client) -> bool:
    """One health check without retries: False when the server is stopped or hung."""
    try:
        return await asyncio.wait_for(
            client.service_client.check_health(retry=False, timeout=PROBE_TIMEOUT),
            timeout=PROBE_TIMEOUT.total_seconds() + 0.5,
        )
    except (RPCError, TimeoutError, RuntimeError, OSError):
        return False


async def bounded(client: Client, call: Awaitable[T], *, budget: float = CALL_BUDGET_SECONDS) -> T:
    """Run one Temporal call; ``ServiceUnavailable`` when the server cannot answer in time.

    Other errors (NOT_FOUND, a failed update, ...) are the caller's to interpret.
    """
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=PROBE_AFTER_SECONDS)
        if not done:
            if not await reachable(client):
                raise ServiceUnavailable("Temporal is not answering")
            done, _ = await asyncio.wait({task}, timeout=max(budget - PROBE_AFTER_SECONDS, 0.1))
            if not done:
                raise ServiceUnavailable(f"no answer within {budget:g} s")
        try:
            return task.result()
        except RPCTimeoutOrCancelledError:
            raise ServiceUnavailable("the call timed out") from None
        except RPCError as err:
            if is_unavailable(err):
                raise ServiceUnavailable(err.status.name) from None
            raise
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


# --- a person's answer -----------------------------------------------------------------------


def _refusal(err: WorkflowUpdateFailedError) -> Refused:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in REFUSAL_TYPES:
        return Refused(cause.message)
    # E.g. "Update handler for 'respond' expected but not found": true, and useless to a
    # preparer. The type (never the message, which may quote data) is enough for an operator.
    log.info(
        "an answer was refused by Temporal: %s",
        cause.type if isinstance(cause, ApplicationError) else type(cause).__name__,
    )
    return Refused(NOT_RECORDED)


def _rpc_failure(err: RPCError) -> Exception:
    if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
        return UnknownEngagement(CLOSED)
    log.warning("an answer could not be delivered: %s", err.status.name)
    if err.status is RPCStatusCode.INVALID_ARGUMENT:
        return Refused(NOT_RECORDED)
    return ServiceUnavailable(err.status.name)


async def deliver_response(
    client: Client, workflow_id: str, response: AssignmentResponse
) -> ResponseOutcome:
    return await _execute(
        client, workflow_id, EngagementWorkflow.respond, response, response.event_id
    )


async def deliver_decision(
    client: Client, workflow_id: str, decision: PartnerDecision
) -> ResponseOutcome:
    return await _execute(
        client, workflow_id, EngagementWorkflow.decide, decision, decision.event_id
    )


async def deliver_due_move(client: Client, workflow_id: str, move: DueDateMove) -> ResponseOutcome:
    return await _execute(client, workflow_id, EngagementWorkflow.move_due, move, move.event_id)


async def _execute(
    client: Client,
    workflow_id: str,
    update: UpdateMethodMultiParam[[EngagementWorkflow, A], ResponseOutcome],
    arg: A,
    event_id: str,
) -> ResponseOutcome:
    """One Update on the engagement, its id the click's event id (a retry counts once), refusals
    and Temporal failures turned into what the surface tells the person."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await bounded(
            client, handle.execute_update(update, arg, id=event_id, rpc_timeout=RPC_TIMEOUT)
        )
    except WorkflowUpdateFailedError as err:
        raise _refusal(err) from None
    except RPCError as err:
        raise _rpc_failure(err) from None


async def deliver_link(client: Client, claims: LinkClaims) -> LinkOutcome:
    """A verified Teams link, single use: its nonce is the Update id, and a nonce the
    engagement has already recorded is refused as used (the Update alone would just replay
    the first answer)."""
    handle = client.get_workflow_handle(claims.workflow_id)
    try:
        state = await bounded(
            client, handle.query(EngagementWorkflow.state, rpc_timeout=RPC_TIMEOUT)
        )
    except ServiceUnavailable:
        return LinkOutcome("unavailable", BUSY)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return LinkOutcome("refused", CLOSED)
        return LinkOutcome("unavailable", BUSY)
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return LinkOutcome("refused", NOT_RECORDED)
    if claims.event_id in state.seen_events:
        return LinkOutcome("already_used", "This link was already used.")
    try:
        if claims.kind == "partner_assign":
            outcome = await deliver_decision(client, claims.workflow_id, decision_for(claims))
        else:
            outcome = await deliver_response(client, claims.workflow_id, response_for(claims))
    except (Refused, UnknownEngagement) as err:
        return LinkOutcome("refused", str(err))
    except ServiceUnavailable:
        return LinkOutcome("unavailable", BUSY)
    return LinkOutcome("done", outcome.message)
