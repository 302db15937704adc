"""Intent records: what an earlier attempt of this activity may already have done.

Some vendor calls have no idempotency key (SendGrid's mail/send): a retry after a lost answer
would repeat the effect. Before such a call an activity records its intent *in Temporal*, through
the client's heartbeat, which the server acknowledges before the call leaves (the SDK's own
``activity.heartbeat`` is buffered and may still be in the worker when it dies). The next attempt
reads the record back from ``activity.info().heartbeat_details``:

- nothing: no earlier attempt got as far as calling the vendor, so calling is safe;
- ``refused``: the vendor clearly turned the last call away (a 4xx, a 429), so calling is safe;
- ``sending``: the last call may have succeeded and its answer been lost; ask the vendor first.

A server that refuses the record (this attempt timed out and a newer one runs, the activity was
cancelled, Temporal is unreachable) stops the attempt before it calls anything: a stale attempt
can never act behind the back of the current one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal

from temporalio import activity
from temporalio.client import AsyncActivityCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

State = Literal["sending", "refused"]
SENDING: State = "sending"
REFUSED: State = "refused"
RPC_TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True)
class Intent:
    key: str
    """The effect's stable key (one per meaning, the same on every attempt)."""
    state: State
    at: float
    """Unix seconds when it was recorded."""
    attempt: int


def earlier(key: str) -> Intent | None:
    """What an earlier attempt recorded for ``key``; None when nothing was."""
    for details in reversed(activity.info().heartbeat_details):
        if isinstance(details, dict) and details.get("key") == key:
            return _parse(details)
    return None


async def record(key: str, state: State) -> Intent:
    """Record ``state`` for ``key`` and return once Temporal has it (raises if it will not)."""
    intent = Intent(key=key, state=state, at=time.time(), attempt=activity.info().attempt)
    details = asdict(intent)
    try:
        client = activity.client()
    except RuntimeError:
        # Outside a worker (ActivityEnvironment in tests) the local heartbeat is all there is.
        activity.heartbeat(details)
        return intent
    handle = client.get_async_activity_handle(task_token=activity.info().task_token)
    try:
        await handle.heartbeat(details, rpc_timeout=RPC_TIMEOUT)
    except AsyncActivityCancelledError:
        raise ApplicationError(
            "the activity was cancelled, paused or reset: nothing was sent",
            type="IntentNotRecorded",
        ) from None
    except RPCError as err:
        # NOT_FOUND: this attempt is no longer the current one (it timed out).
        raise ApplicationError(
            f"Temporal did not record the intent ({err.status.name}): nothing was sent",
            type="IntentNotRecorded",
        ) from None
    return intent


def _parse(details: dict[str, Any]) -> Intent | None:
    state = details.get("state")
    if state not in (SENDING, REFUSED):
        return None
    try:
        return Intent(
            key=str(details["key"]),
            state=SENDING if state == SENDING else REFUSED,
            at=float(details["at"]),
            attempt=int(details["attempt"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
