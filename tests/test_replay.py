"""Determinism guard: every recorded history must replay against today's code.

Histories live per protocol version (tests/histories/v1, v2, ...). A failure here
(``[TMPRL1100] Nondeterminism error``) means a change to the workflows would break engagements
or a dispatcher already running: put the new behaviour behind ``workflow.patched`` instead
(README "Upgrading during tax season"), then record the next version's folder with
``python -m tests.histories.record``. Never re-record a committed folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from app.temporal import data_converter
from tests.harness import memo_fields_written, patches_in
from tests.interceptors import RECORDED_WITH
from worker import WORKFLOWS
from workflows.dispatcher import NOTICE_BESIDE_PATCH, PROBE_PATCH
from workflows.engagement.base import (
    ANSWER_IN_FLIGHT_PATCH,
    ENGAGEMENT_PATCHES,
    ENGAGEMENT_PATCHES_2,
    PATCHES_IN_ONE,
    PATCHES_IN_TWO,
    PM_LOAD_LOCAL_PATCH,
)

FOLDER = Path(__file__).parent / "histories"


def _histories() -> list[tuple[str, str, Path]]:
    found = []
    for index in sorted(FOLDER.glob("*/workflow_ids.json")):
        ids: dict[str, str] = json.loads(index.read_text())
        for name, workflow_id in sorted(ids.items()):
            found.append(
                (f"{index.parent.name}/{name}", workflow_id, index.parent / f"{name}.json")
            )
    return found


HISTORIES = _histories()
TEXTS = {name: path.read_text(encoding="utf-8") for name, _, path in HISTORIES}


def test_histories_of_both_protocols_and_of_the_dispatcher_are_committed() -> None:
    names = {name for name, _, _ in HISTORIES}
    assert {
        "v1/accepted_and_completed",
        "v1/reassigned_to_partner_review",
        "v1/past_due",
        "v1/due_date_moved",
    } <= names
    assert {
        "v2/accepted_and_completed",
        "v2/reassigned_to_partner_review",
        "v2/partner_pick_does_not_fit",
        "v2/cancelled_in_temporal",
        "v2/engagement_after_continue",
        "v2/dispatcher_rebuilt",
        "v2/dispatcher_outage",
        "v2/dispatcher_after_continue",
    } <= names
    # After the season's levers and the busy continue-as-new: every new patch in a history.
    assert {
        "v3/accepted_and_completed",
        "v3/dispatcher_open_hours",
        "v3/dispatcher_partner_review",
        "v3/dispatcher_before_continue",
        "v3/dispatcher_rebuilt",
    } <= names
    # After the partner's due-date move: the move_due Update in a history, both sides.
    assert {
        "v4/partner_moved_due_date",
        "v4/partner_moved_due_date_twice",
        "v4/dispatcher_partner_moved_due_date",
        "v4/accepted_and_completed",
        "v4/past_due",
    } <= names
    # An answer arriving with its request's send: refused before the patch, taken after.
    assert {
        "v4/answer_in_flight",
        "v5/answer_in_flight",
        "v5/accepted_and_completed",
        "v5/partner_moved_due_date",
        "v5/dispatcher_partner_review",
        "v5/past_due",
    } <= names
    # A Karbon engagement (read from Karbon, the write-back's echo read again): before and after
    # the read became a local activity.
    assert {"v5/karbon_loaded", "v6/karbon_loaded", "v6/accepted_and_completed"} <= names
    # Each patch its own marker (v6), then one marker for all of them (v7).
    assert {"v7/karbon_loaded", "v7/accepted_and_completed", "v7/answer_in_flight"} <= names
    # Search attributes and memo upserted only where they change (v8).
    assert {"v8/karbon_loaded", "v8/accepted_and_completed", "v8/partner_moved_due_date"} <= names
    # The partner's outage notice sent beside the decisions (v9, the dispatcher's only).
    assert {"v9/dispatcher_outage", "v9/dispatcher_outage_chat_down"} <= names
    # The tracker read again during an outage with no work waiting (v10, the dispatcher's only).
    assert {"v10/dispatcher_outage", "v10/dispatcher_outage_healed_idle"} <= names


@pytest.mark.parametrize(
    ("scenario", "patch", "before", "after"),
    [
        ("answer_in_flight", ANSWER_IN_FLIGHT_PATCH, "v4", "v5"),
        ("karbon_loaded", PM_LOAD_LOCAL_PATCH, "v5", "v6"),
        ("karbon_loaded", ENGAGEMENT_PATCHES, "v6", "v7"),
        ("answer_in_flight", ENGAGEMENT_PATCHES, "v6", "v7"),
        ("karbon_loaded", ENGAGEMENT_PATCHES_2, "v7", "v8"),
        ("accepted_and_completed", ENGAGEMENT_PATCHES_2, "v7", "v8"),
        ("dispatcher_outage", NOTICE_BESIDE_PATCH, "v8", "v9"),
        ("dispatcher_outage", PROBE_PATCH, "v9", "v10"),
    ],
)
def test_a_patch_has_a_history_from_before_it_and_one_that_took_it(
    scenario: str, patch: str, before: str, after: str
) -> None:
    """The history from before was recorded on the code without the patch (the old path), the
    one after took the new path: replaying both proves running workflows keep the path they
    took (v4's answer refused, v5's taken; v5's Karbon reads as activities, v6's local)."""
    ids = {name: workflow_id for name, workflow_id, _ in HISTORIES}

    def recorded(version: str) -> set[str]:
        name = f"{version}/{scenario}"
        return patches_in(WorkflowHistory.from_json(ids[name], TEXTS[name]))

    assert patch not in recorded(before)
    assert patch in recorded(after)
    if patch == ENGAGEMENT_PATCHES:
        # The one marker replaces the others: none of them is recorded beside it.
        assert recorded(before) & PATCHES_IN_ONE
        assert not recorded(after) & PATCHES_IN_ONE
    if patch == ENGAGEMENT_PATCHES_2:
        # The newer one marker alone: neither the older one nor any patch it names beside it.
        assert recorded(after) == {ENGAGEMENT_PATCHES_2}
        assert not recorded(before) & PATCHES_IN_TWO


def test_before_index_changes_only_every_upsert_wrote_every_field_and_after_only_changes() -> None:
    """The same Karbon story, recorded before and after ``index-changes-only``: before, every
    upsert (the echo's read included) wrote the whole memo again; after, only what changed."""
    ids = {name: workflow_id for name, workflow_id, _ in HISTORIES}

    def history(version: str) -> WorkflowHistory:
        name = f"{version}/karbon_loaded"
        return WorkflowHistory.from_json(ids[name], TEXTS[name])

    before, after = memo_fields_written(history("v7")), memo_fields_written(history("v8"))
    assert before["client_id"] == before["service_type"] == 3  # loaded, assigned, echo
    assert after["client_id"] == after["service_type"] == after["due_date"] == 1
    assert set(after) == set(before)


def decided_while_telling(name: str) -> int:
    """Answers the dispatcher sent between scheduling the partner's outage notice and hearing
    how it went."""
    history = json.loads(TEXTS[name])
    telling, sent = set(), 0
    for event in history["events"]:
        kind = event["eventType"]
        if kind == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED":
            attrs = event["activityTaskScheduledEventAttributes"]
            if attrs["activityType"]["name"] == "firm_capacity_outage_notice":
                telling.add(event["eventId"])
        elif kind in ("EVENT_TYPE_ACTIVITY_TASK_COMPLETED", "EVENT_TYPE_ACTIVITY_TASK_FAILED"):
            attrs = next(v for k, v in event.items() if k.endswith("EventAttributes"))
            telling.discard(attrs["scheduledEventId"])
        elif kind == "EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED" and telling:
            sent += 1
    return sent


def test_before_notice_beside_decisions_dispatch_waited_for_the_notice_and_after_not() -> None:
    """Recorded before ``outage-notice-beside-decisions``, no answer went out while the notice
    was on its way; after it, with Slack refusing the notice, the decisions went on."""
    assert decided_while_telling("v8/dispatcher_outage") == 0
    assert decided_while_telling("v9/dispatcher_outage_chat_down") >= 2


def reads_on_a_timer(name: str) -> int:
    """Tracker reads the dispatcher started on its own clock (a workflow task a timer woke),
    not because a request or a message arrived."""
    woke, cause, reads = "", "", 0
    for event in json.loads(TEXTS[name])["events"]:
        kind = event["eventType"]
        if kind == "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED":
            woke = cause
        elif not kind.startswith("EVENT_TYPE_WORKFLOW_TASK_"):
            cause = kind
        if kind == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" and woke == "EVENT_TYPE_TIMER_FIRED":
            attrs = event["activityTaskScheduledEventAttributes"]
            reads += attrs["activityType"]["name"] == "firm_capacity_snapshot"
    return reads


def test_before_the_probe_an_idle_outage_was_never_read_and_after_it_is() -> None:
    """Recorded before ``tracker-probe-while-down``, nothing read the tracker on the
    dispatcher's own clock (only a request did); after it, the outage is read again while idle,
    and the healed tracker is found with no engagement arriving."""
    assert reads_on_a_timer("v9/dispatcher_outage") == 0
    assert reads_on_a_timer("v10/dispatcher_outage") >= 1
    assert reads_on_a_timer("v10/dispatcher_outage_healed_idle") >= 1


@pytest.mark.parametrize(("name", "workflow_id", "path"), HISTORIES, ids=[h[0] for h in HISTORIES])
async def test_history_replays(name: str, workflow_id: str, path: Path) -> None:
    history = WorkflowHistory.from_json(workflow_id, TEXTS[name])
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=data_converter(),
        # Recorded with tasks put in a given order: replayed in the same order.
        interceptors=RECORDED_WITH.get(path.stem, []),
    )
    await replayer.replay_workflow(history)
