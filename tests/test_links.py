"""Signed action links: the token functions, and the confirmation / action pages.

The router is exercised with FastAPI's test client and a plain async ``deliver`` function of our
own (it stands for whatever the webhook server wires in; no Temporal here).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.links import LinkOutcome, create_links_router, decision_for, response_for
from dispatch.config import FirmConfig, StaffMember, TeamsConnector, load_firm_config
from dispatch.links import (
    LinkClaims,
    LinkError,
    derive_nonce,
    make_link,
    make_token,
    one_time_code,
    partner_action,
    show_code,
    upload_link,
    verify_link,
)

SECRET = "test-link-secret"
NOW = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
TTL = timedelta(hours=72)
WORKFLOW_ID = "engagement-karbon-4kTq9bQ2"
BASE = "https://dispatch.example.com"


def token(action: str = "accept", *, staff_id: str = "priya", **changes: object) -> str:
    args: dict[str, object] = {
        "workflow_id": WORKFLOW_ID,
        "staff_id": staff_id,
        "action": action,
        "ttl": TTL,
        "now": NOW,
    }
    args.update(changes)
    return make_token(SECRET, **args)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- tokens ----------------------------------------------------------------------------------


def test_a_link_round_trips_to_its_claims() -> None:
    link = make_link(
        SECRET,
        BASE + "/",
        workflow_id=WORKFLOW_ID,
        staff_id="priya",
        action="accept",
        ttl=TTL,
        now=NOW,
    )
    assert link.startswith(f"{BASE}/links/")
    claims = verify_link(SECRET, link.rsplit("/", 1)[1], NOW + timedelta(hours=1))
    assert claims.workflow_id == WORKFLOW_ID
    assert claims.staff_id == "priya"
    assert claims.kind == "accept" and claims.candidate_id is None
    assert claims.expires_at == NOW + TTL
    assert claims.event_id == f"link:{claims.nonce}"


def test_token_is_urlsafe_unpadded_and_holds_ids_only() -> None:
    value = token()
    assert "=" not in value and "/" not in value and "+" not in value
    payload = json.loads(unb64(value.split(".")[0]))
    assert set(payload) == {"v", "w", "s", "a", "e", "n"}
    assert "@" not in json.dumps(payload)


def test_random_nonces_differ_and_derived_ones_repeat() -> None:
    assert verify_link(SECRET, token(), NOW).nonce != verify_link(SECRET, token(), NOW).nonce
    nonce = derive_nonce(SECRET, WORKFLOW_ID, "priya", "accept", NOW.isoformat())
    assert nonce == derive_nonce(SECRET, WORKFLOW_ID, "priya", "accept", NOW.isoformat())
    assert nonce != derive_nonce(SECRET, WORKFLOW_ID, "priya", "reassign", NOW.isoformat())
    assert nonce != derive_nonce("other-secret", WORKFLOW_ID, "priya", "accept", NOW.isoformat())
    assert token(nonce=nonce) == token(nonce=nonce)


def test_expired_at_the_expiry_instant() -> None:
    value = token()
    verify_link(SECRET, value, NOW + TTL - timedelta(seconds=1))
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, value, NOW + TTL)
    assert caught.value.reason == "expired"


def test_a_different_secret_is_forged() -> None:
    with pytest.raises(LinkError) as caught:
        verify_link("another-secret", token(), NOW)
    assert caught.value.reason == "forged"


def test_an_empty_secret_verifies_nothing() -> None:
    with pytest.raises(LinkError) as caught:
        verify_link("", token(), NOW)
    assert caught.value.reason == "forged"
    with pytest.raises(ValueError):
        make_token("", workflow_id=WORKFLOW_ID, staff_id="priya", action="accept", ttl=TTL, now=NOW)


def test_changing_the_payload_breaks_the_signature() -> None:
    payload, signature = token().split(".")
    claims = json.loads(unb64(payload))
    for field, value in (("s", "mia"), ("a", "reassign"), ("e", claims["e"] + 86400)):
        tampered = b64(json.dumps({**claims, field: value}, separators=(",", ":")).encode())
        with pytest.raises(LinkError) as caught:
            verify_link(SECRET, f"{tampered}.{signature}", NOW)
        assert caught.value.reason == "forged", field


def test_signature_of_another_token_is_forged() -> None:
    mine, theirs = token(staff_id="priya"), token(staff_id="mia")
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, f"{mine.split('.')[0]}.{theirs.split('.')[1]}", NOW)
    assert caught.value.reason == "forged"


@pytest.mark.parametrize(
    "damaged",
    [
        "",
        "nodot",
        "a.b.c",
        "!!!.???",
        "payload.c2hvcnQ",  # a signature that is not 32 bytes
        "x" * 3000,
    ],
)
def test_damaged_tokens_are_malformed(damaged: str) -> None:
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, damaged, NOW)
    assert caught.value.reason == "malformed"


def test_truncated_link_is_malformed_not_forged() -> None:
    value = token()
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, value[:-5], NOW)
    assert caught.value.reason == "malformed"


def test_signed_but_unreadable_payload_is_malformed() -> None:
    import hashlib
    import hmac

    payload = b64(b'{"v": 99}')
    signature = b64(hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest())
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, f"{payload}.{signature}", NOW)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "delete_everything"},
        {"action": "partner_assign:"},
        {"action": "partner_assign:Bad Id"},
        {"staff_id": "priya@harborfinch.example"},
        {"workflow_id": "has spaces"},
        {"ttl": timedelta(0)},
        {"now": datetime(2026, 11, 30, 14, 0)},  # naive
        {"nonce": "short"},
    ],
)
def test_make_rejects_bad_input(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        token(**changes)  # type: ignore[arg-type]


def test_partner_links_name_the_candidate() -> None:
    plain = verify_link(SECRET, token(partner_action("grace"), staff_id="ava"), NOW)
    assert plain.kind == "partner_assign" and plain.candidate_id == "grace"
    assert plain.override_capacity is False
    anyway = verify_link(SECRET, token(partner_action("grace", anyway=True), staff_id="ava"), NOW)
    assert anyway.candidate_id == "grace" and anyway.override_capacity is True

    decision = decision_for(anyway)
    assert decision.partner_id == "ava" and decision.staff_id == "grace"
    assert decision.override_capacity is True and decision.channel == "teams"
    assert decision.event_id == anyway.event_id
    with pytest.raises(ValueError):
        response_for(anyway)


def test_accept_and_reassign_become_assignment_responses() -> None:
    accept = response_for(verify_link(SECRET, token("accept"), NOW))
    reassign = response_for(verify_link(SECRET, token("reassign"), NOW))
    assert (accept.action, reassign.action) == ("accept", "reassign")
    assert accept.staff_id == "priya" and accept.channel == "teams"
    assert accept.event_id != reassign.event_id
    with pytest.raises(ValueError):
        decision_for(verify_link(SECRET, token("accept"), NOW))


# --- the pages -------------------------------------------------------------------------------


class FakeDeliver:
    """Our stand-in for the webhook server's deliver: remembers nonces like a seen-set."""

    def __init__(self) -> None:
        self.calls: list[LinkClaims] = []
        self.seen: set[str] = set()
        self.fail = False
        self.refuse = False

    async def __call__(self, claims: LinkClaims) -> LinkOutcome:
        self.calls.append(claims)
        if self.fail:
            raise RuntimeError("temporal is down at priya@harborfinch.example")
        if claims.event_id in self.seen:
            return LinkOutcome("already_used", "You already answered with this link.")
        self.seen.add(claims.event_id)
        if self.refuse:
            return LinkOutcome("refused", "The engagement was reassigned <meanwhile>.")
        return LinkOutcome("done", f"Thanks, recorded: {claims.kind}.")


