"""Activities behind recurring work (Temporal Schedules) and polling PM systems without webhooks.

* ``recurring_plan``: which periods of a template trigger in the month of a Schedule fire, with
  their due dates, trigger instants and the engagement as it will be dispatched. Time zones and
  the firm's calendar live here, so the spawner workflow stays free of them.
* ``recurring_create_pm_job``: the period's job in the PM system (Karbon ``POST /v3/WorkItems``),
  found again rather than created twice.
* ``engagements_start``: start engagement workflows idempotently (deterministic id,
  USE_EXISTING, REJECT_DUPLICATE). Workflows cannot start workflows that outlive them except
  as children, and an engagement must outlive its spawner, so the start is an activity.
* ``poller_window``: the dates a PM poll covers, in the firm's "today".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.engagement_start import start_engagement
from activities.karbon import KarbonClient, _primary_email, odata_str
from dispatch import TASK_QUEUE
from dispatch.config import FirmConfig, KarbonConnector, RecurringTemplate, XpmConnector
from dispatch.ids import InvalidIdError, engagement_workflow_id
from dispatch.models import (
    EngagementDetails,
    ListJobsInput,
    PlannedPeriod,
    PmJobInput,
    PmJobRef,
    PollerInput,
    RecurringPlan,
    RecurringPlanInput,
    StartedEngagement,
    StartEngagementsInput,
    StartEngagementsResult,
)
from dispatch.recurrence import Occurrence, Recurrence

RECURRING_SOURCE = "recurring"
"""The engagement source when no PM job exists: ``engagement-recurring-{template}-{period}``."""

DEFAULT_LOOKBACK_DAYS = 7
KARBON_CLIENT_TYPES = ("Organization", "Contact", "ClientGroup")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def pm_marker(template_id: str, period_key: str) -> str:
    """Written into the PM job's description: how a repeated fire finds the job it created."""
    return f"[dispatch:recurring:{template_id}:{period_key}]"


def recurring_external_id(template_id: str, period_key: str) -> str:
    return f"{template_id}-{period_key}"


