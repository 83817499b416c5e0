"""Kafka and Redpanda through confluent-kafka (librdkafka): an idempotent producer with acks=all,
consumer groups with manual commits, and tail by partition assignment (no group, no commit)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from edaenv.brokers import base
from edaenv.errors import BrokerError
from edaenv.wire import Binding

# The CloudEvents protocol binding's header names.
BINDING = Binding("ce_", "content-type")

PARTITIONS = 3
MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's and the brokers' default limit
SEND_TIMEOUT = 15.0  # a message not acknowledged by then fails (message.timeout.ms)
POLL_EVERY = 64  # serve delivery callbacks this often while producing

_log = logging.getLogger("edaenv.kafka")
_log.addHandler(logging.NullHandler())
_log.propagate = False  # librdkafka's connection chatter; failures surface as BrokerError


class KafkaBroker:
    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, endpoint: base.Endpoint):
        self.name = endpoint.broker
        self.url = endpoint.url
        self.timeout = endpoint.connect_timeout
        self.common: dict[str, Any] = {
            "bootstrap.servers": endpoint.url,
            "logger": _log,
            # Failures surface as BrokerError; a client being destroyed after its broker went
            # away would otherwise print librdkafka's connection errors to stderr.
            "log_level": 0,
            "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
        }
        left = base.probe(self.name, self.url, _hosts(endpoint.url), self.timeout)
        self.admin = AdminClient(self.common)
        self.known = self._topics(left)
        self._producer: Producer | None = None

    # --- topology ------------------------------------------------------------------------------

    def _topics(self, timeout: float | None = None) -> set[str]:
        # All topics, never one by name: a metadata request for one name auto-creates it on
        # brokers that allow that (Tansu does), which would hide a missing topic.
        try:
            return set(self.admin.list_topics(timeout=timeout or self.timeout).topics)
        except KafkaException:
            raise self._unreachable() from None

    def _unreachable(self) -> BrokerError:
        return base.unreachable(self.name, self.url)

    def _missing(self, topic: str) -> BrokerError:
        return BrokerError(
            f"topic '{topic}' does not exist on {self.name} at {self.url}",
            hint=_known_hint(self.known),
        )

    def ensure_topology(self, topics: Sequence[str]) -> None:
        wanted = list(dict.fromkeys(t for topic in topics for t in (topic, dlq_topic(topic))))
        missing = [t for t in wanted if t not in self.known]
        if missing:
            self.known = self._topics()
            missing = [t for t in wanted if t not in self.known]
        if not missing:
            return
        futures = self.admin.create_topics(
            [NewTopic(t, PARTITIONS, 1) for t in missing], request_timeout=self.timeout
        )
        for name, future in futures.items():
            try:
                future.result(timeout=self.timeout + 5)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(
                        f"cannot create topic '{name}' on {self.name} at {self.url}: {error.str()}"
                    ) from None
        self.known.update(missing)

    # --- publish ---------------------------------------------------------------------------------

    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self.common,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": int(SEND_TIMEOUT * 1000),
                    "queue.buffering.max.messages": 200_000,
                }
            )
            # Connected and with metadata before the first message: otherwise that message
            # waits for librdkafka's first metadata round (~0.5 s on a fresh producer).
            try:
                self._producer.list_topics(timeout=self.timeout)
            except KafkaException:
                raise self._unreachable() from None
        return self._producer

    def publish(self, messages: Sequence[base.Message]) -> list[base.Ack]:
        self._check(messages)
        count = len(messages)
        acks: list[base.Ack | None] = [None] * count
        sent = [0.0] * count
        failures: list[KafkaError] = []
        unplaced: list[int] = []
        clock = time.perf_counter

        def delivered(index: int, err: KafkaError | None, record: Message) -> None:
            if err is not None:
                failures.append(err)
            elif record.offset() is None:
                # The broker answered "duplicate sequence" (librdkafka counts the message as
                # delivered) without saying where it is. A broker restarted after a SIGKILL
                # can answer so for a send it kept the sequence of but not the records (Tansu
                # does): not proof of storage, so the batch is sent again.
                unplaced.append(index)
            else:
                # No broker-side de-duplication across producers: every ack is a stored record
                # (the idempotent producer only drops its own retries of one send).
                acks[index] = base.Ack(
                    position={"partition": record.partition(), "offset": record.offset()},
                    latency_ms=(clock() - sent[index]) * 1000,
                )

        producer = self.producer()
        produce, poll = producer.produce, producer.poll
        for index, message in enumerate(messages):
            headers: Any = BINDING.headers(message.attributes, message.headers)
            while True:
                try:
                    sent[index] = clock()
                    produce(
                        message.topic,
                        message.value,
                        message.key,
                        headers=headers,
                        on_delivery=partial(delivered, index),
                    )
                    break
                except BufferError:
                    poll(0.01)
            if index % POLL_EVERY == 0:
                poll(0)
        remaining = producer.flush(SEND_TIMEOUT + 5)
        if failures or remaining or unplaced:
            # An idempotent producer that timed out may be fenced for good: start a fresh one
            # (a new producer id, whose sends no broker takes for duplicates).
            producer.purge()
            self._producer = None
            if failures:
                error = failures[0]
                if error.code() == KafkaError._MSG_TIMED_OUT:
                    raise self._unreachable()
                raise BrokerError(
                    f"{len(failures)} of {count} message(s) refused by {self.name} "
                    f"at {self.url}: {error.str()}"
                )
            if remaining:
                raise BrokerError(
                    f"{remaining} of {count} message(s) not acknowledged by {self.name} "
                    f"at {self.url} within {SEND_TIMEOUT + 5:g}s",
                    hint="is the broker healthy? `edaenv status`",
                )
            raise BrokerError(
                f"{len(unplaced)} of {count} message(s) acknowledged by {self.name} at "
                f"{self.url} as duplicates of an earlier send, without an offset: not "
                "known to be stored",
                hint="publish them again (the relay does): a duplicate at worst",
            )
        return [ack for ack in acks if ack is not None]

    def _check(self, messages: Sequence[base.Message]) -> None:
        limit = self.max_message_bytes
        for message in messages:
            # The cheap bound first: headers of a few KiB are the rule, not worth summing.
            if len(message.value) + len(message.key) + 8192 < limit:
                continue
            size = _size(message)
            if size > limit:
                raise BrokerError(
                    f"message of {size} bytes for key '{message.key}' is larger "
                    f"than {self.name} accepts ({self.max_message_bytes} bytes)"
                )
        topics = {m.topic for m in messages} - self.known
        if topics:
            self.known = self._topics()
            for topic in sorted(topics - self.known):
                raise self._missing(topic)

    # --- read ------------------------------------------------------------------------------------

    def _consumer(self, group: str, **extra: Any) -> Consumer:
        return Consumer({**self.common, "group.id": group, "enable.auto.commit": False, **extra})

    def tail(
        self, topic: str, *, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[base.Delivery]:
        if topic not in self.known:
            self.known = self._topics()
            if topic not in self.known:
                raise self._missing(topic)
        # A group id is mandatory for librdkafka, but without subscribe() or commit() no group
        # ever exists on the broker.
        consumer = self._consumer(
            f"edaenv-tail-{uuid.uuid4().hex}",
            **{"enable.auto.offset.store": False, "enable.partition.eof": True},
        )
        try:
            partitions = consumer.list_topics(topic, timeout=self.timeout).topics[topic].partitions
            start = {}
            for p in sorted(partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=self.timeout
                )
                start[p] = low if from_beginning else high
            consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
            # Not following, a partition is done at its end-of-partition event: the end as the
            # fetch saw it (watermarks asked beforehand may lag behind on some brokers).
            pending = set(start)
            idle_since = time.monotonic()
            while follow or (pending and time.monotonic() - idle_since < idle_timeout):
                records = consumer.consume(500, 0.2)
                if records:
                    idle_since = time.monotonic()
                for record in records:
                    error = record.error()
                    if error is None:
                        yield _delivery(record)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(record.partition())
        except KafkaException:
            raise self._unreachable() from None
        finally:
            consumer.close()

    def subscribe(self, topic: str, group: str) -> KafkaSubscription:
        if topic not in self.known:
            self.known = self._topics()
            if topic not in self.known:
                raise self._missing(topic)
        # A member that died without leaving holds its partitions until the session times out:
        # 6 s (the broker's minimum) instead of librdkafka's 45 s, so a restarted consumer
        # resumes within seconds, which is what a local stack and its fault tests want.
        consumer = self._consumer(
            group,
            **{
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            },
        )
        consumer.subscribe([topic])
        return KafkaSubscription(consumer, self.name, self.url)

    def publish_dead_letter(
        self, topic: str, delivery: base.Delivery, headers: dict[str, str]
    ) -> base.Ack:
        return self.publish([base.dead_letter(delivery, dlq_topic(topic), headers)])[0]

    def remove_dead_letters(self, letters: Sequence[base.Delivery]) -> list[base.Delivery]:
        """A log cannot lose one record: append a marker naming each letter's position, in the
        letter's partition (same key), which readers of the dead letters skip with it."""
        markers = [
            base.Message(
                topic=letter.topic,
                key=letter.key,
                value=b"",
                headers={base.RESOLVED: base.position_text(letter.position)},
            )
            for letter in letters
        ]
        if markers:
            self.publish(markers)  # all acknowledged, or BrokerError
        return list(letters)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(SEND_TIMEOUT)
            self._producer = None


