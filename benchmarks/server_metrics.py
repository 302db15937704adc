"""The Temporal server's own count of database requests, read from its Prometheus endpoint.

``persistence_requests`` counts every call the server makes to its store, by operation. Read
before and after a phase, the difference is what that phase cost the database, which is what
a SQLite-backed dev server spends most of its time on.
"""

from __future__ import annotations

import re
from collections import Counter

import httpx

_SAMPLE = re.compile(r"^persistence_requests\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
_OPERATION = re.compile(r'operation="(?P<name>[^"]+)"')


def parse(text: str) -> Counter[str]:
    """Database requests by operation, summed over the other labels."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None:
            continue
        operation = _OPERATION.search(sample["labels"])
        found[operation["name"] if operation else "?"] += int(float(sample["value"]))
    return found


async def read(port: int) -> Counter[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
        response.raise_for_status()
    return parse(response.text)


def render(phases: dict[str, tuple[Counter[str], int]], top: int = 8) -> list[str]:
    """One line per operation: requests per workflow in each phase (``name -> (requests, n)``)."""
    names = list(phases)
    totals: Counter[str] = Counter()
    for requests, _ in phases.values():
        totals.update(requests)
    header = "".join(f"{name:>14}" for name in names)
    lines = [f"server database requests per workflow, by operation:{header}"]

    def row(label: str, pick: dict[str, float]) -> str:
        return f"  {label:<50}" + "".join(f"{pick[n]:>14.1f}" for n in names)

    lines.append(
        row("all", {n: sum(r.values()) / max(count, 1) for n, (r, count) in phases.items()})
    )
    for operation, _ in totals.most_common(top):
        lines.append(
            row(operation, {n: r[operation] / max(count, 1) for n, (r, count) in phases.items()})
        )
    return lines
