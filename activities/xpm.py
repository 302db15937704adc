"""Xero Practice Manager as the practice-management system: poll for jobs, load one, write back.

XPM's contract (practicemanager 3.1): every call carries ``Authorization: Bearer <access
token>`` and ``xero-tenant-id``; bodies and responses are XML wrapped in
``<Response><Status>OK</Status>...</Response>``; request dates are ``YYYYMMDD``. There are no
job webhooks, so new jobs are found by polling ``job.api/list`` (``pm_list_new_jobs``, driven
by a Temporal Schedule) and each one is then loaded with ``job.api/get``.

Xero limits each tenant to 5 concurrent calls and 60 calls a minute. One instance never has
more than 5 calls in flight (a semaphore); several worker processes can still exceed the limit
together, and the 429 that follows is retried after Xero's ``Retry-After``. Staff and client
look-ups are cached for a few minutes so a poll does not spend the minute's budget on them.

Write-back re-reads the job first and writes only what differs, so running it twice writes
nothing the second time.

XML is parsed with ``xml.etree.ElementTree``: ``defusedxml`` is not installed. The risk (entity
expansion from a hostile document) is limited because the XML comes only from Xero's API (or
the sandbox), never from end users, and any document carrying a DTD is refused unparsed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import error_for_status, redact, transport_error
from activities.roles import PmActivities
from dispatch import limits
from dispatch.config import (
    ClientRecord,
    FirmConfig,
    FirmConfigError,
    ServiceType,
    XpmConnector,
    secret,
)
from dispatch.ids import foreign_source
from dispatch.models import (
    DispatchStatus,
    EngagementDetails,
    JobList,
    ListJobsInput,
    LoadEngagementInput,
    PmDueDateInput,
    PmJob,
    PmWriteBackInput,
    PmWriteBackResult,
)

SYSTEM = "XPM"
SOURCE = "xpm"
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
MAX_CONCURRENT = 5
"""Xero's per-tenant limit on calls in flight."""
STAFF_CACHE_SECONDS = 300.0
CLIENT_CACHE_SECONDS = 600.0
MAX_LIST_DAYS = 365
"""``job.api/list`` accepts at most a year per call; longer polls are split."""

_NOT_ALNUM = re.compile(r"[^0-9a-z]")


# --- parsing ----------------------------------------------------------------------------------


class XmlRefused(ValueError):
    """The body is not XML we are willing to read."""


def parse_xml(content: bytes) -> ET.Element:
    """Parse a response body; documents with a DTD are refused (no entity expansion)."""
    lowered = content.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise XmlRefused("document type declarations are not accepted")
    try:
        return ET.fromstring(content)
    except ET.ParseError as err:
        raise XmlRefused(f"not well-formed XML: {err}") from None


def error_reason(content: bytes, fallback: str) -> str:
    """XPM's words for a failure: ``ErrorDescription`` from the XML envelope ([A] its shape is
    not documented), Xero's JSON problem (``Detail`` / ``Title``) for platform errors, or the
    raw text."""
    try:
        root = parse_xml(content)
    except XmlRefused:
        root = None
    if root is not None:
        description = (root.findtext("ErrorDescription") or "").strip()
        status = (root.findtext("Status") or "").strip()
        return description or status or fallback
    try:
        body = json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")[:300] or fallback
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("Title", "Detail", "Message") if body.get(k)]
        return "; ".join(parts) or fallback
    return fallback


def _text(el: ET.Element | None, path: str) -> str | None:
    if el is None:
        return None
    value = el.findtext(path)
    return value.strip() if value and value.strip() else None


def _date(value: str | None) -> date | None:
    """``2008-08-29T00:00:00`` (XPM's response form) -> date."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).date()
    except ValueError:
        return None


def ymd(day: date) -> str:
    """XPM's request date form."""
    return day.strftime("%Y%m%d")


def _minutes(value: str | None) -> int:
    try:
        return max(0, round(float(value or 0)))
    except ValueError:
        return 0


def state_key(value: str | None) -> str:
    """Compare a job's ``<State>`` (the state's name, e.g. ``In Progress``) with an interface
    code (``INPROGRESS``). [A] XPM reads back the name but PUT takes the code, and there is no
    API listing the firm's states, so both are compared as lower-case letters and digits."""
    return _NOT_ALNUM.sub("", (value or "").casefold())


