"""Delivering a person's answer to an engagement, from any surface (Slack, Teams links, API).

The answer is an Update on the engagement workflow with the surface's event id as the Update
id, so a redelivered click counts once. The workflow's validator refuses the wrong person (or
a closed engagement) before anything is recorded; the refusal's message is meant for the person
who clicked.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from dispatch.links import LinkClaims, LinkOutcome, decision_for, response_for
from dispatch.models import AssignmentResponse, PartnerDecision, ResponseOutcome
from workflows.engagement import EngagementWorkflow


class Refused(Exception):
    """The engagement said no; ``str(err)`` is the explanation for the person."""


class UnknownEngagement(Exception):
    """No running engagement with that id (never existed, or already closed)."""


def _refusal(err: WorkflowUpdateFailedError) -> Refused:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return Refused(cause.message)
    return Refused("That answer could not be recorded.")


def _unknown(err: RPCError) -> UnknownEngagement | None:
    if err.status is RPCStatusCode.NOT_FOUND:
        return UnknownEngagement("This engagement is closed or no longer exists.")
    return None


async def deliver_response(client: Client, workflow_id: str,
                           response: AssignmentResponse) -> ResponseOutcome:
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(EngagementWorkflow.respond, response,
                                           id=response.event_id)
    except WorkflowUpdateFailedError as err:
        raise _refusal(err) from None
    except RPCError as err:
        unknown = _unknown(err)
        if unknown is not None:
            raise unknown from None
        raise


async def deliver_decision(client: Client, workflow_id: str,
                           decision: PartnerDecision) -> ResponseOutcome:
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(EngagementWorkflow.decide, decision,
                                           id=decision.event_id)
    except WorkflowUpdateFailedError as err:
        raise _refusal(err) from None
    except RPCError as err:
        unknown = _unknown(err)
        if unknown is not None:
            raise unknown from None
        raise


async def deliver_link(client: Client, claims: LinkClaims) -> LinkOutcome:
    """A verified Teams link, single use: its nonce is the Update id, and a nonce the
    engagement has already recorded is refused as used (the Update alone would just replay
    the first answer)."""
    handle = client.get_workflow_handle(claims.workflow_id)
    try:
        state = await handle.query(EngagementWorkflow.state)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return LinkOutcome("refused", "This engagement is closed or no longer exists.")
        return LinkOutcome("unavailable", "The dispatch service is busy; try again shortly.")
    if claims.event_id in state.seen_events:
        return LinkOutcome("already_used", "This link was already used.")
    try:
        if claims.kind == "partner_assign":
            outcome = await deliver_decision(client, claims.workflow_id, decision_for(claims))
        else:
            outcome = await deliver_response(client, claims.workflow_id, response_for(claims))
    except (Refused, UnknownEngagement) as err:
        return LinkOutcome("refused", str(err))
    except RPCError:
        return LinkOutcome("unavailable", "The dispatch service is busy; try again shortly.")
    return LinkOutcome("done", outcome.message)
