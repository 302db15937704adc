"""The webhook server's own metrics and spans: one ASGI middleware, one ``/metrics`` route.

``dispatch_webhooks_total{route, status}`` and ``dispatch_webhook_seconds{route}`` count and
time every answer (a 202, a refused signature, a 503 while Temporal is away). With tracing on,
each request opens the span under which the workflow start is traced (``app.telemetry``).
Routes are labelled by their template, never by anything the sender chose.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_ROUTES = (
    "/webhooks/karbon",
    "/webhooks/engagements",
    "/slack/events",
    "/healthz",
    "/codec/decode",
    "/codec/encode",
    "/links/",
    "/metrics",
    "/openapi.json",
)


def route_label(path: str) -> str:
    for route in KNOWN_ROUTES:
        if path == route or (route.endswith("/") and path.startswith(route)):
            return route
    return "other"


class WebMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.answers = Counter(
            "dispatch_webhooks",
            "answers of the webhook server, by route and HTTP status",
            ["route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "dispatch_webhook_seconds",
            "time to answer, by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        metrics = self

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            route = route_label(str(scope.get("path", "")))
            status = {"code": 500}

            async def watched(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = int(message["status"])
                await send(message)

            started = time.perf_counter()
            with _span(route, scope):
                try:
                    await app(scope, receive, watched)
                finally:
                    metrics.answers.labels(route, str(status["code"])).inc()
                    metrics.seconds.labels(route).observe(time.perf_counter() - started)

        return measured

    async def exposition(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _NoSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _span(route: str, scope: Scope) -> Any:
    from app.telemetry import tracing_enabled

    if not tracing_enabled():
        return _NoSpan()
    from opentelemetry import trace

    tracer = trace.get_tracer("dispatch.starter")
    return tracer.start_as_current_span(
        f"{scope.get('method', 'HTTP')} {route}",
        kind=trace.SpanKind.SERVER,
        attributes={"http.route": route},
    )


__all__ = ["WebMetrics", "route_label"]
