"""Xero Practice Manager emulator: the job, staff and client methods the dispatcher uses.

Served under ``/xpm/practicemanager/3.1/...``; an ``XpmConnector`` whose ``base_url`` is
``<sandbox>/xpm/practicemanager/3.1`` talks to it exactly as it would to
``https://api.xero.com/practicemanager/3.1``.

Contract points it holds the client to:

- every call carries ``Authorization: Bearer <access token>`` and ``xero-tenant-id``;
- XML in and out, wrapped in ``<Response><Status>OK</Status>...</Response>``; dates in request
  bodies and parameters are ``YYYYMMDD``, in responses ``YYYY-MM-DDT00:00:00``;
- ``PUT job.api/assign`` takes attribute-based XML (``<add uuid="..."/>``); ``PUT job.api/state``
  takes the firm's state *interface code*, while a job's ``<State>`` reads back as the state's
  name (see ``JOB_STATES``);
- Xero's per-tenant limits with real counters: 60 calls per minute, 5,000 per day and 5 at a
  time, each answered 429 with ``Retry-After`` when exceeded. The windows live on the store so
  a test can shrink them.

Choices Xero's documentation does not pin down are marked [A] (assumption).

Store knobs a test or the demo may turn (``ctx.stores["xpm"].<name> = ...``): ``minute_limit``
/ ``minute_window_seconds``, ``day_limit`` / ``day_window_seconds``, ``concurrent_limit``,
``response_delay`` (seconds each call holds its concurrency slot, to make overlap observable).

XML comes in from local test clients only; ``ElementTree`` is used without ``defusedxml`` (not
installed), so any body with a DTD is refused before parsing (no entity expansion).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from app.secrets_demo import demo_secret
from dispatch.config import XpmConnector
from sandbox.context import SandboxContext
from sandbox.seed import SandboxSeed

NAME = "xpm"
API_PATH = "/practicemanager/3.1"
MEDIA_TYPE = "application/xml; charset=utf-8"

_TOKEN_ENV: str = XpmConnector.model_fields["access_token_env"].default
_TENANT_ENV: str = XpmConnector.model_fields["tenant_id_env"].default

JOB_STATES: dict[str, str] = {
    "PLANNED": "Planned",
    "CONFIRMED": "Confirmed",
    "ASSIGNED": "Assigned",
    "INPROGRESS": "In Progress",
    "COMPLETED": "Completed",
    "CANCELLED": "Cancelled",
}
"""The sandbox practice's job states: interface code (what PUT state takes) -> name (what a
job's ``<State>`` shows). XPM states are firm-defined; there is no built-in "Assigned"."""

DEFAULT_STATE = "PLANNED"
COMPLETED_STATE = "COMPLETED"
MAX_LIST_DAYS = 366
"""``job.api/list`` refuses ranges longer than a year."""


# --- store ------------------------------------------------------------------------------------


