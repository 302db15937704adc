"""Xero Practice Manager: the real activity code against the XPM emulator.

Covers auth (bearer + ``xero-tenant-id``), loading and mapping a job, unmapped types, 404,
idempotent write-back (judged by the request log), the state mapping, the poll with jobs that
cannot be dispatched, Xero's per-tenant limits (a real per-minute counter and the 5-concurrent
cap) turned into retry decisions, 5xx, and XPM's XML error reasons.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.xpm import (
    XmlRefused,
    XpmActivities,
    XpmClient,
    XpmJob,
    error_reason,
    parse_xml,
)
from app.secrets_demo import demo_secret
from dispatch.config import XpmConnector
from dispatch.models import (
    DispatchStatus,
    EngagementDetails,
    JobList,
    ListJobsInput,
    LoadEngagementInput,
    PmWriteBackInput,
    PmWriteBackResult,
)
from sandbox.xpm import XpmStore, client_uuid_for, staff_uuid_for
from tests.sandbox_server import RunningSandbox

XPM_ENVS = ("XERO_ACCESS_TOKEN", "XERO_TENANT_ID")
API = "/xpm/practicemanager/3.1"
BAYSIDE = "cl-bayside-dental"
OKAFOR = "cl-okafor-family"
PRIYA = "priya@harborfinch.example"


@pytest.fixture(autouse=True)
def xpm_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The activities read their credentials from the environment, like a deployed worker."""
    for name in XPM_ENVS:
        monkeypatch.setenv(name, demo_secret(name))


@pytest.fixture
def connector(sandbox: RunningSandbox) -> XpmConnector:
    return XpmConnector(
        kind="xpm",
        base_url=f"{sandbox.base_url}{API}",
        app_url="https://practicemanager.xero.com",
        assigned_state="ASSIGNED",
        in_progress_state="INPROGRESS",
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def client(connector: XpmConnector, http: httpx.AsyncClient) -> XpmClient:
    return XpmClient(connector, http)


@pytest.fixture
def acts(
    sandbox: RunningSandbox, connector: XpmConnector, http: httpx.AsyncClient
) -> XpmActivities:
    return XpmActivities(sandbox.config, connector, http)


def store(sandbox: RunningSandbox) -> XpmStore:
    current: XpmStore = sandbox.ctx.stores["xpm"]
    return current


def auth_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {demo_secret('XERO_ACCESS_TOKEN')}",
        "xero-tenant-id": demo_secret("XERO_TENANT_ID"),
    }


def url(sandbox: RunningSandbox, path: str) -> str:
    return f"{sandbox.base_url}{API}/{path}"


def fault(sandbox: RunningSandbox, **rule: Any) -> None:
    httpx.post(f"{sandbox.base_url}/_sandbox/faults", json={"rules": [rule]}).raise_for_status()


def xml(response: httpx.Response) -> ET.Element:
    return ET.fromstring(response.content)


def today(sandbox: RunningSandbox) -> date:
    return sandbox.ctx.seed.today


async def new_job(
    client: XpmClient,
    *,
    job_type: str | None = "1120-S",
    client_id: str = BAYSIDE,
    due: date | None = date(2026, 12, 15),
    tasks: tuple[int, ...] = (),
    **kwargs: Any,
) -> XpmJob:
    job = await client.add_job(
        name=kwargs.pop("name", "2026 S-Corp return"),
        client_uuid=client_uuid_for(client_id),
        start=date(2026, 11, 2),
        due=due,
        job_type=job_type,
        description=kwargs.pop("description", "Federal and state 1120-S with K-1s"),
        **kwargs,
    )
    for n, minutes in enumerate(tasks):
        await client.add_task(job.id, f"Task {n}", minutes)
    return job


async def load(acts: XpmActivities, job_id: str) -> EngagementDetails:
    result: EngagementDetails = await ActivityEnvironment().run(
        acts.load_engagement, LoadEngagementInput(source="xpm", external_id=job_id)
    )
    return result


async def write_back(
    acts: XpmActivities, job_id: str, email: str | None, status: DispatchStatus
) -> PmWriteBackResult:
    result: PmWriteBackResult = await ActivityEnvironment().run(
        acts.write_back,
        PmWriteBackInput(
            workflow_id=f"engagement-xpm-{job_id}",
            source="xpm",
            external_id=job_id,
            assignee_email=email,
            status=status,
        ),
    )
    return result


