"""Microsoft Teams emulator: the Workflows (Power Automate) "when a Teams webhook request is
received" trigger, ``POST /teams/workflows/{flow}``.

What it holds to:

- The body is ``{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {AdaptiveCard}}]}``; Workflows takes
  Adaptive Cards only, not the retired connectors' MessageCard [C]. Accepted posts are answered
  ``202`` with an empty body [P].
- Cards posted this way cannot call back, so the only actions allowed are ``Action.OpenUrl``
  (each with ``title`` and an http(s) ``url``), at card level or inside ``ActionSet`` elements;
  ``Action.Submit`` / ``Action.Execute`` need a bot [P].
- Mentions are ``msteams.entities`` of type ``mention`` whose ``text`` (``<at>Name</at>``)
  appears in a TextBlock and whose ``mentioned.id`` names the person (an email / UPN) [P].

Assumptions [A]: the real trigger answers 202 first and fails later inside the flow run when
the card is bad; this emulator is stricter and answers 400 at once, with a Logic Apps style error
body ``{"error": {"code", "message"}}`` whose wording is ours. The 28 KB message limit
(413 here), the supported card versions (1.0-1.5) and the 401 for a wrong ``sig`` query
parameter (only checked when the configured URL carries one) are assumptions too.

The flow name this sandbox knows is the last path segment of ``TEAMS_WEBHOOK_URL`` (the demo's
``dispatch-channel``); any other flow is a 404.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.secrets_demo import DEMO_SECRETS, demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "teams"
WEBHOOK_URL_ENV = "TEAMS_WEBHOOK_URL"
ADAPTIVE = "application/vnd.microsoft.card.adaptive"
MESSAGE_CARD = "application/vnd.microsoft.teams.card.o365connector"
SUPPORTED_VERSIONS = {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}
MAX_BYTES = 28 * 1024
_CONTAINERS = {"Container": "items", "Column": "items"}


class TeamsStore:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []

    def dump(self) -> dict[str, Any]:
        return {"posts": self.posts}


def create_store(seed: SandboxSeed) -> TeamsStore:
    return TeamsStore()


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(_error_body(code, message), status_code=status)


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    if status == 429:
        wait = retry_after if retry_after is not None else 60
        return (
            _error_body(
                "WorkflowRequestsThrottled",
                f"Rate limit is exceeded. Try again in {wait} seconds.",
            ),
            "application/json; charset=utf-8",
        )
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return _error_body(phrase.replace(" ", ""), phrase), "application/json; charset=utf-8"


def _configured() -> tuple[str, str | None]:
    """(flow name, required sig or None) from the configured webhook URL."""
    url = urlsplit(demo_secret(WEBHOOK_URL_ENV))
    if "/teams/workflows/" not in url.path:
        # A real Workflows URL in the environment: the sandbox keeps serving the demo flow.
        url = urlsplit(DEMO_SECRETS[WEBHOOK_URL_ENV])
    flow = url.path.rstrip("/").rsplit("/", 1)[-1]
    sig = parse_qs(url.query).get("sig", [None])[0]
    return flow, sig


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_action(action: Any, where: str) -> None:
    if not isinstance(action, dict):
        raise _Invalid(f"{where}: an action must be an object")
    kind = action.get("type")
    if kind != "Action.OpenUrl":
        raise _Invalid(
            f"{where}: action type {kind!r} is not supported in cards posted by a workflow; "
            "use Action.OpenUrl"
        )
    title, url = action.get("title"), action.get("url")
    if not isinstance(title, str) or not title.strip():
        raise _Invalid(f"{where}.title: required")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise _Invalid(f"{where}.url: must be an http(s) URL")


def _check_actions(actions: Any, where: str) -> None:
    if not isinstance(actions, list):
        raise _Invalid(f"{where}: must be a list")
    for idx, action in enumerate(actions):
        _check_action(action, f"{where}[{idx}]")


def _check_elements(elements: Any, where: str, texts: list[str]) -> None:
    if not isinstance(elements, list):
        raise _Invalid(f"{where}: must be a list")
    for idx, element in enumerate(elements):
        here = f"{where}[{idx}]"
        if not isinstance(element, dict) or not isinstance(element.get("type"), str):
            raise _Invalid(f"{here}: every element needs a type")
        kind = element["type"]
        if kind == "TextBlock":
            if not isinstance(element.get("text"), str):
                raise _Invalid(f"{here}.text: required")
            texts.append(element["text"])
        elif kind == "FactSet":
            facts = element.get("facts")
            if not isinstance(facts, list) or not all(
                isinstance(f, dict) and isinstance(f.get("title"), str) and "value" in f
                for f in facts
            ):
                raise _Invalid(f"{here}.facts: a list of {{title, value}}")
            texts.extend(str(f["value"]) for f in facts)
        elif kind == "ActionSet":
            _check_actions(element.get("actions"), f"{here}.actions")
        elif kind in _CONTAINERS:
            _check_elements(element.get(_CONTAINERS[kind], []), f"{here}.items", texts)
        elif kind == "ColumnSet":
            _check_elements(element.get("columns", []), f"{here}.columns", texts)


def validate_card(card: Any) -> dict[str, Any]:
    """The card's basics, as Teams needs them; returns a summary for the store."""
    if not isinstance(card, dict):
        raise _Invalid("attachments[0].content: must be an object")
    if card.get("type") != "AdaptiveCard":
        raise _Invalid("attachments[0].content.type: must be 'AdaptiveCard'")
    version = card.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise _Invalid(f"attachments[0].content.version: {version!r} is not supported")
    if not isinstance(card.get("body"), list) or not card["body"]:
        raise _Invalid("attachments[0].content.body: a non-empty list of elements")
    texts: list[str] = []
    _check_elements(card["body"], "attachments[0].content.body", texts)
    _check_actions(card.get("actions", []), "attachments[0].content.actions")
    mentions = []
    msteams = card.get("msteams") or {}
    for idx, entity in enumerate(msteams.get("entities") or []):
        where = f"attachments[0].content.msteams.entities[{idx}]"
        if not isinstance(entity, dict) or entity.get("type") != "mention":
            continue
        text = entity.get("text")
        mentioned = entity.get("mentioned")
        if not isinstance(text, str) or not text.startswith("<at>") or not text.endswith("</at>"):
            raise _Invalid(f"{where}.text: must be <at>name</at>")
        if not isinstance(mentioned, dict) or not mentioned.get("id"):
            raise _Invalid(f"{where}.mentioned.id: required")
        if not any(text in t for t in texts):
            raise _Invalid(f"{where}: {text!r} does not appear in any TextBlock")
        mentions.append(str(mentioned["id"]))
    return {"mentions": mentions}


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["teams"])

    def store() -> TeamsStore:
        found: TeamsStore = ctx.stores[NAME]
        return found

    @router.post(f"/{NAME}/workflows/{{flow}}")
    async def trigger(flow: str, request: Request) -> Response:
        known, sig = _configured()
        if flow != known:
            return _error(404, "WorkflowNotFound", f"The workflow '{flow}' could not be found.")
        if sig is not None and not hmac.compare_digest(
            request.query_params.get("sig", "").encode(), sig.encode()
        ):
            return _error(
                401,
                "DirectApiInvalidAuthorizationSignature",
                "The provided authorization signature is not valid.",
            )
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return _error(413, "MessageSizeLimitExceeded", "The message is larger than 28 KB.")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "InvalidRequestContent", "The request content must be an object.")
        if body.get("@type") == "MessageCard" or body.get("type") == "MessageCard":
            return _error(
                400,
                "InvalidRequestContent",
                "MessageCard is not supported; post an Adaptive Card attachment.",
            )
        attachments = body.get("attachments")
        if body.get("type") != "message" or not isinstance(attachments, list) or not attachments:
            return _error(
                400,
                "InvalidRequestContent",
                "Expected {'type': 'message', 'attachments': [...]}.",
            )
        posted = []
        try:
            for idx, attachment in enumerate(attachments):
                if not isinstance(attachment, dict):
                    raise _Invalid(f"attachments[{idx}]: must be an object")
                kind = attachment.get("contentType")
                if kind != ADAPTIVE:
                    note = " (MessageCard)" if kind == MESSAGE_CARD else ""
                    raise _Invalid(
                        f"attachments[{idx}].contentType: {kind!r}{note} is not supported; "
                        f"use {ADAPTIVE}"
                    )
                summary = validate_card(attachment.get("content"))
                posted.append({"card": attachment["content"], **summary})
        except _Invalid as err:
            return _error(400, "InvalidRequestContent", err.message)
        received = datetime.now(UTC).isoformat()
        for item in posted:
            store().posts.append({"flow": flow, "received_at": received, **item})
        return Response(status_code=202)

    return router