@dataclass
class XpmStore:
    today: date
    staff: list[dict[str, Any]]
    """{UUID, Name, Email, Phone, Mobile, Address, PayrollCode}; active staff only."""
    clients: dict[str, dict[str, Any]]
    """UUID -> {UUID, Name, Email, ContactName, ContactUUID}."""
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Job numbers include it: a second sandbox run must not reuse the first run's numbers,
    which would collide with workflow ids a persisted Temporal server still remembers."""
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Job number (``ID``) -> job record (dates as ``date``; ``State`` as the interface code)."""
    created: int = 0

    minute_limit: int = 60
    minute_window_seconds: float = 60.0
    day_limit: int = 5000
    day_window_seconds: float = 86_400.0
    concurrent_limit: int = 5
    response_delay: float = 0.0
    calls: dict[str, deque[float]] = field(default_factory=dict)
    """Per tenant: monotonic times of the calls admitted in the last day window."""
    in_flight: dict[str, int] = field(default_factory=dict)
    peak_in_flight: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    """429s by problem (``minute`` / ``day`` / ``concurrent``)."""

    def staff_member(self, staff_uuid: str) -> dict[str, Any] | None:
        return next((s for s in self.staff if s["UUID"] == staff_uuid), None)

    def job(self, ref: str) -> dict[str, Any] | None:
        """By job number, or by UUID (Xero accepts either where a job is named)."""
        found = self.jobs.get(ref)
        return found or next((j for j in self.jobs.values() if j["UUID"] == ref), None)

    # --- Xero's per-tenant limits -----------------------------------------------------------

    def admit(self, tenant: str, now: float) -> tuple[str, int] | None:
        """Count a call, or say which limit it breaks and how many seconds until it would not."""
        if self.in_flight.get(tenant, 0) >= self.concurrent_limit:
            # [A] Xero names no wait for the concurrent limit; one second is enough locally.
            return self._reject("concurrent", 1)
        calls = self.calls.setdefault(tenant, deque())
        while calls and calls[0] <= now - self.day_window_seconds:
            calls.popleft()
        if len(calls) >= self.day_limit:
            return self._reject("day", _wait(calls[0] + self.day_window_seconds - now))
        in_minute = [t for t in calls if t > now - self.minute_window_seconds]
        if len(in_minute) >= self.minute_limit:
            # The oldest call in the window leaves it first; then one more fits.
            oldest = in_minute[-self.minute_limit]
            return self._reject("minute", _wait(oldest + self.minute_window_seconds - now))
        calls.append(now)
        self.in_flight[tenant] = self.in_flight.get(tenant, 0) + 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight[tenant])
        return None

    def release(self, tenant: str) -> None:
        self.in_flight[tenant] = max(0, self.in_flight.get(tenant, 0) - 1)

    def _reject(self, problem: str, wait: int) -> tuple[str, int]:
        self.rejected[problem] = self.rejected.get(problem, 0) + 1
        return problem, wait

    def dump(self) -> dict[str, Any]:
        return {
            "jobs": [_job_state(self, job) for job in self.jobs.values()],
            "states": {job["ID"]: job["State"] for job in self.jobs.values()},
            "job_states": dict(JOB_STATES),
            "rate": {
                "minute_limit": self.minute_limit,
                "minute_window_seconds": self.minute_window_seconds,
                "concurrent_limit": self.concurrent_limit,
                "peak_in_flight": self.peak_in_flight,
                "rejected": dict(self.rejected),
            },
        }


def _wait(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def _job_state(store: XpmStore, job: dict[str, Any]) -> dict[str, Any]:
    """A job as JSON for ``/_sandbox/state/xpm``."""
    shown = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in job.items()}
    shown["StateName"] = JOB_STATES.get(job["State"], job["State"])
    shown["AssignedEmails"] = [
        s["Email"] for u in job["Assigned"] if (s := store.staff_member(u)) is not None
    ]
    return shown