async def list_jobs(acts: XpmActivities, since: date, until: date) -> JobList:
    result: JobList = await ActivityEnvironment().run(
        acts.list_new_jobs, ListJobsInput(since=since, until=until)
    )
    return result


def writes(sandbox: RunningSandbox, since: int = 0) -> list[str]:
    return [
        str(r["path"]).removeprefix(API + "/")
        for r in sandbox.requests(prefix=API)
        if r["method"] in ("PUT", "POST") and int(r["seq"]) > since
    ]


def last_seq(sandbox: RunningSandbox) -> int:
    log = sandbox.requests()
    return int(log[-1]["seq"]) if log else 0


# --- auth -------------------------------------------------------------------------------------


def test_token_and_tenant_are_both_required(sandbox: RunningSandbox) -> None:
    target = url(sandbox, "staff.api/list")
    no_token = httpx.get(target, headers={"xero-tenant-id": demo_secret("XERO_TENANT_ID")})
    assert no_token.status_code == 401
    assert xml(no_token).findtext("Status") == "ERROR"
    assert "AuthenticationUnsuccessful" in (xml(no_token).findtext("ErrorDescription") or "")

    no_tenant = httpx.get(target, headers={"Authorization": auth_headers()["Authorization"]})
    assert no_tenant.status_code == 403
    assert "AuthorizationUnsuccessful" in (xml(no_tenant).findtext("ErrorDescription") or "")
    wrong_tenant = httpx.get(target, headers={**auth_headers(), "xero-tenant-id": "other"})
    assert wrong_tenant.status_code == 403

    ok = httpx.get(target, headers=auth_headers())
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/xml")
    root = xml(ok)
    assert root.tag == "Response" and root.findtext("Status") == "OK"
    emails = [s.findtext("Email") for s in root.findall("StaffList/Staff")]
    assert PRIYA in emails and len(emails) == len(sandbox.config.staff)
    priya = next(s for s in root.findall("StaffList/Staff") if s.findtext("Email") == PRIYA)
    assert priya.findtext("UUID") == staff_uuid_for(PRIYA)


