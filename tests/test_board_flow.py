"""The board on the dev server: the real worker, the webhook server's /board, a partner's pick.

The read model answers from one visibility list and one dispatcher query, so the list stays
readable with no worker at all; a partner's pick from the board goes through the same Update
the Slack button uses and the engagement is assigned.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from app import board
from app.board_web import signin_link
from app.board_web.auth import SECRET_ENV
from dispatch.models import DispatchStatus, EngagementState
from dispatch.partner_review import partner_candidates
from tests.harness import RunningWorker, details, eventually, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox, run_sandbox
from tests.workflows.conftest import relay_firm
from tests.workflows.test_webhook_server import http_for

BASE = "http://starter"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def board_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "board-flow-secret-0123456789")


@pytest_asyncio.fixture(loop_scope="session")
async def worker(client: Client, sandbox: RunningSandbox) -> AsyncIterator[RunningWorker]:
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as running:
        yield running


async def sign_in(http: httpx.AsyncClient, worker: RunningWorker, staff_id: str) -> str:
    """Signs in; returns the session's CSRF token (from the page's own form)."""
    link = signin_link(worker.config, staff_id, datetime.now(UTC), base=BASE)
    done = await http.post("/board/signin", data={"t": link.split("?t=", 1)[1]})
    assert done.status_code == 303
    page = await http.get("/board?status=Nonsense")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def read(worker: RunningWorker, **filters: str) -> board.BoardView:
    return await board.read_board(
        worker.client,
        firm_id=worker.config.firm.id,
        config=worker.config,
        filters=board.BoardFilters.parse(filters),
        today=datetime.now(UTC).date(),
        task_queue=worker.task_queue,
    )


async def test_the_board_lists_assigns_and_shows_capacity(worker: RunningWorker) -> None:
    due = workdays_ahead(worker.config, 4)
    fits = await worker.start(details("fits", hours=6, due=due, client_id="cl-bayside-dental"))
    # No preparer has 50 hours of audit preparation free in four days (the most is about 32): a
    # partner must decide. Its 10 review hours fit a partner, so once a preparer is named it is
    # assigned for good.
    huge = await worker.start(details("huge", service_type="audit_prep", hours=50, due=due))
    assigned = await worker.wait_state(fits.id, lambda s: s.status is DispatchStatus.ASSIGNED)
    await worker.wait_state(
        huge.id,
        lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and any(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects)
        ),
    )
    assert assigned.preparer is not None

    async def both_listed() -> board.BoardView | None:
        view = await read(worker)
        statuses = {e.workflow_id: e.status for e in view.engagements}
        wanted = {fits.id: "Assigned", huge.id: "NeedsPartnerReview"}
        return view if all(statuses.get(k) == v for k, v in wanted.items()) else None

    view = await eventually(both_listed, what="visibility to list both engagements")
    assert [e.workflow_id for e in view.review_queue] == [huge.id]
    # The queue's candidates come from the list itself (the engagement's memo), in the order
    # the engagement's own state gives them: no query per waiting engagement.
    [waiting] = view.review_queue
    huge_state = await worker.state(huge.id)
    assert waiting.review_round == huge_state.request_seq
    expected = partner_candidates(
        huge_state.decisions, worker.config.policy.partner_candidates_shown
    )
    assert [c.staff_id for c in waiting.candidates] == [c.staff_id for c in expected]
    assert expected and all(
        c.name == worker.config.staff_by_id(c.staff_id).name for c in waiting.candidates
    )
    assert any(c.anyway for c in waiting.candidates)
    row = next(e for e in view.engagements if e.workflow_id == fits.id)
    assert row.preparer == assigned.preparer.name and row.client_id == "cl-bayside-dental"
    assert row.due_date == due and row.service_type == "individual_tax"
    load = next(p for p in view.people if p.staff_id == assigned.preparer.id)
    assert sum(w.booked for w in load.weeks) >= 6 - 0.01
    assert all(w.capacity >= 0 for w in load.weeks)

    # Filters narrow the same one list.
    only_review = await read(worker, status="NeedsPartnerReview")
    assert [e.workflow_id for e in only_review.engagements] == [huge.id]
    theirs = await read(worker, person=assigned.preparer.id)
    assert fits.id in [e.workflow_id for e in theirs.engagements]
    assert huge.id not in [e.workflow_id for e in theirs.engagements]

    async with http_for(worker) as http:
        csrf = await sign_in(http, worker, "ava")
        page = await http.get("/board")
        assert page.status_code == 200
        assert fits.id in page.text and huge.id in page.text
        assert "Partner review" in page.text and 'id="capacity"' in page.text
        # The client's name is not on the list (visibility holds ids only).
        assert "Client cl-bayside-dental" not in page.text

        # The queue's forms are on the page itself, with a token that holds across refreshes.
        assert f'data-candidates="/board/e/{huge.id}/candidates"' not in page.text
        assert f'action="/board/e/{huge.id}/decide"' in page.text
        tokens = re.findall(r'name="event" value="([^"]+)"', page.text)
        again = await http.get("/board", headers={"X-Board-Live": "1"})
        assert tokens and re.findall(r'name="event" value="([^"]+)"', again.text) == tokens

        fragment = await http.get(f"/board/e/{huge.id}/candidates")
        assert fragment.status_code == 200
        picks = re.findall(
            r'name="event" value="([^"]+)">\s*<input type="hidden" name="staff_id" '
            r'value="([^"]+)">\s*<input type="hidden" name="anyway" value="1">',
            fragment.text,
        )
        assert picks, fragment.text
        event, staff_id = picks[0]
        assert "blocked:" in fragment.text

        decided = await http.post(
            f"/board/e/{huge.id}/decide",
            data={"csrf": csrf, "event": event, "staff_id": staff_id, "anyway": "1"},
        )
        assert decided.status_code == 303, decided.text
        assert decided.headers["location"].startswith(f"/board/e/{huge.id}?outcome=")
        # The same form sent again counts once (the same Update id: the first answer again).
        again = await http.post(
            f"/board/e/{huge.id}/decide",
            data={"csrf": csrf, "event": event, "staff_id": staff_id, "anyway": "1"},
        )
        assert again.status_code == 303
        assert again.headers["location"] == decided.headers["location"]

        done = await worker.wait_state(
            huge.id, lambda s: s.status is DispatchStatus.ASSIGNED and s.reviewer is not None
        )
        assert done.forced and done.preparer is not None and done.preparer.id == staff_id
        choices = [t for t in done.timeline if t.kind == "partner decision"]
        assert [t.detail for t in choices] == [f"ava chose {staff_id} over capacity"]
        page = await http.get(f"/board/e/{huge.id}")
        assert page.status_code == 200 and 'id="status">Assigned<' in page.text
        assert "Engagement huge" in page.text  # the engagement page may show its title

        # Too late now: the workflow refuses, and the page says so.
        late = await http.get(f"/board/e/{huge.id}/candidates")
        assert late.status_code == 200 and 'name="csrf"' not in late.text


async def test_the_list_needs_no_worker(client: Client, sandbox: RunningSandbox) -> None:
    sandbox.reset()
    async with running_worker(client, relay_firm(sandbox.config)) as worker:
        handle = await worker.start(details("alone", hours=3, due=workdays_ahead(worker.config, 5)))
        await worker.wait_state(handle.id, lambda s: s.status is DispatchStatus.ASSIGNED)

        async def listed() -> bool | None:
            view = await read(worker)
            return True if any(e.status == "Assigned" for e in view.engagements) else None

        await eventually(listed, what="the assignment in visibility")
    # The worker is gone: nothing answers queries, and the list still reads.
    view = await read(worker)
    (row,) = view.engagements
    assert row.workflow_id == handle.id and row.status == "Assigned" and row.preparer != "-"
    assert view.people == [] and view.capacity_note is not None
    assert "did not answer" in view.capacity_note


async def test_a_partner_moves_the_due_date_and_the_work_fits(worker: RunningWorker) -> None:
    """Nobody has 50 hours of audit preparation free in four days; by a date six weeks out
    somebody does. The partner moves the date from the board: the PM system is told (a relay
    cannot be written, and the engagement says so), the dispatcher asks again for the new date
    and the work is assigned without booking anyone over capacity."""
    due = workdays_ahead(worker.config, 4)
    later = workdays_ahead(worker.config, 30)
    huge = await worker.start(details("late", service_type="audit_prep", hours=50, due=due))
    await worker.wait_state(
        huge.id,
        lambda s: (
            s.status is DispatchStatus.NEEDS_PARTNER_REVIEW
            and any(e.kind == "chat_partner" and e.state == "done" for e in s.side_effects)
        ),
    )
    async with http_for(worker) as http:
        csrf = await sign_in(http, worker, "mia")  # a manager: may look, may not move dates
        page = await http.get(f"/board/e/{huge.id}")
        assert page.status_code == 200
        assert f'action="/board/e/{huge.id}/due"' not in page.text
        refused = await http.post(
            f"/board/e/{huge.id}/due",
            data={"csrf": csrf, "event": "x" * 24, "due_date": later.isoformat()},
        )
        assert refused.status_code == 403

    async with http_for(worker) as http:
        csrf = await sign_in(http, worker, "ava")
        page = await http.get(f"/board/e/{huge.id}")
        assert f'action="/board/e/{huge.id}/due"' in page.text
        found = re.search(
            rf'action="/board/e/{huge.id}/due" class="inline">\s*'
            r'<input type="hidden" name="csrf" value="[^"]+">\s*'
            r'<input type="hidden" name="event" value="([^"]+)">',
            page.text,
        )
        assert found is not None, page.text
        event = found.group(1)
        for bad, why in (
            ("2020-01-31", "in the past"),
            ("9999-12-31", "years ahead"),
            ("31/01/2027", "YYYY-MM-DD"),
            ("", "YYYY-MM-DD"),
        ):
            answer = await http.post(
                f"/board/e/{huge.id}/due", data={"csrf": csrf, "event": event, "due_date": bad}
            )
            assert answer.status_code == 422 and why in answer.text, (bad, answer.text)
        before = await worker.state(huge.id)
        assert before.due_date == due and before.status is DispatchStatus.NEEDS_PARTNER_REVIEW

        moved = await http.post(
            f"/board/e/{huge.id}/due",
            data={"csrf": csrf, "event": event, "due_date": later.isoformat()},
        )
        assert moved.status_code == 303, moved.text
        assert "Moving+the+due+date" in moved.headers["location"]

        done = await worker.wait_state(huge.id, lambda s: s.status is DispatchStatus.ASSIGNED)
        assert done.due_date == later and not done.forced
        assert done.preparer is not None and done.reviewer is not None
        assert any(
            t.kind == "due date moved" and t.detail == f"{due} -> {later}" for t in done.timeline
        )
        written = next(e for e in done.side_effects if e.kind == "pm_due_date")
        assert written.state == "skipped" and "by hand" in written.detail
        # The same form again is the same Update: recorded once.
        again = await http.post(
            f"/board/e/{huge.id}/due",
            data={"csrf": csrf, "event": event, "due_date": later.isoformat()},
        )
        assert again.status_code == 303 and again.headers["location"] == moved.headers["location"]
        # While assigned, a move keeps the people and tells them.
        page = await http.get(f"/board/e/{huge.id}")
        event = re.search(r'name="event" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        nearer = workdays_ahead(worker.config, 28)
        moved = await http.post(
            f"/board/e/{huge.id}/due",
            data={"csrf": csrf, "event": event, "due_date": nearer.isoformat()},
        )
        assert moved.status_code == 303, moved.text

    def told(s: EngagementState) -> bool:
        return s.due_date == nearer and all(
            any(
                e.name == f"notice:due_moved:{role}:{nearer.isoformat()}:chat" and e.state == "done"
                for e in s.side_effects
            )
            for role in ("preparer", "reviewer")
        )

    after = await worker.wait_state(huge.id, told)
    assert after.status is DispatchStatus.ASSIGNED
    assert (after.preparer, after.reviewer) == (done.preparer, done.reviewer)
