"""SendGrid: the client's confirmation email (scope, who does the work, when, what we still need).

mail/send has no idempotency key: a retry after a lost 202 would send a second email. The
workflow records the send once the activity returns, and this activity is retried only on 429,
5xx and transport errors, where SendGrid most likely did not accept the message (DESIGN
invariant 2, best effort). ``custom_args.dispatch_id`` marks every message with its engagement,
so a duplicate can be traced in SendGrid's event data.

The SendGrid client is synchronous (urllib), so each send runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from datetime import date
from html import escape
from typing import Any
from urllib.parse import urlsplit

from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from temporalio import activity

from activities.errors import error_for_status, transport_error
from activities.roles import EmailActivities
from dispatch.config import SendGridConnector, secret
from dispatch.models import ClientConfirmationInput, EmailResult, StaffNotice, StaffRef

SYSTEM = "SendGrid"
OPERATION = "mail/send"
CATEGORY = "engagement-confirmation"
NOTICE_CATEGORY = "engagement-notice"
TIMEOUT_SECONDS = 20.0
"""Below the activity's start-to-close timeout, so a hung connection fails the attempt cleanly."""

# python_http_client logs request headers (the API key) and bodies (client PII) at DEBUG.
logging.getLogger("python_http_client").setLevel(logging.INFO)


