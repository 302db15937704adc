"""Inbound webhook payloads and their validation (pure: no Temporal, no I/O).

Two shapes arrive:

* Karbon's thin notification (``ResourcePermaKey``, ``ResourceType``, ``ActionType``,
  ``TimeStamp``), signed with hex HMAC-SHA256 of the raw body in the ``Signature`` header.
* Our own full engagement schema, for relays from TaxDome, Canopy, Zapier or anything else,
  signed ``X-Dispatch-Signature: sha256=<hex>``.

Validation errors name the field and the reason, and nothing is started when any field is bad.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dispatch import limits
from dispatch.config import FirmConfig
from dispatch.ids import InvalidIdError, engagement_workflow_id
from dispatch.models import EngagementDetails, WorkState


class FieldError(BaseModel):
    field: str
    reason: str


class PayloadError(Exception):
    """The payload is unusable; ``errors`` says which field and why (for a 422 body)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))
        self.errors = errors


MAX_ERRORS = 20
"""A 422 names at most this many fields: enough to fix a payload, bounded whatever it holds."""
MAX_FIELD_NAME = 100
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def field_name(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """A field's dotted path, safe to show and log: unknown keys are the sender's text, so
    they are shortened and anything but printable ASCII is replaced."""
    path = ".".join(str(p) for p in loc) or "(body)"
    path = _UNPRINTABLE.sub("?", prefix + path)
    return path if len(path) <= MAX_FIELD_NAME else path[: MAX_FIELD_NAME - 1] + "…"


def _errors_from(err: ValidationError, prefix: str = "") -> list[FieldError]:
    return [
        FieldError(
            field=field_name(e["loc"], prefix), reason=e["msg"].removeprefix("Value error, ")
        )
        for e in err.errors()[:MAX_ERRORS]
    ]


# --- Karbon ----------------------------------------------------------------------------------


class KarbonNotification(BaseModel):
    """Karbon's webhook body. Unknown ActionTypes are accepted and ignored, per Karbon's advice."""

    model_config = ConfigDict(extra="allow")

    ResourcePermaKey: limits.ExternalId
    ResourceType: limits.KarbonWord
    ActionType: limits.KarbonWord
    TimeStamp: datetime | None = None

    @property
    def event_key(self) -> str:
        """No delivery id exists, so (type, key, action, timestamp) identifies an event [A]."""
        stamp = self.TimeStamp.isoformat() if self.TimeStamp else "-"
        return f"karbon:{self.ResourceType}:{self.ResourcePermaKey}:{self.ActionType}:{stamp}"


def parse_karbon(body: bytes) -> KarbonNotification:
    try:
        return KarbonNotification.model_validate_json(body)
    except ValidationError as err:
        raise PayloadError(_errors_from(err)) from None


# --- our full schema -------------------------------------------------------------------------


class ClientInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: limits.ClientId
    name: limits.Name
    email: limits.Email | None = None
    contact_name: limits.Name | None = None


class EngagementPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: limits.ExternalId
    title: limits.Title
    client: ClientInfo
    service_type: limits.ServiceTypeId
    due_date: limits.Day
    """Not in the past (firm's time zone), at most ``MAX_YEARS_AHEAD`` years ahead."""
    start_date: limits.Day | None = None
    """Not before 1990, not after the due date."""
    estimated_hours: limits.Hours | None = None
    """Omitted: the service type's default estimate."""
    required_skills: limits.Skills = Field(default_factory=list)
    specializations: limits.Skills = Field(default_factory=list)
    documents_needed: limits.Documents | None = None
    """Omitted: the service type's default list."""
    scope_summary: limits.Scope = ""
    url: limits.Url | None = None
    status: limits.Status | None = None


class EngagementEvent(BaseModel):
    """``POST /webhooks/engagements``: one engagement event from any relay."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event": "engagement.created",
                    "event_id": "evt_01J8Z3",
                    "source": "taxdome",
                    "engagement": {
                        "external_id": "T-1001",
                        "title": "2026 Form 1040 - Eze household",
                        "client": {
                            "id": "cl-okafor-family",
                            "name": "Chidi & Ngozi Eze",
                            "email": "eze.household@mail.example",
                        },
                        "service_type": "individual_tax",
                        "due_date": "2027-04-15",
                        "estimated_hours": 5,
                    },
                }
            ]
        },
    )

    event: Literal[
        "engagement.created", "engagement.updated", "engagement.cancelled", "engagement.completed"
    ]
    event_id: limits.EventId
    source: limits.Source
    engagement: EngagementPayload

    @field_validator("source")
    @classmethod
    def _not_karbon(cls, value: str) -> str:
        if value == "karbon":
            raise ValueError("Karbon sends to /webhooks/karbon; relays use their own source name")
        return value


def parse_engagement_event(body: bytes, config: FirmConfig, today: date) -> EngagementEvent:
    """Parse and check against the firm: known service type, due date in the window, sane ids.

    Field limits (``dispatch.limits``) are checked by the models; the date window needs the
    firm's today and is checked here."""
    try:
        event = EngagementEvent.model_validate_json(body)
    except ValidationError as err:
        raise PayloadError(_errors_from(err)) from None
    problems: list[FieldError] = []
    eng = event.engagement
    if config.service_type(eng.service_type) is None:
        known = ", ".join(t.id for t in config.service_types)
        problems.append(
            FieldError(
                field="engagement.service_type",
                reason=f"unknown service type {eng.service_type!r} (known: {known})",
            )
        )
    live = event.event in ("engagement.created", "engagement.updated")
    due_problem = limits.due_date_problem(eng.due_date, today, may_be_past=not live)
    if due_problem:
        problems.append(FieldError(field="engagement.due_date", reason=due_problem))
    if eng.start_date is not None:
        start_problem = limits.start_date_problem(eng.start_date, eng.due_date)
        if start_problem:
            problems.append(FieldError(field="engagement.start_date", reason=start_problem))
    try:
        engagement_workflow_id(event.source, eng.external_id)
    except InvalidIdError as err:  # pragma: no cover - the model's patterns are the same
        problems.append(FieldError(field="engagement.external_id", reason=str(err)))
    if problems:
        raise PayloadError(problems)
    return event


RELAY_STATES: dict[str, WorkState] = {
    "started": "in_progress",
    "in_progress": "in_progress",
    "ready_for_review": "ready_for_review",
    "in_review": "in_review",
    "completed": "completed",
    "cancelled": "cancelled",
}
"""The ``status`` values a relay may send (anything else is kept but means "not started")."""


def details_from(event: EngagementEvent, config: FirmConfig) -> EngagementDetails:
    eng = event.engagement
    service = config.service_type(eng.service_type)
    assert service is not None  # checked in parse_engagement_event
    return EngagementDetails(
        source=event.source,
        external_id=eng.external_id,
        title=eng.title,
        client_id=eng.client.id,
        client_name=eng.client.name,
        client_email=eng.client.email,
        client_contact_name=eng.client.contact_name,
        service_type=service.id,
        due_date=eng.due_date,
        start_date=eng.start_date,
        estimated_hours=eng.estimated_hours or service.default_estimated_hours,
        required_skills=eng.required_skills,
        specializations=eng.specializations,
        documents_needed=(
            eng.documents_needed if eng.documents_needed is not None else service.documents_needed
        ),
        scope_summary=eng.scope_summary or service.name,
        pm_url=eng.url,
        pm_status=eng.status,
        work_state=RELAY_STATES.get(eng.status or ""),
    )


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")
