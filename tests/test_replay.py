"""Determinism guard: recorded engagement histories must replay against today's code.

A failure here (``[TMPRL1100] Nondeterminism error``) means a change to the workflows would
break engagements already running: use ``workflow.patched`` instead, or, when a break is
intended, re-record with ``python -m tests.histories.record`` and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

FOLDER = Path(__file__).parent / "histories"
WORKFLOW_IDS: dict[str, str] = json.loads((FOLDER / "workflow_ids.json").read_text())
HISTORIES = sorted(p for p in FOLDER.glob("*.json") if p.stem in WORKFLOW_IDS)
TEXTS = {p.stem: p.read_text(encoding="utf-8") for p in HISTORIES}


def test_the_four_lifecycle_histories_are_committed() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "accepted_and_completed", "reassigned_to_partner_review", "past_due", "due_date_moved"}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(WORKFLOW_IDS[path.stem], TEXTS[path.stem])
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
