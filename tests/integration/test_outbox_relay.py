"""The outbox relay against the real PostgreSQL and the real Kafka-protocol broker (Tansu).

R1-R4 of the reliability plan print their figures (pytest shows them in its summary).
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
from pathlib import Path

import psycopg
import pytest
from outbox_checker import check
from outbox_support import (
    SERVICES,
    Writer,
    event_row,
    fresh_database,
    insert_events,
    make_broker,
    new_topic,
    own_tansu,
    read_all,
    require_port,
)

from edaenv.outbox.metrics import RelayMetrics, serve
from edaenv.outbox.relay import CLAIM, LOCK_SPACE, Options, Relay

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]
HERE = Path(__file__).resolve().parent


@pytest.fixture
def db() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def kafka() -> str:
    port = int(SERVICES["EDAENV_TEST_KAFKA_PORT"])
    require_port("the Kafka-protocol broker (Tansu)", port)
    return f"127.0.0.1:{port}"


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
    def __init__(self, url: str, bootstrap: str, topic: str, **options: float):
        self.broker = make_broker(bootstrap, timeout=float(options.pop("timeout", 10)))
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


def spawn_relay(url: str, bootstrap: str, topic: str, batch: int) -> subprocess.Popen[bytes]:
    """A relay process, returned once its SIGTERM handler is installed (a SIGTERM sent while
    the interpreter starts would kill it with the default action, not stop it cleanly)."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "outbox_relay_proc.py"), url, bootstrap, topic, str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n", "the relay process did not start"
    return process


