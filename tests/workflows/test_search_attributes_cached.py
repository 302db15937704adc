"""Search attributes on a server that caches them, as the stack's dev server now does.

``dispatch up`` starts the dev server with its search-attribute cache on (``DYNAMIC_CONFIG``):
an attribute added at run time is refused for a moment ("no mapping defined"). An upgrade that
brings a new attribute to an existing data folder registers it through
``ensure_search_attributes``, which must not return before the server uses it; otherwise the
first webhooks after the upgrade would be refused.
"""

from __future__ import annotations

import uuid

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from app.stack import DYNAMIC_CONFIG_FLAGS
from app.temporal import data_converter, ensure_search_attributes
from dispatch import search_attributes as sa
from tests.conftest import temporal_cli


async def test_attributes_added_to_a_caching_server_are_usable_when_registration_returns() -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=data_converter(),
        search_attributes=(),  # an existing data folder from before the attributes existed
        ui=False,
        dev_server_extra_args=list(DYNAMIC_CONFIG_FLAGS),
        dev_server_log_level="error",
    )
    try:
        client = env.client
        added = await ensure_search_attributes(client)
        assert set(added) == {key.name for key in sa.ALL_KEYS}

        # At once, as the webhook server would: a start that sets our attributes is accepted.
        handle = await client.start_workflow(
            "EngagementWorkflow",
            id=f"cached-{uuid.uuid4().hex}",
            task_queue=f"nobody-{uuid.uuid4().hex}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.CLIENT_ID, "cl-1"),
                    SearchAttributePair(sa.SERVICE_TYPE, "1040"),
                ]
            ),
        )
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        await handle.terminate("test over")
        assert await ensure_search_attributes(client) == []
    finally:
        await env.shutdown()
