"""Dead letters: the headers a consumer adds when it gives up on an event, and reading and
re-publishing them (`edaenv dlq list | show | replay`).

A dead letter keeps the original event (key, value, CloudEvents attributes) and adds headers
naming where it came from and why it failed. Replay publishes the original event again to its
original topic, without those headers. The dead letter itself stays (a log, or a queue read
without taking), so `dlq list` still shows it after a replay; consumers are idempotent, so
replaying an event that was handled meanwhile is a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edaenv.errors import UsageError
from edaenv.events import topology

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker, Delivery, Message

PREFIX = "edaenv-dlq-"
ORIGINAL_TOPIC = PREFIX + "topic"
ORIGINAL_POSITION = PREFIX + "position"
EXCEPTION_TYPE = PREFIX + "exception-type"
EXCEPTION_MESSAGE = PREFIX + "exception-message"
ATTEMPTS = PREFIX + "attempts"
FIRST_FAILURE = PREFIX + "first-failure"
LAST_FAILURE = PREFIX + "last-failure"
TRACE_ID = PREFIX + "trace-id"
HEADERS = (
    ORIGINAL_TOPIC,
    ORIGINAL_POSITION,
    EXCEPTION_TYPE,
    EXCEPTION_MESSAGE,
    ATTEMPTS,
    FIRST_FAILURE,
    LAST_FAILURE,
    TRACE_ID,
)
MAX_MESSAGE = 1000  # characters of the exception message kept in a header


def failure_headers(
    delivery: Delivery,
    error: BaseException,
    attempts: int,
    first_failure: datetime,
    last_failure: datetime,
) -> dict[str, str]:
    """Every header a dead letter carries, each always present (empty when unknown)."""
    from edaenv.outbox.tracing import trace_id

    return {
        ORIGINAL_TOPIC: delivery.topic,
        ORIGINAL_POSITION: json.dumps(delivery.position, sort_keys=True, default=str),
        EXCEPTION_TYPE: f"{type(error).__module__}.{type(error).__qualname__}",
        EXCEPTION_MESSAGE: str(error)[:MAX_MESSAGE],
        ATTEMPTS: str(attempts),
        FIRST_FAILURE: first_failure.isoformat(),
        LAST_FAILURE: last_failure.isoformat(),
        TRACE_ID: trace_id(delivery.attributes),
    }


@dataclass(frozen=True)
class DeadLetter:
    delivery: Delivery

    @property
    def id(self) -> str:
        """The original event's CloudEvents id."""
        return self.delivery.attributes.get("id", "")

    @property
    def original_topic(self) -> str:
        return self.delivery.headers.get(ORIGINAL_TOPIC, "")

    def summary(self) -> dict[str, Any]:
        h = self.delivery.headers
        return {
            "id": self.id,
            "type": self.delivery.attributes.get("type", ""),
            "key": self.delivery.key,
            "topic": self.original_topic,
            "attempts": h.get(ATTEMPTS, ""),
            "exception": h.get(EXCEPTION_TYPE, ""),
            "message": h.get(EXCEPTION_MESSAGE, ""),
            "last_failure": h.get(LAST_FAILURE, ""),
        }

    def detail(self) -> dict[str, Any]:
        try:
            data: Any = json.loads(self.delivery.value)
        except ValueError:
            data = self.delivery.value.decode(errors="replace")
        return {
            **self.summary(),
            "attributes": self.delivery.attributes,
            "headers": self.delivery.headers,
            "dlq_position": self.delivery.position,
            "data": data,
        }

    def original(self) -> Message:
        from edaenv.brokers.base import Message

        headers = {k: v for k, v in self.delivery.headers.items() if not k.startswith(PREFIX)}
        return Message(
            topic=self.original_topic,
            key=self.delivery.key,
            value=self.delivery.value,
            attributes=dict(self.delivery.attributes),
            headers=headers,
        )


def dlq_source(broker: str, topic: str) -> str:
    """The name `Broker.tail` reads a topic's dead letters from."""
    if broker == "nats":
        return topology.nats_dlq_subject(topic)
    if broker == "rabbitmq":
        return topology.rabbit_dlq(topic)
    return topology.dlq_topic(topic)


def read_dead_letters(
    broker: Broker, broker_name: str, topics: Iterable[str], idle_timeout: float = 2.0
) -> list[DeadLetter]:
    letters = []
    for topic in topics:
        for delivery in broker.tail(
            dlq_source(broker_name, topic),
            from_beginning=True,
            follow=False,
            idle_timeout=idle_timeout,
        ):
            letters.append(DeadLetter(delivery))
    return letters


def find(letters: Sequence[DeadLetter], event_id: str) -> DeadLetter:
    """The dead letter of an event id (or an unambiguous prefix of one)."""
    exact = [letter for letter in letters if letter.id == event_id]
    matches = exact or [letter for letter in letters if letter.id.startswith(event_id)]
    if len({m.id for m in matches}) > 1:
        raise UsageError(
            f"'{event_id}' matches {len(matches)} dead letters",
            where="ID",
            hint="give more characters of the id (`edaenv dlq list` shows them)",
        )
    if not matches:
        raise UsageError(
            f"no dead letter has the id '{event_id}'",
            where="ID",
            hint="`edaenv dlq list` shows the ids of the dead letters",
        )
    return matches[-1]


def replay(broker: Broker, letters: Sequence[DeadLetter]) -> int:
    """Publish each event again to its original topic, with broker acknowledgement."""
    unknown = [letter.id for letter in letters if not letter.original_topic]
    if unknown:
        raise UsageError(
            f"dead letter {unknown[0]} has no {ORIGINAL_TOPIC} header",
            hint="it was not dead-lettered by an edaenv consumer; publish it "
            "with `edaenv publish` instead",
        )
    unique = list({letter.id: letter for letter in letters}.values())
    if unique:
        broker.publish([letter.original() for letter in unique])
    return len(unique)