def staff_uuid_for(email: str) -> str:
    """Staff get a deterministic UUID per email, so tests and scripts can refer to them."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"xpm-sandbox/staff/{email.lower()}"))


def client_uuid_for(client_id: str) -> str:
    """The UUID the emulator gives a seeded client (the firm config's client id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"xpm-sandbox/client/{client_id}"))


def create_store(seed: SandboxSeed) -> XpmStore:
    staff = [
        {
            "UUID": staff_uuid_for(member.email),
            "Name": member.name,
            "Email": member.email,
            "Phone": "",
            "Mobile": "",
            "Address": "",
            "PayrollCode": f"P{idx + 1:03d}",
        }
        for idx, member in enumerate(seed.staff)
        # [A] staff.api/list shows current staff only; a departed member is not listed.
        if member.active
    ]
    clients = {
        client_uuid_for(c.id): {
            "UUID": client_uuid_for(c.id),
            "Name": c.name,
            "Email": c.email or "",
            "ContactName": c.contact_name,
            "ContactUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"xpm-sandbox/contact/{c.id}")),
        }
        for c in seed.clients
    }
    return XpmStore(today=seed.today, staff=staff, clients=clients)


# --- XML on the wire --------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = str(text)
    return child


def _xml_date(value: date | None) -> str | None:
    return f"{value.isoformat()}T00:00:00" if value is not None else None


def _ok(method: str, *children: ET.Element) -> Response:
    root = ET.Element("Response", {"api-method": method})
    _sub(root, "Status", "OK")
    root.extend(children)
    return Response(ET.tostring(root, encoding="utf-8"), media_type=MEDIA_TYPE)


def error_body(description: str, method: str = "Error") -> bytes:
    """[A] XPM's error envelope: ``<Status>ERROR</Status><ErrorDescription>``."""
    root = ET.Element("Response", {"api-method": method})
    _sub(root, "Status", "ERROR")
    _sub(root, "ErrorDescription", description)
    body: bytes = ET.tostring(root, encoding="utf-8")
    return body


def _error(
    status: int, description: str, method: str = "Error", headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(description, method), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


def _parse_ymd(value: str | None) -> date | None:
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return None


async def _body(request: Request, root_tag: str) -> ET.Element | Response:
    raw = await request.body()
    if not raw.strip():
        return _error(400, f"Request body is missing: expected <{root_tag}>")
    if b"<!doctype" in raw.lower() or b"<!entity" in raw.lower():
        return _error(400, "Document type declarations are not allowed")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        return _error(400, f"The XML body could not be read: {err}")
    if root.tag != root_tag:
        return _error(400, f"Expected a <{root_tag}> element, got <{root.tag}>")
    return root


def _text(root: ET.Element, tag: str) -> str | None:
    value = root.findtext(tag)
    return value.strip() if value and value.strip() else None


def _job_xml(store: XpmStore, job: dict[str, Any], *, detailed: bool) -> ET.Element:
    el = ET.Element("Job")
    _sub(el, "ID", job["ID"])
    _sub(el, "UUID", job["UUID"])
    _sub(el, "Name", job["Name"])
    _sub(el, "Description", job["Description"])
    _sub(el, "ClientOrderNumber", job["ClientOrderNumber"])
    _sub(el, "State", JOB_STATES.get(job["State"], job["State"]))
    _sub(el, "Type", job["Type"])
    _sub(el, "StartDate", _xml_date(job["StartDate"]))
    _sub(el, "DueDate", _xml_date(job["DueDate"]))
    _sub(el, "CompletedDate", _xml_date(job["CompletedDate"]))
    client = store.clients.get(job["ClientUUID"]) or {"UUID": job["ClientUUID"], "Name": ""}
    c = _sub(el, "Client")
    _sub(c, "UUID", client["UUID"])
    _sub(c, "Name", client["Name"])
    for role in ("Manager", "Partner"):
        member = store.staff_member(job[role]) if job[role] else None
        if member is not None:
            r = _sub(el, role)
            _sub(r, "UUID", member["UUID"])
            _sub(r, "Name", member["Name"])
    assigned = _sub(el, "Assigned")
    for staff_uuid in job["Assigned"]:
        member = store.staff_member(staff_uuid)
        if member is not None:
            s = _sub(assigned, "Staff")
            _sub(s, "UUID", member["UUID"])
            _sub(s, "Name", member["Name"])
    if detailed:
        tasks = _sub(el, "Tasks")
        for task in job["Tasks"]:
            t = _sub(tasks, "Task")
            _sub(t, "UUID", task["UUID"])
            _sub(t, "Name", task["Name"])
            _sub(t, "Description", task["Description"])
            _sub(t, "EstimatedMinutes", task["EstimatedMinutes"])
            _sub(t, "ActualMinutes", 0)
            _sub(t, "Completed", "false")
            _sub(t, "Billable", "true")
            ta = _sub(t, "Assigned")
            for staff_uuid in task["Assigned"]:
                member = store.staff_member(staff_uuid)
                if member is not None:
                    s = _sub(ta, "Staff")
                    _sub(s, "UUID", member["UUID"])
                    _sub(s, "Name", member["Name"])
                    _sub(s, "AllocatedMinutes", 0)
        _sub(el, "Milestones")
        _sub(el, "Notes")
    return el


def _jobs_xml(store: XpmStore, jobs: Iterable[dict[str, Any]], *, detailed: bool) -> ET.Element:
    wrapper = ET.Element("Jobs")
    for job in sorted(jobs, key=lambda j: str(j["ID"])):
        wrapper.append(_job_xml(store, job, detailed=detailed))
    return wrapper


def _staff_xml(member: dict[str, Any]) -> ET.Element:
    el = ET.Element("Staff")
    for tag in ("UUID", "Name", "Email", "Phone", "Mobile", "Address", "PayrollCode"):
        _sub(el, tag, member[tag])
    return el


def _client_xml(client: dict[str, Any]) -> ET.Element:
    el = ET.Element("Client")
    _sub(el, "UUID", client["UUID"])
    _sub(el, "Name", client["Name"])
    _sub(el, "Email", client["Email"])
    for tag in ("Phone", "Fax", "Website", "Address", "City", "Region", "PostCode", "Country"):
        _sub(el, tag, "")
    contacts = _sub(el, "Contacts")
    if client.get("ContactName"):
        contact = _sub(contacts, "Contact")
        _sub(contact, "UUID", client["ContactUUID"])
        _sub(contact, "IsPrimary", "Yes")
        _sub(contact, "Name", client["ContactName"])
        _sub(contact, "Email", client["Email"])
    return el


def _is_current(job: dict[str, Any]) -> bool:
    return job["State"] not in (COMPLETED_STATE, "CANCELLED")


# --- auth and limits --------------------------------------------------------------------------


def _check_auth(request: Request) -> Response | None:
    """Bearer access token and the tenant (practice) id, both required."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    good_token = scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), demo_secret(_TOKEN_ENV).encode()
    )
    if not good_token:
        # [A] Xero answers a missing or expired token with 401 "AuthenticationUnsuccessful";
        # the XML rendering of it is ours.
        return _error(401, "AuthenticationUnsuccessful: the access token is missing or invalid")
    tenant = request.headers.get("xero-tenant-id", "")
    if not hmac.compare_digest(tenant.encode(), demo_secret(_TENANT_ENV).encode()):
        # [A] A token not connected to the named tenant: 403 "AuthorizationUnsuccessful".
        return _error(
            403, "AuthorizationUnsuccessful: the xero-tenant-id header is missing or not connected"
        )
    return None


def _rate_limited(problem: str, wait: int) -> Response:
    # [A] Header name X-Rate-Limit-Problem (minute / day / concurrent) and the XML body are
    # assumptions; 429 with Retry-After in seconds is what Xero documents.
    return _error(
        429,
        f"Rate limit exceeded ({problem}): retry after {wait} seconds",
        headers={"Retry-After": str(wait), "X-Rate-Limit-Problem": problem},
    )


def _route_class(ctx: SandboxContext) -> type[APIRoute]:
    class XpmRoute(APIRoute):
        """Checks credentials, then Xero's per-tenant limits, before any route runs."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                denied = _check_auth(request)
                if denied is not None:
                    return denied
                store: XpmStore = ctx.stores[NAME]
                tenant = request.headers["xero-tenant-id"]
                limited = store.admit(tenant, time.monotonic())
                if limited is not None:
                    return _rate_limited(*limited)
                try:
                    if store.response_delay > 0:
                        await asyncio.sleep(store.response_delay)
                    return await handler(request)
                finally:
                    store.release(tenant)

            return guarded

    return XpmRoute


# --- routes -----------------------------------------------------------------------------------


def create_router(ctx: SandboxContext) -> APIRouter:
    router = APIRouter(
        prefix=f"/{NAME}{API_PATH}", route_class=_route_class(ctx), include_in_schema=False
    )

    def store() -> XpmStore:
        current: XpmStore = ctx.stores[NAME]
        return current

    def detailed(request: Request) -> bool:
        return request.query_params.get("detailed", "").lower() == "true"

    def job_not_found(ref: str, method: str) -> Response:
        # [A] An unknown job number answers 404 with the error envelope.
        return _error(404, f"Job {ref} not found", method)

    # --- jobs: reads ---

    @router.get("/job.api/list")
    async def list_jobs(request: Request) -> Response:
        start = _parse_ymd(request.query_params.get("from"))
        end = _parse_ymd(request.query_params.get("to"))
        if start is None or end is None:
            return _error(400, "from and to are required, as YYYYMMDD", "List")
        if end < start:
            return _error(400, "to must not be before from", "List")
        if (end - start).days > MAX_LIST_DAYS:
            return _error(400, "The date range cannot be more than one year", "List")
        s = store()
        # [A] Per our contract notes, list returns the jobs *created* in the range; the
        # emulator stamps each job with the sandbox's today when it is added.
        found = [j for j in s.jobs.values() if start <= j["Created"] <= end]
        return _ok("List", _jobs_xml(s, found, detailed=detailed(request)))

    @router.get("/job.api/current")
    async def current_jobs(request: Request) -> Response:
        s = store()
        found = [j for j in s.jobs.values() if _is_current(j)]
        return _ok("Current", _jobs_xml(s, found, detailed=detailed(request)))

    @router.get("/job.api/get/{ref}")
    async def get_job(ref: str) -> Response:
        s = store()
        job = s.job(ref)
        if job is None:
            return job_not_found(ref, "Get")
        return _ok("Get", _job_xml(s, job, detailed=True))

    @router.get("/job.api/staff/{staff_uuid}")
    async def staff_jobs(staff_uuid: str, request: Request) -> Response:
        s = store()
        if s.staff_member(staff_uuid) is None:
            return _error(404, f"Staff {staff_uuid} not found", "Staff")
        found = [j for j in s.jobs.values() if _is_current(j) and staff_uuid in j["Assigned"]]
        return _ok("Staff", _jobs_xml(s, found, detailed=detailed(request)))

    # --- jobs: writes ---

    @router.post("/job.api/add")
    async def add_job(request: Request) -> Response:
        root = await _body(request, "Job")
        if isinstance(root, Response):
            return root
        s = store()
        name = _text(root, "Name")
        client_uuid = _text(root, "ClientUUID")
        start = _parse_ymd(_text(root, "StartDate"))
        due_raw = _text(root, "DueDate")
        due = _parse_ymd(due_raw)
        if not name:
            return _error(400, "Name is required", "Add")
        if not client_uuid or client_uuid not in s.clients:
            return _error(400, "ClientUUID does not name a client", "Add")
        if start is None:
            return _error(400, "StartDate is required, as YYYYMMDD", "Add")
        if due_raw is not None and due is None:
            return _error(400, "DueDate must be YYYYMMDD", "Add")
        if due is not None and due < start:
            return _error(400, "DueDate must not be before StartDate", "Add")
        state = (_text(root, "State") or DEFAULT_STATE).upper()
        if state not in JOB_STATES:
            return _error(400, f"Invalid job state '{state}'", "Add")
        number = s.created + 1
        job_id = _text(root, "ID") or f"J{s.run[:4].upper()}{number:05d}"
        if s.job(job_id) is not None:
            return _error(400, f"Job number {job_id} is already in use", "Add")
        s.created = number
        s.jobs[job_id] = {
            "ID": job_id,
            "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"xpm-sandbox/job/{s.run}/{job_id}")),
            "Name": name,
            "Description": _text(root, "Description") or "",
            "ClientOrderNumber": _text(root, "ClientOrderNumber") or "",
            "State": state,
            # [A] The real add sets the type through a template or category; the sandbox
            # also takes <Type> directly so tests and the demo can create typed jobs.
            "Type": _text(root, "Type") or "",
            "StartDate": start,
            "DueDate": due,
            "CompletedDate": s.today if state == COMPLETED_STATE else None,
            "ClientUUID": client_uuid,
            "Manager": None,
            "Partner": None,
            "Assigned": [],
            "Tasks": [],
            "Created": s.today,
        }
        return _ok("Add", _job_xml(s, s.jobs[job_id], detailed=True))

    @router.post("/job.api/task")
    async def add_task(request: Request) -> Response:
        root = await _body(request, "Task")
        if isinstance(root, Response):
            return root
        s = store()
        job = s.job(_text(root, "Job") or "")
        if job is None:
            return job_not_found(_text(root, "Job") or "", "Task")
        # [A] The real method names a task type by <TaskUUID>; the sandbox has no task
        # catalogue and takes <Name> (or the TaskUUID as the name).
        name = _text(root, "Name") or _text(root, "TaskUUID")
        minutes_raw = _text(root, "EstimatedMinutes") or "0"
        if not name:
            return _error(400, "TaskUUID or Name is required", "Task")
        if not minutes_raw.isdigit():
            return _error(400, "EstimatedMinutes must be a whole number of minutes", "Task")
        task_uuid = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"xpm-sandbox/task/{job['UUID']}/{len(job['Tasks'])}")
        )
        job["Tasks"].append(
            {
                "UUID": task_uuid,
                "Name": name,
                "Description": _text(root, "Description") or "",
                "EstimatedMinutes": int(minutes_raw),
                "Assigned": [],
            }
        )
        el = ET.Element("ID")
        el.text = task_uuid
        return _ok("Task", el)

    @router.put("/job.api/assign")
    async def assign(request: Request) -> Response:
        root = await _body(request, "Job")
        if isinstance(root, Response):
            return root
        s = store()
        ref = _text(root, "ID") or _text(root, "UUID") or ""
        job = s.job(ref)
        if job is None:
            return job_not_found(ref, "Assign")
        ops: list[tuple[str, str | None, str | None]] = []
        for child in root:
            if child.tag in ("ID", "UUID"):
                continue
            if child.tag not in (
                "add",
                "remove",
                "add-manager",
                "remove-manager",
                "add-partner",
                "remove-partner",
            ):
                return _error(400, f"Unknown element <{child.tag}> in assign", "Assign")
            staff_uuid = child.get("uuid")
            if child.tag in ("add", "remove", "add-manager", "add-partner"):
                if not staff_uuid or s.staff_member(staff_uuid) is None:
                    return _error(400, f"Staff member '{staff_uuid}' not found", "Assign")
            task_uuid = child.get("task-uuid")
            if task_uuid and not any(t["UUID"] == task_uuid for t in job["Tasks"]):
                return _error(400, f"Task '{task_uuid}' is not on job {job['ID']}", "Assign")
            ops.append((child.tag, staff_uuid, task_uuid))
        if not ops:
            return _error(400, "Nothing to assign: add or remove elements expected", "Assign")
        for tag, staff_uuid, task_uuid in ops:  # validated above: all or nothing
            _apply_assign(job, tag, staff_uuid, task_uuid)
        return _ok("Assign", _job_xml(s, job, detailed=True))

    @router.put("/job.api/state")
    async def set_state(request: Request) -> Response:
        root = await _body(request, "Job")
        if isinstance(root, Response):
            return root
        s = store()
        ref = _text(root, "ID") or _text(root, "UUID") or ""
        job = s.job(ref)
        if job is None:
            return job_not_found(ref, "State")
        code = (_text(root, "State") or "").upper()
        if code not in JOB_STATES:
            # [A] Wording ours: the state must be one of the practice's interface codes.
            return _error(400, f"Invalid job state '{code}'", "State")
        job["State"] = code
        job["CompletedDate"] = s.today if code == COMPLETED_STATE else None
        return _ok("State", _job_xml(s, job, detailed=True))

    # --- staff and clients ---

    @router.get("/staff.api/list")
    async def list_staff() -> Response:
        wrapper = ET.Element("StaffList")
        wrapper.extend(_staff_xml(m) for m in store().staff)
        return _ok("List", wrapper)

    @router.get("/staff.api/get/{staff_uuid}")
    async def get_staff(staff_uuid: str) -> Response:
        member = store().staff_member(staff_uuid)
        if member is None:
            return _error(404, f"Staff {staff_uuid} not found", "Get")
        return _ok("Get", _staff_xml(member))

    @router.get("/client.api/get/{client_uuid}")
    async def get_client(client_uuid: str) -> Response:
        client = store().clients.get(client_uuid)
        if client is None:
            return _error(404, f"Client {client_uuid} not found", "Get")
        return _ok("Get", _client_xml(client))

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def no_such_method(rest: str) -> Response:
        return _error(404, f"The method '{rest}' does not exist")

    return router


