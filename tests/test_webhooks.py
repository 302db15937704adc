"""Webhook payload validation: every bad field is named, with the reason (no Temporal here)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest

from activities.signing import dispatch_signature_header, hmac_sha256_hex, verify_hex_signature
from dispatch.webhooks import PayloadError, details_from, parse_engagement_event, parse_karbon
from tests.factories import demo_config

TODAY = date(2026, 11, 30)


def event(**engagement: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "engagement.created",
        "event_id": "evt-1",
        "source": "taxdome",
        "engagement": {
            "external_id": "T-1",
            "title": "1040",
            "client": {"id": "cl-1", "name": "Client One", "email": "one@client.example"},
            "service_type": "individual_tax",
            "due_date": (TODAY + timedelta(days=10)).isoformat(),
        },
    }
    body["engagement"].update(engagement)
    return body


def fields_of(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PayloadError) as caught:
        parse_engagement_event(json.dumps(body).encode(), demo_config(), TODAY)
    return {e.field: e.reason for e in caught.value.errors}


def test_valid_event_becomes_details_with_service_defaults() -> None:
    parsed = parse_engagement_event(json.dumps(event()).encode(), demo_config(), TODAY)
    details = details_from(parsed, demo_config())
    assert details.estimated_hours == 4  # the service type's default estimate
    assert details.documents_needed[0] == "W-2 and 1099 forms"
    assert details.source == "taxdome" and details.client_email == "one@client.example"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"service_type": "crypto"}, "engagement.service_type", "unknown service type 'crypto'"),
        ({"estimated_hours": -3}, "engagement.estimated_hours", "greater than 0"),
        ({"due_date": "2026-11-01"}, "engagement.due_date", "in the past"),
        ({"due_date": "2026-02-30"}, "engagement.due_date", "date"),
        ({"start_date": "2027-01-30"}, "engagement.start_date", "after the due date"),
        ({"external_id": "has space"}, "engagement.external_id", "letters, digits"),
        (
            {"client": {"id": "c", "name": "N", "email": "not-an-email"}},
            "engagement.client.email",
            "pattern",
        ),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str, reason: str) -> None:
    problems = fields_of(event(**change))
    assert field in problems, problems
    assert reason in problems[field]


def test_missing_and_unknown_top_level_fields() -> None:
    body = event()
    del body["engagement"]["title"]
    body["surprise"] = 1
    problems = fields_of(body)
    assert "engagement.title" in problems and "surprise" in problems


def test_malformed_json_is_a_payload_error() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_engagement_event(b"{not json", demo_config(), TODAY)
    assert caught.value.errors[0].reason


def test_karbon_notification_needs_its_key() -> None:
    note = parse_karbon(
        b'{"ResourcePermaKey":"4kT9","ResourceType":"Work",'
        b'"ActionType":"Inserted","TimeStamp":"2026-11-30T10:00:00Z"}'
    )
    assert note.event_key == "karbon:Work:4kT9:Inserted:2026-11-30T10:00:00+00:00"
    with pytest.raises(PayloadError) as caught:
        parse_karbon(b'{"ResourceType":"Work","ActionType":"Inserted"}')
    assert caught.value.errors[0].field == "ResourcePermaKey"


def test_signatures() -> None:
    body = b'{"a":1}'
    good = hmac_sha256_hex("k" * 20, body)
    assert verify_hex_signature("k" * 20, body, good)
    assert verify_hex_signature("k" * 20, body, good.upper())
    assert not verify_hex_signature("k" * 20, body + b" ", good)
    assert not verify_hex_signature("other-key-0000000000", body, good)
    assert not verify_hex_signature("k" * 20, body, "")
    assert dispatch_signature_header("k" * 20, body) == f"sha256={good}"
