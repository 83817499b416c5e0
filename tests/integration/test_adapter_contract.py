"""The contract every broker adapter keeps (edaenv/brokers/base.py: Broker, Subscription), checked
the same way on each: one class of behaviours, one subclass per broker. The shipped adapters run
against the native test brokers (scripts/start-services.sh); a broker of the test's own
(own_brokers.py) only where the broker is killed and started again."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
from events_support import BROKER_URLS, require
from own_brokers import own_broker

from edaenv.brokers.base import Ack, Broker, Delivery, Message, Subscription
from edaenv.brokers.registry import connect
from edaenv.errors import BrokerError
from edaenv.outbox import dlq
from edaenv.wire import Endpoint

KEYS = ["order-a", "order-b", "order-c", "order-d", "order-e"]
RECONNECT_WITHIN = 20.0  # the first publish after a restart, on the adapter of before


def event(topic: str, key: str, n: int) -> Message:
    return Message(
        topic=topic,
        key=key,
        value=json.dumps({"key": key, "n": n}).encode(),
        attributes={
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/contract",
            "type": "ContractChecked",
            "datacontenttype": "application/json",
        },
    )


def n_of(delivery: Delivery) -> int:
    number: int = json.loads(delivery.value)["n"]
    return number


def ids(items: Sequence[Message] | Sequence[Delivery]) -> list[str]:
    return [item.attributes["id"] for item in items]


def drain(subscription: Subscription, count: int, within: float = 60.0) -> list[Delivery]:
    """Fetch (asking for no more than still wanted) and ack until `count` arrived."""
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        for delivery in subscription.fetch(count - len(got), 1.0):
            got.append(delivery)
            subscription.ack(delivery)
    return got


def read_until(subscription: Subscription, wanted: set[str], within: float) -> list[str]:
    """Fetch and ack until every id of `wanted` came (others may come too: at least once)."""
    got: list[str] = []
    deadline = time.monotonic() + within
    while not wanted <= set(got) and time.monotonic() < deadline:
        try:
            batch = subscription.fetch(100, 1.0)
        except BrokerError:  # a subscription may see its broker's restart once
            time.sleep(0.5)
            continue
        for delivery in batch:
            got.append(delivery.attributes["id"])
            subscription.ack(delivery)
    return got


def tail_all(broker: Broker, topic: str) -> list[Delivery]:
    return list(broker.tail(topic, from_beginning=True, follow=False, idle_timeout=5.0))


class AdapterContract:
    kind: ClassVar[str]
    # Whether `tail` still reads what was published before a kill -9 of the broker.
    tail_survives_a_kill: ClassVar[bool] = True

    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        require(self.kind)
        adapter = connect(Endpoint(self.kind, BROKER_URLS[self.kind]))
        try:
            yield adapter
        finally:
            adapter.close()

    @pytest.fixture
    def topic(self, broker: Broker) -> str:
        name = f"contract-{uuid.uuid4().hex[:10]}"
        broker.ensure_topology([name])
        return name

    # --- what differs per broker -------------------------------------------------------------

    def assert_positions(
        self, broker: Broker, topic: str, messages: list[Message], acks: list[Ack]
    ) -> None:
        raise NotImplementedError

    def trace(self, topic: str) -> Any:
        """What a reader that leaves a trace would change: groups, queue depth, consumers."""
        raise NotImplementedError

    def missing(self, topic: str) -> dict[str, str]:
        """The error of each call on a topic that does not exist."""
        raise NotImplementedError

    # --- the behaviours ----------------------------------------------------------------------

    def test_publish_acknowledges_each_message_in_order(self, broker: Broker, topic: str) -> None:
        messages = [event(topic, KEYS[i % 3], i) for i in range(12)]
        acks = broker.publish(messages)
        assert len(acks) == 12
        assert [ack.duplicate for ack in acks] == [False] * 12
        assert all(ack.latency_ms >= 0 for ack in acks)
        self.assert_positions(broker, topic, messages, acks)

    def test_subscribe_reads_each_key_in_order(self, broker: Broker, topic: str) -> None:
        messages = [event(topic, KEYS[i % 5], i) for i in range(200)]
        broker.publish(messages)
        subscription = broker.subscribe(topic, f"contract-{uuid.uuid4().hex[:8]}")
        try:
            got = drain(subscription, 200)
        finally:
            subscription.close()
        assert sorted(ids(got)) == sorted(ids(messages))  # each once
        for key in KEYS:
            sent = [m for m in messages if m.key == key]
            assert [n_of(d) for d in got if d.key == key] == [
                json.loads(m.value)["n"] for m in sent
            ]

    def test_tail_leaves_no_trace(self, broker: Broker, topic: str) -> None:
        messages = [event(topic, KEYS[i % 5], i) for i in range(30)]
        broker.publish(messages)
        before = self.trace(topic)
        first, second = tail_all(broker, topic), tail_all(broker, topic)
        assert sorted(ids(first)) == sorted(ids(second)) == sorted(ids(messages))
        assert self.trace(topic) == before

    def test_a_new_subscription_resumes_after_the_last_ack(
        self, broker: Broker, topic: str
    ) -> None:
        messages = [event(topic, KEYS[i % 5], i) for i in range(20)]
        broker.publish(messages)
        group = f"contract-{uuid.uuid4().hex[:8]}"
        subscription = broker.subscribe(topic, group)
        acked = drain(subscription, 10)
        subscription.close()
        assert len(acked) == 10
        subscription = broker.subscribe(topic, group)
        try:
            rest = drain(subscription, 10)
            more = subscription.fetch(100, 2.0)
        finally:
            subscription.close()
        assert more == []
        assert sorted(ids(acked) + ids(rest)) == sorted(ids(messages))  # none twice, none lost

    def test_a_dead_letter_keeps_every_header(self, broker: Broker, topic: str) -> None:
        message = Message(
            topic=topic,
            key="order-dl",
            value=b'{"total": -1}',
            attributes={
                **event(topic, "order-dl", 0).attributes,
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "correlationid": "corr-7",
            },
            headers={"x-tenant": "acme", "x-request-id": "req-9"},
        )
        broker.publish([message])
        [delivery] = tail_all(broker, topic)
        failure = {
            dlq.ORIGINAL_TOPIC: topic,
            dlq.EXCEPTION_TYPE: "ValueError",
            dlq.EXCEPTION_MESSAGE: "total must be positive: -1 (ünïcode kept)",
            dlq.ATTEMPTS: "3",
            dlq.FIRST_FAILURE: "2026-01-02T03:04:05Z",
            dlq.LAST_FAILURE: "2026-01-02T03:04:09Z",
        }
        broker.publish_dead_letter(topic, delivery, failure)
        [letter] = dlq.read_dead_letters(broker, self.kind, [topic])
        assert letter.delivery.attributes == message.attributes
        assert letter.delivery.headers == {**message.headers, **failure}
        assert (letter.delivery.key, letter.delivery.value) == (message.key, message.value)

    def test_a_message_over_the_size_limit_is_refused_before_any_is_sent(
        self, broker: Broker, topic: str
    ) -> None:
        limit = broker.max_message_bytes
        small = event(topic, "order-small", 0)
        big = Message(topic, "order-big", b"x" * (limit + 1), attributes=small.attributes)
        with pytest.raises(BrokerError) as raised:
            broker.publish([small, big])
        match = re.fullmatch(
            rf"message of (\d+) bytes for key 'order-big' is larger than {self.kind} accepts "
            rf"\((max_payload )?{limit}( bytes)?\)",
            str(raised.value),
        )
        assert match, str(raised.value)
        assert int(match[1]) > limit
        assert tail_all(broker, topic) == []  # the small one was not sent either

    def test_a_missing_topic_is_reported(self, broker: Broker) -> None:
        name = f"missing-{uuid.uuid4().hex[:10]}"
        expected = self.missing(name)
        calls = {
            "tail": lambda: tail_all(broker, name),
            "publish": lambda: broker.publish([event(name, "order-a", 0)]),
            "subscribe": lambda: broker.subscribe(name, "contract-missing"),
        }
        for call, message in expected.items():
            with pytest.raises(BrokerError) as raised:
                calls[call]()
            assert (call, str(raised.value)) == (call, message)
            assert raised.value.hint, call
        with pytest.raises(BrokerError):  # none of the calls created it
            tail_all(broker, name)

    def test_the_adapter_rides_out_a_broker_restart(self) -> None:
        with own_broker(self.kind) as own:
            adapter = connect(own.endpoint)
            try:
                topic = f"contract-{uuid.uuid4().hex[:10]}"
                adapter.ensure_topology([topic])
                before = [event(topic, KEYS[i % 3], i) for i in range(10)]
                assert len(adapter.publish(before)) == 10
                subscription = adapter.subscribe(topic, "contract-restart")
                acked = drain(subscription, 4)
                assert len(acked) == 4

                own.kill()
                own.start()
                after = [event(topic, KEYS[i % 3], 10 + i) for i in range(10)]
                started = time.monotonic()
                acks = adapter.publish(after)  # the same adapter: it reconnects
                assert len(acks) == 10
                assert time.monotonic() - started < RECONNECT_WITHIN

                # The subscription of before resumes: what it did not ack comes (again), from
                # before the kill too; an ack the broker had not yet stored may come again.
                wanted = set(ids(before)) - set(ids(acked)) | set(ids(after))
                got = read_until(subscription, wanted, within=60.0)
                subscription.close()
                assert wanted <= set(got)
                assert set(got) <= set(ids(before + after))
            finally:
                adapter.close()

            if self.tail_survives_a_kill:
                fresh = connect(own.endpoint)
                try:
                    assert sorted(ids(tail_all(fresh, topic))) == sorted(ids(before + after))
                finally:
                    fresh.close()


@pytest.mark.kafka
class TestKafka(AdapterContract):
    kind = "kafka"

    def assert_positions(
        self, broker: Broker, topic: str, messages: list[Message], acks: list[Ack]
    ) -> None:
        assert [sorted(ack.position) for ack in acks] == [["offset", "partition"]] * len(acks)
        partition = {
            m.key: ack.position["partition"] for m, ack in zip(messages, acks, strict=True)
        }
        assert [ack.position["partition"] for ack in acks] == [partition[m.key] for m in messages]
        for p in set(partition.values()):
            offsets = [ack.position["offset"] for ack in acks if ack.position["partition"] == p]
            assert offsets == list(range(len(offsets)))  # a fresh topic, in the order sent
        # Where the broker says each message is, a reader finds it.
        read = {d.attributes["id"]: d.position for d in tail_all(broker, topic)}
        assert [read[m.attributes["id"]] for m in messages] == [ack.position for ack in acks]

    def trace(self, topic: str) -> Any:
        """The consumer groups holding offsets of the topic."""
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": BROKER_URLS["kafka"]})
        groups = admin.list_consumer_groups(request_timeout=10).result().valid
        holding = []
        for group in groups:
            if group.group_id.startswith("edaenv-tail"):
                holding.append(group.group_id)  # a tail's group: never made
                continue
            future = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group.group_id)], request_timeout=10
            )[group.group_id]
            try:
                partitions = future.result().topic_partitions or []
            except KafkaException:
                continue  # another test's group, gone meanwhile
            if any(tp.topic == topic and tp.offset >= 0 for tp in partitions):
                holding.append(group.group_id)
        return sorted(holding)

    def missing(self, topic: str) -> dict[str, str]:
        where = BROKER_URLS["kafka"]
        text = f"topic '{topic}' does not exist on kafka at {where}"
        return {"tail": text, "publish": text, "subscribe": text}


@pytest.mark.rabbitmq
class TestRabbitMQ(AdapterContract):
    kind = "rabbitmq"
    # RabbitMQ 3.10 (Debian's) loses a stream queue (what tail reads) created shortly before
    # a kill -9: its Ra directory was not synced yet. The consumer queue keeps its messages.
    tail_survives_a_kill = False

    def assert_positions(
        self, broker: Broker, topic: str, messages: list[Message], acks: list[Ack]
    ) -> None:
        assert [ack.position for ack in acks] == [
            {"exchange": topic, "routing_key": m.key} for m in messages
        ]

    def trace(self, topic: str) -> Any:
        """Messages and consumers of each queue a reader could take from."""
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URLS["rabbitmq"]))
        try:
            channel = connection.channel()
            depth = {}
            for queue in (f"{topic}.consumer", f"{topic}.dlq"):
                method = channel.queue_declare(queue, passive=True).method
                depth[queue] = (method.message_count, method.consumer_count)
        finally:
            connection.close()
        return depth

    def test_tail_leaves_no_trace(self, broker: Broker, topic: str) -> None:
        assert self.trace(topic) == {f"{topic}.consumer": (0, 0), f"{topic}.dlq": (0, 0)}
        super().test_tail_leaves_no_trace(broker, topic)
        assert self.trace(topic) == {f"{topic}.consumer": (30, 0), f"{topic}.dlq": (0, 0)}

    def missing(self, topic: str) -> dict[str, str]:
        where = f"127.0.0.1:{BROKER_URLS['rabbitmq'].rsplit(':', 1)[1].split('/')[0]}"
        return {
            "tail": f"no stream '{topic}.log' nor queue '{topic}' on rabbitmq at {where}",
            "publish": f"exchange '{topic}' does not exist on rabbitmq at {where}",
            "subscribe": f"queue '{topic}.consumer' does not exist on rabbitmq at {where}",
        }


@pytest.mark.nats
class TestNats(AdapterContract):
    kind = "nats"

    def assert_positions(
        self, broker: Broker, topic: str, messages: list[Message], acks: list[Ack]
    ) -> None:
        from edaenv.brokers.nats import nats_stream

        stream = nats_stream(topic)
        assert [ack.position for ack in acks] == [
            {"stream": stream, "seq": n} for n in range(1, len(messages) + 1)
        ]
        read = {d.attributes["id"]: d.position for d in tail_all(broker, topic)}
        assert [read[m.attributes["id"]] for m in messages] == [ack.position for ack in acks]

    def trace(self, topic: str) -> Any:
        """The stream's messages and its consumers with their delivered and ack floors."""
        import nats

        from edaenv.brokers.nats import nats_stream

        async def look() -> Any:
            client = await nats.connect(BROKER_URLS["nats"])
            try:
                js = client.jetstream()
                info = await js.stream_info(nats_stream(topic))
                consumers = await js.consumers_info(nats_stream(topic))
                return (
                    info.state.messages,
                    info.state.consumer_count,
                    sorted((c.name, str(c.delivered), str(c.ack_floor)) for c in consumers),
                )
            finally:
                await client.close()

        return asyncio.run(look())

    def test_tail_leaves_no_trace(self, broker: Broker, topic: str) -> None:
        assert self.trace(topic) == (0, 0, [])
        super().test_tail_leaves_no_trace(broker, topic)
        assert self.trace(topic) == (30, 0, [])

    def missing(self, topic: str) -> dict[str, str]:
        where = BROKER_URLS["nats"].removeprefix("nats://")
        text = f"no JetStream stream holds '{topic}.>' on nats at {where}"
        return {"tail": text, "publish": text, "subscribe": text}


@pytest.mark.nats
def test_an_own_broker_frozen_does_not_answer_until_continued() -> None:
    with own_broker("nats") as own:
        frozen = Endpoint("nats", own.endpoint.url, connect_timeout=1.0)
        own.stop()
        started = time.monotonic()
        with pytest.raises(
            BrokerError, match=rf"^cannot reach nats at {re.escape(frozen.url[7:])}$"
        ):
            connect(frozen)
        assert time.monotonic() - started < 5.0
        own.cont()
        adapter = connect(frozen)
        adapter.close()
