"""The outbox relay against the real PostgreSQL and each real broker (Kafka-protocol Tansu,
RabbitMQ, NATS JetStream), through edaenv's own adapters and relay.

R1-R4 of the reliability plan print their figures per broker (pytest shows them in its
summary), with the sizes they ran at: each broker gets a share of what one broker used to get,
so that the three together take about as long as one did, and each still shows its point.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from outbox_checker import Report, check
from outbox_support import (
    Writer,
    drop_topic,
    event_row,
    fresh_database,
    insert_events,
    make_broker,
    native_endpoint,
    new_topic,
    read_all,
    read_group,
)
from own_brokers import own_broker

from edaenv.brokers.base import Delivery, Endpoint
from edaenv.outbox.metrics import RelayMetrics, serve
from edaenv.outbox.relay import CLAIM, LOCK_SPACE, Options, Relay

pytestmark = [pytest.mark.postgres]
HERE = Path(__file__).resolve().parent
KINDS = ("kafka", "rabbitmq", "nats")
BROKERS = [pytest.param(kind, marks=getattr(pytest.mark, kind)) for kind in KINDS]


@pytest.fixture
def db() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Endpoint:
    """The native test broker of each kind, as edaenv's adapters reach it."""
    endpoint: Endpoint = native_endpoint(request.param)
    return endpoint


@pytest.fixture
def topic(broker: Endpoint) -> Iterator[str]:
    """A topic of the test's own on the broker, dropped afterwards."""
    name = new_topic()
    yield name
    drop_topic(broker, name)


