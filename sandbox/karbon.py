"""Karbon emulator: the slice of Karbon's v3 API the dispatcher uses, under ``/karbon/v3``.

Follows Karbon's public API reference (karbonhq/karbon-api-reference ``KarbonAPI.json``):
both auth headers, OData-style ``$filter``/``$top``/``$skip`` with ``@odata.nextLink`` paging,
Karbon's error bodies, PUT/PATCH answering 204, the PATCH whitelist, and thin signed webhooks
sent to the ``Work`` subscription's ``TargetUrl`` when a work item is created or changed.
Choices the reference does not pin down are marked [A] (assumption).

Store knobs a test or the demo may turn (``ctx.stores["karbon"].<name> = ...``):
``page_size`` (server page for work items and users, default 100), ``time_entry_page_size``
(default 1000), ``coalesce_seconds`` (0 = one webhook per change; Karbon itself waits 60 s),
``delivery_attempts`` / ``retry_base_delay`` (webhook retries).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import ssl
import string
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from app.secrets_demo import demo_secret
from dispatch.config import KarbonConnector
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "karbon"

_BEARER_ENV: str = KarbonConnector.model_fields["bearer_token_env"].default
_ACCESS_KEY_ENV: str = KarbonConnector.model_fields["access_key_env"].default

PRIMARY_STATUSES: dict[str, str] = {
    "Planned": "Planned",
    "ReadyToStart": "Ready To Start",
    "InProgress": "In Progress",
    "Waiting": "Waiting",
    "Completed": "Completed",
}
"""Wire value -> display form (the form ``WorkStatus`` strings use)."""

SECONDARY_STATUSES: dict[str, list[str]] = {
    "Planned": [],
    "ReadyToStart": ["Assigned"],
    "InProgress": ["Preparing", "Ready for Review", "In Review"],
    "Waiting": ["Waiting for client"],
    "Completed": [],
}
"""The sandbox tenant's secondary statuses: Karbon has no built-in "Assigned" (tenant-defined)."""

WEBHOOK_TYPES = [
    "Contact",
    "CustomField",
    "Work",
    "Note",
    "User",
    "IntegrationTask",
    "Invoice",
    "EstimateSummary",
]
_SIGNING_KEY = re.compile(r"^[A-Za-z0-9_-]{16,}$")

PATCHABLE = [
    "Title",
    "Description",
    "StartDate",
    "DueDate",
    "DeadlineDate",
    "AssigneeEmailAddress",
    "WorkType",
]
"""PATCH whitelist (Karbon release note 2026-06-11); status changes need a full PUT."""

REQUIRED_ON_WRITE = ["AssigneeEmailAddress", "Title", "ClientKey", "ClientType", "StartDate"]
OPTIONAL_ON_WRITE = [
    "RelatedClientGroupKey",
    "DueDate",
    "DeadlineDate",
    "WorkType",
    "WorkStatus",
    "PrimaryStatus",
    "SecondaryStatus",
    "WorkTemplateKey",
    "WorkScheduleKey",
    "EstimatedBudget",
    "Description",
    "ClientTaskRecipient",
    "FeeSettings",
    "UserRoleAssignments",
]
_DATE_FIELDS = ("StartDate", "DueDate", "DeadlineDate")

WEBHOOK_FIELDS = (
    "Title",
    "AssigneeEmailAddress",
    "PrimaryStatus",
    "SecondaryStatus",
    "WorkStatus",
    "StartDate",
    "DueDate",
    "Description",
    "DeadlineDate",
)
"""Changes Karbon notifies a ``Work`` subscription about (name, assignee, status, dates, text)."""

WORK_ITEM_FILTERS: dict[str, set[str]] = {
    "AssigneeEmailAddress": {"eq", "contains"},
    "ClientKey": {"eq"},
    "PrimaryStatus": {"eq"},
    "StartDate": {"ge", "le"},
    "DeadlineDate": {"ge", "le"},
    "Title": {"eq", "contains"},
    "WorkScheduleKey": {"eq"},
    "WorkStatus": {"eq", "contains"},
    "WorkTemplateKey": {"eq"},
    "WorkType": {"eq", "contains"},
}
USER_FILTERS: dict[str, set[str]] = {"Name": {"eq", "contains"}, "EmailAddress": {"eq", "contains"}}
TIME_ENTRY_FILTERS: dict[str, set[str]] = {
    "Date": {"eq", "gt", "ge", "lt", "le"},
    **{
        k: {"eq"}
        for k in (
            "TimesheetKey",
            "EntityKey",
            "WorkItemKey",
            "ClientKey",
            "UserKey",
            "RoleName",
            "TaskTypeName",
        )
    },
}


# --- wire helpers ------------------------------------------------------------------------------


def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _invalid_model(target: str, message: str) -> JSONResponse:
    return _error(
        400,
        "4003",
        "Invalid Model.",
        {"code": "InvalidProperty", "target": f"workItem.{target}", "message": message},
    )


def _dt(value: date | datetime) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{value.isoformat()}T00:00:00Z"


def _now() -> str:
    return _dt(datetime.now(UTC))


