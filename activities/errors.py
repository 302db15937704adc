"""One way to turn a vendor's HTTP answer into a Temporal retry decision.

- 429 (and 503 with Retry-After): retryable, and the next attempt waits what the vendor asked
  (``next_retry_delay``), capped so a silly header cannot park an engagement for a day.
- 5xx, connection errors, timeouts: retryable with the activity's backoff; the activity's
  ``schedule_to_close_timeout`` bounds the total.
- 409: retryable (the caller re-reads and tries again).
- any other 4xx: non-retryable, surfaced with the vendor's reason so an operator can fix it.

Vendor error bodies can quote emails and names back at us; ``redact`` strips them before the
message reaches a log or the workflow history.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta

from temporalio.exceptions import ApplicationError

MAX_RETRY_AFTER = timedelta(minutes=5)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_LONG_TOKEN = re.compile(r"\b(xox[abpr]-[A-Za-z0-9-]+|SG\.[A-Za-z0-9._-]+|eyJ[A-Za-z0-9._-]+)")


def redact(text: str, limit: int = 300) -> str:
    text = _EMAIL.sub("<email>", text)
    text = _LONG_TOKEN.sub("<secret>", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after(headers: Mapping[str, str]) -> timedelta | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP-dates fall back to backoff)."""
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return min(timedelta(seconds=max(seconds, 0.0)), MAX_RETRY_AFTER)
    return None


def error_for_status(
    system: str, status: int, headers: Mapping[str, str], reason: str, *, operation: str
) -> ApplicationError:
    """The ApplicationError an activity should raise for a failed vendor call."""
    why = redact(reason)
    where = f"{system} {operation}"
    delay = retry_after(headers)
    if status == 429 or (status == 503 and delay is not None):
        return ApplicationError(
            f"{where}: rate limited (HTTP {status}); retry after "
            f"{delay.total_seconds() if delay else 'backoff'} s",
            type="RateLimited",
            next_retry_delay=delay,
        )
    if status >= 500:
        return ApplicationError(f"{where}: server error HTTP {status}: {why}", type="ServerError")
    if status == 409:
        return ApplicationError(f"{where}: conflict HTTP 409: {why}", type="Conflict")
    return ApplicationError(
        f"{where}: rejected with HTTP {status}: {why}",
        type=f"{system.replace(' ', '')}Rejected",
        non_retryable=True,
    )


def transport_error(system: str, operation: str, err: Exception) -> ApplicationError:
    """Connection refused, timeouts, resets: retryable."""
    return ApplicationError(
        f"{system} {operation}: transport error {type(err).__name__}: {redact(str(err))}",
        type="TransportError",
    )


def bad_response(system: str, operation: str, why: str, error_type: str) -> ApplicationError:
    """A well-formed but unexpected vendor payload: it will not fix itself on retry."""
    return ApplicationError(
        f"{system} {operation}: unexpected response: {redact(why)}",
        type=error_type,
        non_retryable=True,
    )


def check_read_window(system: str, start: date, end: date) -> None:
    """A time-tracker read over a window that ends before it starts is a caller's mistake."""
    if end < start:
        raise ApplicationError(
            f"{system} read: end {end} is before start {start}",
            type="InvalidInput",
            non_retryable=True,
        )
