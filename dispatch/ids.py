"""Deterministic ids: the same engagement always maps to the same workflow and side-effect keys."""

from __future__ import annotations

import re

from dispatch import DISPATCHER_ID_PREFIX, ENGAGEMENT_ID_PREFIX
from dispatch.limits import EXTERNAL_ID_PATTERN, SOURCE_PATTERN

# The webhook models use the same patterns, so a payload the model accepts always makes a
# valid workflow id (a disagreement used to surface as a 500).
_SOURCE = re.compile(SOURCE_PATTERN)
_EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)
_ENGAGEMENT_ID = re.compile(
    rf"^{ENGAGEMENT_ID_PREFIX}-{SOURCE_PATTERN[1:-1]}-{EXTERNAL_ID_PATTERN[1:-1]}$"
)


class InvalidIdError(ValueError):
    pass


def engagement_workflow_id(source: str, external_id: str) -> str:
    """``engagement-{source}-{external_id}``; raises InvalidIdError naming the bad part."""
    if not _SOURCE.fullmatch(source):
        raise InvalidIdError(
            "source must be lowercase letters, digits or '_' (max 31 chars), starting with a letter"
        )
    if not _EXTERNAL_ID.fullmatch(external_id):
        raise InvalidIdError(
            "external_id must be 1-128 chars of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return f"{ENGAGEMENT_ID_PREFIX}-{source}-{external_id}"


def is_engagement_workflow_id(value: str) -> bool:
    """Whether ``value`` could be an engagement's workflow id (a button's or link's target)."""
    return _ENGAGEMENT_ID.fullmatch(value) is not None


def dispatcher_workflow_id(firm_id: str) -> str:
    return f"{DISPATCHER_ID_PREFIX}-{firm_id}"


def request_id(workflow_id: str, seq: int) -> str:
    return f"{workflow_id}:req-{seq}"


def calendar_event_key(workflow_id: str, role: str, seq: int) -> str:
    """One calendar block per engagement, role and assignment round (a reassignment is new)."""
    return f"{workflow_id}:{role}:{seq}"


def side_effect_key(workflow_id: str, name: str, seq: int) -> str:
    return f"{workflow_id}:{name}:{seq}"


def foreign_source(system: str, own_source: str, source: str) -> str | None:
    """Why a PM connector must not touch an engagement from ``source``, or None.

    External ids are only unique within their source: a relay's ``T-1001`` may also be a
    Karbon work item key. A connector reads and writes only records of its own source.
    """
    if source == own_source:
        return None
    return (
        f"not written to {system}: this engagement came from {source!r}, and {system} only "
        f"holds {own_source!r} records (update the {source} record by hand)"
    )