class KafkaSubscription:
    """A consumer group member. ack() records the delivery's offset; what was acknowledged is
    committed (asynchronously, one request for all partitions) by the next fetch(), and
    synchronously by close() before leaving the group. At least once: a crash re-delivers what
    was acknowledged since the last fetch."""

    def __init__(self, consumer: Consumer, name: str, url: str):
        self.consumer = consumer
        self.name, self.url = name, url
        self.acked: dict[tuple[str, int], int] = {}
        self.uncommitted = False

    def fetch(self, max_messages: int, timeout: float) -> list[base.Delivery]:
        try:
            if self.uncommitted:
                self.uncommitted = False
                self.consumer.commit(offsets=self._offsets(), asynchronous=True)
            records = self.consumer.consume(max_messages, timeout)
        except KafkaException as exc:
            raise BrokerError(f"{self.name} at {self.url}: {exc.args[0].str()}") from None
        deliveries = []
        for record in records:
            error = record.error()
            if error is None:
                deliveries.append(_delivery(record))
            elif error.code() != KafkaError._PARTITION_EOF:
                raise BrokerError(f"{self.name} at {self.url}: {error.str()}")
        return deliveries

    def ack(self, delivery: base.Delivery) -> None:
        self.acked[(delivery.topic, delivery.position["partition"])] = (
            delivery.position["offset"] + 1
        )
        self.uncommitted = True

    def _offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.acked.items()]

    def close(self) -> None:
        try:
            if self.acked:
                self.consumer.commit(offsets=self._offsets(), asynchronous=False)
        except KafkaException:
            pass  # not committed: those events come again, which at-least-once allows
        finally:
            self.consumer.close()


