"""Metrics and traces for the operator.

Metrics (Prometheus): the worker serves the SDK's own metrics (workflow and activity task
latencies, failures, schedule-to-start, cache) and the product's, recorded by the workflows
through ``workflow.metric_meter()`` (replay-safe: nothing is recorded while replaying):

* ``dispatch_assignment_latency`` — webhook (workflow start) to first assignment, seconds;
* ``dispatch_side_effect_failures`` — side effects that failed for good, by role and vendor;
* ``dispatch_partner_review_queue`` / ``dispatch_partner_review_oldest`` — engagements waiting
  for a partner, and how long the oldest has waited (seconds);
* ``dispatch_booked_hours`` / ``dispatch_capacity_hours`` — per person: hours reserved on open
  work, and weekly capacity.

``DISPATCH_METRICS_ADDRESS`` (e.g. ``127.0.0.1:9464``) turns the worker's endpoint on
(``dispatch up`` gives each worker process its own port). The webhook server serves its own
counters at ``GET /metrics`` (webhooks by route and answer, and their latency).

Traces (OpenTelemetry): with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (any OTLP/HTTP collector:
Jaeger, Tempo, Honeycomb...) or ``DISPATCH_TRACING=console``, the webhook server opens a span
per webhook and Temporal's ``TracingInterceptor`` carries it through the workflow start, the
workflow and every activity, so one trace runs from the PM system's call to the Slack DM.
"""

from __future__ import annotations

import os
from typing import Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

METRICS_ENV = "DISPATCH_METRICS_ADDRESS"
TRACING_ENV = "DISPATCH_TRACING"
OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME = "engagement-dispatch"

_runtime: Runtime | None = None
_tracing: bool | None = None


def metrics_runtime() -> Runtime | None:
    """A runtime whose metrics are served for Prometheus, or None (the SDK's default)."""
    global _runtime
    address = os.environ.get(METRICS_ENV, "").strip()
    if not address:
        return None
    if _runtime is None:
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(
                    bind_address=address,
                    durations_as_seconds=True,
                    counters_total_suffix=True,
                )
            )
        )
    return _runtime


def tracing_enabled() -> bool:
    return bool(os.environ.get(OTLP_ENV) or os.environ.get(TRACING_ENV))


def setup_tracing(service: str = SERVICE_NAME) -> bool:
    """Install the process's tracer provider once; True when traces are exported."""
    global _tracing
    if _tracing is not None:
        return _tracing
    _tracing = tracing_enabled()
    if not _tracing:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if os.environ.get(OTLP_ENV):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def client_interceptors() -> list[Any]:
    """Temporal's tracing interceptor when traces are on (it also applies to workers)."""
    if not tracing_enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


__all__ = [
    "METRICS_ENV",
    "OTLP_ENV",
    "TRACING_ENV",
    "client_interceptors",
    "metrics_runtime",
    "setup_tracing",
    "tracing_enabled",
]
