"""Teams: the Workflows webhook emulator's contract, and the Teams chat activities against it.

Activities run through ``ActivityEnvironment`` and post over real HTTP to the sandbox, so a wrong
body, card, link or error mapping fails here. The links in the cards are checked with
``dispatch.links.verify_link`` and followed through the links router.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.teams import TeamsActivities
from app.links import LinkOutcome, create_links_router
from app.secrets_demo import demo_secret
from dispatch.config import NoEmail, TeamsConnector, Tier
from dispatch.links import LinkClaims, one_time_code, show_code, verify_link
from dispatch.models import (
    AssignmentNotice,
    BlockReason,
    CandidateScore,
    ChatResult,
    EngagementSummary,
    PartnerReviewNotice,
    Role,
    StaffNotice,
    StaffRef,
)
from sandbox.teams import TeamsStore
from tests.sandbox_server import RunningSandbox, free_port

WORKFLOW_ID = "engagement-karbon-4kTq9bQ2"
ISSUED = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
PUBLIC = "https://dispatch.harborfinch.example"
LINK_SECRET = demo_secret("DISPATCH_LINK_SECRET")
FLOW_PATH = "/teams/workflows/dispatch-channel"
SIG = "Zq8sEcReTsIgNaTuRe0123456789abcdef"


@pytest.fixture(autouse=True)
def teams_env(sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", f"{sandbox.base_url}{FLOW_PATH}")
    monkeypatch.setenv("DISPATCH_LINK_SECRET", LINK_SECRET)


def connector() -> TeamsConnector:
    return TeamsConnector(kind="teams", public_base_url=PUBLIC, link_ttl_hours=72)


def activities_for(sandbox: RunningSandbox, **kwargs: Any) -> TeamsActivities:
    kwargs.setdefault("clock", lambda: ISSUED)
    return TeamsActivities(kwargs.pop("config", sandbox.config), connector(), **kwargs)


def store_of(sandbox: RunningSandbox) -> TeamsStore:
    store: TeamsStore = sandbox.ctx.stores["teams"]
    return store


def person(sandbox: RunningSandbox, staff_id: str) -> StaffRef:
    m = sandbox.config.staff_by_id(staff_id)
    return StaffRef(id=m.id, name=m.name, email=m.email, tier=m.tier, slack_id=m.slack_id)


def summary(**changes: Any) -> EngagementSummary:
    base = EngagementSummary(
        workflow_id=WORKFLOW_ID,
        title="2026 S-Corp return",
        client_id="cl-bayside-dental",
        client_name="Bayside Dental Group",
        service_type="s_corp_return",
        service_name="S-Corporation return (1120-S)",
        due_date=date(2026, 12, 11),
        estimated_hours=12,
        pm_url="https://app2.karbonhq.com/harbor-finch/work/4kTq9bQ2",
        scope_summary="Federal and state S-Corp returns",
        documents_needed=["Bank statements (Dec)", "Payroll summary"],
    )
    return base.model_copy(update=changes)


def assignment(sandbox: RunningSandbox, **changes: Any) -> AssignmentNotice:
    notice = AssignmentNotice(
        summary=summary(),
        recipient=person(sandbox, "priya"),
        role=Role.PREPARER,
        preparer=person(sandbox, "priya"),
        reviewer=person(sandbox, "mia"),
        estimated_completion=date(2026, 12, 9),
        manual_pm_update=None,
    )
    return notice.model_copy(update=changes)


def candidate(staff_id: str, name: str, blocked: list[BlockReason]) -> CandidateScore:
    return CandidateScore(
        staff_id=staff_id,
        name=name,
        tier=Tier.SENIOR,
        eligible=not blocked,
        blocked=blocked,
        available_hours=3.25,
    )


def partner_notice(sandbox: RunningSandbox) -> PartnerReviewNotice:
    return PartnerReviewNotice(
        summary=summary(),
        partner=person(sandbox, "ava"),
        reason="nobody with the skills has 12 h free before the due date",
        candidates=[
            candidate("priya", "Priya Nair", [BlockReason.CAPACITY]),
            candidate("grace", "Grace Kim", [BlockReason.SKILL]),
            candidate("priya", "Priya Nair", [BlockReason.CAPACITY]),  # duplicates collapse
            candidate("hannah", "Hannah Schultz", [BlockReason.CAPACITY, BlockReason.TIER]),
        ],
    )


async def run(method: Any, input: Any, env: ActivityEnvironment | None = None) -> ChatResult:
    result: ChatResult = await (env or ActivityEnvironment()).run(method, input)
    return result


def the_card(sandbox: RunningSandbox) -> dict[str, Any]:
    [post] = store_of(sandbox).posts
    card: dict[str, Any] = post["card"]
    return card


def actions_by_title(card: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.OpenUrl":
                found[node["title"]] = node["url"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


def texts(card: dict[str, Any]) -> str:
    return json.dumps(card["body"], ensure_ascii=False)


def claims_of(url: str, now: datetime = ISSUED) -> LinkClaims:
    assert url.startswith(f"{PUBLIC}/links/")
    return verify_link(LINK_SECRET, url.rsplit("/", 1)[1], now)


def set_faults(sandbox: RunningSandbox, *rules: dict[str, Any]) -> None:
    answer = httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": list(rules)})
    answer.raise_for_status()


# --- the activity ----------------------------------------------------------------------------


async def test_assignment_card_has_the_dm_content_a_mention_and_signed_buttons(
    sandbox: RunningSandbox,
) -> None:
    notice = assignment(sandbox, manual_pm_update="set the assignee in TaxDome")
    result = await run(activities_for(sandbox).notify_assignment, notice)
    assert result.delivered is True and result.message is None

    [request] = sandbox.requests(prefix="/teams")
    assert request["method"] == "POST" and request["path"] == FLOW_PATH
    assert request["status"] == 202
    body = json.loads(str(request["body"]))
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"

    card = the_card(sandbox)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    shown = texts(card)
    for words in (
        "New assignment: S-Corporation return (1120-S)",
        "Bayside Dental Group",
        "Wed Dec 9, 2026",  # estimated completion
        "Fri Dec 11, 2026",  # due
        "12 h",
        "Preparer",
        "Prepared by Priya Nair, then reviewed by Mia Chen",
        "Federal and state S-Corp returns",
        "Bank statements (Dec)",
        "Payroll summary",
        "Update the practice-management record by hand",
        "set the assignee in TaxDome",
    ):
        assert words in shown, words
    [mention] = card["msteams"]["entities"]
    assert mention == {
        "type": "mention",
        "text": "<at>Priya Nair</at>",
        "mentioned": {"id": "priya@harborfinch.example", "name": "Priya Nair"},
    }
    assert store_of(sandbox).posts[0]["mentions"] == ["priya@harborfinch.example"]

    buttons = actions_by_title(card)
    assert buttons["Open in practice management"] == summary().pm_url
    accept = claims_of(buttons["Accept"])
    reassign = claims_of(buttons["Request reassignment"])
    assert (accept.workflow_id, accept.staff_id, accept.kind) == (WORKFLOW_ID, "priya", "accept")
    assert (reassign.staff_id, reassign.kind) == ("priya", "reassign")
    assert accept.nonce != reassign.nonce
    assert accept.expires_at == ISSUED + timedelta(hours=72)
    # The tokens carry staff ids, not emails (the email only goes to Teams, in the mention).
    for url in (buttons["Accept"], buttons["Request reassignment"]):
        payload = url.rsplit("/", 1)[1].split(".")[0]
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        assert "@" not in decoded


async def test_links_expire_after_the_configured_ttl(sandbox: RunningSandbox) -> None:
    await run(activities_for(sandbox).notify_assignment, assignment(sandbox))
    url = actions_by_title(the_card(sandbox))["Accept"]
    claims_of(url, ISSUED + timedelta(hours=71, minutes=59))
    with pytest.raises(Exception, match="expired"):
        claims_of(url, ISSUED + timedelta(hours=72))


async def test_a_card_link_works_once_through_the_links_router(
    sandbox: RunningSandbox,
) -> None:
    await run(activities_for(sandbox).notify_assignment, assignment(sandbox))
    url = actions_by_title(the_card(sandbox))["Accept"]
    seen: list[LinkClaims] = []

    async def deliver(claims: LinkClaims) -> LinkOutcome:
        if any(c.event_id == claims.event_id for c in seen):
            return LinkOutcome("already_used", "already answered")
        seen.append(claims)
        return LinkOutcome("done", "accepted")

    app = FastAPI()
    app.include_router(create_links_router(sandbox.config, deliver, clock=lambda: ISSUED))
    path = url.removeprefix(PUBLIC)
    claims = claims_of(url, ISSUED)
    assert claims.needs_code  # the firm has an email connector: the code binds the person
    code = {"code": show_code(one_time_code(LINK_SECRET, claims))}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as web:
        assert (await web.get(path)).status_code == 200
        assert (await web.post(path)).status_code == 403  # whoever has the link, no code
        assert seen == []
        assert (await web.post(path, data=code)).status_code == 200
        assert (await web.post(path, data=code)).status_code == 409
    assert [c.kind for c in seen] == ["accept"]


async def test_links_need_a_code_only_when_the_firm_can_email_it(sandbox: RunningSandbox) -> None:
    await run(activities_for(sandbox).notify_assignment, assignment(sandbox))
    card = the_card(sandbox)
    assert claims_of(actions_by_title(card)["Accept"], ISSUED).needs_code
    assert "with a code we email to" in json.dumps(card)
    no_email = sandbox.config.connectors.model_copy(update={"email": NoEmail(kind="none")})
    config = sandbox.config.model_copy(update={"connectors": no_email})
    store_of(sandbox).posts.clear()
    await run(activities_for(sandbox, config=config).notify_assignment, assignment(sandbox))
    bearer = the_card(sandbox)
    assert not claims_of(actions_by_title(bearer)["Accept"], ISSUED).needs_code
    assert "with a code" not in json.dumps(bearer)


async def test_the_reviewer_card_says_review(sandbox: RunningSandbox) -> None:
    notice = assignment(sandbox, recipient=person(sandbox, "mia"), role=Role.REVIEWER)
    await run(activities_for(sandbox).notify_assignment, notice)
    card = the_card(sandbox)
    assert "Review assignment" in texts(card)
    assert claims_of(actions_by_title(card)["Accept"]).staff_id == "mia"


async def test_the_card_is_the_same_on_every_attempt(sandbox: RunningSandbox) -> None:
    """No dedupe at Workflows: a retried post must at least carry the very same links."""
    activities = TeamsActivities(sandbox.config, connector())  # default clock: scheduled time
    first = ActivityEnvironment()
    first.info = dataclasses.replace(first.info, scheduled_time=ISSUED, attempt=1)
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(
        retry.info,
        scheduled_time=ISSUED,
        attempt=3,
        current_attempt_scheduled_time=ISSUED + timedelta(minutes=9),
    )
    await run(activities.notify_assignment, assignment(sandbox), first)
    await run(activities.notify_assignment, assignment(sandbox), retry)
    bodies = [r["body"] for r in sandbox.requests(prefix="/teams")]
    assert len(bodies) == 2 and bodies[0] == bodies[1]

    later = ActivityEnvironment()
    later.info = dataclasses.replace(later.info, scheduled_time=ISSUED + timedelta(days=1))
    await run(activities.notify_assignment, assignment(sandbox), later)
    assert sandbox.requests(prefix="/teams")[-1]["body"] != bodies[0]


async def test_partner_card_explains_candidates_and_marks_assign_anyway(
    sandbox: RunningSandbox,
) -> None:
    await run(activities_for(sandbox).notify_partner, partner_notice(sandbox))
    card = the_card(sandbox)
    shown = texts(card)
    assert "Partner review: S-Corporation return (1120-S)" in shown
    assert "nobody with the skills has 12 h free" in shown
    assert "**Priya Nair** (senior) · 3.2 h available · blocked: capacity" in shown
    assert "blocked: skill" in shown and "blocked: capacity, tier" in shown
    assert card["msteams"]["entities"][0]["mentioned"]["id"] == "ava@harborfinch.example"

    buttons = actions_by_title(card)
    assert sorted(buttons) == [
        "Assign Grace Kim",
        "Assign Hannah Schultz",
        "Assign Priya Nair",
        "Assign Priya Nair anyway",  # capacity alone blocks only Priya
        "Open in practice management",
    ]
    for name, staff_id in (("Priya Nair", "priya"), ("Grace Kim", "grace")):
        claims = claims_of(buttons[f"Assign {name}"])
        assert claims.staff_id == "ava" and claims.candidate_id == staff_id
        assert claims.override_capacity is False
    anyway = claims_of(buttons["Assign Priya Nair anyway"])
    assert anyway.candidate_id == "priya" and anyway.override_capacity is True
    # "Assign anyway" lives in its own, marked container.
    [marked] = [e for e in card["body"] if e.get("style") == "attention"]
    assert "over capacity" in json.dumps(marked)
    assert "Assign Priya Nair anyway" in json.dumps(marked)


async def test_partner_card_shows_at_most_the_configured_candidates(
    sandbox: RunningSandbox,
) -> None:
    policy = sandbox.config.policy.model_copy(update={"partner_candidates_shown": 1})
    config = sandbox.config.model_copy(update={"policy": policy})
    await run(
        TeamsActivities(config, connector(), clock=lambda: ISSUED).notify_partner,
        partner_notice(sandbox),
    )
    titles = sorted(actions_by_title(the_card(sandbox)))
    assert titles == [
        "Assign Priya Nair",
        "Assign Priya Nair anyway",
        "Open in practice management",
    ]


async def test_staff_notice_is_a_plain_card(sandbox: RunningSandbox) -> None:
    notice = StaffNotice(
        kind="not_started",
        recipient=person(sandbox, "mia"),
        summary=summary(),
        subject="Not started after 48 h",
        lines=["Priya Nair has not started 2026 S-Corp return.", "Due Fri Dec 11."],
        key=f"{WORKFLOW_ID}:not_started:1",
    )
    result = await run(activities_for(sandbox).staff_notice, notice)
    assert result.delivered is True
    card = the_card(sandbox)
    shown = texts(card)
    assert "Not started after 48 h" in shown and "Priya Nair has not started" in shown
    assert "<at>Mia Chen</at>" in shown
    assert "/links/" not in json.dumps(card)
    assert list(actions_by_title(card)) == ["Open in practice management"]


async def test_429_is_retryable_after_retry_after(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/teams/", "status": 429, "retry_after": 7, "count": 1})
    activities = activities_for(sandbox)
    with pytest.raises(ApplicationError) as caught:
        await run(activities.notify_assignment, assignment(sandbox))
    assert caught.value.non_retryable is False
    assert caught.value.type == "RateLimited"
    assert caught.value.next_retry_delay == timedelta(seconds=7)
    assert store_of(sandbox).posts == []
    assert (await run(activities.notify_assignment, assignment(sandbox))).delivered is True


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(sandbox: RunningSandbox, status: int) -> None:
    set_faults(sandbox, {"route": "/teams/", "status": status, "count": 1})
    with pytest.raises(ApplicationError) as caught:
        await run(activities_for(sandbox).notify_assignment, assignment(sandbox))
    assert caught.value.non_retryable is False and caught.value.type == "ServerError"


async def test_a_rejected_card_fails_for_good_with_the_reason(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    import activities.teams as teams_module

    def broken(card: dict[str, Any]) -> dict[str, Any]:
        return {"type": "message", "attachments": [{"contentType": "text/plain", "content": {}}]}

    monkeypatch.setattr(teams_module, "webhook_body", broken)
    with pytest.raises(ApplicationError) as caught:
        await run(activities_for(sandbox).notify_assignment, assignment(sandbox))
    assert caught.value.non_retryable is True
    assert "HTTP 400" in caught.value.message and "contentType" in caught.value.message


async def test_the_webhook_url_never_shows_in_errors_or_logs(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_url = f"{sandbox.base_url}{FLOW_PATH}?api-version=2016-06-01&sig={SIG}"
    activities = activities_for(sandbox)
    # 1. the flow is configured with this sig; we post with another one -> 401
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", secret_url)
    wrong = f"{sandbox.base_url}{FLOW_PATH}?api-version=2016-06-01&sig=WrongSignature0000000000"
    connector_env = "TEAMS_TEST_WRONG_URL"
    monkeypatch.setenv(connector_env, wrong)
    wrong_sig = TeamsActivities(
        sandbox.config,
        connector().model_copy(update={"webhook_url_env": connector_env}),
        clock=lambda: ISSUED,
    )
    with pytest.raises(ApplicationError) as unauthorized:
        await run(wrong_sig.notify_assignment, assignment(sandbox))
    assert unauthorized.value.non_retryable is True and "HTTP 401" in unauthorized.value.message
    # 2. the right sig works
    assert (await run(activities.notify_assignment, assignment(sandbox))).delivered
    # 3. a flow that does not exist: the vendor's message names it (its id is secret too)
    flow_id = "0f3c9e1d2b4a5968deadbeef"
    monkeypatch.setenv(connector_env, f"{sandbox.base_url}/teams/workflows/{flow_id}?sig={SIG}")
    with pytest.raises(ApplicationError) as missing:
        await run(wrong_sig.notify_assignment, assignment(sandbox))
    assert missing.value.non_retryable is True and "HTTP 404" in missing.value.message
    assert "WorkflowNotFound" in missing.value.message
    assert flow_id not in missing.value.message
    # 4. nobody listening -> transport error
    dead = f"http://127.0.0.1:{free_port()}/workflows/abcdef0123456789/invoke?sig={SIG}"
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", dead)
    with pytest.raises(ApplicationError) as unreachable:
        await run(activities.notify_assignment, assignment(sandbox))
    assert unreachable.value.type == "TransportError" and not unreachable.value.non_retryable
    assert unreachable.value.__cause__ is None

    for err in (unauthorized.value, missing.value, unreachable.value):
        for leak in (SIG, "WrongSignature", "sig=", "abcdef0123456789", "127.0.0.1"):
            assert leak not in err.message, (leak, err.message)
    for leak in (SIG, "WrongSignature", "abcdef0123456789", flow_id):
        assert leak not in caplog.text
    assert "HTTP Request: POST <Teams webhook URL>" in caplog.text


async def test_missing_secrets_are_config_errors(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEAMS_WEBHOOK_URL")
    with pytest.raises(ApplicationError) as caught:
        await run(
            activities_for(sandbox).staff_notice,
            StaffNotice(
                kind="midpoint",
                recipient=person(sandbox, "priya"),
                summary=summary(),
                subject="Midpoint",
                lines=["Half way."],
                key="k",
            ),
        )
    assert caught.value.non_retryable and caught.value.type == "TeamsConfigError"
    assert "TEAMS_WEBHOOK_URL" in caught.value.message

    monkeypatch.setenv("TEAMS_WEBHOOK_URL", f"{sandbox.base_url}{FLOW_PATH}")
    monkeypatch.delenv("DISPATCH_LINK_SECRET")
    with pytest.raises(ApplicationError) as no_links:
        await run(activities_for(sandbox).notify_assignment, assignment(sandbox))
    assert no_links.value.non_retryable and "DISPATCH_LINK_SECRET" in no_links.value.message
    assert store_of(sandbox).posts == []


# --- the emulator's contract -----------------------------------------------------------------


def post(sandbox: RunningSandbox, body: Any, path: str = FLOW_PATH) -> httpx.Response:
    return httpx.post(f"{sandbox.base_url}{path}", json=body)


def adaptive(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def minimal_card(**changes: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [{"type": "TextBlock", "text": "Hello <at>Priya</at>"}],
        "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": "https://example.com"}],
        "msteams": {
            "entities": [
                {
                    "type": "mention",
                    "text": "<at>Priya</at>",
                    "mentioned": {"id": "priya@harborfinch.example", "name": "Priya"},
                }
            ]
        },
    }
    card.update(changes)
    return card


def test_a_valid_adaptive_card_is_accepted_with_202(sandbox: RunningSandbox) -> None:
    answer = post(sandbox, adaptive(minimal_card()))
    assert answer.status_code == 202 and answer.content == b""
    [stored] = store_of(sandbox).posts
    assert stored["flow"] == "dispatch-channel" and stored["card"]["version"] == "1.4"


def test_message_cards_are_refused(sandbox: RunningSandbox) -> None:
    legacy = {"@type": "MessageCard", "@context": "http://schema.org/extensions", "text": "hi"}
    assert post(sandbox, legacy).status_code == 400
    wrapped = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.teams.card.o365connector", "content": {}}
        ],
    }
    answer = post(sandbox, wrapped)
    assert answer.status_code == 400 and "MessageCard" in answer.json()["error"]["message"]
    assert store_of(sandbox).posts == []


@pytest.mark.parametrize(
    ("card", "words"),
    [
        (minimal_card(type="HeroCard"), "AdaptiveCard"),
        (minimal_card(version="2.0"), "version"),
        (minimal_card(body=[]), "body"),
        (minimal_card(body=[{"text": "no type"}]), "type"),
        (
            minimal_card(actions=[{"type": "Action.Submit", "title": "Accept", "data": {}}]),
            "Action.Submit",
        ),
        (minimal_card(actions=[{"type": "Action.OpenUrl", "title": "Go"}]), "url"),
        (
            minimal_card(actions=[{"type": "Action.OpenUrl", "url": "https://example.com"}]),
            "title",
        ),
        (
            minimal_card(body=[{"type": "TextBlock", "text": "no mention here"}]),
            "does not appear",
        ),
        (
            minimal_card(
                body=[
                    {"type": "TextBlock", "text": "<at>Priya</at>"},
                    {
                        "type": "ActionSet",
                        "actions": [{"type": "Action.Execute", "title": "Do", "verb": "x"}],
                    },
                ]
            ),
            "Action.Execute",
        ),
    ],
)
def test_card_basics_are_validated(
    sandbox: RunningSandbox, card: dict[str, Any], words: str
) -> None:
    answer = post(sandbox, adaptive(card))
    assert answer.status_code == 400
    assert words in answer.json()["error"]["message"]


def test_bodies_that_are_not_messages_are_refused(sandbox: RunningSandbox) -> None:
    bodies: list[Any] = [[], {"type": "message"}, {"type": "message", "attachments": []}, {"x": 1}]
    for body in bodies:
        assert post(sandbox, body).status_code == 400
    assert httpx.post(f"{sandbox.base_url}{FLOW_PATH}", content=b"{").status_code == 400


def test_unknown_flow_is_404(sandbox: RunningSandbox) -> None:
    answer = post(sandbox, adaptive(minimal_card()), "/teams/workflows/someone-elses-flow")
    assert answer.status_code == 404


def test_oversized_messages_are_refused(sandbox: RunningSandbox) -> None:
    big = minimal_card(body=[{"type": "TextBlock", "text": "<at>Priya</at> " + "x" * 30_000}])
    assert post(sandbox, adaptive(big)).status_code == 413


def test_injected_429_has_retry_after(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, {"route": "/teams/", "status": 429, "retry_after": 4, "count": 1})
    answer = post(sandbox, adaptive(minimal_card()))
    assert answer.status_code == 429 and answer.headers["retry-after"] == "4"
    assert "Try again in 4 seconds" in answer.json()["error"]["message"]
