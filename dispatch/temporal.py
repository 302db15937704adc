"""Connecting to Temporal: one place, always with the pydantic data converter."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

DEFAULT_ADDRESS = "localhost:7233"


async def connect(target_host: str | None = None, namespace: str | None = None) -> Client:
    """Connect using ``TEMPORAL_ADDRESS`` / ``TEMPORAL_NAMESPACE`` (or a TOML profile).

    Explicit arguments win over the environment; the default is a local dev server.
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if target_host:
        config["target_host"] = target_host
    if namespace:
        config["namespace"] = namespace
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config["data_converter"] = pydantic_data_converter
    return await Client.connect(**config)


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register our search attributes on a server that lacks them; returns the names added."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    from dispatch.search_attributes import ALL_KEYS

    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type)
        for key in ALL_KEYS
        if key.name not in listed.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)
