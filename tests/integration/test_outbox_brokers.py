"""The relay and the sample consumer on every broker, through edaenv's adapters: Kafka (Tansu),
RabbitMQ and NATS JetStream, the native test services. The full reliability runs (R1-R4, C1-C3)
use Kafka; these check that the same guarantees hold on the other brokers too."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from outbox_checker import check
from outbox_support import SERVICES, event_row, fresh_database, insert_events, new_topic, read_all
from outbox_support import require_port as require

from edaenv.brokers.base import Broker, Endpoint, Message
from edaenv.outbox import dlq
from edaenv.outbox.metrics import ConsumerMetrics
from edaenv.outbox.relay import Options, Relay

S = SERVICES
BROKERS = {
    "kafka": (int(S["EDAENV_TEST_KAFKA_PORT"]), f"127.0.0.1:{S['EDAENV_TEST_KAFKA_PORT']}"),
    "rabbitmq": (
        int(S["EDAENV_TEST_AMQP_PORT"]),
        f"amqp://{S['EDAENV_TEST_AMQP_USER']}:{S['EDAENV_TEST_AMQP_PASSWORD']}"
        f"@127.0.0.1:{S['EDAENV_TEST_AMQP_PORT']}/%2F",
    ),
    "nats": (int(S["EDAENV_TEST_NATS_PORT"]), f"nats://127.0.0.1:{S['EDAENV_TEST_NATS_PORT']}"),
}
PARAMS = [
    pytest.param(name, marks=[getattr(pytest.mark, name), pytest.mark.postgres]) for name in BROKERS
]


def connect(name: str) -> Broker:
    from edaenv.brokers.registry import connect as connect_adapter

    port, url = BROKERS[name]
    require(name, port)
    return connect_adapter(Endpoint(name, url))


def received(broker: Broker, name: str, topic: str, count: int) -> list[Any]:
    """What a consumer group sees (Kafka: the whole log, read without a group join, which is
    slow on Tansu)."""
    if name == "kafka":
        return read_all(BROKERS["kafka"][1], topic, idle=2.0)
    subscription = broker.subscribe(topic, f"check-{uuid.uuid4().hex[:6]}")
    got: list[Any] = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        deliveries = subscription.fetch(500, 1.0)
        got += deliveries
        for delivery in deliveries:
            subscription.ack(delivery)
    subscription.close()
    return got


@pytest.fixture
def db() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.mark.parametrize("name", PARAMS)
def test_two_relays_keep_order_on_every_broker(name: str, db: str) -> None:
    topic = new_topic()
    broker = connect(name)
    broker.ensure_topology([topic])
    rows = [event_row(f"agg-{i % 20}", i // 20) for i in range(2000)]
    expected = [(str(row[0]), f"agg-{i % 20}", i // 20) for i, row in enumerate(rows)]
    insert_events(db, rows)
    relays = [
        Relay(
            db,
            connect(name),
            route=lambda row: topic,
            topics=[topic],
            options=Options(batch_size=100),
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=relay.drain) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    shares = [
        relay.metrics.registry.get_sample_value("edaenv_relay_published_total") for relay in relays
    ]
    report = check(expected, received(broker, name, topic, len(rows)))
    print(f"\n{name}: 2 relays published {shares}: {report}")
    for relay in relays:
        relay.close()
        relay.broker.close()
    broker.close()
    assert report.lost == 0 and report.order_violations == 0 and report.unexpected == 0


@pytest.mark.parametrize("name", PARAMS)
def test_sample_consumer_on_every_broker(name: str, db: str, tmp_path: Path) -> None:
    import importlib.util
    import subprocess
    import sys

    import psycopg

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    edaenv = Path(sys.executable).parent / "edaenv"
    subprocess.run(
        [str(edaenv), "init", "--defaults"], cwd=tmp_path, check=True, capture_output=True
    )
    with psycopg.connect(db, autocommit=True) as conn:  # the consumer's table
        for migration in sorted((tmp_path / "eda/db/migrations").glob("*.sql")):
            conn.execute(migration.read_text())  # type: ignore[arg-type,unused-ignore]
    spec = importlib.util.spec_from_file_location("sample", tmp_path / "eda/consumer/main.py")
    assert spec is not None and spec.loader is not None
    sample: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)

    topic = new_topic()
    messages = []
    for n in range(300):
        order_id = str(uuid.uuid4())
        data: dict[str, Any] = {"orderId": order_id, "customerId": "c-1"}
        if n % 100:
            data["total"] = 5.0  # every 100th event lacks its total: poison
        messages.append(
            Message(
                topic=topic,
                key=order_id,
                value=json.dumps(data).encode(),
                attributes={
                    "id": str(uuid.uuid4()),
                    "type": "OrderPlaced",
                    "specversion": "1.0",
                    "source": "/tests",
                },
            )
        )
    metrics = ConsumerMetrics()
    consumer_broker = connect(name)
    consumer = sample.Consumer(
        consumer_broker,
        db,
        topic=topic,
        group=f"g-{uuid.uuid4().hex[:6]}",
        metrics=metrics,
        max_attempts=2,
        retry_base=0.001,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    time.sleep(3.0 if name != "kafka" else 1.0)  # subscribed before the events arrive
    publisher = connect(name)
    publisher.publish(messages + messages[:100])  # 100 duplicates

    def value(metric: str) -> float:
        return metrics.registry.get_sample_value(f"edaenv_consumer_{metric}_total") or 0.0

    # JetStream drops a re-published event id itself (Nats-Msg-Id, within its duplicate
    # window): on NATS the 100 duplicates never reach the consumer.
    redelivered = 0 if name == "nats" else 100
    deadline = time.monotonic() + 120
    while value("processed") + value("duplicates") + value("dead_lettered") < 300 + redelivered:
        assert thread.is_alive() and time.monotonic() < deadline, (
            value("processed"),
            value("duplicates"),
            value("dead_lettered"),
        )
        time.sleep(0.1)
    consumer.stop.set()
    thread.join(30)
    consumer_broker.close()
    letters = dlq.read_dead_letters(publisher, name, [topic])
    publisher.close()
    print(
        f"\n{name}: processed {value('processed'):.0f}, duplicates {value('duplicates'):.0f}, "
        f"dead-lettered {value('dead_lettered'):.0f}, dead letters read back {len(letters)}"
    )
    # The poison among the 100 redelivered events was never processed: it fails and is
    # dead-lettered a second time instead of being skipped as a duplicate.
    assert value("processed") == 297
    assert value("duplicates") == (99 if redelivered else 0)
    assert value("dead_lettered") == (4 if redelivered else 3)
    assert len({letter.id for letter in letters}) == 3
    assert all(set(dlq.HEADERS) <= set(letter.delivery.headers) for letter in letters)


@pytest.mark.kafka
def test_kafka_acks_are_committed_by_the_next_fetch() -> None:
    from confluent_kafka import Consumer, TopicPartition

    topic, group = new_topic(), f"acks-{uuid.uuid4().hex[:6]}"
    broker = connect("kafka")
    broker.ensure_topology([topic])
    broker.publish([Message(topic, f"order-{i}", b"{}", {"id": f"e-{i}"}) for i in range(30)])
    subscription = broker.subscribe(topic, group)
    got: list[Any] = []
    deadline = time.monotonic() + 60
    while len(got) < 30 and time.monotonic() < deadline:
        got += subscription.fetch(30, 1.0)
    for delivery in got:
        subscription.ack(delivery)
    viewer = Consumer({"bootstrap.servers": BROKERS["kafka"][1], "group.id": group})

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
