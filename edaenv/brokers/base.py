"""The one interface every broker adapter implements (kafka.py also serves redpanda).

Adapters speak bytes and CloudEvents attributes; they know nothing of contracts or the outbox.
Each maps `Message.attributes` to its protocol binding's header names (Kafka `ce_*`, AMQP
`cloudEvents_*`, NATS `ce-*`) and back, so a `Delivery` read by `tail` carries the same
attribute names whichever broker it came from.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from edaenv.errors import BrokerError
from edaenv.wire import RESOLVED, Ack, Delivery, Endpoint, Message, dead_letter, position_text

# The wire types are defined below events and brokers (edaenv/wire.py); adapters and their
# callers may keep importing them from here.
__all__ = [
    "RESOLVED",
    "Ack",
    "Broker",
    "Delivery",
    "Endpoint",
    "Message",
    "Subscription",
    "dead_letter",
    "position_text",
    "probe",
    "unreachable",
]


def unreachable(broker: str, address: str) -> BrokerError:
    """The one message every adapter gives when its broker does not answer."""
    return BrokerError(
        f"cannot reach {broker} at {address}",
        hint="is the stack up? run `edaenv up`, or `edaenv status`",
    )


def probe(broker: str, address: str, hosts: Sequence[tuple[str, int]], timeout: float) -> float:
    """Fail at once when no host accepts a TCP connection (librdkafka and nats-py retry a
    refused connection until their own timeout); returns what is left of `timeout` for the
    client's handshake. A broker that accepts and then stays silent (paused, overloaded) is
    left to that handshake's timeout."""
    deadline = time.monotonic() + timeout
    for host, port in hosts:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            socket.create_connection((host, port), timeout=left).close()
        except OSError:
            continue
        return max(0.1, deadline - time.monotonic())
    raise unreachable(broker, address)


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

    def publish(self, messages: Sequence[Message]) -> list[Ack]:
        """Send a batch and wait for the broker's acknowledgement of every message, in order per
        key. Returns each message's Ack, in the order sent; one with `duplicate` set was dropped
        by the broker, not stored. Raises BrokerError if any was not acknowledged; a message too
        large or a topic missing fails before any is sent."""
        ...

    def tail(
        self, topic: str, *, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[Delivery]:
        """Read without side effects: no committed offsets, nothing taken from a queue.

        `topic` is a topic, or a dead-letter name (each adapter's `dead_letter_source`). Not
        following, it stops at the end present when it started, or after idle_timeout seconds
        without a message. Raises BrokerError when the topic is missing."""
        ...

    def subscribe(self, topic: str, group: str) -> Subscription: ...

    def publish_dead_letter(self, topic: str, delivery: Delivery, headers: dict[str, str]) -> Ack:
        """Send a delivery to the topic's dead-letter counterpart with extra headers."""
        ...

    def remove_dead_letters(self, letters: Sequence[Delivery]) -> list[Delivery]:
        """Take dead letters, as `tail` read them from a dead-letter name, off it for good;
        returns those removed (one already gone is not). Kafka cannot delete a record: there a
        RESOLVED marker record names each one, and readers of the dead letters skip both."""
        ...

    def close(self) -> None: ...
