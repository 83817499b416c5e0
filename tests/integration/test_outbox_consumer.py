"""The scaffold's sample consumer (rendered by `edaenv init`) over edaenv's own broker adapters,
against the real PostgreSQL and the native brokers: C1-C3 on each broker family (Kafka protocol
on Tansu, RabbitMQ, NATS JetStream), the rest on Kafka. C1-C3 print their figures per broker
(pytest shows them in its summary)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from outbox_support import (
    drop_topic,
    fresh_database,
    make_broker,
    native_endpoint,
    new_topic,
    read_all,
)

from edaenv.brokers.base import Endpoint, Message
from edaenv.outbox import dlq
from edaenv.outbox.metrics import ConsumerMetrics

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.rabbitmq, pytest.mark.nats]
HERE = Path(__file__).resolve().parent
BROKERS = ("kafka", "rabbitmq", "nats")
GOOD, POISON = 5000, 50  # C3, per broker


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The consumer as a user gets it: rendered by `edaenv init`."""
    root = tmp_path_factory.mktemp("repo")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    edaenv = Path(sys.executable).parent / "edaenv"
    subprocess.run([str(edaenv), "init", "--defaults"], cwd=root, check=True, capture_output=True)
    main = root / "eda" / "consumer" / "main.py"
    assert main.is_file()
    return main


@pytest.fixture(scope="module")
def sample(scaffold: Path) -> Any:
    spec = importlib.util.spec_from_file_location("sample_consumer", scaffold)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def db(scaffold: Path) -> Iterator[str]:
    """A fresh database with the scaffold's migrations, the consumer's table among them."""
    with fresh_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in sorted((scaffold.parents[1] / "db" / "migrations").glob("*.sql")):
                conn.execute(migration.read_text())  # type: ignore[arg-type,unused-ignore]
        yield url


@pytest.fixture
def kafka() -> Endpoint:
    return native_endpoint("kafka")


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Endpoint:
    """Each broker family's native server, reached through edaenv's adapter."""
    return native_endpoint(request.param)


@pytest.fixture
def topic(broker: Endpoint) -> Iterator[str]:
    """A new topic, removed from the shared broker afterwards."""
    name = new_topic()
    yield name
    drop_topic(broker, name)


def order(
    topic: str, *, event_id: str | None = None, total: float | None = 12.5, trace: str | None = None
) -> Message:
    order_id = str(uuid.uuid4())
    data: dict[str, Any] = {"orderId": order_id, "customerId": "c-1"}
    if total is not None:
        data["total"] = total
    attributes = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "type": "OrderPlaced",
        "source": "/tests",
        "time": datetime.now().astimezone().isoformat(),
        "traceparent": f"00-{trace or uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
    }
    return Message(
        topic=topic, key=order_id, value=json.dumps(data).encode(), attributes=attributes
    )


def publish(where: Endpoint, messages: list[Message]) -> None:
    """Through edaenv's adapter; every message must be stored (none dropped as a duplicate)."""
    broker = make_broker(where)
    try:
        broker.ensure_topology([messages[0].topic])
        for start in range(0, len(messages), 2000):
            acks = broker.publish(messages[start : start + 2000])
            assert not any(ack.duplicate for ack in acks)
    finally:
        broker.close()


def again(message: Message, n: int) -> Message:
    """The same event once more, byte for byte with its CloudEvents id, under a de-duplication
    id of its own (as `edaenv inject duplicate` sends it): a broker that drops repeats of a
    message id (JetStream) delivers it too, so the consumer's guard is what is tested."""
    return dataclasses.replace(message, dedup_id=f"{message.attributes['id']}:again:{n}")


