"""Metrics for Prometheus and traces for Jaeger, as the stack's dashboards expect them."""

from __future__ import annotations

import contextlib
import http.server
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edaenv.outbox.metrics import ConsumerMetrics

if TYPE_CHECKING:
    from edaenv.brokers.base import Delivery


def serve_metrics(
    port: int,
    metrics: ConsumerMetrics,
    healthy: Callable[[], bool] = lambda: True,
    *,
    host: str | None = None,
) -> http.server.ThreadingHTTPServer:
    """Serve /metrics (for Prometheus) and /healthz (200 while `healthy()`, else 503, for the
    compose health check) on a daemon thread. Listens on `host`, else EDAENV_METRICS_HOST, else
    127.0.0.1. Call `.shutdown()` on the server returned to stop it."""
    from edaenv.outbox.metrics import serve

    return serve(port, metrics.registry, healthy, host)


@dataclass(frozen=True)
class Tracing:
    """The tracer spans are started with, None when tracing is off."""

    tracer: Any  # opentelemetry.trace.Tracer | None
    provider: Any  # opentelemetry.sdk.trace.TracerProvider | None

    def shutdown(self) -> None:
        """Export the spans still buffered; call it once, before the process exits."""
        if self.provider is not None:
            self.provider.shutdown()


def start_tracing(service_name: str) -> Tracing:
    """Export spans over OTLP/HTTP as `service_name` when the stack turns tracing on (it sets
    OTEL_EXPORTER_OTLP_ENDPOINT when Jaeger is on, OTEL_TRACES_EXPORTER=none when it is off).
    When off, the tracer is None and `process_spans` costs nothing."""
    from edaenv.outbox.tracing import setup

    tracer, provider = setup(service_name)
    return Tracing(tracer, provider)


@contextlib.contextmanager
def process_spans(
    tracer: Any, deliveries: Sequence[Delivery], *, topic: str, group: str
) -> Iterator[None]:
    """One CONSUMER span per delivery around the block, each continuing the trace of the
    event's traceparent (the relay's publish span); an exception escaping the block is recorded
    on them and marks them failed. A no-op when `tracer` is None."""
    if tracer is None:
        yield
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from edaenv.outbox.tracing import parent_context
    from edaenv.service._events import event_id

    spans = [
        tracer.start_span(
            f"{topic} process",
            context=parent_context(delivery.attributes),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.destination.name": topic,
                "messaging.message.id": event_id(delivery),
                "messaging.consumer.group.name": group,
            },
        )
        for delivery in deliveries
    ]
    try:
        yield
    except Exception as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        for span in spans:
            span.end()