async def test_a_wrong_token_fails_for_good_with_xeros_reason(
    sandbox: RunningSandbox,
    connector: XpmConnector,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XPM_TEST_WRONG_TOKEN", "eyJ3cm9uZyI6dHJ1ZX0.d3Jvbmc.c2ln")
    wrong = connector.model_copy(update={"access_token_env": "XPM_TEST_WRONG_TOKEN"})
    with pytest.raises(ApplicationError) as caught:
        await load(XpmActivities(sandbox.config, wrong, http), "J000001")
    assert caught.value.non_retryable and caught.value.type == "XPMRejected"
    assert "401" in str(caught.value) and "AuthenticationUnsuccessful" in str(caught.value)
    assert "eyJ" not in str(caught.value)


async def test_a_missing_secret_is_a_clear_non_retryable_error(
    sandbox: RunningSandbox, acts: XpmActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XERO_TENANT_ID")
    with pytest.raises(ApplicationError) as caught:
        await load(acts, "J000001")
    assert caught.value.type == "MissingSecret" and caught.value.non_retryable
    assert "XERO_TENANT_ID" in str(caught.value)
    assert sandbox.requests(prefix="/xpm") == []


# --- load engagement --------------------------------------------------------------------------


async def test_load_engagement_maps_the_job(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    # The client's email in XPM differs from the firm config's: XPM's record wins.
    store(sandbox).clients[client_uuid_for(BAYSIDE)]["Email"] = "books@baysidedental.example"
    job = await new_job(client, tasks=(300, 240))

    details = await load(acts, job.id)

    assert details.source == "xpm" and details.external_id == job.id
    assert details.title == "2026 S-Corp return"
    assert details.service_type == "s_corp_return"  # Type "1120-S" via pm_work_types
    assert details.pm_work_type == "1120-S"
    assert details.due_date == date(2026, 12, 15)
    assert details.start_date == date(2026, 11, 2)
    assert details.estimated_hours == 9  # 300 + 240 task minutes, not the default 12
    assert details.required_skills == ["s_corp"]
    assert details.client_id == BAYSIDE  # matched to the firm's client: history applies
    assert details.client_name == "Bayside Dental Group"
    assert details.client_email == "books@baysidedental.example"
    assert details.scope_summary == "Federal and state 1120-S with K-1s"
    assert details.pm_url == f"https://practicemanager.xero.com/job/{job.id}"
    assert details.pm_status == "Planned"
    get = sandbox.requests(prefix=f"{API}/job.api/get/{job.id}")[0]
    assert get["headers"]["accept"] == "application/xml"
    assert "xero-tenant-id" in get["headers"]
    assert get["headers"]["authorization"] == "<redacted>"


async def test_load_engagement_defaults_and_contact(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    store(sandbox).clients[client_uuid_for(OKAFOR)]["ContactName"] = "Ngozi Eze"
    job = await new_job(
        client, job_type="Tax Return - Individual", client_id=OKAFOR, description=""
    )
    details = await load(acts, job.id)
    assert details.service_type == "individual_tax"
    assert details.estimated_hours == 4  # no estimated tasks: the service type's default
    assert details.scope_summary == "Individual tax return (1040)"
    assert details.client_email == "eze.household@mail.example"
    assert details.client_contact_name == "Ngozi Eze"


async def test_unmapped_job_type_is_non_retryable_and_named(
    client: XpmClient, acts: XpmActivities
) -> None:
    job = await new_job(client, job_type="Advisory Retainer")
    with pytest.raises(ApplicationError) as caught:
        await load(acts, job.id)
    assert caught.value.type == "UnmappedWorkType" and caught.value.non_retryable
    assert "Advisory Retainer" in str(caught.value)


async def test_unknown_job_is_not_found(
    sandbox: RunningSandbox, acts: XpmActivities, http: httpx.AsyncClient
) -> None:
    raw = await http.get(url(sandbox, "job.api/get/J999999"), headers=auth_headers())
    assert raw.status_code == 404
    assert xml(raw).findtext("Status") == "ERROR"
    assert xml(raw).findtext("ErrorDescription") == "Job J999999 not found"
    with pytest.raises(ApplicationError) as caught:
        await load(acts, "J999999")
    assert caught.value.type == "EngagementNotFound" and caught.value.non_retryable


# --- write-back -------------------------------------------------------------------------------


async def test_write_back_assigns_and_sets_state_once(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities, http: httpx.AsyncClient
) -> None:
    job = await new_job(client)
    before = last_seq(sandbox)

    first = await write_back(acts, job.id, PRIYA, DispatchStatus.ASSIGNED)

    assert first.written and first.detail == "XPM assignee and state updated"
    assert writes(sandbox, before) == ["job.api/assign", "job.api/state"]
    assign = sandbox.requests(prefix=f"{API}/job.api/assign")[0]
    body = ET.fromstring(str(assign["body"]))
    assert body.findtext("ID") == job.id
    assert [(e.tag, e.attrib) for e in body.findall("add")] == [
        ("add", {"uuid": staff_uuid_for(PRIYA)})
    ]
    assert assign["headers"]["content-type"].startswith("application/xml")
    state = (await http.get(f"{sandbox.base_url}/_sandbox/state/xpm")).json()
    assert state["states"][job.id] == "ASSIGNED"
    [shown] = [j for j in state["jobs"] if j["ID"] == job.id]
    assert shown["AssignedEmails"] == [PRIYA]
    # GET reads the state back by its name, not by the code we PUT.
    reread = await client.get_job(job.id)
    assert reread is not None and reread.state == "Assigned"

    mid = last_seq(sandbox)
    again = await write_back(acts, job.id, "Priya@HarborFinch.example", DispatchStatus.ASSIGNED)

    assert not again.written and again.detail == "XPM job already up to date"
    assert writes(sandbox, mid) == []  # the second run wrote nothing
    reads = [r["path"] for r in sandbox.requests(prefix=API) if int(r["seq"]) > mid]
    assert reads == [f"{API}/job.api/get/{job.id}"]  # staff list cached from the first run


async def test_state_mapping(
    sandbox: RunningSandbox,
    client: XpmClient,
    acts: XpmActivities,
    connector: XpmConnector,
    http: httpx.AsyncClient,
) -> None:
    job = await new_job(client)

    review = await write_back(acts, job.id, PRIYA, DispatchStatus.READY_FOR_REVIEW)
    assert review.written and review.detail == "XPM assignee updated"  # no state for it
    assert store(sandbox).jobs[job.id]["State"] == "PLANNED"

    await write_back(acts, job.id, None, DispatchStatus.IN_PROGRESS)
    assert store(sandbox).jobs[job.id]["State"] == "INPROGRESS"
    before = last_seq(sandbox)
    # "In Progress" (the name read back) is the same state as INPROGRESS (the code).
    assert not (await write_back(acts, job.id, None, DispatchStatus.IN_PROGRESS)).written
    assert writes(sandbox, before) == []

    done = await write_back(acts, job.id, None, DispatchStatus.COMPLETED)
    assert done.written
    assert store(sandbox).jobs[job.id]["State"] == "COMPLETED"
    assert store(sandbox).jobs[job.id]["CompletedDate"] == today(sandbox)
    details = await load(acts, job.id)
    assert details.pm_status == "Completed"  # what the engagement workflow closes on

    # A completed job is never reopened by a late assignment.
    before = last_seq(sandbox)
    late = await write_back(acts, job.id, PRIYA, DispatchStatus.ASSIGNED)
    assert not late.written and "completed in XPM" in late.detail
    assert writes(sandbox, before) == []

    # A firm that maps no "assigned" state gets the assignee only.
    plain = XpmActivities(
        sandbox.config, connector.model_copy(update={"assigned_state": None}), http
    )
    other = await new_job(client)
    before = last_seq(sandbox)
    assert (await write_back(plain, other.id, PRIYA, DispatchStatus.ASSIGNED)).written
    assert writes(sandbox, before) == ["job.api/assign"]


async def test_unknown_assignee_is_refused_without_leaking_the_address(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    job = await new_job(client)
    with pytest.raises(ApplicationError) as caught:
        await write_back(acts, job.id, "stranger@elsewhere.example", DispatchStatus.ASSIGNED)
    assert caught.value.type == "UnknownStaff" and caught.value.non_retryable
    assert "stranger" not in str(caught.value)
    assert writes(sandbox) == ["job.api/add"]
    # A miss re-reads the staff list once (someone may have just joined), not more.
    assert len(sandbox.requests(prefix=f"{API}/staff.api/list")) == 1


async def test_xml_error_is_surfaced_with_its_reason(
    sandbox: RunningSandbox, client: XpmClient, connector: XpmConnector, http: httpx.AsyncClient
) -> None:
    """A state code the practice does not have: XPM's ErrorDescription reaches the operator."""
    job = await new_job(client)
    firm = XpmActivities(
        sandbox.config, connector.model_copy(update={"assigned_state": "SIGNED-OFF"}), http
    )
    with pytest.raises(ApplicationError) as caught:
        await write_back(firm, job.id, None, DispatchStatus.ASSIGNED)
    assert caught.value.non_retryable and caught.value.type == "XPMRejected"
    assert "HTTP 400" in str(caught.value)
    assert "Invalid job state 'SIGNED-OFF'" in str(caught.value)
    assert store(sandbox).jobs[job.id]["State"] == "PLANNED"


# --- the poll ---------------------------------------------------------------------------------


async def test_list_new_jobs_with_problem_jobs(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    good = await new_job(client, tasks=(120,))
    same_client = await new_job(client, job_type="Payroll", name="November payroll")
    unmapped = await new_job(client, job_type="Advisory Retainer")
    undated = await new_job(client, due=None)
    closed = await new_job(client, job_type="Payroll", client_id=OKAFOR)
    await client.set_state(closed, "COMPLETED")
    old = await new_job(client)
    store(sandbox).jobs[old.id]["Created"] = today(sandbox) - timedelta(days=30)
    before = last_seq(sandbox)

    listed = await list_jobs(acts, today(sandbox) - timedelta(days=7), today(sandbox))

    by_id = {j.external_id: j for j in listed.jobs}
    assert set(by_id) == {good.id, same_client.id, unmapped.id, undated.id, closed.id}
    good_details = by_id[good.id].details
    assert good_details is not None and by_id[good.id].problem is None
    assert good_details.service_type == "s_corp_return" and good_details.estimated_hours == 2
    assert good_details.client_email == "office@baysidedental.example"
    payroll = by_id[same_client.id].details
    assert payroll is not None and payroll.service_type == "payroll"
    assert by_id[unmapped.id].details is None
    assert "Advisory Retainer" in str(by_id[unmapped.id].problem)
    assert by_id[undated.id].problem == "no due date"
    assert by_id[closed.id].problem == "already completed in XPM"
    # A pure read: GETs only, one list call, and each client looked up once.
    log = [r for r in sandbox.requests(prefix=API) if int(r["seq"]) > before]
    assert {r["method"] for r in log} == {"GET"}
    paths = [str(r["path"]).removeprefix(API + "/") for r in log]
    assert paths == ["job.api/list", f"client.api/get/{client_uuid_for(BAYSIDE)}"]
    assert log[0]["query"] == (
        f"from={(today(sandbox) - timedelta(days=7)):%Y%m%d}&to={today(sandbox):%Y%m%d}"
        "&detailed=true"
    )


async def test_list_range_is_validated_and_long_polls_are_split(
    sandbox: RunningSandbox, acts: XpmActivities, http: httpx.AsyncClient
) -> None:
    too_long = await http.get(
        url(sandbox, "job.api/list"),
        headers=auth_headers(),
        params={"from": "20250101", "to": "20260301"},
    )
    assert too_long.status_code == 400
    assert "one year" in (xml(too_long).findtext("ErrorDescription") or "")

    end = today(sandbox)
    await list_jobs(acts, end - timedelta(days=500), end)
    # The refused probe above, then two calls of at most a year each.
    assert len(sandbox.requests(prefix=f"{API}/job.api/list")) == 3

    with pytest.raises(ApplicationError) as caught:
        await list_jobs(acts, end, end - timedelta(days=1))
    assert caught.value.type == "InvalidRange" and caught.value.non_retryable


# --- Xero's limits ------------------------------------------------------------------------------


async def test_the_minute_limit_is_a_real_counter(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    """Xero's 60 calls a minute per tenant: the 61st call is refused with Retry-After."""
    target = url(sandbox, "staff.api/list")
    for _ in range(60):
        assert (await http.get(target, headers=auth_headers())).status_code == 200
    limited = await http.get(target, headers=auth_headers())
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-rate-limit-problem"] == "minute"
    assert xml(limited).findtext("Status") == "ERROR"
    assert store(sandbox).rejected == {"minute": 1}


async def test_rate_limit_carries_retry_after_and_clears(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    job = await new_job(client)
    s = store(sandbox)
    s.calls.clear()
    s.minute_limit, s.minute_window_seconds = 3, 1.5
    await load(acts, job.id)  # get + client: two calls
    await client.get_job(job.id)  # three

    with pytest.raises(ApplicationError) as caught:
        await load(acts, job.id)

    assert caught.value.type == "RateLimited" and not caught.value.non_retryable
    delay = caught.value.next_retry_delay
    assert delay is not None and timedelta(seconds=1) <= delay <= timedelta(seconds=2)
    assert sandbox.requests(prefix=API)[-1]["status"] == 429
    await asyncio.sleep(delay.total_seconds())
    assert (await load(acts, job.id)).external_id == job.id  # the window moved on


async def test_five_concurrent_calls_per_tenant(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities, http: httpx.AsyncClient
) -> None:
    job = await new_job(client)
    s = store(sandbox)
    s.response_delay = 0.3

    # Eight at once from outside: Xero takes five and refuses the rest.
    raw = await asyncio.gather(
        *(http.get(url(sandbox, f"job.api/get/{job.id}"), headers=auth_headers()) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in raw)
    assert statuses == [200] * 5 + [429] * 3
    refused = next(r for r in raw if r.status_code == 429)
    assert refused.headers["x-rate-limit-problem"] == "concurrent"
    assert refused.headers["retry-after"] == "1"

    # Eight at once through one activities instance: the semaphore queues them, none refused.
    s.peak_in_flight, s.rejected = 0, {}
    results = await asyncio.gather(*(load(acts, job.id) for _ in range(8)))
    assert {r.external_id for r in results} == {job.id}
    assert s.peak_in_flight == 5 and s.rejected == {}


def test_fault_bodies_speak_xpm(sandbox: RunningSandbox) -> None:
    fault(sandbox, route=f"{API}/staff.api/list", status=429, retry_after=12, count=1)
    limited = httpx.get(url(sandbox, "staff.api/list"), headers=auth_headers())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "12"
    assert xml(limited).findtext("Status") == "ERROR"
    assert "retry after 12 seconds" in (xml(limited).findtext("ErrorDescription") or "")


async def test_server_error_is_retryable(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    job = await new_job(client)
    fault(sandbox, route=f"{API}/job.api/get/", method="GET", status=503, count=1)
    with pytest.raises(ApplicationError) as caught:
        await write_back(acts, job.id, PRIYA, DispatchStatus.ASSIGNED)
    assert caught.value.type == "ServerError" and not caught.value.non_retryable
    assert "internal error" in str(caught.value)  # XPM's XML reason, not a raw body
    assert writes(sandbox) == ["job.api/add"]
    assert (await write_back(acts, job.id, PRIYA, DispatchStatus.ASSIGNED)).written


# --- XML handling -----------------------------------------------------------------------------


async def test_documents_with_a_dtd_are_refused(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><a>&x;</a>'
    with pytest.raises(XmlRefused):
        parse_xml(bomb)
    sent = await http.put(
        url(sandbox, "job.api/state"),
        headers={**auth_headers(), "Content-Type": "application/xml"},
        content=bomb,
    )
    assert sent.status_code == 400
    assert "Document type declarations" in (xml(sent).findtext("ErrorDescription") or "")


def test_error_reasons_in_xpm_and_xero_shapes() -> None:
    envelope = b"<Response><Status>ERROR</Status><ErrorDescription>Bad job</ErrorDescription>"
    assert error_reason(envelope + b"</Response>", "Bad Request") == "Bad job"
    # Xero's platform (token, tenant) answers with a JSON problem document.
    problem = b'{"Title": "Unauthorized", "Status": 401, "Detail": "TokenExpired"}'
    assert error_reason(problem, "Unauthorized") == "Unauthorized; TokenExpired"
    assert error_reason(b"", "Service Unavailable") == "Service Unavailable"


# --- source isolation and limits at load ------------------------------------------------------


async def test_an_engagement_from_another_source_is_never_written_to_xpm(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    job = await new_job(client)
    before = last_seq(sandbox)
    result: PmWriteBackResult = await ActivityEnvironment().run(
        acts.write_back,
        PmWriteBackInput(
            workflow_id=f"engagement-canopy-{job.id}",
            source="canopy",
            external_id=job.id,
            assignee_email=PRIYA,
            status=DispatchStatus.ASSIGNED,
        ),
    )
    assert not result.written and "canopy" in result.detail
    assert [r for r in sandbox.requests(prefix=API) if int(r["seq"]) > before] == []
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(
            acts.load_engagement, LoadEngagementInput(source="canopy", external_id=job.id)
        )
    assert caught.value.type == "ForeignSource"


async def test_impossible_dates_are_problems_not_engagements(
    sandbox: RunningSandbox, client: XpmClient, acts: XpmActivities
) -> None:
    far = await new_job(client, due=date(9999, 12, 31))
    with pytest.raises(ApplicationError) as caught:
        await load(acts, far.id)
    assert caught.value.type == "ImpossibleDate" and "3 years ahead" in caught.value.message
    listed = await list_jobs(acts, today(sandbox) - timedelta(days=1), today(sandbox))
    [entry] = [j for j in listed.jobs if j.external_id == far.id]
    assert entry.details is None and "due date 9999-12-31" in str(entry.problem)


async def test_over_long_text_is_clipped_at_load(client: XpmClient, acts: XpmActivities) -> None:
    job = await new_job(client, name="N" * 5000, description="D" * 50_000)
    details = await load(acts, job.id)
    assert len(details.title) == 300 and len(details.scope_summary) == 4000
