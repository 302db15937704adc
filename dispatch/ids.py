"""Deterministic ids: the same engagement always maps to the same workflow and side-effect keys."""

from __future__ import annotations

import re

from dispatch import DISPATCHER_ID_PREFIX, ENGAGEMENT_ID_PREFIX

_SOURCE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class InvalidIdError(ValueError):
    pass


def engagement_workflow_id(source: str, external_id: str) -> str:
    """``engagement-{source}-{external_id}``; raises InvalidIdError naming the bad part."""
    if not _SOURCE.match(source):
        raise InvalidIdError(
            "source must be lowercase letters, digits or '_' (max 31 chars), starting with a letter"
        )
    if not _EXTERNAL_ID.match(external_id):
        raise InvalidIdError(
            "external_id must be 1-128 chars of letters, digits, '_', '.', ':' or '-'"
        )
    return f"{ENGAGEMENT_ID_PREFIX}-{source}-{external_id}"


def dispatcher_workflow_id(firm_id: str) -> str:
    return f"{DISPATCHER_ID_PREFIX}-{firm_id}"


def request_id(workflow_id: str, seq: int) -> str:
    return f"{workflow_id}:req-{seq}"


def calendar_event_key(workflow_id: str, role: str, seq: int) -> str:
    """One calendar block per engagement, role and assignment round (a reassignment is new)."""
    return f"{workflow_id}:{role}:{seq}"


def side_effect_key(workflow_id: str, name: str, seq: int) -> str:
    return f"{workflow_id}:{name}:{seq}"
