"""SendGrid: the client's confirmation email (scope, who does the work, when, what we still need)
and staff notices by email, each sent once per meaning.

mail/send has no idempotency key, so a retry after a lost 202 would send a second email. Each
message carries ``custom_args.dispatch_key``, a digest stable for its meaning and for every
attempt, and the activity records its intent in Temporal before it sends (``activities.intent``):

- no earlier attempt sent, or SendGrid clearly refused the last one (4xx, 429, 500, 503):
  send;
- an earlier attempt may have sent (its answer was lost: a read timeout, a dropped connection,
  a 502/504 from a gateway, a worker that died): look the key up in SendGrid's Email Activity
  API first. Found: return that message id, sending nothing. Not found: the feed shows a message
  some time after it was queued (SendGrid does not say how long [A]), so the retry waits until
  ``feed_settle`` has passed since the earlier attempt's intent before it sends again.
  SendGrid allows 6 lookups a minute; ``FeedPace`` keeps a worker within that.
- the Email Activity API is not available to this account (it is a paid add-on; 401/403): the
  activity does not send again and fails for good with ``EmailDeliveryUnknown``, saying the
  earlier attempt may have delivered it. A client or staff member never gets the same email
  twice; the price is that in this rare case (a lost answer without the add-on) an email may be
  missing, and the engagement shows that side effect as failed with the reason. Sending again
  instead would not keep duplicates rare: with the worker killed every 5 s
  (``benchmarks.effects_chaos``) 0-6.5 % of emails had such an answer, run to run.

The SendGrid client is synchronous (urllib, a new connection per request, so no idle connection
is ever reused), so each call runs in a thread of the activities' own pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from html import escape
from typing import Any, TypeVar
from urllib.parse import urlsplit

from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import intent
from activities.errors import MAX_RETRY_AFTER, error_for_status, transport_error
from activities.roles import EmailActivities
from dispatch.config import SendGridConnector, secret
from dispatch.models import ClientConfirmationInput, EmailResult, StaffNotice, StaffRef

T = TypeVar("T")
SYSTEM = "SendGrid"
OPERATION = "mail/send"
LOOKUP = "Email Activity lookup"
CATEGORY = "engagement-confirmation"
NOTICE_CATEGORY = "engagement-notice"
KEY_ARG = "dispatch_key"
SEND_THREADS = 16
TIMEOUT_SECONDS = 20.0
"""Below the activity's start-to-close timeout, so a hung connection fails the attempt cleanly."""
FEED_SETTLE = timedelta(minutes=2)
"""How long after a send we trust the Email Activity feed to show it [A]."""
FEED_REFUSAL_MEMORY = 600.0
"""Seconds a worker remembers that the Email Activity API refused this account's key."""
_GATEWAY_STATUSES = frozenset({502, 504})
"""Answers from a proxy in front of mail/send: the request may have been queued behind it."""

# python_http_client logs request headers (the API key) and bodies (client PII) at DEBUG.
logging.getLogger("python_http_client").setLevel(logging.INFO)