def _delivery(record: Message) -> base.Delivery:
    pairs: Any = record.headers() or ()  # consumed records: a list of (name, bytes | None)
    attributes, headers = BINDING.split(pairs)
    key = record.key()
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key or "")
    return base.Delivery(
        topic=record.topic() or "",
        key=text,
        value=record.value() or b"",
        attributes=attributes,
        headers=headers,
        position={"partition": record.partition(), "offset": record.offset()},
    )


def dead_letter_source(topic: str) -> str:
    """What `tail` reads a topic's dead letters from: its dead-letter topic."""
    return dlq_topic(topic)


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for server in bootstrap.split(","):
        address = server.strip().rpartition("://")[2]
        host, colon, port = address.rpartition(":")
        if not colon or not port.isdigit():
            host, port = address, "9092"
        hosts.append((host.strip("[]") or "localhost", int(port)))
    return hosts


def _known_hint(known: set[str]) -> str:
    shown = sorted(t for t in known if not t.startswith("_"))
    listed = ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else "")
    return (
        f"topics there: {listed or 'none'}. `edaenv up` and `edaenv publish` create the "
        "topics of your contracts (events/*.schema.json)"
    )


def _size(message: base.Message) -> int:
    headers = sum(len(k) + len(v) for k, v in message.attributes.items())
    headers += sum(len(k) + len(v) for k, v in message.headers.items())
    return len(message.value) + len(message.key) + headers + 64


def dlq_topic(topic: str) -> str:
    """The topic's dead-letter topic."""
    return f"{topic}.dlq"
