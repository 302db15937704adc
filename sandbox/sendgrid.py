"""SendGrid v3 Mail Send emulator: ``POST /sendgrid/v3/mail/send``.

What it holds to (SendGrid's OpenAPI spec for mail/send and its documented responses):

- ``Authorization: Bearer <SENDGRID_API_KEY>``; otherwise 401 ``authorization required``.
- Validation failures are 400 ``{"errors": [{"message", "field", "help"}]}``, every problem at once.
- Accepted mail is ``202`` with an empty body and an ``X-Message-Id`` header; with
  ``mail_settings.sandbox_mode.enable`` the request is validated, answered ``200`` and not queued.

The error messages follow SendGrid's wording where it is known; the ``help`` links and the
message for non-string ``custom_args`` are assumptions [A]. Message-level ``custom_args`` is
accepted as an object of strings (what the SDKs send) or a string (what the spec types) [P].
SendGrid answers a bad key with the same 401 body as a missing one here [A].
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from dispatch.secrets_demo import demo_secret
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "sendgrid"
API_KEY_ENV = "SENDGRID_API_KEY"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."


class MailStore:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        """Queued messages, oldest first: ``{message_id, received_at, request}``."""

    def dump(self) -> dict[str, Any]:
        return {"messages": self.messages}


def create_store(seed: SandboxSeed) -> MailStore:
    return MailStore()


def _errors(*items: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(items)}


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    if status == 429:
        return _errors({"field": None, "message": "too many requests"}), "application/json"
    if status >= 500:
        return _errors({"message": "internal server error"}), "application/json"
    body = _errors({"message": f"injected error {status}", "field": None, "help": None})
    return body, "application/json"


def _error(field: str | None, message: str, anchor: str) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP + anchor}


def _email_errors(value: Any, field: str, anchor: str) -> list[dict[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return [_error(f"{field}.email", "The email parameter is required.", anchor)]
    if not _EMAIL.match(value["email"]):
        return [_error(f"{field}.email", "Does not contain a valid address.", anchor)]
    if "name" in value and not isinstance(value["name"], str):
        return [_error(f"{field}.name", "The name must be a string.", anchor)]
    return []


def _string_map_errors(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return [_error(field, "custom_args must be an object of string values.", "custom_args")]
    return [
        _error(f"{field}.{key}", "custom_args values must be strings.", "custom_args")
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every reason SendGrid would refuse this body, in field order."""
    errors: list[dict[str, Any]] = []
    has_template = isinstance(body.get("template_id"), str) and bool(body["template_id"])

    if not isinstance(body.get("from"), dict) or "email" not in body["from"]:
        errors.append(
            _error(
                "from.email",
                "The from object must be provided for every email "
                "send. It is an object that requires an email parameter, but may "
                "also contain a name parameter.",
                "from",
            )
        )
    else:
        errors += _email_errors(body["from"], "from", "from")

    personalizations = body.get("personalizations")
    every_has_subject = False
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "personalizations",
                "The personalizations field is required and must have at least 1 personalization.",
                "personalizations",
            )
        )
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                "personalizations",
                "The personalizations field is limited to "
                f"{MAX_PERSONALIZATIONS} personalizations per request.",
                "personalizations",
            )
        )
    else:
        recipients = 0
        every_has_subject = True
        for i, p in enumerate(personalizations):
            where = f"personalizations.{i}"
            if not isinstance(p, dict):
                errors.append(
                    _error(where, "Each personalization must be an object.", "personalizations")
                )
                every_has_subject = False
                continue
            to = p.get("to")
            if not isinstance(to, list) or not to:
                errors.append(
                    _error(
                        f"{where}.to",
                        "The to array is required for all "
                        "personalization objects, and must have at least one email "
                        "object with a valid email address.",
                        "personalizations.to",
                    )
                )
            for kind in ("to", "cc", "bcc"):
                people = p.get(kind)
                if not isinstance(people, list):
                    continue
                recipients += len(people)
                for j, person in enumerate(people):
                    errors += _email_errors(
                        person, f"{where}.{kind}.{j}", f"personalizations.{kind}"
                    )
            if "custom_args" in p:
                errors += _string_map_errors(p["custom_args"], f"{where}.custom_args")
            if not (isinstance(p.get("subject"), str) and p["subject"]):
                every_has_subject = False
        if recipients > MAX_RECIPIENTS:
            errors.append(
                _error(
                    "personalizations",
                    "The total number of recipients must be "
                    f"less than {MAX_RECIPIENTS}. This includes all recipients "
                    "defined within the to, cc, and bcc parameters, across each "
                    "object that you include in the personalizations array.",
                    "personalizations",
                )
            )

    subject = body.get("subject")
    if subject is not None and not isinstance(subject, str):
        errors.append(_error("subject", "The subject must be a string.", "subject"))
    elif not subject and not has_template and not every_has_subject:
        errors.append(
            _error(
                "subject",
                "The subject is required. You can get around this "
                "requirement if you use a template with a subject defined or if "
                "every personalization has a subject defined.",
                "subject",
            )
        )

    content = body.get("content")
    if content is None or content == []:
        if not has_template:
            errors.append(
                _error(
                    "content",
                    "Unless a valid template_id is provided, the content "
                    "parameter is required. There must be at least one defined "
                    "content block.",
                    "content",
                )
            )
    elif not isinstance(content, list):
        errors.append(_error("content", "The content parameter must be an array.", "content"))
    else:
        types = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                errors.append(
                    _error(f"content.{i}.type", "The content type is required.", "content.type")
                )
                continue
            types.append(block["type"])
            value = block.get("value")
            if not isinstance(value, str) or not value:
                errors.append(
                    _error(
                        f"content.{i}.value",
                        "The content value must be a string at least one character in length.",
                        "content.value",
                    )
                )
        if "text/plain" in types and types[0] != "text/plain":
            errors.append(
                _error(
                    "content",
                    "If present, text/plain content must be first, "
                    "followed by text/html, followed by any other content.",
                    "content",
                )
            )

    if "reply_to" in body:
        if "reply_to_list" in body:
            errors.append(
                _error(
                    "reply_to",
                    "The reply_to and reply_to_list parameters cannot be used together.",
                    "reply_to",
                )
            )
        errors += _email_errors(body["reply_to"], "reply_to", "reply_to")

    if "custom_args" in body and not isinstance(body["custom_args"], str):
        errors += _string_map_errors(body["custom_args"], "custom_args")

    categories = body.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            errors.append(
                _error("categories", "Categories must be an array of strings.", "categories")
            )
        elif len(categories) > MAX_CATEGORIES:
            errors.append(
                _error(
                    "categories",
                    f"Too many categories. Please use at most {MAX_CATEGORIES}.",
                    "categories",
                )
            )
    return errors


def _sandbox_mode(body: dict[str, Any]) -> bool:
    settings = body.get("mail_settings")
    if not isinstance(settings, dict):
        return False
    mode = settings.get("sandbox_mode")
    return isinstance(mode, dict) and mode.get("enable") is True


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(tags=["sendgrid"])

    @router.post(f"/{NAME}/v3/mail/send")
    async def mail_send(request: Request) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() != demo_secret(API_KEY_ENV):
            return JSONResponse(
                _errors({"message": "authorization required", "field": None, "help": None}),
                status_code=401,
            )
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return JSONResponse(_errors(_error(None, "Bad Request", "json")), status_code=400)
        problems = validate(body)
        if problems:
            return JSONResponse(_errors(*problems), status_code=400)
        if _sandbox_mode(body):
            return Response(status_code=200)
        message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        store: MailStore = ctx.stores[NAME]
        store.messages.append(
            {
                "message_id": message_id,
                "received_at": datetime.now(UTC).isoformat(),
                "request": body,
            }
        )
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    return router