class ConsumerThread:
    def __init__(
        self, sample: Any, url: str, where: Endpoint, topic: str, group: str, **kwargs: Any
    ):
        self.metrics = ConsumerMetrics()
        self.consumer = sample.Consumer(
            make_broker(where), url, topic=topic, group=group, metrics=self.metrics, **kwargs
        )
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)
        self.thread.start()

    def value(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(f"edaenv_consumer_{name}") or 0.0

    def wait(self, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.thread.is_alive(), "the consumer stopped"
            assert time.monotonic() < deadline, f"not done in {timeout}s"
            time.sleep(0.1)

    def stop(self) -> None:
        self.consumer.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()
        self.consumer.broker.close()  # the consumer's main() closes it in the product


def side_effects(url: str) -> tuple[int, int, int]:
    """(confirmation rows, distinct event ids among them, processed_events rows)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), "
            "(SELECT count(*) FROM processed_events) "
            "FROM order_confirmations"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_c1_duplicate_deliveries_have_one_side_effect_each(
    sample: Any, db: str, broker: Endpoint, topic: str
) -> None:
    unique = [order(topic) for _ in range(1000)]
    shuffled = random.Random(3).sample(unique, len(unique))
    publish(broker, unique + [again(m, i) for i, m in enumerate(shuffled)])  # 1,000 duplicates
    # Two consumers at once, each event reaching the same processed_events twice concurrently,
    # which exercises ON CONFLICT DO NOTHING between racing transactions. Kafka and NATS give
    # each group every message; RabbitMQ's groups share the topic's one queue (competing
    # consumers), so there the two split the 2,000 deliveries.
    groups = 1 if broker.broker == "rabbitmq" else 2
    consumers = [
        ConsumerThread(sample, db, broker, topic, f"g-{uuid.uuid4().hex[:6]}") for _ in range(2)
    ]

    def delivered() -> float:
        return sum(c.value("processed_total") + c.value("duplicates_total") for c in consumers)

    try:
        consumers[0].wait(lambda: delivered() >= 2000 * groups, 120)
        time.sleep(0.5)  # nothing more arrives
    finally:
        for consumer in consumers:
            consumer.stop()
    rows, distinct, processed = side_effects(db)
    duplicates = sum(c.value("duplicates_total") for c in consumers)
    print(
        f"\nC1 {broker.broker}: {delivered():.0f} deliveries of 1000 events to 2 consumers, "
        f"{duplicates:.0f} duplicates skipped: side effects {rows} (distinct {distinct}), "
        f"processed_events {processed}"
    )
    assert rows == distinct == processed == 1000
    assert sum(c.value("processed_total") for c in consumers) == 1000
    assert delivered() == 2000 * groups
    assert duplicates == 2000 * groups - 1000


def test_c2_consumer_killed_between_side_effect_and_ack(
    scaffold: Path, db: str, broker: Endpoint, topic: str
) -> None:
    group, events = f"g-{uuid.uuid4().hex[:6]}", 2000
    publish(broker, [order(topic) for _ in range(events)])
    rng = random.Random(4)
    kills = 0

    def spawn(kill_at: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                str(HERE / "outbox_consumer_proc.py"),
                str(scaffold),
                broker.broker,
                topic,
                group,
                str(kill_at),
            ],
            # Credentials stay off the command line.
            env={
                **os.environ,
                "EDAENV_TEST_DATABASE_URL": db,
                "EDAENV_TEST_BROKER_URL": broker.url,
            },
        )

    while kills < 6:
        process = spawn(rng.randint(20, 200))
        code = process.wait(60)
        assert code == -9, f"the consumer exited with {code} instead of being killed"
        kills += 1
    process = spawn(0)
    try:
        # What a killed consumer fetched and never acknowledged comes again: at once on Kafka
        # and RabbitMQ, after the consumer's ack wait (30 s) on JetStream.
        deadline = time.monotonic() + 150
        while side_effects(db)[2] < events:
            assert process.poll() is None, "the consumer stopped"
            assert time.monotonic() < deadline, f"not all processed: {side_effects(db)}"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        process.terminate()
        process.wait(20)
    rows, distinct, processed = side_effects(db)
    print(
        f"\nC2 {broker.broker}: {kills} SIGKILLs between side effect and ack, {events} events: "
        f"side effects {rows} (distinct {distinct}), processed_events {processed}, "
        f"double effects {rows - distinct}"
    )
    assert rows == distinct == processed == events


def test_c3_poison_messages_are_dead_lettered_with_every_header(
    sample: Any, db: str, broker: Endpoint, topic: str
) -> None:
    good = [order(topic) for _ in range(GOOD)]
    poison = [
        order(topic, total=None if i % 2 else -1.0, trace=uuid.uuid4().hex) for i in range(POISON)
    ]
    messages = good + poison
    random.Random(5).shuffle(messages)
    publish(broker, messages)
    consumer = ConsumerThread(
        sample,
        db,
        broker,
        topic,
        f"g-{uuid.uuid4().hex[:6]}",
        retry_base=0.001,
    )
    started = time.monotonic()
    try:
        consumer.wait(
            lambda: (
                consumer.value("processed_total") >= GOOD
                and consumer.value("dead_lettered_total") >= POISON
            ),
            300,
        )
        time.sleep(0.5)
    finally:
        consumer.stop()
    elapsed = time.monotonic() - started
    reader = make_broker(broker)
    letters = dlq.read_dead_letters(reader, broker.broker, [topic])
    reader.close()
    by_id = {m.attributes["id"]: m for m in poison}
    print(
        f"\nC3 {broker.broker}: {GOOD} good + {POISON} poison in {elapsed:.1f}s: processed "
        f"{consumer.value('processed_total'):.0f}, dead-lettered {len(letters)}, retries "
        f"{consumer.value('retries_total'):.0f}, side effects {side_effects(db)[0]}"
    )
    assert consumer.value("processed_total") == GOOD == side_effects(db)[0]
    assert consumer.value("dead_lettered_total") == POISON == len(letters)
    assert consumer.value("retries_total") == 0  # data that breaks the contract: no retry
    assert {letter.id for letter in letters} == set(by_id)
    for letter in letters:
        headers = letter.delivery.headers
        assert set(dlq.HEADERS) <= set(headers), set(dlq.HEADERS) - set(headers)
        assert all(headers[name] for name in dlq.HEADERS), headers
        assert headers[dlq.ORIGINAL_TOPIC] == topic
        assert json.loads(headers[dlq.ORIGINAL_POSITION])  # where it was: the broker's terms
        assert headers[dlq.ATTEMPTS] == "1"
        assert headers[dlq.EXCEPTION_TYPE] == "edaenv.service.InvalidEvent"
        total = json.loads(by_id[letter.id].value).get("total")
        assert headers[dlq.EXCEPTION_MESSAGE] == (
            "total is missing" if total is None else f"total must be from 0 to 1000000, not {total}"
        )
        assert datetime.fromisoformat(headers[dlq.FIRST_FAILURE]) <= datetime.fromisoformat(
            headers[dlq.LAST_FAILURE]
        )
        original = by_id[letter.id]
        assert headers[dlq.TRACE_ID] == original.attributes["traceparent"].split("-")[1]
        assert letter.delivery.value == original.value and letter.delivery.key == original.key

    # Replay re-publishes the original event, without the failure headers.
    chosen = dlq.find(letters, letters[0].id[:8])
    replay_broker = make_broker(broker)
    assert dlq.replay(replay_broker, [chosen, chosen]).replayed == [chosen.id]
    replay_broker.close()
    replayed = [d for d in read_all(broker, topic) if d.attributes["id"] == chosen.id]
    assert len(replayed) == 2  # the original and its replay
    assert not any(k.startswith(dlq.PREFIX) for k in replayed[-1].headers)


FAIL_SOME = """
CREATE SEQUENCE flaky_failures;
CREATE FUNCTION fail_some() RETURNS trigger AS $$
BEGIN
    IF NEW.customer_id = 'c-broken' THEN
        RAISE EXCEPTION 'customer c-broken is blocked';
    END IF;
    -- A sequence is not rolled back with the transaction: it counts the attempts.
    IF NEW.customer_id = 'c-flaky' AND nextval('flaky_failures') <= 3 THEN
        RAISE EXCEPTION 'customer c-flaky: try again';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER fail_some BEFORE INSERT ON order_confirmations
    FOR EACH ROW EXECUTE FUNCTION fail_some();
"""


def test_errors_that_can_pass_are_retried_alone_and_dead_lettered_after_max_attempts(
    sample: Any, db: str, kafka: Endpoint
) -> None:
    """A failing side effect (not the data, not the connection) rolls its batch back; each of
    its events is then retried alone with backoff: one that passes on its 3rd try is handled
    once, one that always fails is dead-lettered after max_attempts, the others go through."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(FAIL_SOME)  # type: ignore[arg-type,unused-ignore]

    def customer(message: Message, name: str) -> Message:
        data = {**json.loads(message.value), "customerId": name}
        return dataclasses.replace(message, value=json.dumps(data).encode())

    topic = new_topic()
    flaky, broken = customer(order(topic), "c-flaky"), customer(order(topic), "c-broken")
    consumer = ConsumerThread(
        sample, db, kafka, topic, f"g-{uuid.uuid4().hex[:6]}", max_attempts=5, retry_base=0.001
    )
    try:
        # One at a time: the batch holding each of them fails once, whatever else is in it.
        publish(kafka, [order(topic) for _ in range(50)] + [flaky])
        consumer.wait(lambda: consumer.value("processed_total") == 51, 120)
        assert consumer.value("retries_total") == 2  # batch, 1st and 2nd alone failed
        publish(kafka, [order(topic) for _ in range(50)] + [broken])
        consumer.wait(lambda: consumer.value("dead_lettered_total") == 1, 120)
        consumer.wait(lambda: consumer.value("processed_total") == 101, 60)
    finally:
        consumer.stop()
    assert consumer.value("retries_total") == 2 + 4
    assert side_effects(db) == (101, 101, 101)
    reader = make_broker(kafka)
    [letter] = dlq.read_dead_letters(reader, "kafka", [topic])
    reader.close()
    assert letter.id == broken.attributes["id"]
    headers = letter.delivery.headers
    assert headers[dlq.ATTEMPTS] == "5"
    assert headers[dlq.EXCEPTION_TYPE] == "psycopg.errors.RaiseException"
    assert headers[dlq.EXCEPTION_MESSAGE].startswith("customer c-broken is blocked")
    first, last = (
        datetime.fromisoformat(headers[h]) for h in (dlq.FIRST_FAILURE, dlq.LAST_FAILURE)
    )
    assert first < last


def test_totals_are_stored_exactly(sample: Any, db: str, kafka: Endpoint) -> None:
    """Money is Decimal from the JSON text to the numeric column: no float rounding."""
    topic = new_topic()
    totals = ["0.1", "1234.5678901234567891", "999999.99", "7", "1E+2"]
    messages = []
    for total in totals:
        message = order(topic)
        value = message.value.replace(b'"total": 12.5', f'"total": {total}'.encode())
        messages.append(dataclasses.replace(message, value=value))
    publish(kafka, messages)
    consumer = ConsumerThread(sample, db, kafka, topic, f"g-{uuid.uuid4().hex[:6]}")
    try:
        consumer.wait(lambda: consumer.value("processed_total") == len(totals), 120)
    finally:
        consumer.stop()
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT event_id, total FROM order_confirmations").fetchall()
    stored: dict[str, Any] = dict(rows)
    assert {m.attributes["id"]: stored[m.attributes["id"]] for m in messages} == {
        m.attributes["id"]: Decimal(t) for m, t in zip(messages, totals, strict=True)
    }
    assert all(isinstance(value, Decimal) for value in stored.values())


def test_consumer_span_continues_the_producer_trace(sample: Any, db: str, kafka: Endpoint) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    topic, trace = new_topic(), uuid.uuid4().hex
    message = order(topic, trace=trace)
    publish(kafka, [message])
    consumer = ConsumerThread(
        sample, db, kafka, topic, "g-trace", tracer=provider.get_tracer("test")
    )
    try:
        consumer.wait(lambda: consumer.value("processed_total") == 1, 60)
        assert consumer.value("event_age_seconds_count") == 1
    finally:
        consumer.stop()
    [span] = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == trace
    assert f"{span.parent.span_id:016x}" == message.attributes["traceparent"].split("-")[2]


def test_consumer_reconnects_when_its_database_connection_is_killed(
    sample: Any, db: str, kafka: Endpoint
) -> None:
    """The connection dies under it (as when PostgreSQL restarts): the consumer backs off,
    connects again, re-joins its group and processes every event once."""
    topic, group = new_topic(), f"g-{uuid.uuid4().hex[:6]}"
    terminate = (
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    connected = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    publish(kafka, [order(topic) for _ in range(500)])
    consumer = ConsumerThread(sample, db, kafka, topic, group, batch=100)
    try:
        with psycopg.connect(db, autocommit=True) as admin:

            def count(sql: str) -> int:
                row = admin.execute(sql).fetchone()
                return int(row[0]) if row else 0

            for sent in (500, 1000, 1500):
                consumer.wait(lambda n=sent: consumer.value("processed_total") >= n, 180)
                consumer.wait(lambda: count(connected) > 0, 60)
                assert count(terminate) >= 1  # the consumer's connection, idle between events
                publish(kafka, [order(topic) for _ in range(500)])
        consumer.wait(lambda: consumer.value("processed_total") >= 2000, 180)
    finally:
        consumer.stop()
    assert side_effects(db) == (2000, 2000, 2000)
