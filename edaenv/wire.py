"""What crosses between events, brokers, the outbox and the commands: a message to send, its
acknowledgement, a delivery read back, and where a broker is. Plain data, no I/O: the lowest
layer after errors and names (docs/architecture.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: from edaenv.yaml + .env on the host, from env in containers."""

    broker: str  # kafka | redpanda | rabbitmq | nats
    url: str  # kafka: "host:port"; rabbitmq: amqp://user:pass@host:port/%2F; nats: nats://u:p@h:p
    # The documented bound: a broker that accepts the connection and then does not answer
    # (paused, overloaded) is reported unreachable after this long; a refused one at once.
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class Message:
    topic: str
    key: str  # the aggregate id: Kafka key, RabbitMQ routing key, last NATS subject token
    value: bytes
    attributes: dict[str, str] = field(default_factory=dict)  # CloudEvents attrs + extensions
    headers: dict[str, str] = field(default_factory=dict)  # other headers, sent as they are
    # What a de-duplicating broker (NATS JetStream: Nats-Msg-Id, within the stream's duplicate
    # window) drops repeats of; None: the CloudEvents id, so a relay that re-sends a row after a
    # crash is de-duplicated by the broker. Injected duplicates and replays set one of their
    # own: the repeat is then meant to reach the consumer, whose idempotency is under test.
    dedup_id: str | None = None


@dataclass(frozen=True)
class Ack:
    """The broker's acknowledgement of one published message."""

    position: dict[str, Any]  # {"partition": 1, "offset": 7}, {"stream": "ORDERS", "seq": 5}
    latency_ms: float  # from the send to the acknowledgement
    # The broker already held a message of this dedup_id and dropped this one: nothing new
    # was stored or delivered (position is the held message's). Only NATS reports it.
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.position, "latency_ms": self.latency_ms, "duplicate": self.duplicate}


@dataclass(frozen=True)
class Delivery:
    topic: str
    key: str
    value: bytes
    attributes: dict[str, str]
    headers: dict[str, str]
    position: dict[str, Any]  # {"partition": 0, "offset": 12}, {"stream": "ORDERS", "seq": 5}


def dead_letter(delivery: Delivery, topic: str, headers: dict[str, str]) -> Message:
    """A delivery re-addressed to a dead-letter topic, with the failure's headers added."""
    return Message(
        topic=topic,
        key=delivery.key,
        value=delivery.value,
        attributes=dict(delivery.attributes),
        headers={**delivery.headers, **headers},
    )


# The header of a Kafka dead-letter topic's marker record: the position_text of the letter it
# resolves (replayed or purged). Markers carry no CloudEvents attributes.
RESOLVED = "edaenv-dlq-resolved"


def position_text(position: dict[str, Any]) -> str:
    return json.dumps(position, sort_keys=True, default=str)


CONTENT_TYPE = "datacontenttype"  # the CloudEvents attribute a binding may carry apart


@dataclass(frozen=True)
class Binding:
    """The header names of one protocol binding."""

    prefix: str
    content_type: str | None  # header of datacontenttype; None: the protocol's own property

    def headers(self, attributes: Mapping[str, str], other: Mapping[str, str]) -> dict[str, str]:
        out = dict(other)
        for name, value in attributes.items():
            if name != CONTENT_TYPE:
                out[self.prefix + name] = value
            elif self.content_type is not None:
                out[self.content_type] = value
        return out

    def split(
        self, headers: Iterable[tuple[str, Any]], content_type: str | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(CloudEvents attributes, other headers) of a received message; values as text."""
        attributes: dict[str, str] = {}
        other: dict[str, str] = {}
        size = len(self.prefix)
        for name, raw in headers:
            if isinstance(raw, str):
                value = raw
            elif isinstance(raw, bytes):
                value = raw.decode("utf-8", "replace")
            else:
                value = "" if raw is None else str(raw)
            if name.startswith(self.prefix):
                attributes[name[size:]] = value
            elif self.content_type is not None and name.lower() == self.content_type:
                attributes[CONTENT_TYPE] = value
            else:
                other[name] = value
        if content_type and attributes:
            attributes[CONTENT_TYPE] = content_type
        return attributes, other
