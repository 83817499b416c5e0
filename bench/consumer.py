"""The sample consumer's idempotent consume against its raw parts, measured in the same run.

N events (10% of them delivered twice) on one topic, then:
  plain loop        the same work as the sample consumer in a plain loop, one thread: fetch a
                    batch, json.loads each event, the same guard (edaenv.service.claim_new) and
                    side-effect SQL in one transaction, commit, ack;
  idempotent        the scaffold's consumer (rendered by `edaenv init`): parse and check each
                    event, guard, side effect, commit, ack, with its metrics;
  raw consume       the broker client alone: fetch + ack (context: the broker's share);
  batched inserts   the side-effect rows alone, one transaction per batch (the database's share).
Ratio = idempotent / plain loop; goal >= 0.8. Both use edaenv's Kafka adapter, as the consumer
does in the stack.

Uses the native test services (scripts/start-services.sh): PostgreSQL and Tansu (Kafka).

    python bench/consumer.py [--events 100000] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psycopg  # noqa: E402
from outbox_support import (  # noqa: E402
    fresh_database,
    kafka_bootstrap,
    new_topic,
)

from edaenv import service  # noqa: E402
from edaenv.brokers.base import Message  # noqa: E402
from edaenv.outbox.metrics import ConsumerMetrics  # noqa: E402

EFFECT = (
    "INSERT INTO order_confirmations (event_id, order_id, customer_id, total) "
    "SELECT r->>0, r->>1, r->>2, (r->>3)::numeric FROM jsonb_array_elements(%s) AS r"
)


def render_consumer(directory: Path) -> tuple[Any, str]:
    """The scaffold's consumer module and its migrations' SQL (its table among them)."""
    subprocess.run(["git", "init", "-q"], cwd=directory, check=True)
    edaenv = Path(sys.executable).parent / "edaenv"
    subprocess.run(
        [str(edaenv), "init", "--defaults"], cwd=directory, check=True, capture_output=True
    )
    migrations = sorted((directory / "eda" / "db" / "migrations").glob("*.sql"))
    spec = importlib.util.spec_from_file_location(
        "sample_consumer", directory / "eda" / "consumer" / "main.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, "\n".join(m.read_text() for m in migrations)


def apply(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type,unused-ignore]


def adapter(bootstrap: str) -> Any:
    from edaenv.brokers.base import Endpoint
    from edaenv.brokers.registry import connect

    return connect(Endpoint(broker="kafka", url=bootstrap))


def events(topic: str, n: int) -> list[Message]:
    unique = n - n // 10
    messages = []
    for _ in range(unique):
        order_id = str(uuid.uuid4())
        data = {"orderId": order_id, "customerId": "c-1", "total": 12.5}
        messages.append(
            Message(
                topic=topic,
                key=order_id,
                value=json.dumps(data).encode(),
                attributes={
                    "id": str(uuid.uuid4()),
                    "type": "OrderPlaced",
                    "specversion": "1.0",
                    "source": "/bench",
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
        )
    messages += random.Random(1).sample(messages, n // 10)
    return messages


def timed_consume(
    broker: Any, topic: str, group: str, n: int, batch: int, handle: Callable[[list[Any]], None]
) -> float:
    """Messages per second through fetch, handle(batch), ack, timed from the first delivery."""
    subscription = broker.subscribe(topic, f"{group}-{uuid.uuid4().hex[:6]}")
    seen, started = 0, None
    while seen < n:
        deliveries = subscription.fetch(batch, 1.0)
        if deliveries and started is None:
            started = time.perf_counter()
        handle(deliveries)
        for delivery in deliveries:
            subscription.ack(delivery)
        seen += len(deliveries)
    elapsed = time.perf_counter() - (started or 0)
    subscription.close()
    return n / elapsed


def raw_consume(broker: Any, topic: str, n: int, batch: int) -> float:
    return timed_consume(broker, topic, "raw", n, batch, lambda _deliveries: None)


def batched_inserts(url: str, messages: list[Message], batch: int) -> float:
    """The side-effect rows, one multi-row INSERT and commit per batch (as the consumer does)."""
    from psycopg.types.json import Jsonb

    rows = [[m.attributes["id"], m.key, "c-1", "12.5"] for m in messages]
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            conn.execute(EFFECT, [Jsonb(rows[start : start + batch])])
            conn.commit()
        return len(rows) / (time.perf_counter() - started)


def plain_loop(broker: Any, url: str, topic: str, n: int, batch: int) -> float:
    """What the sample consumer does, written as the shortest loop: the baseline."""
    from psycopg.types.json import Jsonb

    with psycopg.connect(url) as conn:

        def handle(deliveries: list[Any]) -> None:
            orders = {service.event_id(d): json.loads(d.value) for d in deliveries}
            with conn.transaction():
                new = service.claim_new(conn, "plain", orders.keys())
                rows = [
                    [event_id, o["orderId"], o["customerId"], str(o["total"])]
                    for event_id, o in orders.items()
                    if event_id in new
                ]
                conn.execute(EFFECT, [Jsonb(rows)])

        return timed_consume(broker, topic, "plain", n, batch, handle)


def idempotent(
    sample: Any, url: str, bootstrap: str, topic: str, n: int, batch: int
) -> tuple[float, int, int]:
    metrics = ConsumerMetrics()
    consumer = sample.Consumer(
        adapter(bootstrap),
        url,
        topic=topic,
        group=f"idem-{uuid.uuid4().hex[:6]}",
        metrics=metrics,
        batch=batch,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()

    def done() -> float:
        get = metrics.registry.get_sample_value
        return (get("edaenv_consumer_processed_total") or 0) + (
            get("edaenv_consumer_duplicates_total") or 0
        )

    while done() == 0:
        time.sleep(0.005)
    started, first = time.perf_counter(), done()
    while done() < n:
        assert thread.is_alive(), "the consumer stopped"
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    consumer.stop.set()
    thread.join()
    get = metrics.registry.get_sample_value
    return (
        (n - first) / elapsed,
        int(get("edaenv_consumer_processed_total") or 0),
        int(get("edaenv_consumer_duplicates_total") or 0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bootstrap = kafka_bootstrap()
    with tempfile.TemporaryDirectory() as directory:
        sample, migrations = render_consumer(Path(directory))
    topic = new_topic("bench-consumer")
    messages = events(topic, args.events)
    publisher = adapter(bootstrap)
    publisher.ensure_topology([topic])
    for start in range(0, len(messages), 5000):
        publisher.publish(messages[start : start + 5000])
    publisher.close()
    broker = adapter(bootstrap)
    print(
        f"consumer bench: {args.events} events ({args.events // 10} duplicates), "
        f"batch {args.batch}, Kafka (Tansu) via {type(broker).__name__}"
    )

    # The machine is shared and noisy: the three measurements alternate, round after round, and
    # the medians are compared (each round reads the topic again with a fresh group).
    rates: dict[str, list[float]] = {"plain": [], "idempotent": [], "consume": [], "insert": []}
    processed = duplicates = 0
    for _ in range(args.rounds):
        rates["consume"].append(raw_consume(broker, topic, args.events, args.batch))
        with fresh_database() as url:
            apply(url, migrations)
            rates["insert"].append(batched_inserts(url, messages, args.batch))
        with fresh_database() as url:
            apply(url, migrations)
            rates["plain"].append(plain_loop(broker, url, topic, args.events, args.batch))
        with fresh_database() as url:
            apply(url, migrations)
            rate, processed, duplicates = idempotent(
                sample, url, bootstrap, topic, args.events, args.batch
            )
            rates["idempotent"].append(rate)
    broker.close()
    plain, rate, consume_rate, insert_rate = (statistics.median(rates[k]) for k in rates)
    each = {k: ", ".join(f"{r:,.0f}" for r in v) for k, v in rates.items()}
    print(f"  plain loop (baseline)    {plain:>10,.0f} msg/s    ({each['plain']})")
    print(f"  idempotent consumer      {rate:>10,.0f} msg/s    ({each['idempotent']})")
    print(f"  raw consume + ack        {consume_rate:>10,.0f} msg/s    ({each['consume']})")
    print(f"  batched inserts          {insert_rate:>10,.0f} rows/s   ({each['insert']})")
    ratio = rate / plain
    print(
        f"  consumer / plain loop = {ratio:.2f}x (goal >= 0.80: "
        f"{'met' if ratio >= 0.8 else 'not met'}; medians of {args.rounds} rounds); "
        f"last round: processed {processed}, duplicates skipped {duplicates}"
    )


if __name__ == "__main__":
    main()