class SendGridActivities(EmailActivities):
    def __init__(
        self, connector: SendGridConnector, client: SendGridAPIClient | None = None
    ) -> None:
        self._connector = connector
        if client is None:
            client = SendGridAPIClient(
                api_key=secret(connector.api_key_env), host=connector.base_url.rstrip("/")
            )
            # The library joins host + "/v3/mail/send"; the timeout goes to urllib's open().
            client.client.timeout = TIMEOUT_SECONDS
        self._client = client

    @activity.defn(name="email_client_confirmation")
    async def client_confirmation(self, input: ClientConfirmationInput) -> EmailResult:
        message = build_confirmation(self._connector, input)
        return await asyncio.to_thread(self._send, message)

    @activity.defn(name="email_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> EmailResult:
        message = build_notice(self._connector, input)
        return await asyncio.to_thread(self._send, message)

    def _send(self, message: dict[str, Any]) -> EmailResult:
        try:
            response = self._client.send(message)
        except SendGridHTTPError as err:
            headers = {str(k): str(v) for k, v in (err.headers or {}).items()}
            raise error_for_status(
                SYSTEM, int(err.status_code), headers, _error_reason(err.body), operation=OPERATION
            ) from None
        except (OSError, http.client.HTTPException) as err:
            # URLError (refused, DNS), timeouts and resets are all OSErrors under urllib.
            raise transport_error(SYSTEM, OPERATION, err) from None
        status = int(response.status_code)
        message_id = response.headers.get("X-Message-Id") if response.headers else None
        if status == 202:
            return EmailResult(sent=True, message_id=message_id)
        # 200 means sandbox mode: valid, but nothing was queued.
        return EmailResult(
            sent=False,
            message_id=message_id,
            detail=f"SendGrid answered HTTP {status}; the message was not queued",
        )


def _error_reason(body: Any) -> str:
    """SendGrid's ``errors[]`` as "field: message; ..." (field names help an operator most)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body or "")
        errors = json.loads(text).get("errors", [])
        parts = [
            f"{e['field']}: {e.get('message', '')}" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        ]
        return "; ".join(parts) or "no error detail"
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "unreadable error body"


# --- the message -----------------------------------------------------------------------------


def build_confirmation(
    connector: SendGridConnector, input: ClientConfirmationInput
) -> dict[str, Any]:
    """The mail/send body for one client confirmation (pure, so it is easy to inspect)."""
    s = input.summary
    recipient: dict[str, str] = {"email": input.to_email}
    if input.to_name:
        recipient["name"] = input.to_name
    sender: dict[str, str] = {
        "email": connector.from_email,
        "name": connector.from_name or input.firm_name,
    }
    message: dict[str, Any] = {
        # custom_args sits on the personalization, where SendGrid documents it as an object of
        # strings; the message-level field's type is ambiguous in the spec [P].
        "personalizations": [{"to": [recipient], "custom_args": {"dispatch_id": s.workflow_id}}],
        "from": sender,
        "subject": _one_line(f"Your {s.service_name} is scheduled"),
        "content": [
            {"type": "text/plain", "value": plain_text_body(input)},
            {"type": "text/html", "value": html_body(input)},
        ],
        "categories": [CATEGORY],
    }
    if connector.reply_to_assignee:
        message["reply_to"] = {"email": input.assignee.email, "name": input.assignee.name}
    return message


def build_notice(connector: SendGridConnector, input: StaffNotice) -> dict[str, Any]:
    """A checkpoint or escalation email to a staff member (plain text and HTML)."""
    s = input.summary
    footer = f"{s.client_name} - {s.service_name} - due {_long_date(s.due_date)}"
    plain = "\n\n".join([*input.lines, footer, *([s.pm_url] if s.pm_url else [])])
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in input.lines)
    link = (
        f'<p><a href="{escape(s.pm_url, quote=True)}">Open the engagement</a></p>'
        if s.pm_url
        else ""
    )
    return {
        "personalizations": [
            {
                "to": [{"email": input.recipient.email, "name": input.recipient.name}],
                "custom_args": {"dispatch_id": s.workflow_id, "notice": input.key},
            }
        ],
        "from": {"email": connector.from_email, "name": connector.from_name or "Dispatch"},
        "subject": _one_line(input.subject),
        "content": [
            {"type": "text/plain", "value": plain},
            {
                "type": "text/html",
                "value": f"{paragraphs}<p><small>{escape(footer)}</small></p>{link}",
            },
        ],
        "categories": [NOTICE_CATEGORY],
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _long_date(day: date) -> str:
    return f"{day:%A}, {day:%B} {day.day}, {day:%Y}"


def _greeting(input: ClientConfirmationInput) -> str:
    return f"Hello {input.to_name}," if input.to_name else "Hello,"


def _review_line(assignee: StaffRef, reviewer: StaffRef) -> str:
    return (
        f"Once {assignee.name} has prepared the work, {reviewer.name} "
        f"({reviewer.email}) reviews it before it is finalised."
    )


def plain_text_body(input: ClientConfirmationInput) -> str:
    s, a = input.summary, input.assignee
    lines = [
        _greeting(input),
        "",
        f"{input.firm_name} has scheduled your {s.service_name}.",
        "",
        "What we will do",
        f"  {s.title}",
    ]
    if s.scope_summary:
        lines.append(f"  {s.scope_summary}")
    lines += [
        "",
        "Who is working on it",
        f"  {a.name} is your accountant for this engagement. Reach them directly at {a.email}.",
    ]
    if input.reviewer is not None:
        lines.append(f"  {_review_line(a, input.reviewer)}")
    lines += ["", f"Estimated completion: {_long_date(input.estimated_completion)}", ""]
    if s.documents_needed:
        lines.append("Documents we still need from you")
        lines += [f"  - {doc}" for doc in s.documents_needed]
        lines.append(f"Please upload them securely here: {input.upload_link}")
    else:
        lines.append(
            "We have what we need to start. If anything changes, you can upload "
            f"documents securely here: {input.upload_link}"
        )
    lines += ["", f"Reply to this email to reach {a.name}.", "", input.firm_name]
    return "\n".join(lines) + "\n"


def html_body(input: ClientConfirmationInput) -> str:
    """The HTML part; every interpolated value is escaped, links only for http(s) URLs."""
    s, a = input.summary, input.assignee
    e = escape
    parts = [
        "<!doctype html>",
        '<html><body style="font-family: Arial, Helvetica, sans-serif; line-height: 1.45;">',
        f"<p>{e(_greeting(input))}</p>",
        f"<p>{e(input.firm_name)} has scheduled your <strong>{e(s.service_name)}</strong>.</p>",
        "<h3>What we will do</h3>",
        f"<p>{e(s.title)}</p>",
    ]
    if s.scope_summary:
        parts.append(f"<p>{e(s.scope_summary)}</p>")
    parts += [
        "<h3>Who is working on it</h3>",
        f"<p><strong>{e(a.name)}</strong> is your accountant for this engagement. Reach them "
        f'directly at <a href="mailto:{e(a.email)}">{e(a.email)}</a>.</p>',
    ]
    if input.reviewer is not None:
        parts.append(f"<p>{e(_review_line(a, input.reviewer))}</p>")
    parts.append(
        f"<p><strong>Estimated completion:</strong> {e(_long_date(input.estimated_completion))}</p>"
    )
    link = _link(input.upload_link)
    if s.documents_needed:
        parts.append("<h3>Documents we still need from you</h3>")
        parts.append("<ul>" + "".join(f"<li>{e(doc)}</li>" for doc in s.documents_needed) + "</ul>")
        parts.append(f"<p>Please upload them securely here: {link}</p>")
    else:
        parts.append(
            "<p>We have what we need to start. If anything changes, you can upload "
            f"documents securely here: {link}</p>"
        )
    parts += [
        f"<p>Reply to this email to reach {e(a.name)}.</p>",
        f"<p>{e(input.firm_name)}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _link(url: str) -> str:
    if urlsplit(url).scheme in ("http", "https"):
        return f'<a href="{escape(url)}">{escape(url)}</a>'
    return escape(url)
