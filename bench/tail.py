"""`edaenv tail --json > /dev/null` against a raw consume loop, per broker, in the same run.

For each broker (the native test services): N events are seeded (not timed), then
1. tail: `edaenv tail TOPIC --no-follow --json` as a subprocess writing to /dev/null, its wall
   time from start to exit (interpreter start-up included);
2. raw: the same client library reading the N events from the beginning without side effects
   (Kafka: assign + consume to the partitions' ends; RabbitMQ: the topic's stream queue from
   `first`; NATS: an ephemeral pull consumer without acks), writing each body to /dev/null.
Each pair runs --repeat times, alternating, and the best of each counts (a shared machine is
noisy). Ratio tail / raw, goal >= 0.5.

    python bench/tail.py [--count 30000] [--repeat 3] [--brokers kafka,rabbitmq,nats]
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

from edaenv.brokers import rabbitmq_topology  # noqa: E402

EDAENV = str(Path(sys.executable).with_name("edaenv"))


def seeded(broker: str, count: int) -> tuple[Path, str]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-tail-{broker}-"))
    topic = f"bench-tail-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "EDAENV_BROKER_URL": BROKER_URLS[broker]}
    subprocess.run(
        [EDAENV, "init", "--defaults", "--broker", broker, "--topic", topic, str(root)],
        check=True,
        capture_output=True,
        env=env,
    )
    result = subprocess.run(
        [EDAENV, "seed", "OrderPlaced", "--count", str(count), "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["acknowledged"] == count
    return root, topic


def run_tail(root: Path, broker: str, topic: str, count: int) -> float:
    env = {**os.environ, "EDAENV_BROKER_URL": BROKER_URLS[broker]}
    started = time.perf_counter()
    result = subprocess.run(
        [EDAENV, "tail", topic, "--no-follow", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    lines = result.stdout.count(b"\n")
    assert lines == count, f"tail printed {lines} of {count}"
    return seconds


def raw_kafka(url: str, topic: str, count: int, sink: Any) -> float:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    started = time.perf_counter()
    consumer = Consumer(
        {
            "bootstrap.servers": url,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    pending, seen = set(partitions), 0
    while pending:
        for record in consumer.consume(500, 0.2):
            error = record.error()
            if error is None:
                sink.write(record.value() + b"\n")
                seen += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(record.partition())
    consumer.close()
    assert seen == count, seen
    return time.perf_counter() - started


def raw_rabbitmq(url: str, topic: str, count: int, sink: Any) -> float:
    import pika

    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    stream = channel.consume(
        rabbitmq_topology.log_name(topic), arguments={"x-stream-offset": "first"}
    )
    for seen, (method, _props, body) in enumerate(stream, 1):
        sink.write(body + b"\n")
        if seen % 500 == 0 or seen == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if seen == count:
            break
    channel.cancel()
    connection.close()
    return time.perf_counter() - started


def raw_nats(url: str, topic: str, count: int, sink: Any) -> float:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async def go() -> float:
        started = time.perf_counter()
        nc = await nats.connect(url)
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"{topic}.>",
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        seen = 0
        while seen < count:
            for msg in await sub.fetch(500, timeout=5):
                sink.write(msg.data + b"\n")
                seen += 1
        seconds = time.perf_counter() - started
        await sub.unsubscribe()
        await nc.close()
        return seconds

    return asyncio.run(go())


RAW = {"kafka": raw_kafka, "rabbitmq": raw_rabbitmq, "nats": raw_nats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs; best of each")
    parser.add_argument("--brokers", default="kafka,rabbitmq,nats")
    args = parser.parse_args()
    rows = []
    for broker in args.brokers.split(","):
        require_quietly(broker)
        root, topic = seeded(broker, args.count)
        tail_best = raw_best = 0.0
        for _ in range(args.repeat):
            tail_best = max(tail_best, args.count / run_tail(root, broker, topic, args.count))
            with open(os.devnull, "wb") as sink:
                raw = RAW[broker](BROKER_URLS[broker], topic, args.count, sink)
            raw_best = max(raw_best, args.count / raw)
        rows.append((broker, tail_best, raw_best, tail_best / raw_best))
    print(
        f"\nedaenv tail --no-follow --json > /dev/null vs a raw consume loop, {args.count} "
        f"events, best of {args.repeat} alternating runs (msg/s; tail includes its start-up)"
    )
    print("  ".join(f"{h:>10}" for h in ("broker", "tail", "raw", "ratio")))
    for broker, tail_rate, raw_rate, ratio in rows:
        print(f"{broker:>10}  {tail_rate:>10.0f}  {raw_rate:>10.0f}  {ratio:>10.2f}")
    print("goal: ratio >= 0.5")


if __name__ == "__main__":
    main()
