"""Karbon as the practice-management system: load a work item, write the assignment back.

Karbon's contract (API v3): every call carries ``Authorization: Bearer <app token>`` and
``AccessKey: <tenant key>``; lists page through ``@odata.nextLink``; PATCH may change the
assignee but not the status, so a status change is GET -> modify -> full PUT, and a racing
write answers 409 (code 4020), which we meet by re-reading and trying again.

Karbon echoes our own writes back to us as ``Updated`` webhooks, so write-back never writes
what is already there: re-running it after success performs no request but the GET.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, redact, transport_error
from activities.roles import PmActivities
from dispatch import limits
from dispatch.capacity import local_date
from dispatch.config import FirmConfig, FirmConfigError, KarbonConnector, ServiceType, secret
from dispatch.ids import foreign_source
from dispatch.models import (
    DispatchStatus,
    EngagementDetails,
    LoadEngagementInput,
    PmDueDateInput,
    PmWriteBackInput,
    PmWriteBackResult,
    WorkState,
)

SYSTEM = "Karbon"
SOURCE = "karbon"
"""The engagement source whose external ids are Karbon work item keys."""
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
CONFLICT_RETRIES = 3
"""Re-reads after a 409 inside one activity attempt before Temporal's retry takes over."""

STATUS_DISPLAY = {
    "Planned": "Planned",
    "ReadyToStart": "Ready To Start",
    "InProgress": "In Progress",
    "Waiting": "Waiting",
    "Completed": "Completed",
}
"""Karbon's primary statuses (wire value -> the display form ``WorkStatus`` strings use)."""

WRITABLE_FIELDS = (
    "AssigneeEmailAddress",
    "Title",
    "ClientKey",
    "ClientType",
    "StartDate",
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
)
"""RequestCreateWorkItem: the full object a PUT must carry (omitted fields would be cleared)."""

_SIGNING_KEY = re.compile(r"^[A-Za-z0-9_-]{16,}$")

log = logging.getLogger(__name__)