class FeedPace:
    """Keeps one worker's Email Activity lookups within SendGrid's limit (6 a minute [C]).

    Lookups are rare, only after an ambiguous answer, but a worker that died leaves several at
    once; asking anyway would collect 429s and spend attempts. A lookup without a free slot is
    put off by the time until one frees plus a random part of the window, so the waiting ones
    do not all come back at the same moment.
    """

    def __init__(
        self,
        limit: int = 6,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._jitter = jitter
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def claim(self) -> float:
        """0.0 when a lookup may go now (it is counted); else the seconds to wait first."""
        with self._lock:
            now = self._clock()
            while self._calls and self._calls[0] <= now - self._window:
                self._calls.popleft()
            if len(self._calls) < self._limit:
                self._calls.append(now)
                return 0.0
            return self._calls[0] + self._window - now + self._jitter() * self._window


class _SendFailed(Exception):
    def __init__(self, error: ApplicationError, *, refused: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.refused = refused
        """True when SendGrid certainly did not queue the message."""


class SendGridActivities(EmailActivities):
    def __init__(
        self,
        connector: SendGridConnector,
        client: SendGridAPIClient | None = None,
        *,
        feed_settle: timedelta = FEED_SETTLE,
        feed_pace: FeedPace | None = None,
    ) -> None:
        self._connector = connector
        if client is None:
            client = SendGridAPIClient(
                api_key=secret(connector.api_key_env), host=connector.base_url.rstrip("/")
            )
            # The library joins host + "/v3/mail/send"; the timeout goes to urllib's open().
            client.client.timeout = TIMEOUT_SECONDS
        self._client = client
        self._feed_settle = feed_settle
        self._feed_pace = feed_pace or FeedPace()
        self._feed_refused: tuple[float, str] | None = None
        """Until when (monotonic) the Email Activity API is taken as refused, and its answer."""
        # Its own threads: in the event loop's shared pool a send could wait behind calendar
        # calls after its intent was recorded, and a worker dying then leaves a needless doubt.
        self._threads = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="sendgrid")

    @activity.defn(name="email_client_confirmation")
    async def client_confirmation(self, input: ClientConfirmationInput) -> EmailResult:
        message = build_confirmation(self._connector, input)
        return await self._send_once(message, confirmation_key(input, activity.info().activity_id))

    @activity.defn(name="email_staff_notice")
    async def staff_notice(self, input: StaffNotice) -> EmailResult:
        return await self._send_once(build_notice(self._connector, input), notice_key(input))

    async def _send_once(self, message: dict[str, Any], key: str) -> EmailResult:
        for personalization in message["personalizations"]:
            personalization["custom_args"][KEY_ARG] = key
        before = intent.earlier(key)
        if before is not None and before.state == intent.SENDING:
            found = await self._sent_before(key, before)
            if found is not None:
                activity.logger.info("SendGrid message already sent by attempt %d", before.attempt)
                return EmailResult(
                    sent=True,
                    message_id=found,
                    detail=f"already sent by attempt {before.attempt}; not sent again",
                )
        await intent.record(key, intent.SENDING)
        try:
            return await self._in_thread(self._send, message)
        except _SendFailed as failed:
            if failed.refused and not failed.error.non_retryable:
                # The next attempt can send without asking the activity feed first; if this
                # record fails, it asks the feed, which is slower but just as safe.
                with contextlib.suppress(ApplicationError):
                    await intent.record(key, intent.REFUSED)
            raise failed.error from None

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:
        context = contextvars.copy_context()  # the activity's context, for its logger
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(context.run, call, *args)
        )

    async def _sent_before(self, key: str, before: intent.Intent) -> str | None:
        """The X-Message-Id of the message an earlier attempt sent; None when it did not."""
        refused = self._feed_refused
        if refused is not None and time.monotonic() < refused[0]:
            raise _delivery_unknown(before, refused[1])
        wait = self._feed_pace.claim()
        if wait > 0:
            raise ApplicationError(
                f"{SYSTEM} {LOOKUP}: this worker used its Email Activity requests for the "
                f"minute; asking in {wait:.0f} s",
                type="RateLimited",
                next_retry_delay=timedelta(seconds=wait),
            )
        found = await self._in_thread(self._look_up, key, before)
        if found is not None:
            return found
        wait = before.at + self._feed_settle.total_seconds() - time.time()
        if wait > 0:
            raise ApplicationError(
                f"{SYSTEM} {LOOKUP}: attempt {before.attempt} may have sent this message and "
                f"the activity feed does not show it yet; checking again in {wait:.0f} s",
                type="AwaitingEmailActivity",
                next_retry_delay=timedelta(seconds=min(wait, MAX_RETRY_AFTER.total_seconds())),
            )
        return None

    def _look_up(self, key: str, before: intent.Intent) -> str | None:
        query = f"unique_args['{KEY_ARG}']=\"{key}\""
        try:
            response = self._client.client.messages.get(query_params={"query": query, "limit": 10})
        except SendGridHTTPError as err:
            status = int(err.status_code)
            headers = _headers(err.headers)
            if status in (401, 403):
                # No add-on, or a key without Email Activity access: it will not change soon,
                # so the next doubtful sends are settled without asking.
                why = f"HTTP {status}: {_error_reason(err.body)}"
                self._feed_refused = (time.monotonic() + FEED_REFUSAL_MEMORY, why)
                raise _delivery_unknown(before, why) from None
            if status == 429:
                reset = {k.lower(): v for k, v in headers.items()}.get("x-ratelimit-reset")
                headers["Retry-After"] = _seconds_until(reset)
            raise error_for_status(
                SYSTEM, status, headers, _error_reason(err.body), operation=LOOKUP
            ) from None
        except (OSError, http.client.HTTPException) as err:
            raise transport_error(SYSTEM, LOOKUP, err) from None
        try:
            rows = json.loads(response.body or b"{}").get("messages") or []
        except (ValueError, AttributeError):
            rows = []
        for row in rows:
            if isinstance(row, dict) and row.get("msg_id"):
                # msg_id is the X-Message-Id mail/send answered, plus a per-recipient suffix.
                return str(row["msg_id"]).split(".", 1)[0]
        return None

    def _send(self, message: dict[str, Any]) -> EmailResult:
        try:
            response = self._client.send(message)
        except SendGridHTTPError as err:
            status = int(err.status_code)
            error = error_for_status(
                SYSTEM,
                status,
                _headers(err.headers),
                _error_reason(err.body),
                operation=OPERATION,
            )
            raise _SendFailed(error, refused=status not in _GATEWAY_STATUSES) from None
        except urllib.error.URLError as err:
            # urllib raises URLError while connecting and writing the request: it never
            # reached SendGrid whole, so nothing was queued.
            raise _SendFailed(transport_error(SYSTEM, OPERATION, err), refused=True) from None
        except (OSError, http.client.HTTPException) as err:
            # Reading the answer failed (timeout, reset): SendGrid may have queued it.
            raise _SendFailed(transport_error(SYSTEM, OPERATION, err), refused=False) from None
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