def _parse_dt(value: Any) -> datetime | None:
    """Karbon dates are ``YYYY-MM-DDTHH:MM:SSZ``; a bare date is accepted as midnight UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _key(seed: str, length: int = 12) -> str:
    """A Karbon-looking perma key (base62), deterministic so runs and resets are repeatable."""
    alphabet = string.digits + string.ascii_letters
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:16], "big")
    chars: list[str] = []
    while len(chars) < length:
        number, rem = divmod(number, 62)
        chars.append(alphabet[rem])
    return "".join(chars)


def user_id_for(email: str) -> str:
    """Users get a deterministic GUID per email, so other fixtures can refer to them."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"karbon-sandbox/user/{email.lower()}"))


def _api_root(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/{NAME}"


# --- $filter (the subset of OData Karbon documents) ---------------------------------------------


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    prop: str
    op: str
    value: Any


_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punc>[(),])|(?P<word>[^\s(),']+))")
_ODATA_OPERATOR_NAMES = {"or": "Or", "not": "Not", "ne": "NotEqual", "has": "Has", "in": "In"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup or "word"
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _literal(kind: str, raw: str) -> Any:
    if kind == "str":
        return raw[1:-1].replace("''", "'")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if re.match(r"^\d{4}-\d{2}-\d{2}", raw):
        parsed = _parse_dt(raw)
        if parsed is None:
            raise FilterError(f"The value '{raw}' is not a valid DateTimeOffset.")
        return parsed
    try:
        return float(raw)
    except ValueError:
        raise FilterError(f"Syntax error: '{raw}' is not a valid literal.") from None


def parse_filter(text: str, allowed: dict[str, set[str]], entity: str) -> list[Condition]:
    """``A eq 'x' and (B ge 2024-01-01T00:00:00Z) and contains(C, 'y')`` -> conditions (ANDed)."""
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    i = 0

    def need(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != kind or (value and tokens[i][1] != value):
            raise FilterError(f"Syntax error in $filter '{text}'.")
        i += 1
        return tokens[i - 1][1]

    def check(prop: str, op: str) -> None:
        if prop not in allowed:
            raise FilterError(
                f"Could not find a property named '{prop}' on type "
                f"'KarbonService.{entity}SummaryDTO'."
            )
        if op not in allowed[prop]:
            raise FilterError(f"The operator '{op}' is not supported for property '{prop}'.")

    expect_term = True
    while i < len(tokens):
        kind, value = tokens[i]
        if not expect_term:
            if kind == "word" and value.lower() == "and":
                i += 1
                expect_term = True
                continue
            if kind == "punc" and value == ")":
                i += 1
                continue
            name = _ODATA_OPERATOR_NAMES.get(value.lower(), value)
            raise FilterError(
                f"Logical operator '{name}' is not allowed. To allow it, set the "
                "'AllowedLogicalOperators' property on EnableQueryAttribute or "
                "QueryValidationSettings."
            )
        if kind == "punc" and value == "(":
            i += 1
            continue
        if (
            kind == "word"
            and value.lower() in ("contains", "startswith")
            and i + 1 < len(tokens)
            and tokens[i + 1][1] == "("
        ):
            func = value.lower()
            i += 2
            prop = need("word")
            need("punc", ",")
            arg = _literal("str", need("str"))
            need("punc", ")")
            check(prop, "contains" if func == "contains" else func)
            conditions.append(Condition(prop, func, arg))
            expect_term = False
            continue
        if kind == "word" and value.lower() == "not":
            raise FilterError(
                "Logical operator 'Not' is not allowed. To allow it, set the "
                "'AllowedLogicalOperators' property on EnableQueryAttribute or "
                "QueryValidationSettings."
            )
        prop = need("word")
        op = need("word").lower()
        if op in _ODATA_OPERATOR_NAMES:
            raise FilterError(
                f"Logical operator '{_ODATA_OPERATOR_NAMES[op]}' is not allowed. To "
                "allow it, set the 'AllowedLogicalOperators' property on "
                "EnableQueryAttribute or QueryValidationSettings."
            )
        if op not in ("eq", "gt", "ge", "lt", "le"):
            raise FilterError(f"Syntax error: unknown operator '{op}'.")
        if i >= len(tokens):
            raise FilterError(f"Syntax error in $filter '{text}'.")
        lit_kind, lit_raw = tokens[i]
        i += 1
        check(prop, op)
        conditions.append(Condition(prop, op, _literal(lit_kind, lit_raw)))
        expect_term = False
    if expect_term and conditions:
        raise FilterError(f"Syntax error in $filter '{text}'.")
    return conditions


def _matches(record: dict[str, Any], conditions: Iterable[Condition]) -> bool:
    for cond in conditions:
        actual = record.get(cond.prop)
        if cond.op in ("contains", "startswith"):
            text = str(actual or "").casefold()
            wanted = str(cond.value).casefold()
            if not (wanted in text if cond.op == "contains" else text.startswith(wanted)):
                return False
            continue
        left: Any = actual
        right: Any = cond.value
        if isinstance(right, datetime):
            left = _parse_dt(actual)
            if left is None:
                return False
        elif isinstance(right, str):
            # [A] string equality is case-insensitive, as Karbon's SQL-backed filters behave.
            left, right = str(actual or "").casefold(), right.casefold()
        elif left is None or right is None:
            if cond.op != "eq" or left is not right:
                return False
            continue
        ok = {
            "eq": left == right,
            "gt": left > right,
            "ge": left >= right,
            "lt": left < right,
            "le": left <= right,
        }[cond.op]
        if not ok:
            return False
    return True


# --- store ------------------------------------------------------------------------------------


@dataclass
class KarbonStore:
    users: list[dict[str, Any]]
    clients: dict[str, dict[str, Any]]
    """ClientKey -> {ClientKey, ClientType, Name, EmailAddress, FirstName, LastName}."""
    time_entries: list[dict[str, Any]]
    tenant_key: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Work-item keys include it: a second sandbox run must not reuse the first run's keys,
    which would collide with workflow ids a persisted Temporal server still remembers."""
    inactive_emails: set[str] = field(default_factory=set)
    work_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    """Bumped on every change; Karbon answers a racing PUT/PATCH with 409 (code 4020)."""
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    coalesce_seconds: float = 0.0
    page_size: int = 100
    time_entry_page_size: int = 1000
    delivery_attempts: int = 10
    retry_base_delay: float = 0.2
    delivery_timeout: float = 5.0
    created: int = 0
    _pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def user_by_email(self, email: str | None) -> dict[str, Any] | None:
        wanted = (email or "").casefold()
        return next((u for u in self.users if u["EmailAddress"].casefold() == wanted), None)

    def dump(self) -> dict[str, Any]:
        return {
            "work_items": [
                {**item, "_version": self.versions.get(key, 0)}
                for key, item in self.work_items.items()
            ],
            "subscriptions": [
                {
                    "WebhookType": s["WebhookType"],
                    "TargetUrl": s["TargetUrl"],
                    "signed": bool(s.get("SigningKey")),
                }
                for s in self.subscriptions.values()
            ],
            "deliveries": [dict(d) for d in self.deliveries],
            "coalesce_seconds": self.coalesce_seconds,
        }


def _is_individual(client_id: str) -> bool:
    """[A] Sandbox rule: households (ids naming a family or household) are Karbon Contacts;
    every other client is an Organization."""
    return any(word in client_id.lower() for word in ("family", "household"))


def client_type_for(client_id: str) -> str:
    """The Karbon ClientType this emulator gives a seeded client (for scripts creating work)."""
    return "Contact" if _is_individual(client_id) else "Organization"


def create_store(seed: SandboxSeed) -> KarbonStore:
    users: list[dict[str, Any]] = []
    inactive: set[str] = set()
    for member in seed.staff:
        users.append(
            {
                "Id": user_id_for(member.email),
                "Name": member.name,
                "EmailAddress": member.email,
                "BillableRate": None,
                "CapacityMinutesPerWeek": round(member.weekly_capacity_hours * 60),
                "Permissions": [],
                "Roles": [],
                "Teams": [],
            }
        )
        if not member.active:
            inactive.add(member.email.casefold())
    clients: dict[str, dict[str, Any]] = {}
    for client in seed.clients:
        first, _, last = client.name.rpartition(" ")
        clients[client.id] = {
            "ClientKey": client.id,
            "ClientType": "Contact" if _is_individual(client.id) else "Organization",
            "Name": client.name,
            "FirstName": first or client.name,
            "LastName": last if first else "",
            "EmailAddress": client.email,
        }
    return KarbonStore(
        users=users,
        clients=clients,
        time_entries=_time_entries(seed),
        tenant_key=_key("tenant"),
        inactive_emails=inactive,
    )


def _spread(total_hours: float, days: list[date]) -> list[tuple[date, int]]:
    """Whole minutes per day that add up exactly to the total."""
    total = round(total_hours * 60)
    if not days or total <= 0:
        return []
    base, extra = divmod(total, len(days))
    return [(d, base + (1 if i < extra else 0)) for i, d in enumerate(days)]


def _time_entries(seed: SandboxSeed) -> list[dict[str, Any]]:
    """This week's logged hours over Monday..today (weekdays), last week's over Mon-Fri."""
    elapsed = min(seed.today.weekday() + 1, 5)
    this_week = [seed.week_start + timedelta(days=i) for i in range(elapsed)]
    last_week = [seed.week_start - timedelta(days=7 - i) for i in range(5)]
    entries = []
    for member in seed.staff:
        user_key = user_id_for(member.email)  # [A] time entries' UserKey equals the Users Id
        for week, hours in (
            (last_week, member.logged_last_week),
            (this_week, member.logged_this_week),
        ):
            sheet = _key(f"timesheet-{user_key}-{week[0] if week else seed.week_start}")
            for day, minutes in _spread(hours, week):
                stamp = _dt(datetime.combine(day, time(17), UTC))
                entries.append(
                    {
                        "IndividualTimeEntryKey": _key(f"entry-{user_key}-{day}"),
                        "TimesheetKey": sheet,
                        "EntityKey": None,
                        "WorkItemKey": None,
                        "ClientKey": None,
                        "ClientType": None,
                        "UserKey": user_key,
                        "RoleName": None,
                        "TaskTypeName": "Client Work",
                        "TaskTypeIsBillable": True,
                        "Date": _dt(day),
                        "Minutes": minutes,
                        "Description": None,
                        "HourlyRate": None,
                        "TotalCost": None,
                        "BilledStatus": "Unbilled",
                        "CreatedDate": stamp,
                        "ModifiedDate": stamp,
                        "FeeType": "TimeAndMaterials",
                    }
                )
    return entries


# --- outbound webhooks ------------------------------------------------------------------------


def signature(signing_key: str, body: bytes) -> str:
    """[A] Karbon documents a 64-hex ``Signature`` header but not its input: we sign the raw
    body with HMAC-SHA256 keyed by the subscription's SigningKey."""
    return hmac.new(signing_key.encode(), body, hashlib.sha256).hexdigest()


def _spawn(store: KarbonStore, coro: Awaitable[None]) -> None:
    async def run() -> None:
        await coro

    task = asyncio.get_running_loop().create_task(run())
    store._tasks.add(task)
    task.add_done_callback(store._tasks.discard)


def _notify(store: KarbonStore, key: str, action: str) -> None:
    if "Work" not in store.subscriptions:
        return
    event = {
        "ResourcePermaKey": key,
        "ResourceType": "Work",
        "ActionType": action,
        "TimeStamp": _now(),
    }
    if store.coalesce_seconds <= 0:
        _spawn(store, _deliver(store, event))
        return
    pending = store._pending.get(key)
    if pending is not None:
        # [A] Within the window one notification goes out, stamped with the latest change;
        # a creation stays "Inserted".
        pending["TimeStamp"] = event["TimeStamp"]
        return
    store._pending[key] = event

    async def later() -> None:
        await asyncio.sleep(store.coalesce_seconds)
        store._pending.pop(key, None)
        await _deliver(store, event)

    _spawn(store, later())


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every delivery: building one loads the CA bundle, which cost the
    emulator more CPU than everything else it does in a month-end burst."""
    return httpx.create_ssl_context()


async def _deliver(store: KarbonStore, event: dict[str, Any]) -> None:
    subscription = store.subscriptions.get("Work")
    if subscription is None:
        return
    body = json.dumps(event, separators=(",", ":")).encode()
    record: dict[str, Any] = {
        **event,
        "TargetUrl": subscription["TargetUrl"],
        "attempts": 0,
        "status": None,
        "delivered": False,
        "error": None,
    }
    store.deliveries.append(record)
    # A client per delivery: no idle keep-alive connection to go stale between bursts.
    async with httpx.AsyncClient(timeout=store.delivery_timeout, verify=_tls()) as client:
        for attempt in range(store.delivery_attempts):
            if store.subscriptions.get("Work") is not subscription:
                record["error"] = "subscription deleted"
                return
            headers = {"Content-Type": "application/json"}
            if subscription.get("SigningKey"):
                headers["Signature"] = signature(subscription["SigningKey"], body)
            record["attempts"] = attempt + 1
            try:
                response = await client.post(
                    subscription["TargetUrl"], content=body, headers=headers
                )
            except httpx.HTTPError as err:
                record["error"] = type(err).__name__
            else:
                record["status"] = response.status_code
                if 200 <= response.status_code < 300:
                    record["delivered"] = True
                    record["error"] = None
                    return
            if attempt + 1 < store.delivery_attempts:
                await asyncio.sleep(min(store.retry_base_delay * 2**attempt, 30.0))
    # Karbon ends a subscription whose payload failed every retry; it must be re-created.
    if store.subscriptions.get("Work") is subscription:
        del store.subscriptions["Work"]
        record["subscription_cancelled"] = True


# --- routes -----------------------------------------------------------------------------------


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"error": {"statusCode": "401", "message": message}}, status_code=401)


def _check_auth(request: Request) -> JSONResponse | None:
    """Both credentials are required together: the app's bearer token and the tenant AccessKey."""
    auth = request.headers.get("authorization", "")
    access_key = request.headers.get("accesskey", "")
    if not auth or not access_key:
        return _unauthorized("JWT not present.")
    scheme, _, token = auth.partition(" ")
    good_token = hmac.compare_digest(token.strip().encode(), demo_secret(_BEARER_ENV).encode())
    good_key = hmac.compare_digest(access_key.encode(), demo_secret(_ACCESS_KEY_ENV).encode())
    if scheme.lower() != "bearer" or not good_token or not good_key:
        return _unauthorized("Invalid JWT.")  # [A] exact wording for bad (not missing) credentials
    return None


class _KarbonRoute(APIRoute):
    """Checks credentials before any route runs, answering in Karbon's 401 shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            denied = _check_auth(request)
            return denied if denied is not None else await handler(request)

        return guarded


async def _json_body(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _page(
    request: Request,
    items: list[dict[str, Any]],
    *,
    max_top: int,
    page_size: int,
    context: str,
    count: bool = True,
) -> JSONResponse:
    """Server-driven paging: at most ``page_size`` per response plus ``@odata.nextLink``."""
    params = dict(request.query_params)
    try:
        top = int(params["$top"]) if "$top" in params else None
        skip = int(params.get("$skip", "0"))
        if (top is not None and top < 0) or skip < 0:
            raise ValueError
    except ValueError:
        return _error(400, "4002", "Invalid value for $top or $skip.")
    if top is not None:
        top = min(top, max_top)  # Karbon's guide: a larger $top is silently capped
    size = max(1, min(page_size, max_top))
    window = items[skip:] if top is None else items[skip : skip + top]
    body: dict[str, Any] = {"@odata.context": context}
    if count:
        body["@odata.count"] = len(items)
    body["value"] = window[:size]
    if len(window) > size:
        params["$skip"] = str(skip + size)
        if top is not None:
            params["$top"] = str(top - size)
        query = urlencode(params, quote_via=quote, safe="$'")
        body["@odata.nextLink"] = str(request.url.replace(query=query))
    return JSONResponse(body)


def _filtered(
    request: Request, items: list[dict[str, Any]], allowed: dict[str, set[str]], entity: str
) -> list[dict[str, Any]] | JSONResponse:
    text = request.query_params.get("$filter")
    if not text:
        return items
    try:
        conditions = parse_filter(text, allowed, entity)
    except FilterError as err:
        return _error(400, "4002", str(err))
    return [item for item in items if _matches(item, conditions)]


def _work_item_dto(item: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#KarbonService.WorkItemDTO", **item}


def _status_fields(
    store: KarbonStore, body: dict[str, Any], current: dict[str, Any] | None
) -> dict[str, Any] | JSONResponse:
    """PrimaryStatus wins over WorkStatus; WorkStatus is rebuilt as "<Primary> - <Secondary>"."""
    primary = body.get("PrimaryStatus")
    secondary = body.get("SecondaryStatus")
    if primary is None and body.get("WorkStatus"):
        head, _, tail = str(body["WorkStatus"]).partition(" - ")
        by_display = {v.casefold(): k for k, v in PRIMARY_STATUSES.items()}
        primary = by_display.get(head.strip().casefold())
        secondary = secondary or (tail.strip() or None)
        if primary is None:
            return _invalid_model("WorkStatus", "WorkStatus is not valid")
    if primary is None:
        if current is not None:  # [A] a PUT without any status keeps the current one
            return {k: current[k] for k in ("PrimaryStatus", "SecondaryStatus", "WorkStatus")}
        primary = "Planned"  # [A] Karbon's default for new work without a template
    if primary not in PRIMARY_STATUSES:
        return _invalid_model("PrimaryStatus", "PrimaryStatus is not valid")
    if secondary is not None and secondary not in SECONDARY_STATUSES[primary]:
        return _invalid_model(
            "SecondaryStatus", f"SecondaryStatus is not a child of PrimaryStatus {primary}"
        )
    display = PRIMARY_STATUSES[primary] + (f" - {secondary}" if secondary else "")
    return {"PrimaryStatus": primary, "SecondaryStatus": secondary, "WorkStatus": display}


def _validated(
    store: KarbonStore, body: dict[str, Any], current: dict[str, Any] | None, key: str
) -> dict[str, Any] | JSONResponse:
    """A RequestCreateWorkItem (POST and PUT) turned into the stored WorkItem."""
    for name in REQUIRED_ON_WRITE:
        if body.get(name) in (None, ""):
            return _invalid_model(name, f"The {name} field is required.")
    if body["ClientType"] not in ("Contact", "Organization", "ClientGroup"):
        return _invalid_model(
            "ClientType", "ClientType must be Contact, Organization, or ClientGroup"
        )
    client = store.clients.get(str(body["ClientKey"]))
    if client is None or client["ClientType"] != body["ClientType"]:
        return _invalid_model("ClientKey", f"ClientKey is not a valid {body['ClientType']} Key")
    dates: dict[str, str | None] = {}
    for name in _DATE_FIELDS:
        value = body.get(name)
        parsed = _parse_dt(value) if value is not None else None
        if value is not None and parsed is None:
            return _invalid_model(name, f"The value '{value}' is not valid for {name}.")
        dates[name] = _dt(parsed) if parsed is not None else None
    assignee = _assignee(store, body["AssigneeEmailAddress"])
    if isinstance(assignee, JSONResponse):
        return assignee
    status = _status_fields(store, body, current)
    if isinstance(status, JSONResponse):
        return status
    completed = (current or {}).get("CompletedDate")
    if status["PrimaryStatus"] == "Completed" and not completed:
        completed = _now()
    elif status["PrimaryStatus"] != "Completed":
        completed = None
    return {
        "WorkItemKey": key,
        **assignee,
        "Title": body["Title"],
        "ClientKey": client["ClientKey"],
        "ClientName": client["Name"],
        "ClientType": client["ClientType"],
        "ClientUserDefinedIdentifier": client["ClientKey"].upper(),
        "RelatedClientGroupKey": body.get("RelatedClientGroupKey"),
        "ClientGroupKey": None,
        "RelatedClientGroupName": None,
        **dates,
        "CompletedDate": completed,
        "ToDoPeriod": dates["StartDate"],
        "WorkType": body.get("WorkType"),
        **status,
        "WorkTemplateKey": body.get("WorkTemplateKey"),
        "WorkTemplateTile": None,
        "WorkScheduleKey": body.get("WorkScheduleKey"),
        "EstimatedBudget": body.get("EstimatedBudget"),
        "FeeSettings": body.get("FeeSettings") or {"FeeType": "TimeAndMaterials", "FeeValue": None},
        "UserRoleAssignments": body.get("UserRoleAssignments") or [],
        "Description": body.get("Description"),
        "ClientTaskRecipient": None,  # the reference: "This property will always return null"
    }


def _assignee(store: KarbonStore, email: Any) -> dict[str, Any] | JSONResponse:
    if not isinstance(email, str) or "@" not in email:
        return _invalid_model(
            "AssigneeEmailAddress", "Assignee Email Address is not a valid Email Address"
        )
    user = store.user_by_email(email)
    if user is None or email.casefold() in store.inactive_emails:
        # [P] The reference's example for this case; the 2026-06-11 release note says HTTP 400.
        return _error(400, "5001", "Assignee email address is not an active Karbon user")
    return {
        "AssigneeEmailAddress": user["EmailAddress"],
        "AssigneeKey": user["Id"],
        "AssigneeName": user["Name"],
    }


def _not_found_work_item() -> JSONResponse:
    return _error(404, "4004", "No Work Item found for provided key")


def _apply_change(store: KarbonStore, key: str, updated: dict[str, Any]) -> None:
    before = store.work_items[key]
    if updated == before:
        return
    store.work_items[key] = updated
    store.versions[key] = store.versions.get(key, 0) + 1
    if any(before.get(f) != updated.get(f) for f in WEBHOOK_FIELDS):
        _notify(store, key, "Updated")


def _business_card(record: dict[str, Any]) -> dict[str, Any]:
    emails = [record["EmailAddress"]] if record.get("EmailAddress") else []
    return {
        "BusinessCardKey": _key(f"card-{record['ClientKey']}"),
        "EntityType": record["ClientType"],
        "EntityKey": record["ClientKey"],
        "IsPrimaryCard": True,
        "WebSites": [],
        "EmailAddresses": emails,
        "OrganizationKey": record["ClientKey"] if record["ClientType"] == "Organization" else None,
        "RoleOrTitle": None,
        "FacebookLink": None,
        "LinkedInLink": None,
        "TwitterLink": None,
        "SkypeLink": None,
        "Addresses": [],
        "PhoneNumbers": [],
    }


def _expand(request: Request, allowed: set[str]) -> set[str] | JSONResponse:
    raw = request.query_params.get("$expand")
    wanted = {part.strip() for part in raw.split(",") if part.strip()} if raw else set()
    if wanted - allowed:
        return _error(
            400,
            "4002",
            f"Query option '$expand' is not allowed for '{', '.join(sorted(wanted - allowed))}'.",
        )
    return wanted


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(prefix=f"/{NAME}", route_class=_KarbonRoute, include_in_schema=False)

    def store() -> KarbonStore:
        current: KarbonStore = ctx.stores[NAME]
        return current

    # --- webhook subscriptions ---

    def subscription_body(request: Request, sub: dict[str, Any]) -> dict[str, Any]:
        return {
            "@odata.context": f"{_api_root(request)}/v3/$metadata#WebhookSubscriptions/$entity",
            "TargetUrl": sub["TargetUrl"],
            "WebhookType": sub["WebhookType"],
        }

    def unknown_type(value: str) -> JSONResponse:
        return _error(
            404,
            "4004",
            "No Webhook Type found for the provided WebhookType input value "
            f": {value}. Valid WebhookTypes are {', '.join(WEBHOOK_TYPES)}",
        )

    @router.post("/v3/WebhookSubscriptions")
    async def create_subscription(request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            return _error(400, "4002", "WebhookSubscription model cannot be null.")
        kind = body.get("WebhookType")
        if kind not in WEBHOOK_TYPES:
            response = unknown_type(str(kind))
            response.status_code = 400
            return response
        target = body.get("TargetUrl")
        if not isinstance(target, str) or not re.match(r"^https?://", target) or len(target) > 2000:
            return _error(
                400,
                "4003",
                "Invalid Model.",
                {
                    "code": "InvalidProperty",
                    "target": "webhookSubscription.TargetUrl",
                    "message": "TargetUrl must be an absolute http(s) URL of at most 2000 "
                    "characters",
                },
            )
        key = body.get("SigningKey")
        if key is not None and (not isinstance(key, str) or not _SIGNING_KEY.match(key)):
            return _error(
                400,
                "4003",
                "Invalid Model.",
                {
                    "code": "InvalidProperty",
                    "target": "webhookSubscription.SigningKey",
                    "message": "SigningKey must be at least 16 letters, digits, dashes or "
                    "underscores",
                },
            )
        s = store()
        if kind in s.subscriptions:
            # [A] Karbon allows one subscription per type and documents no status for a second
            # POST; the reference lists only 400 for this operation.
            return _error(
                400,
                "4002",
                f"A webhook subscription for {kind} already exists. Delete "
                "it before creating a new one.",
            )
        sub = {"WebhookType": kind, "TargetUrl": target, "SigningKey": key}
        s.subscriptions[kind] = sub
        location = f"{_api_root(request)}/v3/WebhookSubscriptions('{target}')"
        return JSONResponse(
            subscription_body(request, sub), status_code=201, headers={"Location": location}
        )

    @router.get("/v3/WebhookSubscriptions/{webhook_type}")
    async def get_subscription(webhook_type: str, request: Request) -> Response:
        if webhook_type not in WEBHOOK_TYPES:
            return unknown_type(webhook_type)
        sub = store().subscriptions.get(webhook_type)
        if sub is None:
            return _error(404, "4004", f"No existing webhook subscription for {webhook_type}")
        return JSONResponse(subscription_body(request, sub))

    @router.delete("/v3/WebhookSubscriptions/{webhook_type}")
    async def delete_subscription(webhook_type: str) -> Response:
        if webhook_type not in WEBHOOK_TYPES:
            return unknown_type(webhook_type)
        if store().subscriptions.pop(webhook_type, None) is None:
            return _error(404, "4004", f"No existing webhook subscription for {webhook_type}")
        return Response(status_code=204)

    @router.delete("/v3/WebhookSubscriptions")
    async def delete_all_subscriptions() -> Response:
        store().subscriptions.clear()
        return Response(status_code=204)

    # --- work items ---

    @router.post("/v3/WorkItems")
    async def create_work_item(request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            return _error(400, "4005", "Required payload data is missing: workItem")
        s = store()
        key = _key(f"work-item-{s.run}-{s.created + 1}")
        item = _validated(s, body, None, key)
        if isinstance(item, JSONResponse):
            return item
        s.created += 1
        s.work_items[key] = item
        s.versions[key] = 1
        _notify(s, key, "Inserted")
        api = _api_root(request)
        dto = {
            "@odata.context": f"{api}/v3/$metadata#WorkItems/KarbonService.WorkItemDTO/$entity",
            **_work_item_dto(item),
        }
        return JSONResponse(
            dto,
            status_code=201,
            headers={"Location": f"{api}/v3/WorkItems('{key}')/KarbonService.WorkItemDTO"},
        )

    @router.get("/v3/WorkItems")
    async def list_work_items(request: Request) -> Response:
        s = store()
        items = _filtered(request, list(s.work_items.values()), WORK_ITEM_FILTERS, "WorkItem")
        if isinstance(items, JSONResponse):
            return items
        order = request.query_params.get("$orderby", "WorkItemKey").strip()
        prop, _, direction = order.partition(" ")
        if prop not in ("WorkItemKey", "StartDate", "DeadlineDate") or direction not in (
            "",
            "asc",
            "desc",
        ):
            return _error(
                400, "4002", f"The property '{prop}' cannot be used in the $orderby query option."
            )
        items = sorted(
            items,
            key=lambda i: (i.get(prop) is None, i.get(prop) or "", i["WorkItemKey"]),
            reverse=direction == "desc",
        )
        return _page(
            request,
            [_work_item_dto(i) for i in items],
            max_top=100,
            page_size=s.page_size,
            context=f"{_api_root(request)}/v3/$metadata#WorkItems",
        )

    @router.get("/v3/WorkItems/{key}")
    async def get_work_item(key: str, request: Request) -> Response:
        s = store()
        item = s.work_items.get(key)
        if item is None:
            return _not_found_work_item()
        api = _api_root(request)
        return JSONResponse(
            {
                "@odata.context": f"{api}/v3/$metadata#WorkItems/KarbonService.WorkItemDTO/$entity",
                **_work_item_dto(item),
            }
        )

    @router.put("/v3/WorkItems/{key}")
    async def put_work_item(key: str, request: Request) -> Response:
        s = store()
        current = s.work_items.get(key)
        if current is None:
            return _not_found_work_item()
        body = await _json_body(request)
        if body is None:
            return _error(400, "4005", "Required payload data is missing: update")
        updated = _validated(s, body, current, key)
        if isinstance(updated, JSONResponse):
            return updated
        _apply_change(s, key, updated)
        return Response(status_code=204)

    @router.patch("/v3/WorkItems/{key}")
    async def patch_work_item(key: str, request: Request) -> Response:
        s = store()
        current = s.work_items.get(key)
        if current is None:
            return _not_found_work_item()
        body = await _json_body(request)
        if not body:
            return _error(400, "4005", "Required payload data is missing: update")
        if set(body) - set(PATCHABLE):
            return _error(
                400,
                "4002",
                "Invalid property to update. Only "
                f"{', '.join(PATCHABLE[:-1])} and {PATCHABLE[-1]} can be "
                "patched.",
            )
        updated = dict(current)
        for name, value in body.items():
            if name == "AssigneeEmailAddress":
                assignee = _assignee(s, value)
                if isinstance(assignee, JSONResponse):
                    return assignee
                updated.update(assignee)
            elif name in _DATE_FIELDS:
                parsed = _parse_dt(value) if value is not None else None
                if value is not None and parsed is None:
                    return _invalid_model(name, f"The value '{value}' is not valid for {name}.")
                if name == "StartDate" and parsed is None:
                    return _invalid_model(name, f"The {name} field is required.")
                updated[name] = _dt(parsed) if parsed is not None else None
            elif name == "Title" and not value:
                return _invalid_model(name, "The Title field is required.")
            else:
                updated[name] = value
        _apply_change(s, key, updated)
        return Response(status_code=204)

    # --- users, tenant, time ---

    @router.get("/v3/Users")
    async def list_users(request: Request) -> Response:
        s = store()
        summaries = [
            {"Id": u["Id"], "Name": u["Name"], "EmailAddress": u["EmailAddress"]} for u in s.users
        ]
        items = _filtered(request, summaries, USER_FILTERS, "User")
        if isinstance(items, JSONResponse):
            return items
        return _page(
            request,
            items,
            max_top=100,
            page_size=s.page_size,
            context=f"{_api_root(request)}/v3/$metadata#Users",
        )

    @router.get("/v3/Users/{user_id}")
    async def get_user(user_id: str, request: Request) -> Response:
        user = next((u for u in store().users if u["Id"] == user_id), None)
        if user is None:
            return _error(404, "4004", "No User found for provided key")
        return JSONResponse(
            {"@odata.context": f"{_api_root(request)}/v3/$metadata#Users/$entity", **user}
        )

    @router.get("/v3/TenantSettings")
    async def tenant_settings(request: Request) -> Response:
        s = store()
        statuses: list[dict[str, Any]] = [
            {
                "Name": primary,
                "Type": "Primary",
                "Children": [
                    {"Name": child, "Type": "Secondary", "WorkStatusKey": _key(f"status-{child}")}
                    for child in SECONDARY_STATUSES[primary]
                ],
            }
            for primary in PRIMARY_STATUSES
        ]
        # Work types are tenant-defined; the sandbox accepts any and lists those in use.
        in_use = sorted({i["WorkType"] for i in s.work_items.values() if i.get("WorkType")})
        secondary_keys = [c["WorkStatusKey"] for st in statuses for c in st["Children"]]
        return JSONResponse(
            {
                "@odata.context": f"{_api_root(request)}/v3/$metadata#TenantSettings",
                "TenantKey": s.tenant_key,
                "ClientAccessActivated": False,
                "WorkStatuses": statuses,
                "WorkTypes": [
                    {
                        "Name": wt,
                        "WorkTypeKey": _key(f"work-type-{wt}"),
                        "AvailableStatuses": {
                            "Primary": list(PRIMARY_STATUSES.values()),
                            "Secondary": secondary_keys,
                        },
                    }
                    for wt in in_use
                ],
                "ContactTypes": [{"Name": "Client", "ContactTypeKey": _key("contact-type-client")}],
                "ServiceTypes": [],
            }
        )

    @router.get("/v3/IndividualTimeEntries")
    async def time_entries(request: Request) -> Response:
        s = store()
        items = _filtered(request, s.time_entries, TIME_ENTRY_FILTERS, "IndividualTimeEntry")
        if isinstance(items, JSONResponse):
            return items
        count = request.query_params.get("$count", "").lower() == "true"
        return _page(
            request,
            items,
            max_top=1000,
            page_size=s.time_entry_page_size,
            context=f"{_api_root(request)}/v3/$metadata#IndividualTimeEntries",
            count=count,
        )

    # --- client records (where the client's email address lives) ---

    @router.get("/v3/Contacts/{key}")
    async def get_contact(key: str, request: Request) -> Response:
        record = store().clients.get(key)
        if record is None or record["ClientType"] != "Contact":
            return _error(404, "4004", "No Contact found for provided key")
        expand = _expand(request, {"BusinessCards", "ClientTeam"})
        if isinstance(expand, JSONResponse):
            return expand
        body: dict[str, Any] = {
            "@odata.context": (
                f"{_api_root(request)}/v3/$metadata#Contacts/KarbonService.ContactDTO/$entity"
            ),
            "@odata.type": "#KarbonService.ContactDTO",
            "ContactKey": record["ClientKey"],
            "FirstName": record["FirstName"],
            "MiddleName": None,
            "LastName": record["LastName"],
            "PreferredName": None,
            "Salutation": None,
            "Suffix": None,
            "ClientOwner": None,
            "ClientManager": None,
            "ContactType": "Client",
            "UserDefinedIdentifier": record["ClientKey"].upper(),
            "RestrictionLevel": "Public",
            "AvatarUrl": None,
            "LastModifiedDateTime": _dt(datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
            "EntityDescription": {"Text": ""},
            "AccountingDetail": None,
        }
        if "BusinessCards" in expand:
            body["BusinessCards"] = [_business_card(record)]
        if "ClientTeam" in expand:
            body["ClientTeam"] = []
        return JSONResponse(body)

    @router.get("/v3/Organizations/{key}")
    async def get_organization(key: str, request: Request) -> Response:
        record = store().clients.get(key)
        if record is None or record["ClientType"] != "Organization":
            return _error(404, "4004", f"No organization exists with a key of {key}.")
        expand = _expand(request, {"BusinessCards", "ClientTeam"})
        if isinstance(expand, JSONResponse):
            return expand
        body: dict[str, Any] = {
            "@odata.context": f"{_api_root(request)}/v3/$metadata#Organizations/"
            "KarbonService.OrganizationDTO/$entity",
            "@odata.type": "#KarbonService.OrganizationDTO",
            "OrganizationKey": record["ClientKey"],
            "FullName": record["Name"],
            "ClientOwner": None,
            "ClientManager": None,
            "ContactType": "Client",
            "UserDefinedIdentifier": record["ClientKey"].upper(),
            "RestrictionLevel": "Public",
            "LastModifiedDateTime": _dt(datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
            "EntityDescription": {"Text": ""},
            "AccountingDetail": None,
        }
        if "BusinessCards" in expand:
            body["BusinessCards"] = [_business_card(record)]
        if "ClientTeam" in expand:
            body["ClientTeam"] = []
        return JSONResponse(body)

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def no_such_resource(rest: str, request: Request) -> Response:
        return _error(
            404, "4002", f"No HTTP resource was found that matches the request URI '{request.url}'"
        )

    return router


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    """Karbon's own body for an injected fault."""
    if status == 429:
        wait = retry_after if retry_after is not None else 10
        return (
            {
                "statusCode": "429",
                "message": f"Rate limit is exceeded. Try again in {wait} seconds.",
            },
            "application/json",
        )
    if status == 401:
        return {"error": {"statusCode": "401", "message": "JWT not present."}}, "application/json"
    if status == 409:
        return (
            {
                "error": {
                    "code": "4020",
                    "message": "The resource was modified by another "
                    "request. Refetch the latest version and retry.",
                }
            },
            "application/json",
        )
    if status == 404:
        return {"error": {"code": "4004", "message": "Not Found"}}, "application/json"
    if status >= 500:
        request_id = 63792674374107265425 + status
        return (
            {
                "error": {
                    "code": "5001",
                    "message": "Unexpected Internal Error. Please contact "
                    f"Karbon HQ Technical support with API Request Id of {request_id}.",
                }
            },
            "application/json",
        )
    return (
        {"error": {"code": "4002", "message": f"Request rejected (HTTP {status})."}},
        "application/json",
    )
