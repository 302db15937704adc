"""Teams: the card's Accept link reaches the engagement exactly like a Slack button; a link
works once, and a forged one does nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from dispatch.config import FirmConfig, TeamsConnector
from dispatch.models import DispatchStatus
from starter import create_app
from tests.harness import RunningWorker, details, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox
from tests.workflows.conftest import relay_firm

PUBLIC = "http://starter"


def teams_firm(sandbox: RunningSandbox) -> FirmConfig:
    config = relay_firm(sandbox.config)
    chat = TeamsConnector(kind="teams", public_base_url=PUBLIC)
    return config.model_copy(
        update={"connectors": config.connectors.model_copy(update={"chat": chat})}
    )


def cards(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return [p["card"] for p in sandbox.ctx.stores["teams"].posts]


def link(card: dict[str, Any], title: str) -> str:
    for action in card.get("actions", []):
        if action.get("title") == title:
            return str(action["url"])
    raise AssertionError(f"no {title!r} action in the card")


def http_for(worker: RunningWorker) -> httpx.AsyncClient:
    app = create_app(worker.config, worker.client, task_queue=worker.task_queue)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC)


def emailed_code(sandbox: RunningSandbox, to: str) -> str:
    """The code in the newest link-code email the sandbox's SendGrid received for ``to``."""
    for request in reversed(sandbox.requests(prefix="/sendgrid/v3/mail/send")):
        message = json.loads(str(request["body"]))
        if message.get("categories") == ["link-code"]:
            [recipient] = message["personalizations"][0]["to"]
            if recipient["email"] == to:
                found = re.search(r"Your code: ([0-9A-Z]{4}-[0-9A-Z]{4})", str(message))
                assert found is not None
                return found.group(1)
    raise AssertionError(f"no link code was emailed to {to}")


async def test_accept_link_acts_only_with_the_code_emailed_to_its_person(
    client: Client, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card sits in a channel: whoever opens the Accept link there cannot act for the
    assignee without the code that only the assignee's mailbox receives."""
    sandbox.reset()
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", f"{sandbox.base_url}/teams/workflows/dispatch")
    async with running_worker(client, teams_firm(sandbox)) as worker:
        handle = await worker.start(details("teams", due=workdays_ahead(worker.config, 8)))
        state = await worker.wait_state(
            handle.id,
            lambda s: (
                s.status is DispatchStatus.ASSIGNED
                and not any(e.state == "pending" for e in s.side_effects)
            ),
        )
        assert state.preparer is not None
        found = cards(sandbox)
        assert found, [e for e in state.side_effects if e.kind.startswith("chat")]
        [preparer_card, *_] = [c for c in found if state.preparer.name in str(c)]
        accept = link(preparer_card, "Accept").removeprefix(PUBLIC)
        async with http_for(worker) as http:
            page = await http.get(accept)
            # Opening the link (or a chat preview bot fetching it) changes nothing.
            assert page.status_code == 200 and "one-time code" in page.text
            assert (await worker.state(handle.id)).status is DispatchStatus.ASSIGNED

            # A colleague in the channel: no code, a guessed code, a code request.
            assert (await http.post(accept)).status_code == 403
            assert (await http.post(accept, data={"code": "AAAA-AAAA"})).status_code == 403
            sent = await http.post(accept, data={"send_code": "1"})
            assert sent.status_code == 200 and "Check your email" in sent.text
            assert state.preparer.email not in sent.text  # masked
            assert (await worker.state(handle.id)).status is DispatchStatus.ASSIGNED

            # The code went to the preparer's own address; with it, the link acts once.
            code = emailed_code(sandbox, state.preparer.email)
            done = await http.post(accept, data={"code": code.lower()})
            assert done.status_code == 200, done.text
            assert (await worker.state(handle.id)).status is DispatchStatus.ACCEPTED
            again = await http.post(accept, data={"code": code})
            assert again.status_code == 409 and "already used" in again.text
            token = accept.rsplit("/", 1)[1]
            forged = await http.post(accept.replace(token, token[:-3] + "AAA"), data={"code": code})
            assert forged.status_code in (400, 403)
        final = await worker.state(handle.id)
        assert [t.kind for t in final.timeline].count("Accepted") == 1