def _delivery_unknown(before: intent.Intent, why: str) -> ApplicationError:
    return ApplicationError(
        f"{SYSTEM} {OPERATION}: attempt {before.attempt} may have sent this message (its answer "
        f"was lost) and the Email Activity API cannot confirm it ({why}); not sending it again "
        "so nobody gets it twice",
        type="EmailDeliveryUnknown",
        non_retryable=True,
    )


def confirmation_key(input: ClientConfirmationInput, activity_id: str) -> str:
    """One key per confirmation the workflow asks for.

    The activity id is the same on every attempt (and on a replay or reset of the workflow);
    with what the email says, it tells this confirmation from a later one about a new assignee.
    """
    if input.key:
        # The workflow names the confirmation (engagement and assignment round).
        return _digest("client-confirmation", input.key, input.to_email.lower())
    s = input.summary
    return _digest(
        "client-confirmation",
        s.workflow_id,
        activity_id,
        input.assignee.id,
        input.reviewer.id if input.reviewer else "",
        input.estimated_completion.isoformat(),
        input.to_email.lower(),
    )


def notice_key(input: StaffNotice) -> str:
    """One key per notice: its own key names the engagement, kind and moment."""
    return _digest("staff-notice", input.key, input.recipient.email.lower())


def _digest(*parts: str) -> str:
    # A digest keeps emails out of custom_args and needs no quoting inside a query.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def _headers(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (raw or {}).items()}


def _seconds_until(reset: str | None) -> str:
    try:
        return str(max(1, int(float(reset or "") - time.time())))
    except ValueError:
        return "10"


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
