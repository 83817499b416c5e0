"""OpenTelemetry for the relay and the consumer: W3C trace context carried in event attributes.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT is set and OTEL_TRACES_EXPORTER is not `none`
(the stack sets one or the other); otherwise every helper here costs nothing.
"""

from __future__ import annotations

import os
from typing import Any

Tracer = Any  # opentelemetry.trace.Tracer; the SDK is imported only when tracing is on


def setup(service_name: str) -> tuple[Tracer | None, Any]:
    """(tracer, provider) exporting over OTLP/HTTP, or (None, None) when tracing is off."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
        return None, None
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None, None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("edaenv"), provider


def parent_context(carrier: dict[str, str]) -> Any:
    """The context of the traceparent (and tracestate) in an event's attributes."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


def inject(span: Any, carrier: dict[str, str]) -> None:
    """Write the span's traceparent into carrier, so the next hop continues the trace."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))


def trace_id(carrier: dict[str, str]) -> str:
    """The trace id of a W3C traceparent ('' when there is none)."""
    parts = carrier.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else ""
