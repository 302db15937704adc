"""Announcing an assignment: PM write-back, a DM and a calendar block per person, the client
confirmation and the CRM record, all at once; and telling the partner when nobody fits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.roles import (
        CalendarActivities,
        ChatActivities,
        EmailActivities,
        PmActivities,
    )
    from dispatch.ids import calendar_event_key, side_effect_key
    from dispatch.models import (
        AssignmentNotice,
        AssignmentResult,
        CalendarBlockInput,
        CalendarRemoveInput,
        CandidateScore,
        ClientConfirmationInput,
        DispatchStatus,
        PartnerOption,
        PartnerReviewNotice,
        PmWriteBackInput,
        Role,
        StaffRef,
    )
    from workflows import options
    from workflows.engagement.base import EngagementBase


Effect = tuple[str, Awaitable[Any]]
"""A side effect's name (``kind:round``) and the activity call that makes it."""


class Announcements(EngagementBase):
    async def _announce(
        self, result: AssignmentResult, changed: list[Role], *, reassigned: bool
    ) -> None:
        """Fire the side effects of an assignment together; failures are recorded, not fatal.

        ``changed`` are the roles with a new person: they get a DM and a calendar block. The
        other role's person sees their existing DM updated with the new partner's name.
        The order of the list is the order the activities are scheduled in (replay keeps it).
        """
        s = self._state
        seq = s.request_seq
        effects: list[Effect] = []
        if Role.PREPARER in changed:
            effects.append(self._write_back())
        for role in (Role.PREPARER, Role.REVIEWER):
            effects += self._person_effects(role, changed)
        if Role.PREPARER in changed and (not self._v2 or s.assignment_round == 1):
            # The client hears once, of the first assignment; a later change of preparer is
            # the firm's to explain (an email per reassignment read as a duplicate).
            effects += self._client_email()
        event: Literal["assigned", "reassigned"] = "reassigned" if reassigned else "assigned"
        effects.append((f"crm_log:{seq}", self._log_call(event, DispatchStatus.ASSIGNED)))

        outcomes = await asyncio.gather(*(self._effect(name, call) for name, call in effects))
        for (name, _), outcome in zip(effects, outcomes, strict=True):
            if outcome is not None:
                self._keep_outcome(name.split(":")[0], outcome)
        self._note(
            "announced",
            ", ".join(f"{e.name}={e.state}" for e in s.side_effects if e.name.endswith(f":{seq}")),
        )

    def _write_back(self) -> Effect:
        d, s = self._details, self._state
        assert d is not None and s.preparer is not None
        return (
            f"pm_write_back:{s.request_seq}",
            options.PM.run(
                PmActivities.write_back,
                PmWriteBackInput(
                    workflow_id=s.workflow_id,
                    source=d.source,
                    external_id=d.external_id,
                    assignee_email=s.preparer.email,
                    status=DispatchStatus.ASSIGNED,
                ),
                "PM write-back",
            ),
        )

    def _person_effects(self, role: Role, changed: list[Role]) -> list[Effect]:
        """A DM for the role's person (new, or the existing one updated) and, when the person
        is new, a calendar block."""
        d, context, s = self._details, self._context, self._state
        assert d is not None and context is not None
        person = s.preparer if role is Role.PREPARER else s.reviewer
        previous = None if role in changed else s.chat_messages.get(role.value)
        if person is None or (role not in changed and previous is None):
            return []
        summary = self._summary()
        seq = s.request_seq
        completion = s.estimated_completion or d.due_date
        effects: list[Effect] = [
            (
                f"chat_{role.value}:{seq}",
                options.CHAT.run(
                    ChatActivities.notify_assignment,
                    AssignmentNotice(
                        summary=summary,
                        recipient=person,
                        role=role,
                        preparer=s.preparer,
                        reviewer=s.reviewer,
                        estimated_completion=completion,
                        manual_pm_update=context.manual_pm_update,
                        previous=previous,
                    ),
                    f"notify {role.value}",
                ),
            )
        ]
        if role in changed:
            key = calendar_event_key(s.workflow_id, role.value, seq)
            s.calendar_keys = {**s.calendar_keys, role.value: key}
            effects.append(
                (
                    f"calendar_{role.value}:{seq}",
                    options.CALENDAR.run(
                        CalendarActivities.block,
                        CalendarBlockInput(
                            workflow_id=s.workflow_id,
                            event_key=key,
                            staff=person,
                            summary=summary,
                            role=role,
                            start_date=max(d.start_date or context.today, context.today),
                            end_date=completion if role is Role.PREPARER else d.due_date,
                            hours=s.preparer_hours if role is Role.PREPARER else s.reviewer_hours,
                            time_zone=context.time_zone,
                        ),
                        f"calendar block for {role.value}",
                    ),
                )
            )
        return effects

    def _client_email(self) -> list[Effect]:
        d, context, s = self._details, self._context, self._state
        assert d is not None and context is not None and s.preparer is not None
        name = f"client_email:{s.request_seq}"
        if not d.client_email:
            self._effect_state(name, "skipped", "no client email address on file")
            return []
        return [
            (
                name,
                options.EMAIL.run(
                    EmailActivities.client_confirmation,
                    ClientConfirmationInput(
                        summary=self._summary(),
                        to_email=d.client_email,
                        to_name=d.client_contact_name,
                        assignee=s.preparer,
                        reviewer=s.reviewer,
                        estimated_completion=s.estimated_completion or d.due_date,
                        upload_link=context.upload_link,
                        firm_name=context.firm_name,
                        key=side_effect_key(s.workflow_id, "client-email", s.assignment_round),
                    ),
                    "client confirmation",
                ),
            )
        ]

    def _keep_outcome(self, kind: str, outcome: Any) -> None:
        """What the next changes need from an effect's result (the DM to update, the event)."""
        s = self._state
        if kind.startswith("chat_") and outcome.message is not None:
            role_name = kind.removeprefix("chat_")
            s.chat_messages = {**s.chat_messages, role_name: outcome.message}
            if role_name == Role.PREPARER.value:
                s.chat_message = outcome.message
        if kind == "calendar_preparer":
            s.calendar_event_id = outcome.event_id
        if kind == "pm_write_back" and outcome.manual_update_required:
            s.pm_manual_update_required = True

    async def _remove_block(self, role: Role, person: StaffRef) -> None:
        key = self._state.calendar_keys.get(role.value)
        if key is None or self._context is None:
            return
        await self._effect(
            f"calendar_remove_{role.value}:{self._state.request_seq}",
            options.CALENDAR.run(
                CalendarActivities.remove,
                CalendarRemoveInput(
                    workflow_id=self._state.workflow_id,
                    event_key=key,
                    staff=person,
                    time_zone=self._context.time_zone,
                ),
                f"remove {role.value} calendar block",
            ),
        )
        self._state.calendar_keys = {
            k: v for k, v in self._state.calendar_keys.items() if k != role.value
        }

    async def _needs_partner(
        self,
        reason: str,
        candidates: list[CandidateScore],
        *,
        choices: list[PartnerOption] | None = None,
    ) -> None:
        s = self._state
        s.needs_partner_review_reason = reason
        self._set_status(DispatchStatus.NEEDS_PARTNER_REVIEW, reason)
        context = self._context
        if context is None:
            return
        await self._effect(
            f"chat_partner:{s.request_seq}",
            options.CHAT.run(
                ChatActivities.notify_partner,
                PartnerReviewNotice(
                    summary=self._summary(),
                    partner=context.managing_partner,
                    reason=reason,
                    candidates=candidates[: context.partner_candidates_shown],
                    options=(choices or [])[: context.partner_candidates_shown],
                ),
                "notify managing partner",
            ),
        )
        await self._effect(
            f"crm_partner_review:{s.request_seq}",
            self._log_call("needs_partner_review", DispatchStatus.NEEDS_PARTNER_REVIEW),
        )

    async def _tell_partner_no_fit(self, reason: str) -> None:
        context = self._context
        assert context is not None
        await self._notify(
            self._notice(
                "partner_decision",
                context.managing_partner,
                "That choice doesn't fit",
                [reason, "Choose someone else, or 'assign anyway' to book over capacity."],
                f"partner_no_fit:{self._state.request_seq}",
            )
        )

    async def _tell_manager_over_capacity(self, warnings: list[str]) -> None:
        preparer = self._state.preparer
        assert preparer is not None
        manager = (await self._contacts([preparer.id])).managers[preparer.id]
        summary = self._summary()
        await self._notify(
            self._notice(
                "not_started",
                manager,
                f"Over capacity after a change: {summary.title}",
                [*warnings, "The PM system changed the engagement; consider moving work."],
                f"over_capacity:{self._state.request_seq}",
            )
        )