@pytest.fixture
def firm() -> FirmConfig:
    config = load_firm_config()
    teams = TeamsConnector(kind="teams", link_secret_env="TEST_LINK_SECRET")
    connectors = config.connectors.model_copy(update={"chat": teams})
    return config.model_copy(update={"connectors": connectors})


@pytest.fixture
def deliver() -> FakeDeliver:
    return FakeDeliver()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://links.test")


def app_for(config: FirmConfig, deliver: FakeDeliver) -> FastAPI:
    app = FastAPI()
    app.include_router(create_links_router(config, deliver, clock=lambda: NOW))
    return app


@pytest_asyncio.fixture
async def web(
    firm: FirmConfig, deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("TEST_LINK_SECRET", SECRET)
    async with client_for(app_for(firm, deliver)) as client:
        yield client


async def test_get_shows_a_confirmation_and_never_acts(
    web: httpx.AsyncClient, deliver: FakeDeliver
) -> None:
    value = token("accept")
    for _ in range(3):  # link previews, mail scanners, the person
        page = await web.get(f"/links/{value}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in page.text and ">Accept</button>" in page.text
        assert WORKFLOW_ID in page.text
    assert deliver.calls == []
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_post_delivers_once_then_says_already_used(
    web: httpx.AsyncClient, deliver: FakeDeliver
) -> None:
    value = token("reassign")
    first = await web.post(f"/links/{value}")
    assert first.status_code == 200 and "recorded: reassign" in first.text
    [claims] = deliver.calls
    assert claims.kind == "reassign" and claims.staff_id == "priya"

    again = await web.post(f"/links/{value}")
    assert again.status_code == 409
    assert "already used" in again.text


async def test_partner_confirmation_names_the_candidate(web: httpx.AsyncClient) -> None:
    page = await web.get(f"/links/{token(partner_action('grace', anyway=True), staff_id='ava')}")
    assert page.status_code == 200
    assert "Grace Kim" in page.text and "past their capacity" in page.text
    assert ">Assign Grace Kim anyway</button>" in page.text


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_forged_expired_and_malformed_links_get_clear_pages(
    web: httpx.AsyncClient, deliver: FakeDeliver, method: str
) -> None:
    forged = make_token(
        "someone-else", workflow_id=WORKFLOW_ID, staff_id="priya", action="accept", ttl=TTL, now=NOW
    )
    expired = token(now=NOW - TTL - timedelta(seconds=1))
    cases = [(forged, 403, "not valid"), (expired, 410, "expired"), ("abc", 400, "incomplete")]
    for value, status, words in cases:
        page = await web.request(method, f"/links/{value}")
        assert page.status_code == status, value
        assert words in page.text
        assert "<form" not in page.text
    assert deliver.calls == []


async def test_refused_is_a_conflict_and_the_message_is_escaped(
    web: httpx.AsyncClient, deliver: FakeDeliver
) -> None:
    deliver.refuse = True
    page = await web.post(f"/links/{token()}")
    assert page.status_code == 409
    assert "&lt;meanwhile&gt;" in page.text and "<meanwhile>" not in page.text


async def test_deliver_failure_is_503_with_retry_and_no_details(
    web: httpx.AsyncClient, deliver: FakeDeliver, caplog: pytest.LogCaptureFixture
) -> None:
    deliver.fail = True
    value = token()
    page = await web.post(f"/links/{value}")
    assert page.status_code == 503 and page.headers["retry-after"]
    assert "Try again" in page.text
    assert "temporal is down" not in page.text and "@" not in page.text
    assert value not in caplog.text and "harborfinch" not in caplog.text


async def test_names_are_html_escaped(
    firm: FirmConfig, deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LINK_SECRET", SECRET)
    staff = [
        m.model_copy(update={"name": "<script>alert(1)</script>"}) if m.id == "grace" else m
        for m in firm.staff
    ]
    info = firm.firm.model_copy(update={"name": "Harbor & <b>Finch</b>"})
    odd = firm.model_copy(update={"staff": staff, "firm": info})
    async with client_for(app_for(odd, deliver)) as client:
        page = await client.get(f"/links/{token(partner_action('grace'), staff_id='ava')}")
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    assert "Harbor &amp; &lt;b&gt;Finch&lt;/b&gt;" in page.text


async def test_without_the_secret_links_are_unavailable(
    firm: FirmConfig, deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_LINK_SECRET", raising=False)
    async with client_for(app_for(firm, deliver)) as client:
        page = await client.post(f"/links/{token()}")
    assert page.status_code == 503
    assert deliver.calls == []


async def test_the_router_reads_the_default_secret_env_without_teams(
    deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_LINK_SECRET", SECRET)
    async with client_for(app_for(load_firm_config(), deliver)) as client:
        assert (await client.post(f"/links/{token()}")).status_code == 200


# --- one-time codes: binding a link to its person ---------------------------------------------


class FakeMailbox:
    """Stands for the firm's email connector: records who got which code."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail = False

    async def __call__(self, member: StaffMember, claims: LinkClaims, code: str) -> bool:
        if self.fail:
            return False
        self.sent.append((member.email, code))
        return True


def coded_app(config: FirmConfig, deliver: FakeDeliver, mailbox: FakeMailbox | None) -> FastAPI:
    app = FastAPI()
    app.include_router(create_links_router(config, deliver, clock=lambda: NOW, send_code=mailbox))
    return app


async def test_a_coded_link_acts_only_with_the_code_sent_to_its_person(
    firm: FirmConfig, deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LINK_SECRET", SECRET)
    mailbox = FakeMailbox()
    value = token("accept", needs_code=True)
    async with client_for(coded_app(firm, deliver, mailbox)) as web:
        page = await web.get(f"/links/{value}")
        assert "one-time code" in page.text and 'name="send_code"' in page.text
        assert (await web.post(f"/links/{value}")).status_code == 403
        assert (await web.post(f"/links/{value}", data={"code": "0000-0000"})).status_code == 403
        sent = await web.post(f"/links/{value}", data={"send_code": "1"})
        assert sent.status_code == 200 and "p•••@harborfinch.example" in sent.text
        [(to, code)] = mailbox.sent
        assert to == firm.staff_by_id("priya").email
        assert deliver.calls == []
        typed = code.lower().replace("-", " ").replace("0", "o")  # forgiving of how it is typed
        done = await web.post(f"/links/{value}", data={"code": typed})
        assert done.status_code == 200 and [c.kind for c in deliver.calls] == ["accept"]


async def test_code_requests_and_guesses_are_throttled_per_link(
    firm: FirmConfig, deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LINK_SECRET", SECRET)
    mailbox = FakeMailbox()
    value = token("accept", needs_code=True)
    async with client_for(coded_app(firm, deliver, mailbox)) as web:
        statuses = [
            (await web.post(f"/links/{value}", data={"send_code": "1"})).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429] and len(mailbox.sent) == 3
        guesses = [
            (await web.post(f"/links/{value}", data={"code": f"AAAA-AAA{n}"})).status_code
            for n in range(11)
        ]
        assert guesses[:10] == [403] * 10 and guesses[10] == 429
        right = show_code(one_time_code(SECRET, verify_link(SECRET, value, NOW)))
        # Locked for this link even with the right code: guessing cannot be sped up.
        assert (await web.post(f"/links/{value}", data={"code": right})).status_code == 429
        other = token("reassign", needs_code=True)
        other_code = show_code(one_time_code(SECRET, verify_link(SECRET, other, NOW)))
        assert other_code != right  # each link has its own code
        assert (await web.post(f"/links/{other}", data={"code": other_code})).status_code == 200
    assert deliver.calls and deliver.calls[-1].kind == "reassign"


async def test_a_code_that_cannot_be_sent_is_said_plainly(
    firm: FirmConfig, deliver: FakeDeliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LINK_SECRET", SECRET)
    broken = FakeMailbox()
    broken.fail = True
    value = token("accept", needs_code=True)
    async with client_for(coded_app(firm, deliver, broken)) as web:
        response = await web.post(f"/links/{value}", data={"send_code": "1"})
        assert response.status_code == 503 and "could not be sent" in response.text
    async with client_for(coded_app(firm, deliver, None)) as web:
        response = await web.post(f"/links/{value}", data={"send_code": "1"})
        assert response.status_code == 503 and "email is not set up" in response.text
        huge = await web.post(f"/links/{value}", content=b"code=" + b"x" * 10_000)
        assert huge.status_code == 413
    assert deliver.calls == []


def test_the_code_flag_is_signed() -> None:
    plain = token("accept")
    assert not verify_link(SECRET, plain, NOW).needs_code
    payload, _, signature = plain.partition(".")
    body = json.loads(unb64(payload))
    body["c"] = 1  # a link without a code cannot be made to need one, nor the reverse
    assert_forged = f"{b64(json.dumps(body).encode())}.{signature}"
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, assert_forged, NOW)
    assert caught.value.reason == "forged"


@pytest.mark.parametrize(
    ("client_id", "link"),
    [
        ("cl-marlow", "https://portal.example.com/upload/cl-marlow"),
        ("../../etc/passwd", "https://portal.example.com/upload/..%2F..%2Fetc%2Fpasswd"),
        ("a b&c?d#e", "https://portal.example.com/upload/a%20b%26c%3Fd%23e"),
    ],
)
def test_upload_links_quote_the_client_id(client_id: str, link: str) -> None:
    assert upload_link("https://portal.example.com/upload/{client_id}", client_id) == link
