"""The one interface every broker adapter implements (kafka.py also serves redpanda).

Adapters speak bytes and CloudEvents attributes; they know nothing of contracts or the outbox.
Each maps `Message.attributes` to its protocol binding's header names (Kafka `ce_*`, AMQP
`cloudEvents_*`, NATS `ce-*`) and back, so a `Delivery` read by `tail` carries the same
attribute names whichever broker it came from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edaenv.errors import BrokerError


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: from edaenv.yaml + .env on the host, from env in containers."""

    broker: str  # kafka | redpanda | rabbitmq | nats
    url: str  # kafka: "host:port"; rabbitmq: amqp://user:pass@host:port/%2F; nats: nats://u:p@h:p
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class Message:
    topic: str
    key: str  # the aggregate id: Kafka key, RabbitMQ routing key, last NATS subject token
    value: bytes
    attributes: dict[str, str] = field(default_factory=dict)  # CloudEvents attrs + extensions
    headers: dict[str, str] = field(default_factory=dict)  # other headers, sent as they are


@dataclass(frozen=True)
class Delivery:
    topic: str
    key: str
    value: bytes
    attributes: dict[str, str]
    headers: dict[str, str]
    position: dict[str, Any]  # {"partition": 0, "offset": 12}, {"stream": "ORDERS", "seq": 5}


def unreachable(broker: str, address: str) -> BrokerError:
    """The one message every adapter gives when its broker does not answer."""
    return BrokerError(
        f"cannot reach {broker} at {address}",
        hint="is the stack up? run `edaenv up`, or `edaenv status`",
    )


def dead_letter(delivery: Delivery, topic: str, headers: dict[str, str]) -> Message:
    """A delivery re-addressed to a dead-letter topic, with the failure's headers added."""
    return Message(
        topic=topic,
        key=delivery.key,
        value=delivery.value,
        attributes=dict(delivery.attributes),
        headers={**delivery.headers, **headers},
    )


class Subscription(Protocol):
    """A consumer-group style subscription with explicit acknowledgement (at-least-once)."""

    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]: ...

    def ack(self, delivery: Delivery) -> None: ...

    def close(self) -> None: ...


class Broker(Protocol):
    name: str
    max_message_bytes: int  # the largest message (body + key + headers) the broker accepts

    def ensure_topology(self, topics: Sequence[str]) -> None:
        """Create topics/streams/exchanges and their dead-letter counterparts; idempotent."""

    def publish(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """Send a batch and wait for the broker's acknowledgement of every message, in order per
        key. Returns each message's position (e.g. {"partition": 1, "offset": 7}) plus
        "latency_ms", the time from its send to its acknowledgement. Raises BrokerError if any
        was not acknowledged; a message too large or a topic missing fails before any is sent."""
        ...

    def tail(
        self, topic: str, *, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[Delivery]:
        """Read without side effects: no committed offsets, nothing taken from a queue.

        `topic` is a topic, or a dead-letter name (topology.dlq_topic, rabbit_dlq,
        nats_dlq_subject). Not following, it stops at the end present when it started, or after
        idle_timeout seconds without a message. Raises BrokerError when the topic is missing."""
        ...

    def subscribe(self, topic: str, group: str) -> Subscription: ...

    def publish_dead_letter(
        self, topic: str, delivery: Delivery, headers: dict[str, str]
    ) -> dict[str, Any]:
        """Send a delivery to the topic's dead-letter counterpart with extra headers."""
        ...

    def close(self) -> None: ...
