"""An answer that arrives before the engagement has finished sending its request.

After a partner's pick the engagement announces the preparer, then asks the dispatcher for a
reviewer. On a busy worker the dispatcher's answer can land in the same workflow task that
confirms the request was sent, so it is already waiting when the engagement looks for answers
it did not ask for. It is the answer it waits on: it must be taken, not refused.

The interceptor makes that ordering certain instead of a matter of load: the engagement's send
of the reviewer request returns only once the answer is in.
"""

from __future__ import annotations

from temporalio.client import Client

from dispatch.models import DispatchStatus, StaffRef
from tests.harness import partner_picks_over_capacity, running_worker
from tests.interceptors import AnswerBeforeSent
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm


async def test_a_reviewer_answer_that_arrives_with_the_send_is_taken(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = relay_firm(sandbox.config)
    async with running_worker(client, config, interceptors=[AnswerBeforeSent()]) as worker:
        handle, pick = await partner_picks_over_capacity(worker, "in-flight")
        state = await worker.wait_state(
            handle.id,
            lambda s: s.reviewer is not None and s.awaiting is None,
            timeout=60,
        )
    assert state.status is DispatchStatus.ASSIGNED
    assert isinstance(state.preparer, StaffRef) and state.preparer.id == pick
    assert state.reviewer is not None and state.reviewer.id != pick
    assert not any(t.kind == "answer not taken" for t in state.timeline)
