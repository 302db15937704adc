"""Fault injection by route and rate: 429 with Retry-After, 5xx, delays, lost answers.

Rules are matched in order; the first rule whose method and path match and whose rate says
"now" applies. Rates are deterministic (every k-th matching request), so tests are repeatable.
Each vendor registers how its faults look on the wire, so a 429 from the Slack emulator reads
like Slack's and one from Karbon like Karbon's.

A rule's ``phase`` says where the fault strikes. ``before`` (the default): the request never
reaches the emulator, as when a rate limiter or a failing front end turns it away. ``after``:
the emulator handles the request - the mail is queued, the record stored - and then the client
gets the fault instead of the answer, or the answer only after ``delay_ms``: the acknowledgement
is lost, which is what makes a retry dangerous for a vendor call without an idempotency key.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator


class FaultRule(BaseModel):
    route: str = Field(description="Path prefix, or a regular expression when it starts with '^'.")
    method: str | None = None
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: int | None = Field(default=None, ge=0)
    delay_ms: int = Field(default=0, ge=0, le=120_000)
    rate: float = Field(default=1.0, gt=0, le=1)
    count: int | None = Field(default=None, ge=1)
    """Apply to at most this many requests, then the rule retires."""
    phase: Literal["before", "after"] = "before"
    """``after``: let the emulator handle the request, then lose or delay its answer."""

    @field_validator("route")
    @classmethod
    def _valid_route(cls, value: str) -> str:
        if value.startswith("^"):
            re.compile(value)
        elif not value.startswith("/"):
            raise ValueError(
                "route must be a path prefix starting with '/' or a regex starting with '^'"
            )
        return value

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.route.startswith("^"):
            return re.match(self.route, path) is not None
        return path.startswith(self.route)


class FaultRules(BaseModel):
    rules: list[FaultRule]


@dataclass
class _ActiveRule:
    rule: FaultRule
    seen: int = 0
    applied: int = 0


@dataclass
class Fault:
    status: int | None
    retry_after: int | None
    delay_ms: int
    label: str
    after: bool = False
    """Strike after the emulator handled the request (the answer is lost or late)."""


Renderer = Callable[[int, int | None], tuple[Any, str]]
"""(status, retry_after) -> (body, media type) in the vendor's own error shape."""


@dataclass
class FaultInjector:
    _rules: list[_ActiveRule] = field(default_factory=list)
    _renderers: list[tuple[str, Renderer]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_rules(self, rules: list[FaultRule], *, append: bool = False) -> None:
        with self._lock:
            active = [_ActiveRule(r) for r in rules]
            self._rules = [*self._rules, *active] if append else active

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {**a.rule.model_dump(), "seen": a.seen, "applied": a.applied} for a in self._rules
            ]

    def pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for active in self._rules:
                rule = active.rule
                if rule.count is not None and active.applied >= rule.count:
                    continue
                if not rule.matches(method, path):
                    continue
                active.seen += 1
                # Deterministic rate: apply whenever floor(seen * rate) steps up.
                if int(active.seen * rule.rate) == int((active.seen - 1) * rule.rate):
                    continue
                active.applied += 1
                after = rule.phase == "after"
                label = f"{rule.status or 'delay'}{'-after' if after else ''}@{rule.route}"
                return Fault(rule.status, rule.retry_after, rule.delay_ms, label, after)
        return None

    def register_renderer(self, prefix: str, renderer: Renderer) -> None:
        self._renderers.append((prefix, renderer))

    def render(self, path: str, status: int, retry_after: int | None) -> tuple[bytes, str]:
        for prefix, renderer in self._renderers:
            if path.startswith(prefix):
                body, media_type = renderer(status, retry_after)
                break
        else:
            body, media_type = {"error": f"injected fault {status}"}, "application/json"
        if isinstance(body, bytes):
            return body, media_type
        if isinstance(body, str):
            return body.encode(), media_type
        return json.dumps(body).encode(), media_type


FaultKind = Literal["status", "delay"]
