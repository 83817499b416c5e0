"""Handling deliveries: their identity, the idempotency guard, and dead letters."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from edaenv.brokers.base import Ack, Broker, Delivery


class InvalidEvent(Exception):
    """A message that can never be handled: not parseable, or its data breaks the event's
    contract. Retrying cannot help; dead-letter it at once (`dead_letter(..., attempts=1)`)."""


# Dead letters name the exception's type; this one by its public name.
InvalidEvent.__module__ = "edaenv.service"


def event_id(delivery: Delivery) -> str:
    """The key the idempotency guard records: the CloudEvents id. A message without one (from
    a producer that sets none) is known by a hash of its key and body, not by its position: a
    RabbitMQ redelivery comes with a new delivery tag, and would be handled again. So two
    events with byte-identical key and data count as one, which is what a repeated
    OrderPlaced means; events that can legitimately repeat need an id each."""
    found = delivery.attributes.get("id")
    if found:
        return found
    return "sha256:" + hashlib.sha256(delivery.key.encode() + b"\0" + delivery.value).hexdigest()


def event_time(delivery: Delivery) -> datetime | None:
    """When the event happened (its CloudEvents `time`); None when absent or not a timestamp."""
    try:
        sent = datetime.fromisoformat(delivery.attributes["time"])
    except (KeyError, ValueError):
        return None
    return sent if sent.tzinfo is not None else sent.replace(tzinfo=UTC)


# The ids as one JSON array: psycopg dumps it in one C call (a text[] is dumped id by id).
CLAIM = (
    "INSERT INTO processed_events (consumer, event_id) "
    "SELECT %s, jsonb_array_elements_text(%s) ON CONFLICT DO NOTHING RETURNING event_id"
)


def claim_new(conn: psycopg.Connection[Any], consumer: str, event_ids: Iterable[str]) -> set[str]:
    """Record event ids as processed by `consumer` (table processed_events, from the scaffold's
    db/migrations/001_outbox.sql) and return those that were not recorded before: the events to
    handle. Call it in the transaction of the side effect, so that both commit or neither does;
    concurrent claims of one id by two transactions give it to exactly one of them. An id given
    twice is returned once."""
    from psycopg.types.json import Jsonb

    cursor = conn.execute(CLAIM, (consumer, Jsonb(list(event_ids))))
    return {row[0] for row in cursor.fetchall()}


def dead_letter(
    broker: Broker,
    delivery: Delivery,
    error: BaseException,
    *,
    attempts: int = 1,
    first_failure: datetime | None = None,
    topic: str | None = None,
) -> Ack:
    """Send a delivery to the dead letters of `topic` (default: the topic it came from), with
    the standard failure headers (edaenv-dlq-topic, -position, -exception-type,
    -exception-message, -attempts, -first-failure, -last-failure, -trace-id) that
    `edaenv dlq list | show | replay | purge` read. Returns the broker's acknowledgement;
    raises BrokerError when the broker does not acknowledge it."""
    from edaenv.outbox.dlq import failure_headers

    now = datetime.now(UTC)
    headers = failure_headers(delivery, error, attempts, first_failure or now, now)
    return broker.publish_dead_letter(topic or delivery.topic, delivery, headers)
