"""The audit export's records and files: what an engagement's state becomes, CSV an auditor can
open in a spreadsheet safely, JSON with everything, and the command's refusals."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime
from typing import Literal

import pytest

from app.audit import AuditRecord, records_of, render_audit
from app.cli import _audit, build_parser
from dispatch.config import Tier
from dispatch.models import (
    BlockReason,
    CandidateScore,
    Decision,
    DispatchStatus,
    EngagementState,
    Role,
    StaffRef,
    TimelineEntry,
)

AT = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def candidate(staff_id: str, name: str, *, blocked: str | None = None) -> CandidateScore:
    return CandidateScore(
        staff_id=staff_id,
        name=name,
        tier=Tier.STAFF,
        eligible=blocked is None,
        blocked=[BlockReason.CAPACITY] if blocked else [],
        why_blocked=blocked,
        available_hours=2.0 if blocked else 30.0,
        scores={"client_history": 1.0, "available_hours": 0.5},
        total=None if blocked else 0.82,
    )


def decision(
    outcome: Literal["assigned", "blocked", "forced"],
    chosen: str | None,
    reason: str,
    at: datetime | None,
    candidates: list[CandidateScore] | None = None,
    role: Role = Role.PREPARER,
) -> Decision:
    return Decision(
        role=role,
        outcome=outcome,
        chosen=chosen,
        reason=reason,
        required_hours=4.0,
        window_start=date(2026, 3, 2),
        window_end=date(2026, 3, 13),
        candidates=candidates or [],
        decided_at=at,
    )


def engagement_state() -> EngagementState:
    zoe = candidate("zoe", "Zoe Park", blocked="2.0 h free, needs 4.0 h")
    later = AT.replace(hour=16)
    noah = StaffRef(id="noah", name="Noah Kim", email="noah@firm.test", tier=Tier.STAFF)
    return EngagementState(
        workflow_id="engagement-relay-E1",
        firm_id="demo",
        status=DispatchStatus.ASSIGNED,
        source="relay",
        external_id="E1",
        client_id="cl-7",
        client_name="Jane Client",
        service_type="individual_tax",
        preparer=noah,
        decisions=[
            decision("blocked", None, "nobody has 4.0 h free by 2026-03-13", AT, [zoe]),
            decision("forced", "noah", "Assigned by partner ava to Noah Kim, over capacity", later),
            # Never sent by a dispatcher (no time): not a decision an auditor can date.
            decision("assigned", "mia", "draft", None, role=Role.REVIEWER),
        ],
        timeline=[
            TimelineEntry(at=AT, kind="NeedsPartnerReview", detail="nobody fits"),
            TimelineEntry(
                at=AT.replace(hour=15, minute=59),
                kind="partner decision",
                detail="ava chose noah over capacity",
            ),
            TimelineEntry(
                at=AT.replace(hour=17), kind="reassignment requested", detail="preparer noah"
            ),
        ],
    )


def test_an_engagement_gives_its_decisions_and_its_overrides_with_who_made_them() -> None:
    records = records_of(engagement_state())

    assert [(r.kind, r.outcome, r.chosen_id, r.made_by) for r in records] == [
        ("decision", "needs_partner_review", None, "dispatcher"),
        ("decision", "forced", "noah", "ava"),
        ("assign_anyway", None, "noah", "ava"),
        ("reassignment_request", None, None, "noah"),
    ]
    blocked = records[0]
    assert blocked.candidates[0].why_blocked == "2.0 h free, needs 4.0 h"
    assert blocked.candidates[0].blocked == ["capacity"]
    assert records[1].chosen_name == "Noah Kim"
    assert records[3].role == "preparer" and "Noah Kim" in records[3].reason


def test_nothing_about_the_client_but_its_id_reaches_the_export() -> None:
    text = render_audit(records_of(engagement_state()), "json")
    assert "cl-7" in text
    assert "Jane Client" not in text
    assert "noah@firm.test" not in text  # staff names yes, their emails are not the point


def record(**changes: object) -> AuditRecord:
    base: dict[str, object] = {
        "engagement_id": "engagement-relay-E1",
        "external_id": "E1",
        "source": "relay",
        "client_id": "cl-7",
        "at": AT,
        "kind": "decision",
        "role": "preparer",
        "outcome": "assigned",
        "chosen_id": "noah",
        "chosen_name": "Noah Kim",
        "made_by": "dispatcher",
        "reason": "best fit",
        "required_hours": 4.0,
    }
    return AuditRecord.model_validate({**base, **changes})


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_keeps_commas_quotes_and_line_breaks_inside_their_cell() -> None:
    reason = 'Chose "Noah", then Zoe,\nafter review'
    text = render_audit([record(reason=reason)], "csv")
    [row] = rows(text)
    assert row["reason"] == reason
    assert row["engagement_id"] == "engagement-relay-E1"
    assert row["at"] == "2026-03-02T14:30:00+00:00"
    assert row["required_hours"] == "4"


@pytest.mark.parametrize(
    "dangerous", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
)
def test_csv_cells_never_start_a_spreadsheet_formula(dangerous: str) -> None:
    candidates = [candidate("s-1", dangerous, blocked="capacity")]
    text = render_audit(
        [record(chosen_name=dangerous, reason=dangerous, made_by=dangerous, candidates=candidates)],
        "csv",
    )
    [row] = rows(text)
    for column in ("chosen_name", "reason", "made_by", "candidates"):
        assert row[column][0] == "'", (column, row[column])
        assert row[column][1:].startswith(dangerous), (column, row[column])


def test_a_harmless_cell_is_left_as_it_is() -> None:
    [row] = rows(render_audit([record(reason="Zoe has 2.0 h free; -1 would be over")], "csv"))
    assert row["reason"] == "Zoe has 2.0 h free; -1 would be over"


def test_csv_lists_each_candidate_with_its_score_or_why_it_was_blocked() -> None:
    candidates = [
        candidate("noah", "Noah Kim"),
        candidate("zoe", "Zoe Park", blocked="2.0 h free, needs 4.0 h"),
    ]
    [row] = rows(render_audit([record(candidates=candidates)], "csv"))
    assert row["candidates"] == (
        "Noah Kim (noah) score 0.82, 30 h free; Zoe Park (zoe) blocked: 2.0 h free, needs 4.0 h"
    )


def test_json_has_every_field_and_candidate() -> None:
    candidates = [candidate("zoe", "Zoe Park", blocked="full")]
    [loaded] = json.loads(render_audit([record(candidates=candidates)], "json"))
    assert AuditRecord.model_validate(loaded) == record(candidates=candidates)
    assert loaded["candidates"][0]["why_blocked"] == "full"


def test_an_empty_export_is_a_header_or_an_empty_list() -> None:
    assert rows(render_audit([], "csv")) == []
    assert render_audit([], "csv").startswith("engagement_id,external_id,")
    assert json.loads(render_audit([], "json")) == []


async def test_bad_dates_and_windows_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = [
        (["--from", "2026-13-01", "--to", "2026-12-31"], "--from: not a date (YYYY-MM-DD): "),
        (["--from", "2026-01-01", "--to", "tomorrow"], "--to: not a date (YYYY-MM-DD): "),
        (["--from", "20260101", "--to", "2026-01-31"], "--from: not a date"),
        (["--from", "2026-02-01", "--to", "2026-01-31"], "ends (2026-01-31) before it starts"),
        (["--from", "2024-01-01", "--to", "2026-01-31"], "longer than 366 days"),
    ]
    for args, said in cases:
        code = await _audit(build_parser().parse_args(["audit", "export", *args]))
        out, err = capsys.readouterr()
        assert code == 2
        assert err.startswith("dispatch audit export: ") and said in err, err
        assert len(err.strip().splitlines()) == 1 and out == ""


def test_the_command_itself_exits_2_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", "export", "--from", "2026-02-30", "--to", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == "dispatch audit export: --from: not a date (YYYY-MM-DD): '2026-02-30'\n"
    assert done.stdout == ""
