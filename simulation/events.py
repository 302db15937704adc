"""The event log: one record per thing that happened, the only input the metrics read.

Schema (dispatch-anchors.md §4.8, extended where the metrics need a fact the log must carry):

| type | person | role | hours | data |
|---|---|---|---|---|
| ``staff`` | id | - | weekly chargeable | tier, skills |
| ``capacity`` | id | - | chargeable hours that day | day (0 when absent) |
| ``absence_start`` / ``absence_end`` | id | - | - | day, planned |
| ``job_created`` | - | - | estimate | client, type, due, is_return, prior_preparer, ... |
| ``job_ready`` | - | - | - | - |
| ``dispatch_requested`` | - | - | - | request, reason (new / declined / extension ...) |
| ``assigned`` | id | preparer / reviewer | estimate booked | request, forced, auto, due, ... |
| ``accepted`` / ``reassign_requested`` | id | preparer | - | - |
| ``npr_raised`` / ``npr_resolved`` | - | - | - | request, reason |
| ``released`` | id | role | - | reason |
| ``work_started`` / ``review_started`` | id | role | - | - |
| ``work_logged`` | id | role | hours | day |
| ``submitted_for_review`` / ``review_returned`` | id | role | - | - |
| ``completed`` | - | - | - | - |
| ``extended`` | - | - | - | new_due |
| ``escalation_fired`` | id or - | - | - | kind (not_started / status_check / past_due) |

``t`` is simulated hours since the epoch (``simulation.calendar``). ``explanation`` holds the
policy's own account of the decision: for production policies, the ``AssignmentResult`` with
every candidate's per-criterion scores, serialised only when the log is written out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel


class Record:
    __slots__ = ("data", "hours", "job", "person", "role", "t", "type")

    def __init__(
        self,
        t: float,
        type: str,
        job: str | None = None,
        person: str | None = None,
        role: str | None = None,
        hours: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.t = t
        self.type = type
        self.job = job
        self.person = person
        self.role = role
        self.hours = hours
        self.data = data

    def get(self, key: str, default: Any = None) -> Any:
        return default if self.data is None else self.data.get(key, default)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(self.t, 4), "type": self.type}
        for key in ("job", "person", "role"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.hours is not None:
            out["hours"] = round(self.hours, 4)
        if self.data:
            out.update({k: _plain(v) for k, v in self.data.items()})
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Record:
        rest = {
            k: v for k, v in raw.items() if k not in ("t", "type", "job", "person", "role", "hours")
        }
        return cls(
            float(raw["t"]),
            str(raw["type"]),
            raw.get("job"),
            raw.get("person"),
            raw.get("role"),
            raw.get("hours"),
            rest or None,
        )

    def __repr__(self) -> str:
        return f"Record({self.to_json()!r})"


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def write_jsonl(records: Iterable[Record], out: TextIO) -> int:
    count = 0
    for record in records:
        out.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")
        count += 1
    return count


def save_jsonl(records: Iterable[Record], path: Path) -> int:
    with path.open("w", encoding="utf-8") as out:
        return write_jsonl(records, out)


def load_jsonl(path: Path) -> list[Record]:
    with path.open(encoding="utf-8") as src:
        return [Record.from_json(json.loads(line)) for line in src if line.strip()]