@dataclass(frozen=True)
class XpmJob:
    id: str
    uuid: str
    name: str
    description: str
    state: str
    type: str | None
    start_date: date | None
    due_date: date | None
    completed_date: date | None
    client_uuid: str | None
    client_name: str | None
    assigned: tuple[str, ...]
    """Staff UUIDs assigned to the job."""
    estimated_minutes: int
    """Sum of the tasks' EstimatedMinutes (0 when the job has no estimated tasks)."""

    @classmethod
    def from_xml(cls, el: ET.Element) -> XpmJob:
        client = el.find("Client")
        return cls(
            id=_text(el, "ID") or "",
            uuid=_text(el, "UUID") or "",
            name=_text(el, "Name") or "",
            description=_text(el, "Description") or "",
            state=_text(el, "State") or "",
            type=_text(el, "Type"),
            start_date=_date(_text(el, "StartDate")),
            due_date=_date(_text(el, "DueDate")),
            completed_date=_date(_text(el, "CompletedDate")),
            client_uuid=_text(client, "UUID"),
            client_name=_text(client, "Name"),
            assigned=tuple(
                uid for s in el.findall("Assigned/Staff") if (uid := _text(s, "UUID")) is not None
            ),
            estimated_minutes=sum(
                _minutes(t.findtext("EstimatedMinutes")) for t in el.findall("Tasks/Task")
            ),
        )


@dataclass(frozen=True)
class XpmStaff:
    uuid: str
    name: str
    email: str


@dataclass(frozen=True)
class XpmClientRecord:
    uuid: str
    name: str
    email: str | None
    contact_name: str | None


# --- client -----------------------------------------------------------------------------------


