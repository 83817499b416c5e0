"""The outbox relay's speed against its raw parts, measured in the same run.

1. Drain rate: N pre-inserted outbox rows (COPY) published by the relay, against
   - raw publish: the same broker client publishing the same N messages in batches, and
   - raw claim-and-mark: `SELECT ... FOR UPDATE SKIP LOCKED` + `UPDATE` per batch, no publish.
   Ratio = relay / min(raw publish, raw claim-and-mark); goal >= 0.8.
   A fourth arm, ordered claim-and-mark, runs the relay's own claiming statement (advisory lock
   per aggregate, what keeps per-aggregate order with several relays) and mark, no publish:
   relay / ordered shows what the overlap leaves on the table, ordered / raw what the ordering
   guarantee costs in the database.
   Each raw arm runs alone; the relay does both at once, so the goal assumes a core to spare
   for the overlap. The relay process's CPU time / drain time is printed beside the load
   average: a relay using all the CPU the machine leaves it is CPU-bound, not latency-bound.
2. Latency, commit to consume: one row per transaction, the relay woken by NOTIFY, a reader on
   the topic; against direct publish to consume with the same client. Goal: p99 <= direct + 15 ms.

Uses the native test services (scripts/start-services.sh): PostgreSQL and Tansu (Kafka).

    python bench/relay.py [--rows 100000] [--batch 500] [--latency-events 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psycopg  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from outbox_support import (  # noqa: E402
    PARTITIONS,
    copy_events,
    event_row,
    fresh_database,
    kafka_bootstrap,
    new_topic,
)

from edaenv.brokers.base import Message  # noqa: E402
from edaenv.outbox.relay import CLAIM, LOCK_SPACE, MARK, PIPELINE, Options, Relay  # noqa: E402
from edaenv.outbox.runtime import prefer_io_threads  # noqa: E402


def client(bootstrap: str) -> Any:
    """edaenv's Kafka adapter: the relay's client in the stack, and the raw publish loop's."""
    from edaenv.brokers.base import Endpoint
    from edaenv.brokers.registry import connect

    return connect(Endpoint(broker="kafka", url=bootstrap))


