"""Dispatchers and engagements already running when the levers shipped keep their old path.

The v2 histories were recorded before the levers existed: none of them carries a lever's patch
marker, so replaying them against today's code proves each lever is taken only where the
history says the new code ran (``workflow.patched``), and an engagement or dispatcher mid-season
neither stops on non-determinism nor changes a decision it already made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from app.temporal import data_converter
from tests.harness import patches_in
from worker import WORKFLOWS
from workflows.dispatcher import DAY_LEFT_PATCH, OPEN_HOURS_PATCH, PARTNER_OPTIONS_PATCH
from workflows.engagement.base import LEVERS_PATCH

BEFORE = Path(__file__).parent / "histories" / "v2"
PATCHES = (DAY_LEFT_PATCH, OPEN_HOURS_PATCH, PARTNER_OPTIONS_PATCH, LEVERS_PATCH)
IDS: dict[str, str] = json.loads((BEFORE / "workflow_ids.json").read_text())


def history(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(IDS[name], (BEFORE / f"{name}.json").read_text("utf-8"))


@pytest.mark.parametrize("name", sorted(IDS))
async def test_a_history_from_before_the_levers_replays_on_the_old_path(name: str) -> None:
    recorded = history(name)
    assert not patches_in(recorded) & set(PATCHES), f"{name} is not a history from before"
    await Replayer(workflows=WORKFLOWS, data_converter=data_converter()).replay_workflow(recorded)


def test_the_before_histories_are_of_the_ledger_protocol_and_include_a_dispatcher() -> None:
    assert "ledger-v2" in patches_in(history("accepted_and_completed"))
    assert any(n.startswith("dispatcher") for n in IDS)
