"""What the reliability suites do not show of a broker adapter. Order across relays (R3 in
test_outbox_relay.py) and the sample consumer's duplicates and dead letters (C1-C3 in
test_outbox_consumer.py) run on every broker there; this checks when Kafka commits what the
consumer acknowledged."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from outbox_support import drop_topic, kafka_bootstrap, make_broker, native_endpoint, new_topic

from edaenv.brokers.base import Message


@pytest.mark.kafka
def test_kafka_acks_are_committed_by_the_next_fetch() -> None:
    from confluent_kafka import Consumer, TopicPartition

    topic, group = new_topic(), f"acks-{uuid.uuid4().hex[:6]}"
    kafka = native_endpoint("kafka")
    broker = make_broker(kafka)
    broker.ensure_topology([topic])
    broker.publish([Message(topic, f"order-{i}", b"{}", {"id": f"e-{i}"}) for i in range(30)])
    subscription = broker.subscribe(topic, group)
    got: list[Any] = []
    deadline = time.monotonic() + 60
    while len(got) < 30 and time.monotonic() < deadline:
        got += subscription.fetch(30, 1.0)
    for delivery in got:
        subscription.ack(delivery)
    # A plain Kafka client reads the group's committed offsets: what the broker holds, not
    # what the adapter says.
    viewer = Consumer({"bootstrap.servers": kafka_bootstrap(), "group.id": group})

    def committed() -> int:
        parts = [TopicPartition(topic, p) for p in range(3)]
        return sum(max(0, tp.offset) for tp in viewer.committed(parts, timeout=10))

    try:
        assert committed() == 0  # acknowledged, not yet committed
        subscription.fetch(1, 0.2)  # commits what was acknowledged
        deadline = time.monotonic() + 10
        while committed() < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert committed() == 30
    finally:
        viewer.close()
        subscription.close()
        broker.close()
        drop_topic(kafka, topic)
