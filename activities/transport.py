"""HTTP transports that never write to a connection the vendor may already have closed.

Servers close keep-alive connections that sit idle: uvicorn after 5 s, load balancers after
tens of seconds. A client that reuses such a connection fails inside the worker without ever
reaching the vendor (``BrokenPipeError`` from httplib2, ``RemoteProtocolError`` from httpx) and
the activity waits for Temporal's retry. Two rules here prevent that:

- a connection idle for longer than ``MAX_IDLE_SECONDS`` is closed instead of reused, which is
  below every idle timeout we know of (a new local connection costs well under a millisecond;
  a new TLS session to a vendor tens of milliseconds, only after a quiet spell);
- if a reused connection fails anyway (a server with an even shorter timeout, or one that
  closes it at the same moment), the request is sent once more on a new connection. Only the
  clients of calls that are idempotent by construction use this: the Google event id is fixed
  (a repeat is a 409), the Graph create carries a ``transactionId``, the CRM record an
  ``Idempotency-Key``; reads and deletes are idempotent anyway.

Each transport counts the connections it found dead (``dead_connections``) and logs each at INFO,
so a test or an operator can see how often a vendor closed one under a request.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable
from typing import Any

import httplib2
import httpx

MAX_IDLE_SECONDS = 2.0
log = logging.getLogger("activities.transport")

_DEAD_SOCKET: tuple[type[Exception], ...] = (
    BrokenPipeError,
    ConnectionResetError,  # includes http.client.RemoteDisconnected
    ConnectionAbortedError,
    http.client.BadStatusLine,
    http.client.IncompleteRead,
)


class FreshHttp(httplib2.Http):  # type: ignore[misc]  # httplib2 ships no type hints
    """httplib2 for googleapiclient: idle connections are closed, a dead reused one is replaced.

    httplib2 keeps one connection per host and writes to it whatever its age; when the server
    has closed it, the write fails with ``BrokenPipeError`` and httplib2 gives up. One instance
    serves one thread, like any ``httplib2.Http``.
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_idle: float = MAX_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout=timeout)
        # As googleapiclient's own build_http(): a 308 is Google's "resume incomplete" for
        # uploads, not a redirect to follow.
        codes: frozenset[int] = frozenset(httplib2.REDIRECT_CODES)
        self.redirect_codes = codes - {308}
        self._max_idle = max_idle
        self._clock = clock
        self._last_used: float | None = None
        self.dead_connections = 0

    def request(self, *args: Any, **kwargs: Any) -> tuple[httplib2.Response, bytes]:
        if self._last_used is not None and self._clock() - self._last_used > self._max_idle:
            self._close_connections()
        reused = any(getattr(conn, "sock", None) is not None for conn in self.connections.values())
        try:
            return self._send_request(*args, **kwargs)
        except _DEAD_SOCKET as err:
            if not reused:
                raise
            self.dead_connections += 1
            log.info("reused connection was closed by the server (%s); sending on a new one", err)
            self._close_connections()
            return self._send_request(*args, **kwargs)
        finally:
            self._last_used = self._clock()

    def _send_request(self, *args: Any, **kwargs: Any) -> tuple[httplib2.Response, bytes]:
        response, content = super().request(*args, **kwargs)
        return response, content

    def _close_connections(self) -> None:
        # Closed connections stay in the pool; httplib2 reconnects one whose socket is gone.
        for conn in self.connections.values():
            conn.close()


class FreshTransport(httpx.AsyncBaseTransport):
    """httpx transport: idle connections expire, a request on a dead one is sent once more.

    httpx already drops an idle connection it can see the server closed; this covers the moment
    the close and the next request cross, and servers that close sooner than ``keepalive_expiry``.
    """

    def __init__(self, max_idle: float = MAX_IDLE_SECONDS) -> None:
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=max_idle))
        self.dead_connections = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError) as err:
            self.dead_connections += 1
            log.info("connection failed before an answer (%s); sending on a new one", err)
            return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
