"""Every request the emulators receive, in order, for tests and the demo to assert on."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

_REDACTED_HEADERS = {"authorization", "accesskey", "x-slack-signature", "signature"}


@dataclass
class RecordedRequest:
    seq: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    status: int = 0
    fault: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
            "fault": self.fault,
        }


@dataclass
class Recorder:
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def record(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> RecordedRequest:
        shown = {
            k.lower(): ("<redacted>" if k.lower() in _REDACTED_HEADERS else v)
            for k, v in headers.items()
        }
        with self._lock:
            self._seq += 1
            entry = RecordedRequest(
                seq=self._seq,
                method=method,
                path=path,
                query=query,
                headers=shown,
                body=body.decode("utf-8", errors="replace"),
            )
            self.requests.append(entry)
            return entry

    def select(
        self, prefix: str | None = None, method: str | None = None, since: int = 0
    ) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.seq > since
                and (prefix is None or r.path.startswith(prefix))
                and (method is None or r.method == method.upper())
            ]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