def rows(n: int, aggregates: int = 1000) -> list[tuple[Any, ...]]:
    return [event_row(f"agg-{i % aggregates:04d}", i // aggregates) for i in range(n)]


def load(url: str, data: list[tuple[Any, ...]]) -> None:
    """COPY, then ANALYZE as autovacuum would soon after a bulk load (same for both sides)."""
    copy_events(url, data)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE outbox")


def raw_publish(broker: Any, topic: str, data: list[tuple[Any, ...]], batch: int) -> float:
    """The same messages the relay sends: the full CloudEvents envelope of each row."""
    now = datetime.now(UTC).isoformat()
    messages = [
        Message(
            topic=topic,
            key=r[2],
            value=r[4].encode(),
            attributes={
                "specversion": "1.0",
                "type": r[3],
                "source": f"/outbox/{r[1]}",
                "subject": r[2],
                "datacontenttype": "application/json",
                "time": now,
                **json.loads(r[5]),
            },
        )
        for r in data
    ]
    started = time.perf_counter()
    for start in range(0, len(messages), batch):
        broker.publish(messages[start : start + batch])
    return len(messages) / (time.perf_counter() - started)


def raw_claim_and_mark(url: str, n: int, batch: int) -> float:
    claim = (
        "SELECT id, aggregate_id, event_type, payload::text, headers FROM outbox "
        "WHERE published_at IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    done = 0
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        while True:
            with conn.cursor() as cur:
                cur.execute(claim, (batch,))
                ids = [r[0] for r in cur.fetchall()]
                if not ids:
                    break
                cur.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", (ids,))
            conn.commit()
            done += len(ids)
    assert done == n, (done, n)
    return n / (time.perf_counter() - started)


def ordered_claim_and_mark(url: str, n: int, batch: int) -> float:
    """The relay's claim (batch / PIPELINE rows, as its pipelined pump takes them) and mark."""
    part = batch // PIPELINE
    params = {"scan": part, "space": LOCK_SPACE, "limit": part, "blocked": []}
    done = 0
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        while True:
            rows = conn.execute(CLAIM, params).fetchall()
            if not rows:
                break
            acked = datetime.now(UTC)
            conn.execute(MARK, {"rows": [r[7] for r in rows], "acked": acked})
            conn.commit()
            done += len(rows)
    assert done == n, (done, n)
    return n / (time.perf_counter() - started)


def relay_drain(url: str, broker: Any, topic: str, n: int, batch: int) -> tuple[float, float]:
    """The drain rate, and the cores the relay's process used meanwhile (its CPU time / wall
    time): on a machine without a core to spare, the relay is CPU-bound, not latency-bound."""
    relay = Relay(
        url, broker, route=lambda row: topic, topics=[topic], options=Options(batch_size=batch)
    )
    first = relay.relay_batch()  # connections and topology outside the timing
    started, cpu = time.perf_counter(), time.process_time()
    done = relay.drain()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    relay.close()
    assert first + done == n, (first, done, n)
    return done / elapsed, cpu / elapsed


class Reader(threading.Thread):
    """Records when each message arrives, keyed by its `id` attribute."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 1,
                "fetch.min.bytes": 1,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, -1) for p in range(PARTITIONS)])
        self.arrived: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for record in self.consumer.consume(100, 0.05):
                if record.error():
                    continue
                event_id = dict(record.headers() or []).get("ce_id")
                if isinstance(event_id, bytes):
                    self.arrived[event_id.decode()] = time.perf_counter()
        self.consumer.close()


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return (
        statistics.median(ordered) * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    )


def latency_direct(bootstrap: str, broker: Any, topic: str, events: int) -> tuple[float, float]:
    broker.ensure_topology([topic])
    reader = Reader(bootstrap, topic)
    reader.start()
    time.sleep(2.0)
    sent: dict[str, float] = {}
    for _ in range(events):
        row = event_row(f"agg-{uuid.uuid4().hex[:6]}", 0)
        event_id = str(row[0])
        sent[event_id] = time.perf_counter()
        broker.publish(
            [
                Message(
                    topic=topic,
                    key=row[2],
                    value=row[4].encode(),
                    attributes={"id": event_id, "type": "OrderPlaced"},
                )
            ]
        )
        time.sleep(0.01)
    time.sleep(1.0)
    reader.stop.set()
    reader.join()
    return percentiles([reader.arrived[i] - t for i, t in sent.items() if i in reader.arrived])


def latency_outbox(
    url: str, bootstrap: str, broker: Any, topic: str, events: int
) -> tuple[float, float]:
    relay = Relay(
        url, broker, route=lambda row: topic, topics=[topic], options=Options(poll_interval=1.0)
    )
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    reader = Reader(bootstrap, topic)
    reader.start()
    time.sleep(2.0)
    committed: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(events):
            row = event_row(f"agg-{uuid.uuid4().hex[:6]}", 0)
            conn.execute(
                "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, "
                "payload, headers) VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )
            committed[str(row[0])] = time.perf_counter()
            time.sleep(0.01)
    time.sleep(1.5)
    reader.stop.set()
    reader.join()
    relay.stop()
    thread.join()
    missing = [i for i in committed if i not in reader.arrived]
    assert not missing, f"{len(missing)} events never arrived"
    return percentiles([reader.arrived[i] - t for i, t in committed.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prefer_io_threads()  # as the relay service does (the raw loops are single-threaded)
    bootstrap = kafka_bootstrap()
    broker = client(bootstrap)
    data = rows(args.rows)
    print(f"relay bench: {args.rows} rows, batch {args.batch}, Kafka (Tansu) via edaenv's adapter")

    # The machine is shared and noisy: the measurements alternate, each round after round,
    # and the medians are compared.
    rates: dict[str, list[float]] = {"publish": [], "claim": [], "ordered": [], "relay": []}
    cores: list[float] = []
    for _ in range(args.rounds):
        topic = new_topic("bench-raw")
        broker.ensure_topology([topic])
        rates["publish"].append(raw_publish(broker, topic, data, args.batch))
        with fresh_database() as url:
            load(url, data)
            rates["claim"].append(raw_claim_and_mark(url, args.rows, args.batch))
        with fresh_database() as url:
            load(url, data)
            rates["ordered"].append(ordered_claim_and_mark(url, args.rows, args.batch))
        with fresh_database() as url:
            load(url, data)
            topic = new_topic("bench-relay")
            drained, used = relay_drain(url, broker, topic, args.rows, args.batch)
            rates["relay"].append(drained)
            cores.append(used)
    publish_rate, claim_rate, ordered_rate, relay_rate = (
        statistics.median(rates[k]) for k in rates
    )
    floor = min(publish_rate, claim_rate)
    each = {k: ", ".join(f"{r:,.0f}" for r in v) for k, v in rates.items()}
    print(f"  raw publish           {publish_rate:>10,.0f} msg/s    ({each['publish']})")
    print(f"  raw claim-and-mark    {claim_rate:>10,.0f} rows/s   ({each['claim']})")
    print(f"  ordered claim-and-mark{ordered_rate:>11,.0f} rows/s   ({each['ordered']})")
    print(f"  relay drain           {relay_rate:>10,.0f} rows/s   ({each['relay']})")
    per_round = ", ".join(f"{c:.2f}" for c in cores)
    print(
        f"  relay process CPU     {statistics.median(cores):>10.2f} cores    ({per_round}; its CPU "
        f"time / drain time; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    ratio = relay_rate / floor
    print(
        f"  relay / min(raw) = {ratio:.2f}x (goal >= 0.80: {'met' if ratio >= 0.8 else 'not met'};"
        f" medians of {args.rounds} rounds); relay / ordered claim-and-mark = "
        f"{relay_rate / ordered_rate:.2f}x; ordered / raw claim-and-mark = "
        f"{ordered_rate / claim_rate:.2f}x"
    )

    direct = latency_direct(bootstrap, broker, new_topic("bench-direct"), args.latency_events)
    with fresh_database() as url:
        outbox = latency_outbox(
            url, bootstrap, broker, new_topic("bench-latency"), args.latency_events
        )
    print(f"  direct publish->consume   p50 {direct[0]:6.1f} ms   p99 {direct[1]:6.1f} ms")
    print(
        f"  outbox commit->consume    p50 {outbox[0]:6.1f} ms   p99 {outbox[1]:6.1f} ms   "
        f"p99 - direct p99 = {outbox[1] - direct[1]:+.1f} ms (goal <= +15 ms)"
    )
    broker.close()


if __name__ == "__main__":
    main()