def _reason(response: httpx.Response) -> str:
    """Karbon's own words: ``error.message`` (+ detail) or the 401/429 ``message`` shape."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:300]
    error = body.get("error")
    if isinstance(error, dict):
        parts = [str(error.get("message") or "")]
        details = error.get("details")
        for detail in details if isinstance(details, list) else [details]:
            if isinstance(detail, dict) and detail.get("message"):
                target = f"{detail['target']}: " if detail.get("target") else ""
                parts.append(f"{target}{detail['message']}")
        code = error.get("code") or error.get("statusCode")
        text = "; ".join(p for p in parts if p)
        return f"{text} (code {code})" if code else text
    return str(body.get("message") or body)[:300]


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _primary_email(record: Mapping[str, Any]) -> str | None:
    """The first address on the primary business card, else on any card."""
    cards = record.get("BusinessCards")
    if cards is None and isinstance(record.get("BusinessCard"), dict):
        cards = [record["BusinessCard"]]
    if not isinstance(cards, list):
        return None
    ordered = sorted(
        (c for c in cards if isinstance(c, dict)), key=lambda c: not c.get("IsPrimaryCard")
    )
    for card in ordered:
        for email in card.get("EmailAddresses") or []:
            if isinstance(email, str) and "@" in email:
                return email
    return None


def odata_str(value: str) -> str:
    """A string literal for ``$filter`` (single quotes doubled, as OData escapes them)."""
    return "'" + value.replace("'", "''") + "'"


class KarbonClient:
    """Thin async client for the Karbon calls the product makes; errors become ApplicationErrors.

    Pass ``http`` to share a connection pool (the worker does); otherwise one is created on
    first use and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        connector: KarbonConnector,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.connector = connector
        self.base = connector.base_url.rstrip("/")
        self._origin = urlsplit(self.base)[:2]
        self._http = http
        self._owns_http = http is None
        self.timeout = timeout

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def _headers(self) -> dict[str, str]:
        try:
            token = secret(self.connector.bearer_token_env)
            access_key = secret(self.connector.access_key_env)
        except FirmConfigError as err:
            raise ApplicationError(str(err), type="MissingSecret", non_retryable=True) from None
        return {
            "Authorization": f"Bearer {token}",
            "AccessKey": access_key or "",
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
        }

    def url(self, path: str) -> str:
        return f"{self.base}/v3/{path.lstrip('/')}"

    async def send(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        tolerate: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One call; a status outside ``ok`` and ``tolerate`` raises the ApplicationError for it."""
        if self._http is None:
            self._http = httpx.AsyncClient()
        try:
            response = await self._http.request(
                method, url, params=params, json=json, headers=self._headers(), timeout=self.timeout
            )
        except httpx.HTTPError as err:
            raise transport_error(SYSTEM, operation, err) from None
        if response.status_code in ok or response.status_code in tolerate:
            return response
        raise error_for_status(
            SYSTEM, response.status_code, response.headers, _reason(response), operation=operation
        )

    async def list_all(
        self, path: str, *, operation: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every page, following ``@odata.nextLink`` verbatim (it may carry more than $skip)."""
        items: list[dict[str, Any]] = []
        url: str | None = self.url(path)
        query: Mapping[str, str] | None = params
        while url is not None:
            body = (await self.send("GET", url, operation=operation, params=query)).json()
            items.extend(body.get("value") or [])
            url, query = body.get("@odata.nextLink"), None
            if url is not None and urlsplit(url)[:2] != self._origin:
                # Our credentials go to the configured host only, whatever a response says.
                raise ApplicationError(
                    f"{SYSTEM} {operation}: nextLink points at another host",
                    type="KarbonProtocolError",
                    non_retryable=True,
                )
        return items

    # --- work items ---

    async def get_work_item(self, key: str) -> dict[str, Any] | None:
        response = await self.send(
            "GET", self.url(f"WorkItems/{key}"), operation="get work item", tolerate=(404,)
        )
        return None if response.status_code == 404 else dict(response.json())

    async def create_work_item(self, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.send(
            "POST", self.url("WorkItems"), json=dict(body), operation="create work item", ok=(201,)
        )
        return dict(response.json())

    async def put_work_item(self, key: str, body: Mapping[str, Any]) -> None:
        await self.send(
            "PUT",
            self.url(f"WorkItems/{key}"),
            json=dict(body),
            operation="update work item",
            ok=(204, 200),
        )

    async def patch_work_item(self, key: str, changes: Mapping[str, Any]) -> None:
        await self.send(
            "PATCH",
            self.url(f"WorkItems/{key}"),
            json=dict(changes),
            operation="patch work item",
            ok=(204, 200),
        )

    async def list_work_items(
        self, filter: str | None = None, orderby: str = "StartDate"
    ) -> list[dict[str, Any]]:
        params = {"$orderby": orderby}
        if filter:
            params["$filter"] = filter
        return await self.list_all("WorkItems", operation="list work items", params=params)

    # --- people and time ---

    async def list_users(self, filter: str | None = None) -> list[dict[str, Any]]:
        params = {"$filter": filter} if filter else None
        return await self.list_all("Users", operation="list users", params=params)

    async def get_user(self, user_id: str) -> dict[str, Any]:
        return dict(
            (await self.send("GET", self.url(f"Users/{user_id}"), operation="get user")).json()
        )

    async def list_time_entries(
        self, start: date, end: date, user_key: str | None = None
    ) -> list[dict[str, Any]]:
        clauses = [f"Date ge {start.isoformat()}T00:00:00Z", f"Date le {end.isoformat()}T00:00:00Z"]
        if user_key:
            clauses.append(f"UserKey eq {odata_str(user_key)}")
        return await self.list_all(
            "IndividualTimeEntries",
            operation="list time entries",
            params={"$filter": " and ".join(clauses), "$top": "1000"},
        )

    # --- clients ---

    async def get_client_record(self, client_key: str, client_type: str) -> dict[str, Any] | None:
        """The Contact / Organization / ClientGroup with its business cards; None when absent."""
        paths = {
            "Contact": (f"Contacts/{client_key}", "BusinessCards"),
            "Organization": (f"Organizations/{client_key}", "BusinessCards"),
            "ClientGroup": (f"ClientGroups/{client_key}", "BusinessCard"),
        }
        if client_type not in paths:
            return None
        path, expand = paths[client_type]
        response = await self.send(
            "GET",
            self.url(path),
            params={"$expand": expand},
            operation=f"get {client_type.lower()}",
            tolerate=(404,),
        )
        return None if response.status_code == 404 else dict(response.json())

    # --- webhook subscriptions ---

    async def get_subscription(self, webhook_type: str) -> dict[str, Any] | None:
        response = await self.send(
            "GET",
            self.url(f"WebhookSubscriptions/{webhook_type}"),
            operation="get webhook subscription",
            tolerate=(404,),
        )
        return None if response.status_code == 404 else dict(response.json())

    async def create_subscription(
        self, webhook_type: str, target_url: str, signing_key: str | None
    ) -> httpx.Response:
        body: dict[str, Any] = {"TargetUrl": target_url, "WebhookType": webhook_type}
        if signing_key:
            body["SigningKey"] = signing_key
        return await self.send(
            "POST",
            self.url("WebhookSubscriptions"),
            json=body,
            operation="create webhook subscription",
            ok=(201,),
            tolerate=(400,),
        )


def _target_status(
    connector: KarbonConnector, status: DispatchStatus
) -> tuple[str, str | None] | None:
    """Our dispatch status -> Karbon (PrimaryStatus, SecondaryStatus); None leaves it alone."""
    if status is DispatchStatus.ASSIGNED:
        return connector.assigned_primary_status, connector.assigned_secondary_status
    if status is DispatchStatus.IN_PROGRESS:
        return "InProgress", None
    if status is DispatchStatus.COMPLETED:
        return "Completed", None
    return None


def work_state(connector: KarbonConnector, item: Mapping[str, Any]) -> WorkState | None:
    """Karbon's primary and tenant secondary statuses, in our words."""
    primary = item.get("PrimaryStatus")
    secondary = (item.get("SecondaryStatus") or "").casefold()
    if primary == "Completed":
        return "completed"
    if secondary and secondary in {s.casefold() for s in connector.in_review_statuses}:
        return "in_review"
    if secondary and secondary in {s.casefold() for s in connector.ready_for_review_statuses}:
        return "ready_for_review"
    if primary in ("InProgress", "Waiting"):
        return "in_progress"
    return None


def _full_update(
    item: Mapping[str, Any], assignee: str | None, status: tuple[str, str | None]
) -> dict[str, Any]:
    """The RequestCreateWorkItem for a PUT: everything the GET returned, with our changes."""
    body = {name: item[name] for name in WRITABLE_FIELDS if item.get(name) is not None}
    if assignee:
        body["AssigneeEmailAddress"] = assignee
    primary, secondary = status
    body["PrimaryStatus"] = primary
    body["SecondaryStatus"] = secondary
    body["WorkStatus"] = STATUS_DISPLAY.get(primary, primary) + (
        f" - {secondary}" if secondary else ""
    )
    return body


def _same_email(a: str | None, b: str | None) -> bool:
    return (a or "").casefold() == (b or "").casefold()


class KarbonActivities(PmActivities):
    """The PM role backed by Karbon."""

    def __init__(
        self, config: FirmConfig, connector: KarbonConnector, http: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.connector = connector
        self.client = KarbonClient(connector, http)

    async def aclose(self) -> None:
        """Close the HTTP pool if this instance created it (not when one was injected)."""
        await self.client.aclose()

    @activity.defn(name="pm_load_engagement")
    async def load_engagement(self, input: LoadEngagementInput) -> EngagementDetails:
        key = input.external_id
        refused = foreign_source(SYSTEM, SOURCE, input.source)
        if refused:
            raise ApplicationError(refused, type="ForeignSource", non_retryable=True)
        item = await self._work_item(key)
        work_type = item.get("WorkType")
        service = self.config.service_type_for_work_type(work_type)
        if service is None:
            raise ApplicationError(
                f"{SYSTEM} work item {key}: work type {work_type!r} is not mapped to a service "
                "type (add it to a service type's pm_work_types in the firm config)",
                type="UnmappedWorkType",
                non_retryable=True,
            )
        due = _date(item.get("DueDate")) or _date(item.get("DeadlineDate"))
        if due is None:
            raise ApplicationError(
                f"{SYSTEM} work item {key} has neither a due date nor a deadline date",
                type="MissingDueDate",
                non_retryable=True,
            )
        start = _date(item.get("StartDate"))
        _check_dates(key, due, start, self.config.firm.time_zone)
        client_key = str(item.get("ClientKey") or "")
        if client_key and limits.client_id_problem(client_key):
            raise ApplicationError(
                f"{SYSTEM} work item {key}: its ClientKey cannot be used as a client id",
                type="InvalidPmRecord",
                non_retryable=True,
            )
        client_email, contact_name = await self._client_contact(
            client_key, str(item.get("ClientType") or "")
        )
        known = self.config.client(client_key)
        client_name = item.get("ClientName") or (known.name if known else None) or client_key
        return EngagementDetails(
            source=input.source,
            external_id=key,
            title=limits.clean_text(str(item.get("Title") or ""), limits.MAX_TITLE) or service.name,
            client_id=client_key,
            client_name=limits.clean_text(str(client_name), limits.MAX_NAME) or client_key,
            client_email=_email(client_email) or (known.email if known else None),
            client_contact_name=limits.clean_text(contact_name or "", limits.MAX_NAME) or None,
            service_type=service.id,
            due_date=due,
            start_date=start,
            estimated_hours=service.default_estimated_hours,
            required_skills=list(service.required_skills),
            specializations=list(service.preferred_skills),
            documents_needed=list(service.documents_needed),
            scope_summary=_scope(item, service),
            # [A] Karbon's web app addresses a work item as <app>#/work/<WorkItemKey>.
            pm_url=f"{self.connector.app_url.rstrip('/')}#/work/{key}",
            pm_work_type=_short(work_type),
            pm_assignee_email=_email(item.get("AssigneeEmailAddress")),
            pm_status=_short(item.get("PrimaryStatus")),
            pm_secondary_status=_short(item.get("SecondaryStatus")),
            work_state=work_state(self.connector, item),
        )

    async def _client_contact(
        self, client_key: str, client_type: str
    ) -> tuple[str | None, str | None]:
        """(email, contact name) from the client record; a missing record is not an error."""
        if not client_key:
            return None, None
        try:
            record = await self.client.get_client_record(client_key, client_type)
        except ApplicationError as err:
            if not err.non_retryable:
                raise
            # A permission or shape problem on the client record must not block the
            # engagement: the firm config's email is the fallback.
            activity.logger.warning("Karbon client record unavailable: %s", redact(str(err)))
            return None, None
        if record is None:
            return None, None
        name = None
        if client_type == "Contact":
            first = record.get("PreferredName") or record.get("FirstName")
            name = " ".join(p for p in (first, record.get("LastName")) if p) or None
        return _primary_email(record), name

    async def _work_item(self, key: str) -> dict[str, Any]:
        item = await self.client.get_work_item(key)
        if item is None:
            raise ApplicationError(
                f"{SYSTEM} work item {key} was not found",
                type="EngagementNotFound",
                non_retryable=True,
            )
        return item

    @activity.defn(name="pm_write_back")
    async def write_back(self, input: PmWriteBackInput) -> PmWriteBackResult:
        refused = foreign_source(SYSTEM, SOURCE, input.source)
        if refused:
            return PmWriteBackResult(written=False, manual_update_required=True, detail=refused)
        key = input.external_id
        target = _target_status(self.connector, input.status)
        for attempt in range(CONFLICT_RETRIES + 1):
            item = await self._work_item(key)
            change_assignee = bool(input.assignee_email) and not _same_email(
                item.get("AssigneeEmailAddress"), input.assignee_email
            )
            change_status = (
                target is not None
                and (item.get("PrimaryStatus"), item.get("SecondaryStatus")) != target
            )
            if not change_assignee and not change_status:
                return PmWriteBackResult(
                    written=False, detail="Karbon work item already up to date"
                )
            try:
                if change_status and target is not None:
                    # Status cannot be PATCHed: the full object goes back with our changes.
                    await self.client.put_work_item(
                        key, _full_update(item, input.assignee_email, target)
                    )
                else:
                    await self.client.patch_work_item(
                        key, {"AssigneeEmailAddress": input.assignee_email}
                    )
            except ApplicationError as err:
                if err.type != "Conflict" or attempt == CONFLICT_RETRIES:
                    raise
                activity.logger.info("Karbon work item %s changed under us (409); re-reading", key)
                continue
            what = " and ".join(
                w
                for w, changed in (("assignee", change_assignee), ("status", change_status))
                if changed
            )
            return PmWriteBackResult(written=True, detail=f"Karbon {what} updated")
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @activity.defn(name="pm_move_due_date")
    async def move_due_date(self, input: PmDueDateInput) -> PmWriteBackResult:
        refused = foreign_source(SYSTEM, SOURCE, input.source)
        if refused:
            return PmWriteBackResult(written=False, manual_update_required=True, detail=refused)
        key = input.external_id
        item = await self._work_item(key)
        if _date(item.get("DueDate")) == input.due_date:
            # A retry after a lost answer, or someone moved it in Karbon too.
            return PmWriteBackResult(written=False, detail="Karbon due date already set")
        # A PATCH of one property: nothing else on the work item is sent back, so a change
        # someone makes in Karbon meanwhile is not overwritten.
        await self.client.patch_work_item(
            key, {"DueDate": f"{input.due_date.isoformat()}T00:00:00Z"}
        )
        return PmWriteBackResult(written=True, detail="Karbon due date updated")


def _scope(item: Mapping[str, Any], service: ServiceType) -> str:
    description = limits.clean_text(
        str(item.get("Description") or ""), limits.MAX_SCOPE, multiline=True
    )
    return description or service.name


def _short(value: Any) -> str | None:
    """A status or type word from Karbon, bounded like the webhook's own fields."""
    text = limits.clean_text(str(value or ""), limits.MAX_STATUS)
    return text or None


def _email(value: Any) -> str | None:
    text = str(value or "").strip()
    if not text or len(text) > limits.MAX_EMAIL or limits.text_problem(text) or "@" not in text:
        return None
    return text


def _check_dates(key: str, due: date, start: date | None, time_zone: str) -> None:
    """Impossible dates make the work item undispatchable (the workflow says why) rather than
    reaching the dispatcher, whose decisions scan the days up to the due date."""
    today = local_date(datetime.now(UTC), time_zone)
    problem = limits.due_date_problem(due, today, may_be_past=True)
    if problem is None and start is not None:
        problem = limits.start_date_problem(start, due)
        problem = f"start date {problem}" if problem else None
    elif problem is not None:
        problem = f"due date {problem}"
    if problem:
        raise ApplicationError(
            f"{SYSTEM} work item {key}: {problem}", type="ImpossibleDate", non_retryable=True
        )


async def ensure_work_subscription(
    connector: KarbonConnector, target_url: str, http: httpx.AsyncClient | None = None
) -> bool:
    """Make sure Karbon sends ``Work`` webhooks to us; True when a subscription was created.

    Karbon cancels a subscription after ten failed deliveries (GET then answers 404), so the
    worker calls this at start-up. An existing subscription is left alone even if it points
    elsewhere (a relay may sit in front of us); that case is logged.
    """
    signing_key = secret(connector.webhook_signing_key_env)
    if signing_key is None or not _SIGNING_KEY.match(signing_key):
        raise FirmConfigError(
            f"{connector.webhook_signing_key_env} must be at least 16 letters, "
            "digits, dashes or underscores (Karbon's SigningKey rule)"
        )
    client = KarbonClient(connector, http)
    try:
        existing = await client.get_subscription("Work")
        if existing is not None:
            if existing.get("TargetUrl") != target_url:
                log.warning(
                    "Karbon Work webhooks go to %s, not %s; leaving it as it is",
                    existing.get("TargetUrl"),
                    target_url,
                )
            return False
        response = await client.create_subscription("Work", target_url, signing_key)
        if response.status_code == 201:
            log.info("Created the Karbon Work webhook subscription to %s", target_url)
            return True
        # 400: perhaps another worker created it a moment ago; that is as good as ours.
        if await client.get_subscription("Work") is not None:
            return False
        raise error_for_status(
            SYSTEM,
            response.status_code,
            response.headers,
            _reason(response),
            operation="create webhook subscription",
        )
    finally:
        await client.aclose()