def _apply_assign(
    job: dict[str, Any], tag: str, staff_uuid: str | None, task_uuid: str | None
) -> None:
    """One add/remove; adding someone already there changes nothing ([A] Xero's behaviour)."""
    if tag in ("add", "remove") and task_uuid:
        target: list[str] = next(t for t in job["Tasks"] if t["UUID"] == task_uuid)["Assigned"]
    else:
        target = job["Assigned"]
    if tag == "add" and staff_uuid and staff_uuid not in target:
        target.append(staff_uuid)
    elif tag == "remove" and staff_uuid in target:
        target.remove(staff_uuid)
    elif tag == "add-manager":
        job["Manager"] = staff_uuid
    elif tag == "remove-manager":
        job["Manager"] = None
    elif tag == "add-partner":
        job["Partner"] = staff_uuid
    elif tag == "remove-partner":
        job["Partner"] = None


def render_fault(status: int, retry_after: int | None) -> tuple[object, str]:
    """XPM's XML envelope for an injected fault ([A] the error shape is not documented)."""
    if status == 429:
        wait = retry_after if retry_after is not None else 60
        return error_body(f"Rate limit exceeded: retry after {wait} seconds"), MEDIA_TYPE
    if status == 401:
        return error_body("AuthenticationUnsuccessful"), MEDIA_TYPE
    if status == 403:
        return error_body("AuthorizationUnsuccessful"), MEDIA_TYPE
    if status == 404:
        return error_body("The requested resource was not found"), MEDIA_TYPE
    if status >= 500:
        return error_body(f"An internal error occurred (HTTP {status})"), MEDIA_TYPE
    return error_body(f"The request was rejected (HTTP {status})"), MEDIA_TYPE
