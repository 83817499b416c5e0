"""edaenv's public API for code that runs in the stack: the sample consumer and your services.

This package is the only part of edaenv with a stable interface: semantic versioning applies to
the names in `__all__` (a removal or an incompatible change only in a major version). Every other
module of edaenv is internal and may change in any release; import from here.

What it offers:

- `Settings.from_env()`: where to connect, from the variables the stack gives its containers
  (EDAENV_BROKER, EDAENV_BROKER_URL, EDAENV_DATABASE_URL, EDAENV_PROJECT, EDAENV_METRICS_PORT,
  EDAENV_METRICS_HOST, OTEL_SERVICE_NAME); on the host, `set -a; eval "$(edaenv env)"; set +a`
  gives the same for the stack's published ports. `settings.consumer_group` is the group name
  of the stack's consumer.
- `connect_broker(settings)`: the broker, whichever it is (`Broker`): `subscribe(topic,
  group)` gives a `Subscription` with `fetch(max, timeout) -> list[Delivery]`, `ack(delivery)`
  and `close()` (at least once: what is not acknowledged is delivered again); `publish(
  [Message, ...]) -> list[Ack]`; `ensure_topology([topic])`; `close()`.
- `connect_database(settings)`: psycopg, with the connection options the relay uses.
- `claim_new(conn, consumer, event_ids)`: the idempotency guard. Records event ids in
  `processed_events` in the caller's transaction and returns the ids not seen before.
  `event_id(delivery)` is the id to record.
- `dead_letter(broker, delivery, error, attempts=...)`: the delivery to its topic's dead letters
  with the standard failure headers (`DEAD_LETTER_HEADERS`), which `edaenv dlq` reads.
  `InvalidEvent` is the exception for a message that can never be handled: dead-letter it at
  once instead of retrying.
- `ConsumerMetrics` and `serve_metrics(port, metrics, healthy)`: the Prometheus metrics the
  stack's Grafana dashboard shows, and /healthz for the compose health check.
- `start_tracing(service_name)` gives a `Tracing` (its `tracer`, None when tracing is off, and
  `shutdown()`); `process_spans(tracer, deliveries, topic=, group=)` wraps the handling of
  deliveries in OpenTelemetry spans that continue the trace each event carries (W3C
  traceparent). `event_time(delivery)` is when the event happened, for the event-age metric.
- Errors raised by this API are `EdaenvError` (a message and a `hint`); `BrokerError` when a
  broker cannot be reached or refuses a message.

Importing this package imports no broker client, database driver or tracing SDK: each is
imported when first used.

Example, a consumer that records each new event once (the sample consumer in the scaffold's
consumer/main.py adds batching, retries, metrics and tracing)::

    from edaenv import service

    settings = service.Settings.from_env()
    broker = service.connect_broker(settings)
    subscription = broker.subscribe("orders", settings.consumer_group)
    with service.connect_database(settings) as conn:
        while True:
            deliveries = subscription.fetch(100, timeout=1.0)
            with conn.transaction():
                new = service.claim_new(conn, "my-service", map(service.event_id, deliveries))
                for delivery in deliveries:
                    if (event_id := service.event_id(delivery)) in new:
                        new.remove(event_id)  # once, also when it came twice
                        ...  # the side effect, in the same transaction
            for delivery in deliveries:  # after the commit
                subscription.ack(delivery)
"""

from __future__ import annotations

from edaenv.brokers.base import Ack, Broker, Delivery, Message, Subscription
from edaenv.errors import BrokerError, EdaenvError
from edaenv.outbox.dlq import HEADERS as DEAD_LETTER_HEADERS
from edaenv.service._connect import Settings, connect_broker, connect_database
from edaenv.service._events import (
    InvalidEvent,
    claim_new,
    dead_letter,
    event_id,
    event_time,
)
from edaenv.service._telemetry import (
    ConsumerMetrics,
    Tracing,
    process_spans,
    serve_metrics,
    start_tracing,
)

__all__ = [
    "DEAD_LETTER_HEADERS",
    "Ack",
    "Broker",
    "BrokerError",
    "ConsumerMetrics",
    "Delivery",
    "EdaenvError",
    "InvalidEvent",
    "Message",
    "Settings",
    "Subscription",
    "Tracing",
    "claim_new",
    "connect_broker",
    "connect_database",
    "dead_letter",
    "event_id",
    "event_time",
    "process_spans",
    "serve_metrics",
    "start_tracing",
]