def backlog(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
        assert row is not None
        return int(row[0])


def wait_drained(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while backlog(url):
        assert time.monotonic() < deadline, f"backlog not drained in {timeout}s: {backlog(url)}"
        time.sleep(0.1)


class RelayThread:
    def __init__(self, url: str, endpoint: Endpoint, topic: str, **options: float):
        self.broker = make_broker(endpoint, timeout=float(options.pop("timeout", 10)))
        self.metrics = RelayMetrics()
        self.relay = Relay(
            url,
            self.broker,
            route=lambda row: topic,
            topics=[topic],
            metrics=self.metrics,
            options=Options(**{"poll_interval": 0.2, **options}),  # type: ignore[arg-type]
        )
        self.thread = threading.Thread(target=self.relay.run, daemon=True)

    def __enter__(self) -> RelayThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.relay.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "relay did not stop within 30 s"
        self.broker.close()

    def value(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


def spawn_relay(url: str, endpoint: Endpoint, topic: str, batch: int) -> subprocess.Popen[bytes]:
    """A relay process, returned once its SIGTERM handler is installed (a SIGTERM sent while
    the interpreter starts would kill it with the default action, not stop it cleanly)."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "outbox_relay_proc.py"),
            url,
            endpoint.broker,
            topic,
            str(batch),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "EDAENV_TEST_BROKER_URL": endpoint.url},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n", "the relay process did not start"
    return process


def clean(report: Report) -> tuple[int, ...]:
    """What must be zero whatever the test: losses, reorders, strangers, wrong keys."""
    return (report.lost, report.order_violations, report.unexpected, report.wrong_keys)


def test_relay_publishes_with_envelope_marks_and_exposes_metrics(
    db: str, broker: Endpoint, topic: str
) -> None:
    rows = [event_row(f"order-{i % 5}", i // 5) for i in range(50)]
    expected = [(str(row[0]), f"order-{i % 5}", i // 5) for i, row in enumerate(rows)]
    insert_events(db, rows)
    with RelayThread(db, broker, topic, stats_every=0.0) as relay:
        server = serve(0, relay.metrics.registry, lambda: relay.relay.healthy, host="127.0.0.1")
        wait_drained(db, 30)
        # The counter moves just after the commit that marks the rows; the gauges every pass.
        deadline = time.monotonic() + 10
        while relay.value("edaenv_relay_published_total") < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        port = server.server_address[1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status
        server.shutdown()
        assert relay.value("edaenv_relay_published_total") == 50
        assert relay.value("edaenv_relay_batch_seconds_count") >= 1
        assert relay.value("edaenv_outbox_backlog") == 0
    for name in (
        "edaenv_relay_published_total 50.0",
        "edaenv_relay_errors_total 0.0",
        "edaenv_outbox_backlog",
        "edaenv_outbox_oldest_age_seconds",
        "edaenv_relay_batch_seconds_bucket",
    ):
        assert name in text
    assert health == 200
    received = read_all(broker, topic)
    report = check(expected, received)
    assert (report.duplicates, *clean(report)) == (0, 0, 0, 0, 0), report
    first = received[0]
    assert first.topic == topic
    assert first.attributes["specversion"] == "1.0"
    assert first.attributes["type"] == "OrderPlaced"
    assert first.attributes["source"] == "/outbox/Order"
    assert first.attributes["correlationid"] == first.key
    assert first.attributes["datacontenttype"] == "application/json"
    assert b'"orderId"' in first.value


def test_relay_span_continues_the_trace_stored_with_the_row(
    db: str, broker: Endpoint, topic: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    insert_events(db, [event_row("order-t", 0, traceparent=f"00-{trace_id}-{parent_id}-01")])
    adapter = make_broker(broker)
    relay = Relay(
        db, adapter, route=lambda row: topic, topics=[topic], tracer=provider.get_tracer("test")
    )
    try:
        assert relay.relay_batch() == 1
    finally:
        relay.close()
        adapter.close()
    [span] = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == trace_id
    assert f"{span.parent.span_id:016x}" == parent_id
    assert span.name == f"{topic} publish"
    assert span.attributes is not None and span.attributes["messaging.system"] == broker.broker
    [delivery] = read_all(broker, topic)
    assert delivery.attributes["traceparent"] == f"00-{trace_id}-{span.context.span_id:016x}-01"


def test_a_claim_locks_only_the_aggregates_it_takes(db: str) -> None:
    insert_events(db, [event_row(f"order-{i:02d}", n) for n in range(2) for i in range(40)])
    advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s"
    with psycopg.connect(db) as first, psycopg.connect(db) as second:
        params = {"scan": 80, "space": LOCK_SPACE, "limit": 10, "blocked": []}
        taken = first.execute(CLAIM, params).fetchall()
        assert [row[2] for row in taken] == [f"order-{i:02d}" for i in range(10)]
        # Ten aggregates locked, not all forty of the rows scanned: another claim gets the next.
        assert second.execute(advisory, (first.info.backend_pid,)).fetchone() == (10,)
        others = second.execute(CLAIM, params).fetchall()
        assert [row[2] for row in others] == [f"order-{i:02d}" for i in range(10, 20)]


def test_unroutable_event_holds_back_only_its_aggregate(
    db: str, broker: Endpoint, topic: str
) -> None:
    stuck = event_row("order-stuck", 0)
    stuck = (*stuck[:3], "Unknown", *stuck[4:])
    insert_events(db, [stuck, event_row("order-stuck", 1), event_row("order-ok", 0)])
    adapter = make_broker(broker)
    relay = Relay(
        db,
        adapter,
        topics=[topic],
        route=lambda row: topic if row.event_type == "OrderPlaced" else None,
    )
    try:
        assert relay.relay_batch() == 1
    finally:
        relay.close()
        adapter.close()
    assert [d.key for d in read_all(broker, topic, idle=1.0)] == ["order-ok"]
    assert backlog(db) == 2


@pytest.mark.kafka
def test_retention_deletes_only_old_published_rows(db: str) -> None:
    # The broker is not used: the native Tansu stands for any.
    insert_events(db, [event_row(f"order-{i}", 0) for i in range(10)])
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE outbox SET published_at = now() - interval '2 hours' "
            "WHERE aggregate_id IN ('order-0', 'order-1', 'order-2')"
        )
        conn.execute("UPDATE outbox SET published_at = now() WHERE aggregate_id IN ('order-3')")
    adapter = make_broker(native_endpoint("kafka"))
    relay = Relay(db, adapter, route=lambda row: None, options=Options(retention=3600))
    try:
        relay._connect()
        assert relay.delete_published() == 3
    finally:
        relay.close()
        adapter.close()
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    assert row is not None and row[0] == 7


def test_sigterm_finishes_the_batch_and_exits_cleanly(
    db: str, broker: Endpoint, topic: str
) -> None:
    insert_events(db, [event_row(f"order-{i % 20}", i // 20) for i in range(2000)])
    process = spawn_relay(db, broker, topic, 100)
    # SIGTERM once publishing is under way, while most of the backlog is still there.
    deadline = time.monotonic() + 30
    while backlog(db) == 2000 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL").fetchone()
    published = int(row[0]) if row else 0
    received = read_all(broker, topic, idle=2.0)
    # Every row marked was acked first: the broker holds at least as many as were marked.
    assert len({d.attributes["id"] for d in received}) >= published > 0
    assert len(received) == published, "a clean stop publishes nothing it does not mark"
    assert published < 2000, "the relay was stopped only after it had published everything"


def wait_for_backlog(db: str, timeout: float) -> int:
    """The backlog, polled until rows are pending (a kill then lands mid-stream) or timeout."""
    deadline = time.monotonic() + timeout
    while (pending := backlog(db)) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return pending


# Per broker: 4 writers x 25 aggregates x 40 events = 4,000 events, paced to ~10 s so that
# every kill lands while rows arrive, and at least 8 kills.
R1_WRITERS, R1_AGGREGATES, R1_EVENTS, R1_KILLS, R1_BATCH = 4, 100, 40, 8, 100


def test_r1_relay_killed_at_random_moments_loses_nothing(
    db: str, broker: Endpoint, topic: str
) -> None:
    aggregates = [f"agg-{i:03d}" for i in range(R1_AGGREGATES)]
    writers = [
        Writer(db, aggregates[i::R1_WRITERS], R1_EVENTS, pause=0.008) for i in range(R1_WRITERS)
    ]
    for writer in writers:
        writer.start()
    rng = random.Random(1)
    kills = kills_with_backlog = 0
    process = spawn_relay(db, broker, topic, R1_BATCH)
    started = time.monotonic()
    try:
        while kills < R1_KILLS or any(w.is_alive() for w in writers):
            time.sleep(rng.uniform(0.8, 1.6))  # startup (imports, connections) is ~0.5 s
            pending = wait_for_backlog(db, 1.0)
            process.kill()
            process.wait()
            kills += 1
            kills_with_backlog += pending > 0
            process = spawn_relay(db, broker, topic, R1_BATCH)
            assert time.monotonic() - started < 300, "R1 took over 5 minutes"
        for writer in writers:
            writer.join()
            assert writer.error is None, writer.error
        wait_drained(db, 120)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    expected = [e for w in writers for e in w.written]
    report = check(expected, read_all(broker, topic))
    print(
        f"\nR1 {broker.broker}: {kills} SIGKILLs ({kills_with_backlog} with a backlog), "
        f"{R1_WRITERS} writers x {R1_AGGREGATES // R1_WRITERS} aggregates x {R1_EVENTS} events, "
        f"batch {R1_BATCH}, {time.monotonic() - started:.1f}s: {report}"
    )
    assert len(expected) == R1_AGGREGATES * R1_EVENTS
    assert kills >= R1_KILLS and kills_with_backlog >= R1_KILLS // 2
    assert report.duplicates <= kills * R1_BATCH
    assert clean(report) == (0, 0, 0, 0), report


R2_ROUNDS = 100  # per broker: rounds of 2-4 transactions committed in a shuffled order


def test_r2_out_of_order_commits_lose_nothing(db: str, broker: Endpoint, topic: str) -> None:
    started = time.monotonic()
    with RelayThread(db, broker, topic, poll_interval=0.05):
        tx0, tx1, tx2, txr = (psycopg.connect(db) for _ in range(4))
        ids = {}
        for name, conn in (("tx0", tx0), ("tx1", tx1), ("rolled-back", txr), ("tx2", tx2)):
            row = event_row(f"order-{name}", 0)
            conn.execute(
                "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, "
                "payload, headers) VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )
            ids[name] = str(row[0])
        txr.rollback()
        for conn in (tx2, tx1, tx0):  # commit order: the reverse of the sequence order
            conn.commit()
            time.sleep(0.3)
        for conn in (tx0, tx1, tx2, txr):
            conn.close()
        wait_drained(db, 10)

        rng = random.Random(2)
        expected: list[tuple[str, str, int]] = [
            (ids[n], f"order-{n}", 0) for n in ("tx0", "tx1", "tx2")
        ]
        rolled_back = 1
        for round_ in range(R2_ROUNDS):
            conns = [psycopg.connect(db) for _ in range(rng.randint(2, 4))]
            for i, conn in enumerate(conns):
                row = event_row(f"round-{round_}-{i}", 0)
                conn.execute(
                    "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, "
                    "payload, headers) VALUES (%s, %s, %s, %s, %s, %s)",
                    row,
                )
                if rng.random() < 0.2:
                    conn.rollback()
                    rolled_back += 1
                else:
                    expected.append((str(row[0]), str(row[2]), 0))
            rng.shuffle(conns)
            for conn in conns:
                conn.commit()
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0, 0.004))
                conn.close()
        wait_drained(db, 60)
    report = check(expected, read_all(broker, topic))
    print(
        f"\nR2 {broker.broker}: 3 out-of-order commits + {R2_ROUNDS} rounds, {rolled_back} "
        f"rolled back, {time.monotonic() - started:.1f}s: {report}"
    )
    assert report.lost == 0 and report.unexpected == 0


# Per broker: 4 writers x 50 aggregates x 30 events = 6,000 events, relayed by 3 relays at once.
R3_WRITERS, R3_AGGREGATES, R3_EVENTS = 4, 200, 30


def test_r3_three_relays_keep_per_aggregate_order(db: str, broker: Endpoint, topic: str) -> None:
    aggregates = [f"agg-{i:03d}" for i in range(R3_AGGREGATES)]
    writers = [Writer(db, aggregates[i::R3_WRITERS], R3_EVENTS) for i in range(R3_WRITERS)]
    started = time.monotonic()
    relays = [RelayThread(db, broker, topic, batch_size=200) for _ in range(3)]
    for relay in relays:
        relay.__enter__()
    try:
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
            assert writer.error is None, writer.error
        wait_drained(db, 120)
    finally:
        for relay in relays:
            relay.__exit__()
    shares = [int(r.value("edaenv_relay_published_total")) for r in relays]
    expected = [e for w in writers for e in w.written]
    report = check(expected, read_all(broker, topic))
    print(
        f"\nR3 {broker.broker}: 3 relays, {R3_WRITERS} writers x {R3_AGGREGATES // R3_WRITERS} "
        f"aggregates x {R3_EVENTS} events, published {shares}, "
        f"{time.monotonic() - started:.1f}s: {report}"
    )
    assert len(expected) == R3_AGGREGATES * R3_EVENTS
    assert clean(report) == (0, 0, 0, 0), report
    assert sum(1 for share in shares if share > 0) >= 2, f"one relay did all the work: {shares}"


# Per broker: 2 writers x 25 aggregates x 60 events = 3,000 events, paced to outlast the outage.
R4_WRITERS, R4_AGGREGATES, R4_EVENTS, R4_DOWN = 2, 50, 60, 10.0


@pytest.mark.parametrize("kind", BROKERS)
def test_r4_broker_killed_and_restarted_loses_nothing_and_drains(db: str, kind: str) -> None:
    # A broker of the test's own (killing the shared one would break other tests), on data that
    # survives its SIGKILL as a broker's volume would: what it acknowledged must be there after
    # the restart, and what it had not must be published again by the relay.
    topic, aggregates = new_topic(), [f"agg-{i:03d}" for i in range(R4_AGGREGATES)]
    with own_broker(kind) as own:
        endpoint = replace(own.endpoint, connect_timeout=3.0)
        writers = [
            Writer(db, aggregates[i::R4_WRITERS], R4_EVENTS, pause=0.008) for i in range(R4_WRITERS)
        ]
        with RelayThread(
            db, endpoint, topic, timeout=3.0, backoff_max=1.0, stats_every=0.0
        ) as relay:
            for writer in writers:
                writer.start()
            time.sleep(1.5)
            own.kill()
            killed_at = time.monotonic()
            time.sleep(1.0)
            published_early = relay.value("edaenv_relay_published_total")
            time.sleep(R4_DOWN - 1.0)
            published_during = relay.value("edaenv_relay_published_total") - published_early
            backlog_at_restart = backlog(db)
            writing_at_restart = any(w.is_alive() for w in writers)
            own.start()
            outage = time.monotonic() - killed_at
            for writer in writers:
                writer.join()
                assert writer.error is None, writer.error
            drain_started = time.monotonic()
            wait_drained(db, 90)
            drained_in = time.monotonic() - drain_started
            errors = relay.value("edaenv_relay_errors_total")
        expected = [e for w in writers for e in w.written]
        received = read_back(endpoint, topic, len(expected))
        report = check(expected, received)
    print(
        f"\nR4 {kind}: broker killed and restarted after {outage:.1f}s (start-up "
        f"{own.startup_seconds:.1f}s), {R4_WRITERS} writers x {R4_AGGREGATES // R4_WRITERS} "
        f"aggregates x {R4_EVENTS} events, backlog at restart {backlog_at_restart}, relay "
        f"errors {errors:.0f}, drained {drained_in:.1f}s after the writers: {report}"
    )
    assert published_during == 0, "nothing can be acked while the broker is down"
    # The relay need not have failed a batch: a client whose send timeout outlasts the outage
    # (librdkafka's, nats-py's) waits, then delivers; what counts is what the broker holds.
    assert backlog_at_restart > 0 and writing_at_restart
    assert clean(report) == (0, 0, 0, 0), report


def read_back(endpoint: Endpoint, topic: str, count: int) -> list[Delivery]:
    """What the restarted broker holds. RabbitMQ: its consumer queue (a durable classic queue):
    a stream created seconds before a SIGKILL may not survive it (RabbitMQ's stream directory is
    not synced yet), which is no loss a relay could cause or prevent."""
    if endpoint.broker == "rabbitmq":
        return read_group(endpoint, topic, count * 2, idle=2.0)
    return read_all(endpoint, topic)