class XpmClient:
    """Thin async client for the XPM calls the product makes; errors become ApplicationErrors.

    At most ``MAX_CONCURRENT`` calls are in flight per client (Xero's per-tenant limit). Pass
    ``http`` to share a connection pool; otherwise one is created on first use and closed by
    :meth:`aclose`.
    """

    def __init__(
        self,
        connector: XpmConnector,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.connector = connector
        self.base = connector.base_url.rstrip("/")
        self._http = http
        self._owns_http = http is None
        self.timeout = timeout
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def _headers(self) -> dict[str, str]:
        try:
            token = secret(self.connector.access_token_env)
            tenant = secret(self.connector.tenant_id_env)
        except FirmConfigError as err:
            raise ApplicationError(str(err), type="MissingSecret", non_retryable=True) from None
        return {
            "Authorization": f"Bearer {token}",
            "xero-tenant-id": tenant or "",
            "Accept": "application/xml",
        }

    async def call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        body: ET.Element | None = None,
        tolerate: tuple[int, ...] = (),
    ) -> ET.Element | None:
        """One call; the parsed ``<Response>``, or None for a tolerated status."""
        headers = self._headers()
        content: bytes | None = None
        if body is not None:
            content = ET.tostring(body, encoding="utf-8")
            headers["Content-Type"] = "application/xml; charset=utf-8"
        if self._http is None:
            self._http = httpx.AsyncClient()
        async with self._slots:
            try:
                response = await self._http.request(
                    method,
                    f"{self.base}/{path}",
                    params=params,
                    content=content,
                    headers=headers,
                    timeout=self.timeout,
                )
            except httpx.HTTPError as err:
                raise transport_error(SYSTEM, operation, err) from None
        if response.status_code in tolerate:
            return None
        if response.status_code != 200:
            raise error_for_status(
                SYSTEM,
                response.status_code,
                response.headers,
                error_reason(response.content, response.reason_phrase),
                operation=operation,
            )
        try:
            root = parse_xml(response.content)
        except XmlRefused as err:
            # Likely a truncated or proxy-mangled answer: retryable, bounded by the policy.
            raise ApplicationError(
                f"{SYSTEM} {operation}: unreadable response ({err})", type="XpmProtocolError"
            ) from None
        status = (root.findtext("Status") or "").strip()
        if status.upper() != "OK":
            # XPM can refuse a request with HTTP 200 and <Status>ERROR</Status>.
            reason = error_reason(response.content, status or "no status")
            raise ApplicationError(
                f"{SYSTEM} {operation}: rejected: {redact(reason)}",
                type="XPMRejected",
                non_retryable=True,
            )
        return root

    async def _required(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        body: ET.Element | None = None,
    ) -> ET.Element:
        root = await self.call(method, path, operation=operation, params=params, body=body)
        assert root is not None  # nothing tolerated: every other status raised
        return root

    # --- jobs ---

    async def get_job(self, job_id: str) -> XpmJob | None:
        root = await self.call(
            "GET", f"job.api/get/{quote(job_id, safe='')}", operation="get job", tolerate=(404,)
        )
        if root is None:
            return None
        el = root.find("Job")
        return XpmJob.from_xml(el) if el is not None else None

    async def list_jobs(self, since: date, until: date, *, detailed: bool = True) -> list[XpmJob]:
        params = {"from": ymd(since), "to": ymd(until)}
        if detailed:
            params["detailed"] = "true"
        root = await self._required("GET", "job.api/list", operation="list jobs", params=params)
        return [XpmJob.from_xml(el) for el in root.findall("Jobs/Job")]

    async def current_jobs(self, *, detailed: bool = False) -> list[XpmJob]:
        params = {"detailed": "true"} if detailed else None
        root = await self._required(
            "GET", "job.api/current", operation="list current jobs", params=params
        )
        return [XpmJob.from_xml(el) for el in root.findall("Jobs/Job")]

    async def staff_jobs(self, staff_uuid: str) -> list[XpmJob]:
        root = await self._required(
            "GET", f"job.api/staff/{quote(staff_uuid, safe='')}", operation="list staff jobs"
        )
        return [XpmJob.from_xml(el) for el in root.findall("Jobs/Job")]

    async def add_job(
        self,
        *,
        name: str,
        client_uuid: str,
        start: date,
        due: date | None,
        job_type: str | None = None,
        description: str = "",
        job_id: str | None = None,
    ) -> XpmJob:
        """``POST job.api/add`` (used by tests and the demo; the product never creates jobs)."""
        job = ET.Element("Job")
        fields: list[tuple[str, str | None]] = [
            ("ID", job_id),
            ("Name", name),
            ("Description", description),
            ("ClientUUID", client_uuid),
            ("StartDate", ymd(start)),
            ("DueDate", ymd(due) if due else None),
            ("Type", job_type),
        ]
        for tag, value in fields:
            if value is not None:
                ET.SubElement(job, tag).text = value
        root = await self._required("POST", "job.api/add", operation="add job", body=job)
        el = root.find("Job")
        if el is None:
            raise ApplicationError(
                f"{SYSTEM} add job: no <Job> in the answer", type="XpmProtocolError"
            )
        return XpmJob.from_xml(el)

    async def add_task(self, job_id: str, name: str, estimated_minutes: int) -> None:
        task = ET.Element("Task")
        ET.SubElement(task, "Job").text = job_id
        ET.SubElement(task, "Name").text = name
        ET.SubElement(task, "EstimatedMinutes").text = str(estimated_minutes)
        await self._required("POST", "job.api/task", operation="add task", body=task)

    async def assign(
        self, job: XpmJob, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        """``PUT job.api/assign``: attribute-based XML, built by hand as XPM expects."""
        body = ET.Element("Job")
        ET.SubElement(body, "ID").text = job.id
        if job.uuid:
            ET.SubElement(body, "UUID").text = job.uuid
        for staff_uuid in add:
            ET.SubElement(body, "add", {"uuid": staff_uuid})
        for staff_uuid in remove:
            ET.SubElement(body, "remove", {"uuid": staff_uuid})
        await self._required("PUT", "job.api/assign", operation="assign staff", body=body)

    async def set_state(self, job: XpmJob, interface_code: str) -> None:
        body = ET.Element("Job")
        ET.SubElement(body, "ID").text = job.id
        if job.uuid:
            ET.SubElement(body, "UUID").text = job.uuid
        ET.SubElement(body, "State").text = interface_code
        await self._required("PUT", "job.api/state", operation="change job state", body=body)

    # --- staff and clients ---

    async def list_staff(self) -> list[XpmStaff]:
        root = await self._required("GET", "staff.api/list", operation="list staff")
        return [
            XpmStaff(uuid=uid, name=_text(el, "Name") or "", email=_text(el, "Email") or "")
            for el in root.findall("StaffList/Staff")
            if (uid := _text(el, "UUID")) is not None
        ]

    async def get_client(self, client_uuid: str) -> XpmClientRecord | None:
        root = await self.call(
            "GET",
            f"client.api/get/{quote(client_uuid, safe='')}",
            operation="get client",
            tolerate=(404,),
        )
        el = root.find("Client") if root is not None else None
        if el is None:
            return None
        contacts = el.findall("Contacts/Contact")
        primary = next(
            (c for c in contacts if (_text(c, "IsPrimary") or "").lower() in ("yes", "true")),
            contacts[0] if contacts else None,
        )
        return XpmClientRecord(
            uuid=client_uuid,
            name=_text(el, "Name") or "",
            email=_text(el, "Email") or _text(primary, "Email"),
            contact_name=_text(primary, "Name"),
        )


# --- activities -------------------------------------------------------------------------------


def _client_id(client_uuid: str | None) -> str:
    """XPM's client UUID as our client id; anything else XPM might send is not usable in a
    path (the client's upload link), so it is left out rather than passed on."""
    value = client_uuid or ""
    return value if value and not limits.client_id_problem(value) else ""


def _email(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text or len(text) > limits.MAX_EMAIL or limits.text_problem(text) or "@" not in text:
        return None
    return text


def _target_state(connector: XpmConnector, status: DispatchStatus) -> str | None:
    """Our dispatch status -> the firm's XPM state interface code; None leaves it alone."""
    if status is DispatchStatus.ASSIGNED:
        return connector.assigned_state
    if status is DispatchStatus.IN_PROGRESS:
        return connector.in_progress_state
    if status is DispatchStatus.COMPLETED:
        return connector.completed_state
    return None


def _date_chunks(since: date, until: date) -> list[tuple[date, date]]:
    chunks: list[tuple[date, date]] = []
    start = since
    while start <= until:
        end = min(until, start + timedelta(days=MAX_LIST_DAYS - 1))
        chunks.append((start, end))
        start = end + timedelta(days=1)
    return chunks


class XpmActivities(PmActivities):
    """The PM role backed by Xero Practice Manager."""

    def __init__(
        self, config: FirmConfig, connector: XpmConnector, http: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.connector = connector
        self.client = XpmClient(connector, http)
        self._staff: dict[str, str] = {}
        """Lower-cased email -> staff UUID."""
        self._staff_at: float | None = None
        self._clients: dict[str, tuple[XpmClientRecord | None, float]] = {}

    async def aclose(self) -> None:
        """Close the HTTP pool if this instance created it (not when one was injected)."""
        await self.client.aclose()

    # --- pm_load_engagement ---

    @activity.defn(name="pm_load_engagement")
    async def load_engagement(self, input: LoadEngagementInput) -> EngagementDetails:
        refused = foreign_source(SYSTEM, SOURCE, input.source)
        if refused:
            raise ApplicationError(refused, type="ForeignSource", non_retryable=True)
        job = await self.client.get_job(input.external_id)
        if job is None:
            raise ApplicationError(
                f"{SYSTEM} job {input.external_id} was not found",
                type="EngagementNotFound",
                non_retryable=True,
            )
        service = self._service(job)
        if job.due_date is None:
            raise ApplicationError(
                f"{SYSTEM} job {job.id} has no due date",
                type="MissingDueDate",
                non_retryable=True,
            )
        problem = self._date_problem(job, job.due_date)
        if problem:
            raise ApplicationError(
                f"{SYSTEM} job {job.id}: {problem}", type="ImpossibleDate", non_retryable=True
            )
        client = await self._client_record(job.client_uuid)
        return self._details(input.source, job, service, job.due_date, client)

    def _service(self, job: XpmJob) -> ServiceType:
        service = self.config.service_type_for_work_type(job.type)
        if service is None:
            raise ApplicationError(
                f"{SYSTEM} job {job.id}: job type {job.type!r} is not mapped to a service type "
                "(add it to a service type's pm_work_types in the firm config)",
                type="UnmappedWorkType",
                non_retryable=True,
            )
        return service

    def _is_completed(self, job: XpmJob) -> bool:
        completed = state_key(self.connector.completed_state)
        return job.completed_date is not None or state_key(job.state) in {completed, "completed"}

    def _known_client(self, job: XpmJob, record: XpmClientRecord | None) -> ClientRecord | None:
        """The firm config's client for this job, matched by name, then by email.

        XPM identifies clients by UUID, which the firm config does not carry; matching lets
        client history (the ranking's first criterion) work for XPM jobs too.
        """
        name = (job.client_name or (record.name if record else "") or "").casefold()
        email = ((record.email if record else None) or "").casefold()
        for known in self.config.clients:
            if name and (known.name or "").casefold() == name:
                return known
        for known in self.config.clients:
            if email and (known.email or "").casefold() == email:
                return known
        return None

    def _details(
        self,
        source: str,
        job: XpmJob,
        service: ServiceType,
        due: date,
        record: XpmClientRecord | None,
    ) -> EngagementDetails:
        known = self._known_client(job, record)
        hours = (
            round(job.estimated_minutes / 60, 2)
            if job.estimated_minutes > 0
            else service.default_estimated_hours
        )
        client_name = (
            job.client_name
            or (record.name if record else None)
            or (known.name if known else None)
            or ""
        )
        contact = limits.clean_text(
            (record.contact_name if record else None) or "", limits.MAX_NAME
        )
        return EngagementDetails(
            source=source,
            external_id=job.id,
            title=limits.clean_text(job.name, limits.MAX_TITLE) or service.name,
            client_id=known.id if known else _client_id(job.client_uuid),
            client_name=limits.clean_text(client_name, limits.MAX_NAME)
            or (job.client_uuid or "unknown client"),
            client_email=_email(record.email if record else None)
            or (known.email if known else None),
            client_contact_name=contact or None,
            service_type=service.id,
            due_date=due,
            start_date=job.start_date,
            estimated_hours=hours,
            required_skills=list(service.required_skills),
            specializations=list(service.preferred_skills),
            documents_needed=list(service.documents_needed),
            scope_summary=limits.clean_text(job.description, limits.MAX_SCOPE, multiline=True)
            or service.name,
            # [A] XPM's web app addresses a job by its number under /job/.
            pm_url=f"{self.connector.app_url.rstrip('/')}/job/{quote(job.id, safe='')}",
            pm_work_type=limits.clean_text(job.type or "", limits.MAX_STATUS) or None,
            # Assignees are staff UUIDs in XPM; resolving them to emails would cost a
            # staff.api/list call per load against a 60-a-minute budget, for a field no
            # workflow reads.
            pm_assignee_email=None,
            pm_status="Completed"
            if self._is_completed(job)
            else (limits.clean_text(job.state, limits.MAX_STATUS) or None),
        )

    async def _client_record(self, client_uuid: str | None) -> XpmClientRecord | None:
        """The client's record (for its email), cached; a missing record is not an error."""
        if not client_uuid:
            return None
        cached = self._clients.get(client_uuid)
        if cached is not None and time.monotonic() - cached[1] < CLIENT_CACHE_SECONDS:
            return cached[0]
        try:
            record = await self.client.get_client(client_uuid)
        except ApplicationError as err:
            if not err.non_retryable:
                raise
            # A permission or shape problem on the client record must not block the
            # engagement: the firm config's email is the fallback.
            activity.logger.warning("XPM client record unavailable: %s", redact(str(err)))
            return None
        self._clients[client_uuid] = (record, time.monotonic())
        return record

    # --- pm_write_back ---

    @activity.defn(name="pm_write_back")
    async def write_back(self, input: PmWriteBackInput) -> PmWriteBackResult:
        refused = foreign_source(SYSTEM, SOURCE, input.source)
        if refused:
            return PmWriteBackResult(written=False, manual_update_required=True, detail=refused)
        job = await self.client.get_job(input.external_id)
        if job is None:
            raise ApplicationError(
                f"{SYSTEM} job {input.external_id} was not found",
                type="EngagementNotFound",
                non_retryable=True,
            )
        done: list[str] = []
        if input.assignee_email:
            staff_uuid = await self._staff_uuid(input.assignee_email)
            if staff_uuid not in job.assigned:
                # Added, never replacing: XPM jobs carry several people (the manager's own
                # assignment, other task owners) and removing any of them is not ours to do.
                await self.client.assign(job, add=[staff_uuid])
                done.append("assignee")
        target = _target_state(self.connector, input.status)
        notes: list[str] = []
        if target is not None and state_key(job.state) != state_key(target):
            if self._is_completed(job) and state_key(target) != state_key(
                self.connector.completed_state
            ):
                # Someone closed the job in XPM; reopening it is not a dispatch decision.
                notes.append("job is completed in XPM; state left alone")
            else:
                await self.client.set_state(job, target)
                done.append("state")
        if not done:
            detail = "; ".join(["XPM job already up to date", *notes])
            return PmWriteBackResult(written=False, detail=detail)
        return PmWriteBackResult(
            written=True, detail="; ".join([f"XPM {' and '.join(done)} updated", *notes])
        )

    @activity.defn(name="pm_move_due_date")
    async def move_due_date(self, input: PmDueDateInput) -> PmWriteBackResult:
        refused = foreign_source(SYSTEM, SOURCE, input.source)
        if refused:
            return PmWriteBackResult(written=False, manual_update_required=True, detail=refused)
        # Dates go through `PUT job.api/update`, which rewrites the job's name, description and
        # budget as well; a partner's date is not worth risking those, so it is done by hand.
        return PmWriteBackResult(
            written=False,
            manual_update_required=True,
            detail=f"{SYSTEM}: move the due date on job {input.external_id} by hand",
        )

    async def _staff_uuid(self, email: str) -> str:
        wanted = email.casefold()
        fresh = self._staff_at is not None and time.monotonic() - self._staff_at < (
            STAFF_CACHE_SECONDS
        )
        if not fresh or wanted not in self._staff:
            # A miss refreshes the list once: someone may have joined since it was read.
            staff = await self.client.list_staff()
            self._staff = {s.email.casefold(): s.uuid for s in staff if s.email}
            self._staff_at = time.monotonic()
        staff_uuid = self._staff.get(wanted)
        if staff_uuid is None:
            raise ApplicationError(
                f"{SYSTEM}: the assignee is not on the practice's staff list "
                "(add them in XPM or fix their email in the firm config)",
                type="UnknownStaff",
                non_retryable=True,
            )
        return staff_uuid

    # --- pm_list_new_jobs ---

    @activity.defn(name="pm_list_new_jobs")
    async def list_new_jobs(self, input: ListJobsInput) -> JobList:
        """Jobs created in [since, until], each ready to dispatch or with the reason it is not.

        A pure read (GETs only): the poller calls it on a schedule and may call it again.
        """
        if input.until < input.since:
            raise ApplicationError(
                f"{SYSTEM} list jobs: until {input.until} is before since {input.since}",
                type="InvalidRange",
                non_retryable=True,
            )
        jobs: dict[str, XpmJob] = {}
        for start, end in _date_chunks(input.since, input.until):
            for job in await self.client.list_jobs(start, end, detailed=True):
                jobs.setdefault(job.id, job)
        ready: dict[str, tuple[XpmJob, ServiceType, date]] = {}
        out: dict[str, PmJob] = {}
        for job in jobs.values():
            problem = self._problem(job)
            if isinstance(problem, str):
                out[job.id] = PmJob(external_id=job.id, problem=problem)
            else:
                service, due = problem
                ready[job.id] = (job, service, due)
        records = await self._client_records({j.client_uuid for j, _, _ in ready.values()})
        for job_id, (job, service, due) in ready.items():
            record = records.get(job.client_uuid or "")
            out[job_id] = PmJob(
                external_id=job_id, details=self._details(SOURCE, job, service, due, record)
            )
        return JobList(jobs=[out[job_id] for job_id in jobs])

    def _problem(self, job: XpmJob) -> str | tuple[ServiceType, date]:
        """Why a listed job cannot be dispatched, or its service type and due date."""
        if self._is_completed(job):
            return "already completed in XPM"
        if state_key(job.state) in {"cancelled", "canceled"}:
            return "cancelled in XPM"
        service = self.config.service_type_for_work_type(job.type)
        if service is None:
            return (
                f"job type {job.type!r} is not mapped to a service type "
                "(add it to a service type's pm_work_types)"
            )
        if job.due_date is None:
            return "no due date"
        return self._date_problem(job, job.due_date) or (service, job.due_date)

    def _date_problem(self, job: XpmJob, due: date) -> str | None:
        """Impossible dates make a job undispatchable instead of reaching the dispatcher."""
        today = self.config.firm.today_at(datetime.now(UTC))
        problem = limits.due_date_problem(due, today, may_be_past=True)
        if problem:
            return f"due date {problem}"
        if job.start_date is not None:
            start_problem = limits.start_date_problem(job.start_date, due)
            if start_problem:
                return f"start date {start_problem}"
        return None

    async def _client_records(
        self, client_uuids: set[str | None]
    ) -> dict[str, XpmClientRecord | None]:
        """Each distinct client once, concurrently (the semaphore keeps it to five at a time)."""
        wanted = sorted(u for u in client_uuids if u)
        results = await asyncio.gather(
            *(self._client_record(u) for u in wanted), return_exceptions=True
        )
        found: dict[str, XpmClientRecord | None] = {}
        for client_uuid, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            found[client_uuid] = result
        return found
