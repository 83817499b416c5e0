"""`edaenv seed` throughput per broker against a raw client loop, measured in the same run.

For each broker (the native test services: Tansu for Kafka, RabbitMQ, NATS JetStream):
1. seed: `edaenv seed OrderPlaced --count N` in-process (CliRunner on the real app): config,
   contract, generation, validation, envelope, connection and publishing, with windowed acks.
2. raw: the same client library publishing N pre-built messages (same body and headers) with
   the same acknowledgement settings (Kafka idempotent acks=all linger 5 ms; RabbitMQ
   persistent + mandatory + publisher confirms, 1000 in flight; JetStream PubAcks, 1000 in
   flight with Nats-Msg-Id). Ratio seed / raw, goal >= 0.8.
3. windowed vs one ack per message: edaenv's adapter publishing M messages in windows of 1000
   against the same adapter publishing them one call (one acknowledgement) at a time. Goal >= 5x.

    python bench/seed.py [--count 30000] [--single 1000] [--brokers kafka,rabbitmq,nats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from events_support import BROKER_URLS, require_quietly  # noqa: E402

from edaenv.brokers.base import Endpoint, Message  # noqa: E402
from edaenv.brokers.registry import connect  # noqa: E402
from edaenv.events import topology  # noqa: E402
from edaenv.events.contracts import load_contract  # noqa: E402
from edaenv.events.envelope import AMQP, KAFKA, NATS, Envelope  # noqa: E402
from edaenv.events.generate import generator  # noqa: E402

EDAENV = str(Path(sys.executable).with_name("edaenv"))


def project(broker: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"bench-seed-{broker}-"))
    topic = f"bench-seed-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [EDAENV, "init", "--defaults", "--broker", broker, "--topic", topic, str(root)],
        check=True,
        capture_output=True,
        env={**os.environ, "EDAENV_BROKER_URL": BROKER_URLS[broker]},
    )
    return root


def run_seed(root: Path, count: int) -> tuple[float, dict[str, Any]]:
    from typer.testing import CliRunner

    from edaenv.cli.app import app

    cwd = os.getcwd()
    os.chdir(root)
    try:
        started = time.perf_counter()
        result = CliRunner().invoke(app, ["seed", "OrderPlaced", "--count", str(count), "--json"])
        seconds = time.perf_counter() - started
    finally:
        os.chdir(cwd)
    if result.exit_code != 0:
        raise SystemExit(f"edaenv seed failed: {result.output}")
    return seconds, json.loads(result.stdout)


def messages(root: Path, topic: str, count: int) -> list[Message]:
    import random

    contract = load_contract(next((root / "eda" / "events").glob("*.schema.json")))
    make, rng, envelope = generator(contract), random.Random(1), Envelope(contract, "bench")
    out = []
    for _ in range(count):
        data = make(rng)
        out.append(envelope.message(data, data[contract.key]))
    return [Message(topic, m.key, m.value, m.attributes, m.headers) for m in out]


# --- raw client loops ---------------------------------------------------------------------------


def raw_kafka(url: str, batch: list[Message]) -> float:
    from confluent_kafka import Producer

    prepared = [
        (m.value, m.key.encode(), list(KAFKA.headers(m.attributes, m.headers).items()))
        for m in batch
    ]
    topic = batch[0].topic
    acked = [0]

    def done(err: Any, _msg: Any) -> None:
        if err is None:
            acked[0] += 1

    started = time.perf_counter()
    producer = Producer(
        {
            "bootstrap.servers": url,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
        }
    )
    for index, (value, key, headers) in enumerate(prepared):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=done)
                break
            except BufferError:
                producer.poll(0.01)
        if index % 64 == 0:
            producer.poll(0)
    producer.flush(60)
    seconds = time.perf_counter() - started
    assert acked[0] == len(batch), acked
    return seconds


def raw_rabbitmq(url: str, batch: list[Message]) -> float:
    import pika

    prepared = [
        (
            m.key,
            m.value,
            pika.BasicProperties(
                content_type="application/json",
                message_id=m.attributes["id"],
                delivery_mode=2,
                headers=AMQP.headers(m.attributes, m.headers),
            ),
        )
        for m in batch
    ]
    exchange = batch[0].topic
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    outstanding: set[int] = set()
    ready: list[bool] = []

    def confirmed(frame: Any) -> None:
        tag = frame.method.delivery_tag
        if frame.method.multiple:
            outstanding.difference_update([t for t in outstanding if t <= tag])
        else:
            outstanding.discard(tag)

    channel._impl.confirm_delivery(
        ack_nack_callback=confirmed, callback=lambda _f: ready.append(True)
    )
    while not ready:
        connection.process_data_events(time_limit=0.05)
    for tag, (key, body, properties) in enumerate(prepared, 1):
        outstanding.add(tag)
        channel._impl.basic_publish(exchange, key, body, properties, mandatory=True)
        while len(outstanding) >= 1000:
            connection.process_data_events(time_limit=0.01)
    while outstanding:
        connection.process_data_events(time_limit=0.01)
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


def raw_nats(url: str, batch: list[Message]) -> float:
    import nats

    prepared = [
        (
            topology.nats_subject(m.topic, m.key),
            m.value,
            {**NATS.headers(m.attributes, m.headers), "Nats-Msg-Id": m.attributes["id"]},
        )
        for m in batch
    ]

    async def go() -> float:
        started = time.perf_counter()
        nc = await nats.connect(url)
        js = nc.jetstream(publish_async_max_pending=1000)
        futures = [
            await js.publish_async(subject, body, headers=headers)
            for subject, body, headers in prepared
        ]
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
        await nc.close()
        return seconds

    return asyncio.run(go())


RAW = {"kafka": raw_kafka, "rabbitmq": raw_rabbitmq, "nats": raw_nats}


def windowed_vs_single(broker: str, topic: str, batch: list[Message]) -> tuple[float, float]:
    adapter = connect(Endpoint(broker=broker, url=BROKER_URLS[broker]))
    try:
        adapter.publish(batch[:10])  # warm: connection, producer id, channel
        started = time.perf_counter()
        for start in range(0, len(batch), 1000):
            adapter.publish(batch[start : start + 1000])
        windowed = len(batch) / (time.perf_counter() - started)
        started = time.perf_counter()
        for message in batch:
            adapter.publish([message])
        single = len(batch) / (time.perf_counter() - started)
    finally:
        adapter.close()
    return windowed, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument(
        "--single", type=int, default=1000, help="messages for the windowed vs one-ack comparison"
    )
    parser.add_argument("--brokers", default="kafka,rabbitmq,nats")
    args = parser.parse_args()
    rows = []
    for broker in args.brokers.split(","):
        require_quietly(broker)
        os.environ["EDAENV_BROKER_URL"] = BROKER_URLS[broker]
        root = project(broker)
        seed_seconds, summary = run_seed(root, args.count)
        topic = summary["topic"]
        batch = messages(root, topic, args.count)
        raw_seconds = RAW[broker](BROKER_URLS[broker], batch)
        windowed, single = windowed_vs_single(broker, topic, batch[: args.single])
        seed_rate, raw_rate = args.count / seed_seconds, args.count / raw_seconds
        rows.append(
            (
                broker,
                seed_rate,
                summary["msg_per_s"],
                raw_rate,
                seed_rate / raw_rate,
                summary["ack_latency_ms"]["p50"],
                summary["ack_latency_ms"]["p99"],
                windowed,
                single,
                windowed / single,
            )
        )
    print(f"\nedaenv seed vs raw client loop, {args.count} events each (msg/s; same run)")
    header = (
        "broker",
        "seed e2e",
        "seed send",
        "raw",
        "ratio",
        "ack p50",
        "ack p99",
        "windowed",
        "1 ack/msg",
        "speed-up",
    )
    print("  ".join(f"{h:>10}" for h in header))
    for row in rows:
        print(
            "  ".join(
                f"{c:>10}" if isinstance(c, str) else f"{c:>10.2f}" if c < 100 else f"{c:>10.0f}"
                for c in row
            )
        )
    print(
        "\nseed e2e: the whole command (generate, validate, envelope, connect, publish); "
        "seed send: its publishing loop alone (the summary's msg/s)."
    )
    print("goals: ratio (seed e2e / raw) >= 0.8; speed-up (windowed / one ack per message) >= 5")


if __name__ == "__main__":
    main()
