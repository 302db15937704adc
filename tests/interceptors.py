"""Interceptors that put a worker's workflow tasks in an order load would only sometimes give.

Used by tests and by the history recorder; a history recorded with one is replayed with the
same one (``RECORDED_WITH``), so the replay sees the order the recording saw.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.worker import (
    HandleSignalInput,
    Interceptor,
    SignalExternalWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from dispatch.models import AssignmentRequest
from workflows.dispatcher import RESULT_SIGNAL


class AnswerBeforeSent(Interceptor):
    """The reviewer request's send completes only after the dispatcher's answer arrived."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _Inbound


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        self.answered: set[str] = set()
        super().init(_Outbound(outbound, self))

    async def handle_signal(self, input: HandleSignalInput) -> None:
        if input.signal == RESULT_SIGNAL:
            self.answered.add(input.args[0].request_id)
        await super().handle_signal(input)


class _Outbound(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, inbound: _Inbound) -> None:
        super().__init__(next)
        self._inbound = inbound

    async def signal_external_workflow(self, input: SignalExternalWorkflowInput) -> None:
        await super().signal_external_workflow(input)
        request: Any = input.args[0] if input.args else None
        if isinstance(request, AssignmentRequest) and request.keep_preparer is not None:
            rid = request.request_id
            await workflow.wait_condition(lambda: rid in self._inbound.answered)


RECORDED_WITH: dict[str, list[Interceptor]] = {"answer_in_flight": [AnswerBeforeSent()]}
"""History name (without its folder) -> the interceptors its recording ran with."""
