"""An engagement writes back only to the PM record it came from.

External ids are unique within their source only. Before, a signed relay event with
``source: canopy`` whose external id equalled a Karbon work item key made the Karbon
connector reassign that Karbon item, while the real Karbon engagement still named its own
person — both booked.
"""

from __future__ import annotations

from temporalio.client import Client

from dispatch.models import DispatchStatus
from tests.harness import running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.test_webhook_server import (
    http_for,
    karbon_client,
    marlow_work_item,
    post_signed,
    relay_event,
)


async def test_a_canopy_event_with_a_karbon_key_leaves_the_karbon_item_alone(
    client: Client, sandbox: RunningSandbox
) -> None:
    sandbox.reset()
    config = sandbox.config
    karbon = karbon_client(sandbox)
    try:
        key = await marlow_work_item(config)
        event = relay_event(key, workdays_ahead(config, 8))
        event["source"] = "canopy"
        async with running_worker(client, config) as worker, http_for(worker) as http:
            response = await post_signed(http, event)
            assert response.status_code == 202, response.text
            state = await worker.wait_state(
                response.json()["workflow_id"],
                lambda s: (
                    s.status is DispatchStatus.ASSIGNED
                    and any(e.kind == "pm_write_back" for e in s.side_effects)
                    and all(e.state != "pending" for e in s.side_effects)
                ),
            )
        [write_back] = [e for e in state.side_effects if e.kind == "pm_write_back"]
        assert write_back.state == "skipped", write_back
        assert "canopy" in write_back.detail and "Karbon" in write_back.detail
        untouched = await karbon.get_work_item(key)
        assert untouched is not None
        assert untouched["AssigneeEmailAddress"] == "ava@harborfinch.example"
        writes = [
            r
            for r in sandbox.requests(prefix=f"/karbon/v3/WorkItems/{key}")
            if r["method"] in ("PUT", "PATCH")
        ]
        assert writes == []
    finally:
        await karbon.aclose()