def test_relay_publishes_with_envelope_marks_and_exposes_metrics(db: str, kafka: str) -> None:
    topic = new_topic()
    rows = [event_row(f"order-{i % 5}", i // 5) for i in range(50)]
    expected = [(str(row[0]), f"order-{i % 5}", i // 5) for i, row in enumerate(rows)]
    insert_events(db, rows)
    with RelayThread(db, kafka, topic, stats_every=0.0) as relay:
        server = serve(0, relay.metrics.registry, lambda: relay.relay.healthy, host="127.0.0.1")
        wait_drained(db, 30)
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
    received = read_all(kafka, topic)
    report = check(expected, received)
    assert (report.lost, report.duplicates, report.order_violations, report.wrong_keys) == (
        0,
        0,
        0,
        0,
    ), report
    first = received[0]
    assert first.attributes["specversion"] == "1.0"
    assert first.attributes["type"] == "OrderPlaced"
    assert first.attributes["source"] == "/outbox/Order"
    assert first.attributes["correlationid"] == first.key
    assert first.attributes["datacontenttype"] == "application/json"
    assert b'"orderId"' in first.value


def test_relay_span_continues_the_trace_stored_with_the_row(db: str, kafka: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    insert_events(db, [event_row("order-t", 0, traceparent=f"00-{trace_id}-{parent_id}-01")])
    topic = new_topic()
    broker = make_broker(kafka)
    relay = Relay(
        db, broker, route=lambda row: topic, topics=[topic], tracer=provider.get_tracer("test")
    )
    assert relay.relay_batch() == 1
    relay.close()
    [span] = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == trace_id
    assert f"{span.parent.span_id:016x}" == parent_id
    assert span.name == f"{topic} publish"
    [delivery] = read_all(kafka, topic)
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


def test_unroutable_event_holds_back_only_its_aggregate(db: str, kafka: str) -> None:
    topic = new_topic()
    stuck = event_row("order-stuck", 0)
    stuck = (*stuck[:3], "Unknown", *stuck[4:])
    insert_events(db, [stuck, event_row("order-stuck", 1), event_row("order-ok", 0)])
    broker = make_broker(kafka)
    relay = Relay(
        db,
        broker,
        topics=[topic],
        route=lambda row: topic if row.event_type == "OrderPlaced" else None,
    )
    assert relay.relay_batch() == 1
    relay.close()
    assert [d.key for d in read_all(kafka, topic, idle=1.0)] == ["order-ok"]
    assert backlog(db) == 2


def test_retention_deletes_only_old_published_rows(db: str, kafka: str) -> None:
    insert_events(db, [event_row(f"order-{i}", 0) for i in range(10)])
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE outbox SET published_at = now() - interval '2 hours' "
            "WHERE aggregate_id IN ('order-0', 'order-1', 'order-2')"
        )
        conn.execute("UPDATE outbox SET published_at = now() WHERE aggregate_id IN ('order-3')")
    relay = Relay(db, make_broker(kafka), route=lambda row: None, options=Options(retention=3600))
    relay._connect()
    assert relay.delete_published() == 3
    relay.close()
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
    assert row is not None and row[0] == 7


def test_sigterm_finishes_the_batch_and_exits_cleanly(db: str, kafka: str) -> None:
    topic = new_topic()
    insert_events(db, [event_row(f"order-{i % 20}", i // 20) for i in range(2000)])
    process = spawn_relay(db, kafka, topic, 100)
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL").fetchone()
    published = int(row[0]) if row else 0
    received = read_all(kafka, topic, idle=2.0)
    # Every row marked was acked first: the broker holds at least as many as were marked.
    assert len({d.attributes["id"] for d in received}) >= published > 0
    assert len(received) == published, "a clean stop publishes nothing it does not mark"


def wait_for_backlog(db: str, timeout: float) -> int:
    """The backlog, polled until rows are pending (a kill then lands mid-stream) or timeout."""
    deadline = time.monotonic() + timeout
    while (pending := backlog(db)) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    return pending


def test_r1_relay_killed_at_random_moments_loses_nothing(db: str, kafka: str) -> None:
    topic, batch, aggregates = new_topic(), 100, [f"agg-{i:03d}" for i in range(200)]
    # 4 x 50 x 100 = 20k events, paced to ~20 s so that every kill lands while rows arrive.
    writers = [Writer(db, aggregates[i::4], 100, pause=0.003) for i in range(4)]
    for writer in writers:
        writer.start()
    rng = random.Random(1)
    kills = kills_with_backlog = 0
    process = spawn_relay(db, kafka, topic, batch)
    started = time.monotonic()
    try:
        while kills < 10 or any(w.is_alive() for w in writers):
            time.sleep(rng.uniform(0.8, 1.6))  # startup (imports, connections) is ~0.5 s
            pending = wait_for_backlog(db, 1.0)
            process.kill()
            process.wait()
            kills += 1
            kills_with_backlog += pending > 0
            process = spawn_relay(db, kafka, topic, batch)
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
    report = check(expected, read_all(kafka, topic))
    print(
        f"\nR1: {kills} SIGKILLs ({kills_with_backlog} with a backlog), batch {batch}, "
        f"{time.monotonic() - started:.1f}s: {report}"
    )
    assert len(expected) == 20_000
    assert kills >= 10 and kills_with_backlog >= 5
    assert report.lost == 0
    assert report.duplicates <= kills * batch
    assert report.order_violations == 0 and report.unexpected == 0 and report.wrong_keys == 0


def test_r2_out_of_order_commits_lose_nothing(db: str, kafka: str) -> None:
    topic = new_topic()
    with RelayThread(db, kafka, topic, poll_interval=0.05):
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
        for round_ in range(500):
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
    report = check(expected, read_all(kafka, topic))
    print(f"\nR2: 3 out-of-order commits + 500 rounds, {rolled_back} rolled back: {report}")
    assert report.lost == 0 and report.unexpected == 0


def test_r3_three_relays_keep_per_aggregate_order(db: str, kafka: str) -> None:
    topic, aggregates = new_topic(), [f"agg-{i:03d}" for i in range(200)]
    writers = [Writer(db, aggregates[i::4], 100) for i in range(4)]
    started = time.monotonic()
    relays = [RelayThread(db, kafka, topic, batch_size=200) for _ in range(3)]
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
    report = check(expected, read_all(kafka, topic))
    print(f"\nR3: 3 relays, published {shares}, {time.monotonic() - started:.1f}s: {report}")
    assert len(expected) == 20_000
    assert report.lost == 0 and report.order_violations == 0 and report.wrong_keys == 0
    assert sum(1 for share in shares if share > 0) >= 2, f"one relay did all the work: {shares}"


def test_r4_broker_stopped_for_20s_loses_nothing_and_drains(db: str) -> None:
    # Our own Tansu: stopping the shared one would break other tests. Its storage is in memory,
    # so a killed-and-restarted Tansu comes back empty: it would lose what it had acked, which
    # no relay can prevent. SIGSTOP/SIGCONT stops it instead (like `docker pause`): clients get
    # no answer at all for 20 s, and what the broker acked before survives.
    topic, aggregates = new_topic(), [f"agg-{i:03d}" for i in range(50)]
    with own_tansu() as tansu:
        writers = [Writer(db, aggregates[i::2], 60, pause=0.004) for i in range(2)]
        with RelayThread(
            db, tansu.bootstrap, topic, timeout=3.0, backoff_max=2.0, stats_every=0.0
        ) as relay:
            for writer in writers:
                writer.start()
            time.sleep(2.0)
            os.kill(tansu.process.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            time.sleep(2.0)
            published_early = relay.value("edaenv_relay_published_total")
            time.sleep(18.0)
            published_during = relay.value("edaenv_relay_published_total") - published_early
            backlog_at_restart = backlog(db)
            os.kill(tansu.process.pid, signal.SIGCONT)
            outage = time.monotonic() - stopped_at
            for writer in writers:
                writer.join()
                assert writer.error is None, writer.error
            drain_started = time.monotonic()
            wait_drained(db, 90)
            drained_in = time.monotonic() - drain_started
            errors = relay.value("edaenv_relay_errors_total")
        expected = [e for w in writers for e in w.written]
        report = check(expected, read_all(tansu.bootstrap, topic))
    print(
        f"\nR4: broker stopped {outage:.1f}s, backlog at restart {backlog_at_restart}, "
        f"relay errors {errors:.0f}, drained {drained_in:.1f}s after the writers: {report}"
    )
    assert published_during == 0, "nothing can be acked while the broker is stopped"
    assert backlog_at_restart > 0 and errors >= 1
    assert report.lost == 0 and report.order_violations == 0 and report.unexpected == 0