class RecurringActivities:
    """Recurring work and PM polling for one firm.

    ``karbon`` is the client used to create recurring jobs in Karbon; without it (or when the
    firm's PM is not Karbon) recurring engagements start with source ``recurring``.
    """

    def __init__(
        self,
        config: FirmConfig,
        karbon: KarbonClient | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._config = config
        self._karbon = karbon
        self._clock = clock
        self._zone = ZoneInfo(config.firm.time_zone)

    @classmethod
    def for_config(
        cls, config: FirmConfig, http: httpx.AsyncClient | None = None
    ) -> RecurringActivities:
        """With a Karbon client when the firm's PM is Karbon (sharing ``http`` if given)."""
        pm = config.connectors.pm
        karbon = KarbonClient(pm, http) if isinstance(pm, KarbonConnector) else None
        return cls(config, karbon)

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for ``Worker(activities=...)``."""
        return [self.plan, self.create_pm_job, self.start_engagements, self.poller_window]

    async def aclose(self) -> None:
        if self._karbon is not None:
            await self._karbon.aclose()

    def today(self) -> date:
        return self._clock().astimezone(self._zone).date()

    # --- planning ------------------------------------------------------------------------

    @activity.defn(name="recurring_plan")
    async def plan(self, input: RecurringPlanInput) -> RecurringPlan:
        """The periods of the template whose trigger date falls in the fire's (firm-local) month.

        The fire time is the Schedule's *nominal* time, so a backfill plans the backfilled
        month, not the current one.
        """
        fire_time = input.fire_time
        if fire_time.tzinfo is None:  # a hand-started spawner: read a naive time as UTC
            fire_time = fire_time.replace(tzinfo=UTC)
        fire_date = fire_time.astimezone(self._zone).date()
        template = next((t for t in self._config.recurring if t.id == input.template_id), None)
        if template is None:
            return RecurringPlan(
                template_id=input.template_id,
                fire_date=fire_date,
                note="the template is no longer in the firm config; run `dispatch schedules sync`",
            )
        if not template.active:
            return RecurringPlan(
                template_id=template.id, fire_date=fire_date, note="the template is inactive"
            )
        recurrence = Recurrence.of(template, self._config)
        create_in_pm, note = self._pm_creation(template)
        periods = [
            self._planned(template, recurrence, occurrence, create_in_pm)
            for occurrence in recurrence.triggered_in(fire_date.year, fire_date.month)
        ]
        if not periods:
            note = "; ".join(n for n in (note, "no period triggers in this month") if n)
        return RecurringPlan(
            template_id=template.id, fire_date=fire_date, periods=periods, note=note
        )

    def _pm_creation(self, template: RecurringTemplate) -> tuple[bool, str]:
        if not template.create_in_pm:
            return False, ""
        pm = self._config.connectors.pm
        if isinstance(pm, KarbonConnector) and self._karbon is not None:
            return True, ""
        if isinstance(pm, KarbonConnector):
            return False, "no Karbon client on this worker: dispatched without a PM job"
        return False, f"jobs cannot be created in the {pm.kind} PM: dispatched without a PM job"

    def _planned(
        self,
        template: RecurringTemplate,
        recurrence: Recurrence,
        occurrence: Occurrence,
        create_in_pm: bool,
    ) -> PlannedPeriod:
        config = self._config
        service = config.service_type(template.service_type)
        if service is None:  # the config validator prevents this; be explicit if it changes
            raise ApplicationError(
                f"recurring {template.id}: unknown service type {template.service_type!r}",
                type="UnknownServiceType",
                non_retryable=True,
            )
        client = config.client(template.client)
        client_name = (client.name if client else None) or template.client
        period = occurrence.period
        trigger_local = datetime.combine(
            occurrence.trigger, time(config.firm.workday_start_hour), tzinfo=self._zone
        )
        details = EngagementDetails(
            source=RECURRING_SOURCE,
            external_id=recurring_external_id(template.id, period.key),
            title=recurrence.title(period, service.name, client_name),
            client_id=template.client,
            client_name=client_name,
            client_email=client.email if client else None,
            service_type=service.id,
            due_date=occurrence.due,
            start_date=occurrence.trigger,
            estimated_hours=template.estimated_hours or service.default_estimated_hours,
            required_skills=list(service.required_skills),
            specializations=list(service.preferred_skills),
            documents_needed=list(service.documents_needed),
            scope_summary=(
                f"{service.name}, period {period.key} ({period.start.isoformat()} to "
                f"{period.end.isoformat()})"
            ),
        )
        return PlannedPeriod(
            period_key=period.key,
            period_start=period.start,
            period_end=period.end,
            due_date=occurrence.due,
            trigger_date=occurrence.trigger,
            trigger_at=trigger_local.astimezone(UTC),
            details=details,
            create_in_pm=create_in_pm,
        )

    # --- the PM job ----------------------------------------------------------------------

    @activity.defn(name="recurring_create_pm_job")
    async def create_pm_job(self, input: PmJobInput) -> PmJobRef:
        """Create the period's work item in Karbon, unless one already exists.

        Karbon has no idempotency key, so a repeated fire (or a retry after a lost response)
        first lists the client's work items and takes the one carrying our marker in its
        description, or the same title (a job the firm already created by hand counts too).
        """
        karbon = self._karbon
        if karbon is None:
            raise ApplicationError(
                "no PM system on this worker can create jobs",
                type="PmJobCreationUnsupported",
                non_retryable=True,
            )
        details = input.details
        marker = pm_marker(input.template_id, input.period_key)
        for item in await karbon.list_work_items(
            filter=f"ClientKey eq {odata_str(details.client_id)}"
        ):
            if marker in str(item.get("Description") or "") or item.get("Title") == details.title:
                return self._karbon_ref(karbon, str(item["WorkItemKey"]), created=False)
        client_type, record = await self._karbon_client(karbon, details.client_id)
        body = {
            "Title": details.title,
            "ClientKey": details.client_id,
            "ClientType": client_type,
            # [A] Karbon requires an assignee on creation and nobody is chosen yet: the managing
            # partner holds it until the engagement's write-back sets the preparer.
            "AssigneeEmailAddress": self._config.managing_partner.email,
            "StartDate": _karbon_date(details.start_date or details.due_date),
            "DueDate": _karbon_date(details.due_date),
            "WorkType": self._work_type(details.service_type),
            "Description": f"{details.scope_summary}\n\n{marker}",
        }
        item = await karbon.create_work_item(body)
        activity.logger.info(
            "created Karbon work item %s for %s %s",
            item.get("WorkItemKey"),
            input.template_id,
            input.period_key,
        )
        ref = self._karbon_ref(karbon, str(item["WorkItemKey"]), created=True)
        return ref.model_copy(update={"client_email": _primary_email(record)})

    def _karbon_ref(self, karbon: KarbonClient, key: str, *, created: bool) -> PmJobRef:
        # [A] Karbon's web app addresses a work item as <app>#/work/<WorkItemKey>.
        app = karbon.connector.app_url.rstrip("/")
        return PmJobRef(
            source="karbon", external_id=key, created=created, pm_url=f"{app}#/work/{key}"
        )

    async def _karbon_client(
        self, karbon: KarbonClient, client_key: str
    ) -> tuple[str, dict[str, Any]]:
        """The client's ClientType (which Karbon requires on creation) and its record.

        The firm config names clients by key only, so ask Karbon which kind of record it is.
        """
        for client_type in KARBON_CLIENT_TYPES:
            record = await karbon.get_client_record(client_key, client_type)
            if record is not None:
                return client_type, record
        raise ApplicationError(
            f"Karbon has no client with key {client_key}: fix the recurring template's client",
            type="UnknownClient",
            non_retryable=True,
        )

    def _work_type(self, service_type: str) -> str:
        """The Karbon work type that maps back to this service type when the job is loaded."""
        service = self._config.service_type(service_type)
        if service is not None and service.pm_work_types:
            return service.pm_work_types[0]
        return service_type

    # --- starting engagements ------------------------------------------------------------

    @activity.defn(name="engagements_start")
    async def start_engagements(self, input: StartEngagementsInput) -> StartEngagementsResult:
        """Start each engagement unless it exists; a finished one is never reopened."""
        client = activity.client()
        # The queue this worker serves: engagements run beside the spawner and the poller.
        task_queue = activity.info().task_queue or TASK_QUEUE
        started: list[StartedEngagement] = []
        for engagement in input.engagements:
            try:
                workflow_id = engagement_workflow_id(engagement.source, engagement.external_id)
            except InvalidIdError as err:
                raise ApplicationError(str(err), type="InvalidId", non_retryable=True) from None
            fresh = await start_engagement(client, engagement, workflow_id, task_queue)
            started.append(StartedEngagement(workflow_id=workflow_id, started=fresh))
        return StartEngagementsResult(engagements=started)

    # --- polling -------------------------------------------------------------------------

    @activity.defn(name="poller_window")
    async def poller_window(self, input: PollerInput) -> ListJobsInput:
        """Jobs created from ``lookback_days`` ago through tomorrow (firm-local dates).

        Tomorrow, because the PM system dates a job in its own organisation's time zone, which
        can be a day ahead of the firm's configured one around midnight; a job listed twice is
        harmless (starting is idempotent), a job never listed is lost.
        """
        pm = self._config.connectors.pm
        lookback = pm.lookback_days if isinstance(pm, XpmConnector) else DEFAULT_LOOKBACK_DAYS
        today = self.today()
        return ListJobsInput(
            since=today - timedelta(days=lookback), until=today + timedelta(days=1)
        )


def _karbon_date(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"
