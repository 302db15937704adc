"""Metrics and traces an operator gets: the worker's Prometheus endpoint with the product's own
metrics, the webhook server's counters, and one trace from the webhook to the activities."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from app.telemetry import TRACING_ENV
from app.temporal import data_converter
from dispatch.models import DispatchStatus
from tests.harness import eventually, running_worker, workdays_ahead
from tests.sandbox_server import RunningSandbox, free_port
from tests.workflows.conftest import relay_firm
from tests.workflows.test_webhook_server import http_for, post_signed, relay_event

SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def traced() -> Iterator[InMemorySpanExporter]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)
    os.environ[TRACING_ENV] = "on"
    try:
        yield SPANS
    finally:
        os.environ.pop(TRACING_ENV, None)


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{port}/metrics")).text


async def test_one_trace_from_the_webhook_to_the_activities_and_metrics_for_the_operator(
    temporal_env: WorkflowEnvironment, sandbox: RunningSandbox, traced: InMemorySpanExporter
) -> None:
    sandbox.reset()
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{port}",
                durations_as_seconds=True,
                counters_total_suffix=True,
            )
        )
    )
    client = await Client.connect(
        temporal_env.client.service_client.config.target_host,
        data_converter=data_converter(),
        interceptors=[TracingInterceptor()],
        runtime=runtime,
    )
    config = relay_firm(sandbox.config)
    async with running_worker(client, config) as worker, http_for(worker) as http:
        answer = await post_signed(http, relay_event("OBS-1", workdays_ahead(config, 6)))
        assert answer.status_code == 202
        workflow_id = answer.json()["workflow_id"]
        await worker.wait_state(
            workflow_id,
            lambda s: (
                s.status is DispatchStatus.ASSIGNED
                and not any(e.state == "pending" for e in s.side_effects)
            ),
        )

        # The webhook server's own counters.
        own = (await http.get("/metrics")).text
        assert 'dispatch_webhooks_total{route="/webhooks/engagements",status="202"} 1.0' in own

        # The worker's endpoint: the SDK's metrics and the product's.
        async def product_metrics() -> str | None:
            text = await scrape(port)
            wanted = (
                "dispatch_assignment_latency",
                "dispatch_booked_hours",
                "dispatch_capacity_hours",
                "dispatch_partner_review_queue",
            )
            return text if all(w in text for w in wanted) else None

        text = await eventually(product_metrics, timeout=30, what="the product's metrics")
        assert "temporal_" in text or "workflow_task" in text

        # The Web UI's list and detail views: static summary and details from the start, current
        # details from the running workflow; ids and the title, never the client's name or email.
        handle = client.get_workflow_handle(workflow_id)
        described = await handle.describe()
        summary = await described.static_summary()
        static = await described.static_details()
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        current = metadata.current_details
        assert summary is not None and "Return OBS-1" in summary
        assert static is not None and "cl-marlow-family" in static
        assert "Assigned" in current and "Preparer: " in current
        assert "Preparer: -" not in current
        for shown in (summary, static, current):
            assert "Marlow" not in shown.replace("cl-marlow-family", "")
            assert "marlow.family@mail.example" not in shown

    # One trace: the webhook's span, the workflow start under it, activities further down.
    await asyncio.sleep(0.5)
    spans = traced.get_finished_spans()
    webhook = next(s for s in spans if s.name == "POST /webhooks/engagements")
    trace_id = webhook.context.trace_id if webhook.context else None
    names = {s.name for s in spans if s.context and s.context.trace_id == trace_id}
    assert "StartWorkflow:EngagementWorkflow" in names
    assert any(n.startswith("RunActivity:") for n in names), sorted(names)
