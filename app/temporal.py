"""Connecting to Temporal: one place, always with the pydantic data converter and, when keys
are configured, the payload codec that encrypts client data (``dispatch.codec``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError, RPCStatusCode

from app.telemetry import client_interceptors, metrics_runtime
from dispatch.codec import KEYS_ENV, EncryptionCodec, KeyRing

DEFAULT_ADDRESS = "localhost:7233"
PLAINTEXT_ENV = "DISPATCH_PLAINTEXT_HISTORY"


class EncryptionNotConfigured(RuntimeError):
    pass


def data_converter(ring: KeyRing | None = None) -> DataConverter:
    """Pydantic payloads, encrypted with ``ring`` (default: ``DISPATCH_ENCRYPTION_KEYS``).

    The same converter for every client, worker, test environment and replayer: payloads
    written without encryption (older histories) still read, as the codec passes them through.
    """
    ring = ring or KeyRing.from_env()
    if ring is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(ring))


def require_encryption() -> None:
    """Processes that write client data refuse to run without keys unless told so explicitly."""
    if KeyRing.from_env() is None and os.environ.get(PLAINTEXT_ENV) != "1":
        raise EncryptionNotConfigured(
            f"{KEYS_ENV} is not set: client data would be stored in clear in Temporal. Set it "
            f'(README "Encryption"; `dispatch up` creates one under .data/), or set '
            f"{PLAINTEXT_ENV}=1 to run without encryption"
        )


async def connect(
    target_host: str | None = None, namespace: str | None = None, *, metrics: bool = False
) -> Client:
    """Connect using ``TEMPORAL_ADDRESS`` / ``TEMPORAL_NAMESPACE`` (or a TOML profile).

    Explicit arguments win over the environment; the default is a local dev server.
    ``metrics``: serve this process's SDK and workflow metrics for Prometheus (the worker).
    Traces follow the process's tracing setting (``app.telemetry``).
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if target_host:
        config["target_host"] = target_host
    if namespace:
        config["namespace"] = namespace
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config["data_converter"] = data_converter()
    config["interceptors"] = client_interceptors()
    runtime = metrics_runtime() if metrics else None
    if runtime is not None:
        config["runtime"] = runtime
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
        await _until_usable(client, sorted(missing))
    return sorted(missing)


SEARCH_ATTRIBUTES_USABLE_WITHIN = 60.0
"""A server that caches its search-attribute table (production servers, and our dev server)
uses an added attribute only after its next refresh, about 2 s on the dev server."""


async def _until_usable(client: Client, names: list[str]) -> None:
    """Return once the server accepts ``names``: a workflow started or upserting one before
    then is refused ("no mapping defined for search attribute")."""
    query = " OR ".join(f"{name} IS NOT NULL" for name in names)
    deadline = time.monotonic() + SEARCH_ATTRIBUTES_USABLE_WITHIN
    while True:
        try:
            await client.count_workflows(query)
            return
        except RPCError as err:
            if err.status != RPCStatusCode.INVALID_ARGUMENT:
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"search attributes {', '.join(names)} were added but the server at "
                    f"{client.service_client.config.target_host} still refuses them: {err}"
                ) from err
        await asyncio.sleep(0.5)
