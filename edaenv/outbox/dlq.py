"""Dead letters: the headers a consumer adds when it gives up on an event, and reading,
re-publishing and removing them (`edaenv dlq list | show | replay | purge`).

A dead letter keeps the original event (key, value, CloudEvents attributes) and adds headers
naming where it came from and why it failed. Replay publishes the original event again to its
original topic, without those headers, and once the broker has acknowledged that, removes the
event's dead letters: a replay that fails again leaves exactly the one new letter. The re-sent
event keeps its CloudEvents id, so the consumer's idempotency decides (a replay of an event it
handled meanwhile is a no-op); the broker's own de-duplication is bypassed on purpose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edaenv.brokers.base import RESOLVED, position_text
from edaenv.errors import UsageError

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
        """The event as it was first published, with a de-duplication id of this letter's own:
        a broker that drops repeats of an id (NATS) delivers it again, and drops only a second
        replay of this same letter (one whose removal failed after its re-send)."""
        from edaenv.brokers.base import Message

        headers = {k: v for k, v in self.delivery.headers.items() if not k.startswith(PREFIX)}
        letter = hashlib.sha256(position_text(self.delivery.position).encode()).hexdigest()
        return Message(
            topic=self.original_topic,
            key=self.delivery.key,
            value=self.delivery.value,
            attributes=dict(self.delivery.attributes),
            headers=headers,
            dedup_id=f"{self.id}:replay:{letter[:16]}",
        )


def dlq_source(broker: str, topic: str) -> str:
    """The name `Broker.tail` reads a topic's dead letters from (the adapter's naming)."""
    from edaenv.brokers.registry import dead_letter_source

    return dead_letter_source(broker, topic)


def read_dead_letters(
    broker: Broker, broker_name: str, topics: Iterable[str], idle_timeout: float = 2.0
) -> list[DeadLetter]:
    """The dead letters still to handle, oldest first per partition or queue: on Kafka, the
    letters a RESOLVED marker names (replayed or purged) and the markers are left out."""
    letters: list[Delivery] = []
    resolved: set[str] = set()
    for topic in topics:
        for delivery in broker.tail(
            dlq_source(broker_name, topic),
            from_beginning=True,
            follow=False,
            idle_timeout=idle_timeout,
        ):
            if RESOLVED in delivery.headers:
                resolved.add(f"{delivery.topic} {delivery.headers[RESOLVED]}")
            else:
                letters.append(delivery)
    return [
        DeadLetter(d) for d in letters if f"{d.topic} {position_text(d.position)}" not in resolved
    ]


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


def chosen(letters: Sequence[DeadLetter], event_ids: Iterable[str]) -> list[DeadLetter]:
    """Every dead letter of the events named (each an id or an unambiguous prefix): an event
    that failed more than once has a letter per failure."""
    ids = {find(letters, event_id).id for event_id in event_ids}
    return [letter for letter in letters if letter.id in ids]


@dataclass(frozen=True)
class Replayed:
    replayed: list[str]  # event ids the broker stored and delivers again
    dropped: list[str]  # event ids the broker dropped as duplicates of a re-send it holds
    removed: int  # dead letters removed


def replay(broker: Broker, letters: Sequence[DeadLetter]) -> Replayed:
    """Publish each event again to its original topic, once per event id, and when the broker
    has acknowledged them, remove the events' dead letters. A re-send the broker dropped as a
    duplicate (NATS, within its window: this letter's replay was sent before) is reported, not
    counted; its letters are removed too, since the broker holds the event."""
    unknown = [letter.id for letter in letters if not letter.original_topic]
    if unknown:
        raise UsageError(
            f"dead letter {unknown[0]} has no {ORIGINAL_TOPIC} header",
            hint="it was not dead-lettered by an edaenv consumer; publish it "
            "with `edaenv publish` instead",
        )
    latest = list({letter.id: letter for letter in letters}.values())
    if not latest:
        return Replayed([], [], 0)
    acks = broker.publish([letter.original() for letter in latest])
    dropped = [letter.id for letter, ack in zip(latest, acks, strict=True) if ack.duplicate]
    replayed = [letter.id for letter, ack in zip(latest, acks, strict=True) if not ack.duplicate]
    removed = broker.remove_dead_letters([letter.delivery for letter in letters])
    return Replayed(replayed, dropped, len(removed))


def purge(broker: Broker, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
    """Remove dead letters for good; returns those removed (one gone meanwhile is not)."""
    if not letters:
        return []
    return [DeadLetter(d) for d in broker.remove_dead_letters([x.delivery for x in letters])]
