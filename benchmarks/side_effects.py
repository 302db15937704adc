"""What a firm sees happen: each engagement's side effects, read back from the sandbox's log.

``GET /_sandbox/requests?since=N`` is polled; every successful request that is a side effect is
attributed to its engagement (the workflow id travels in each vendor call: Slack message
metadata, the calendar event's private properties, SendGrid ``custom_args``, the CRM record, the
Karbon work item's key) and stamped with the time it was first seen. The CRM record says how the
engagement ended (assigned, with or without a reviewer, or waiting for a partner), and from that
the set of side effects it must have: one PM write-back (Karbon), one DM per role, one calendar
block per role, one client email and one CRM record; or the partner's DM and the CRM record.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

ASSIGNMENT_EVENT = "engagement_assignment"
PARTNER_EVENT = "engagement_partner_review"
_CALENDAR = re.compile(r"^/google/calendar/v3/calendars/[^/]+/events$")
_KARBON_ITEM = re.compile(r"^/karbon/v3/WorkItems/([^/]+)$")

Key = tuple[str, ...]


@dataclass
class Ending:
    """How the CRM record says the engagement ended."""

    status: str
    """``assigned`` or ``needs_partner_review``."""
    preparer: str | None
    reviewer: str | None


def classify(record: dict[str, Any]) -> tuple[str, Key, Any] | None:
    """(workflow id, which side effect, the parsed body) for a side effect; None otherwise."""
    method, path = record["method"], record["path"]
    if method not in ("POST", "PUT") or not record["body"]:
        return None
    match = _KARBON_ITEM.match(path)
    if method == "PUT" and match:
        return f"engagement-karbon-{match[1]}", ("pm",), None
    if method != "POST":
        return None
    try:
        body = json.loads(record["body"])
    except ValueError:
        return None
    if path.endswith("/slack/api/chat.postMessage"):
        meta = body.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if "workflow_id" not in payload:
            return None
        key: Key = ("chat", str(meta["event_type"]), str(payload.get("role")))
        return str(payload["workflow_id"]), key, body
    if _CALENDAR.match(path):
        private = (body.get("extendedProperties") or {}).get("private") or {}
        if "dispatch_workflow_id" not in private:
            return None
        return private["dispatch_workflow_id"], ("calendar", body.get("id")), body
    if path.endswith("/sendgrid/v3/mail/send"):
        args = (body.get("personalizations") or [{}])[0].get("custom_args") or {}
        if "dispatch_id" not in args:
            return None
        return args["dispatch_id"], ("email",), body
    if path.endswith("/crm/records"):
        return body["engagement"]["workflow_id"], ("crm", body["event"]), body
    return None


@dataclass
class SideEffects:
    """Everything the sandbox recorded for the engagements we follow, as it arrives."""

    base: str
    pm_write_back: bool
    """Karbon firms: the assignee is written back to the work item."""
    follow: set[str] = field(default_factory=set)
    seen: dict[str, dict[Key, float]] = field(default_factory=dict)
    """workflow id -> side effect -> first time (monotonic) it was seen."""
    counts: Counter[tuple[str, Key]] = field(default_factory=Counter)
    endings: dict[str, Ending] = field(default_factory=dict)
    failed_calls: Counter[str] = field(default_factory=Counter)
    """Non-2xx answers to our calls, by route and status (retried or not)."""
    repeats: Counter[str] = field(default_factory=Counter)
    """Calls the vendor recognised by their idempotency key and stored nothing for (the CRM
    answers a repeated key ``200`` with the first record's id): a retry, not a duplicate."""
    since: int = 0

    async def start(self, http: httpx.AsyncClient) -> None:
        """Ignore what happened before now."""
        found = (await http.get(f"{self.base}/_sandbox/requests", params={"since": 0})).json()
        self.since = max((int(r["seq"]) for r in found["requests"]), default=0)

    async def poll(self, http: httpx.AsyncClient) -> int:
        response = await http.get(f"{self.base}/_sandbox/requests", params={"since": self.since})
        now = time.monotonic()
        records: list[dict[str, Any]] = response.json()["requests"]
        for record in records:
            self.since = max(self.since, int(record["seq"]))
            self._note(record, now)
        return len(records)

    def _note(self, record: dict[str, Any], now: float) -> None:
        found = classify(record)
        if found is None:
            return
        workflow_id, key, body = found
        if workflow_id not in self.follow:
            return
        if not 200 <= int(record["status"]) < 300:
            self.failed_calls[f"{key[0]} {record['status']}"] += 1
            return
        if key[0] == "crm" and int(record["status"]) == 200:
            self.repeats[key[0]] += 1
            return
        self.counts[(workflow_id, key)] += 1
        self.seen.setdefault(workflow_id, {}).setdefault(key, now)
        if key[0] == "crm" and body is not None:
            self.endings[workflow_id] = Ending(
                status=body["event"],
                preparer=(body.get("preparer") or {}).get("id"),
                reviewer=(body.get("reviewer") or {}).get("id"),
            )

    def expected(self, workflow_id: str) -> list[Key] | None:
        """The side effects this engagement must have, once its CRM record says how it ended."""
        ending = self.endings.get(workflow_id)
        if ending is None:
            return None
        if ending.status == "needs_partner_review":
            return [("chat", PARTNER_EVENT, "partner"), ("crm", "needs_partner_review")]
        roles = ["preparer", *(["reviewer"] if ending.reviewer else [])]
        keys: list[Key] = [("chat", ASSIGNMENT_EVENT, role) for role in roles]
        keys += [("email",), ("crm", "assigned")]
        if self.pm_write_back:
            keys.append(("pm",))
        return keys

    def done_at(self, workflow_id: str) -> float | None:
        """When the last of its side effects was seen; None while any is missing."""
        expected = self.expected(workflow_id)
        if expected is None:
            return None
        seen = self.seen.get(workflow_id, {})
        if any(key not in seen for key in expected):
            return None
        blocks = [t for key, t in seen.items() if key[0] == "calendar"]
        ending = self.endings[workflow_id]
        if ending.status == "assigned" and len(blocks) < (2 if ending.reviewer else 1):
            return None
        return max([seen[key] for key in expected] + blocks)

    def duplicates(self) -> list[tuple[str, Key, int]]:
        """Side effects that succeeded more than once (a calendar block counts by event id)."""
        return [(wf, key, n) for (wf, key), n in self.counts.items() if n > 1]
