"""The search attributes that answer the partner's questions (Web UI, ``temporal workflow list``).

Registered by ``dispatch up`` (dev server flags), by the tests and by the compose stack.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

DISPATCH_STATUS = SearchAttributeKey.for_keyword("DispatchStatus")
PREPARER = SearchAttributeKey.for_keyword("Preparer")
REVIEWER = SearchAttributeKey.for_keyword("Reviewer")
CLIENT_ID = SearchAttributeKey.for_keyword("ClientId")
SERVICE_TYPE = SearchAttributeKey.for_keyword("ServiceType")
DUE_DATE = SearchAttributeKey.for_datetime("DueDate")

ALL_KEYS: list[SearchAttributeKey[Any]] = [
    DISPATCH_STATUS,
    PREPARER,
    REVIEWER,
    CLIENT_ID,
    SERVICE_TYPE,
    DUE_DATE,
]


def dev_server_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags
