"""`edaenv seed` throughput per broker against a raw client loop, measured in the same run.

For each broker (the native test services: Tansu for Kafka, RabbitMQ, NATS JetStream):
1. seed: `edaenv seed OrderPlaced --count N` in-process (CliRunner on the real app): config,
   contract, generation, validation, envelope, connection and publishing, with windowed acks.
2. raw: the same client library connecting and publishing N pre-built messages (same body and
   headers) with the same acknowledgement settings (Kafka idempotent acks=all linger 5 ms; RabbitMQ
   persistent + mandatory + publisher confirms, 1000 in flight; JetStream PubAcks, 1000 in
   flight with Nats-Msg-Id). Ratio seed / raw, goal >= 0.8. Its CPU use is printed too:
   process CPU time / wall time (cores kept busy, the client library's threads included) and
   the Python thread's CPU time / wall time (how much of the thread that holds the GIL, which
   the command's per-event work needs too, the raw loop leaves idle).
3. prepare only: the command's per-event work without a broker (generate, encode, validate,
   envelope: `publishing.prepare` over `publishing.generated`, as `seed` runs them). prepare/raw
   is the ceiling of e2e/raw even if publishing cost nothing: where it is below 0.8, the goal
   is out of reach of this per-event Python work on this machine.
4. windowed vs one ack per message: edaenv's adapter publishing M messages in windows of 1000
   against the same adapter publishing them one call (one acknowledgement) at a time. Goal >= 5x.

    python bench/seed.py [--count 20000] [--single 1000] [--repeat 3] [--brokers ...]

Each measurement runs --repeat times, alternating, and the best of each counts (a shared
machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from events_support import BROKER_URLS, require_quietly  # noqa: E402

from edaenv.brokers.base import Endpoint, Message  # noqa: E402
from edaenv.brokers.kafka import BINDING as KAFKA  # noqa: E402
from edaenv.brokers.nats import BINDING as NATS  # noqa: E402
from edaenv.brokers.nats import nats_subject  # noqa: E402
from edaenv.brokers.rabbitmq import BINDING as AMQP  # noqa: E402
from edaenv.brokers.registry import connect  # noqa: E402
from edaenv.events.contracts import load_contract  # noqa: E402
from edaenv.events.envelope import Envelope  # noqa: E402
from edaenv.events.generate import generator  # noqa: E402

EDAENV = str(Path(sys.executable).with_name("edaenv"))


class Clock:
    """Wall time, the process's CPU time (every thread: the client library's own too) and the
    calling thread's CPU time, from start to stop(): cpu / wall is how many cores the loop kept
    busy, thread / wall how much of the one Python thread (which holds the GIL) it used."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.thread = time.perf_counter(), _cpu(), time.thread_time()

    def stop(self) -> Timing:
        return Timing(
            time.perf_counter() - self.wall, _cpu() - self.cpu, time.thread_time() - self.thread
        )


@dataclass
class Timing:
    seconds: float
    cpu: float
    thread: float


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


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


def run_seed(root: Path, count: int) -> tuple[Timing, dict[str, Any]]:
    from typer.testing import CliRunner

    from edaenv.cli.app import app

    cwd = os.getcwd()
    os.chdir(root)
    try:
        clock = Clock()
        result = CliRunner().invoke(app, ["seed", "OrderPlaced", "--count", str(count), "--json"])
        timing = clock.stop()
    finally:
        os.chdir(cwd)
    if result.exit_code != 0:
        raise SystemExit(f"edaenv seed failed: {result.output}")
    return timing, json.loads(result.stdout)


def prepare_only(root: Path, count: int) -> float:
    """Events per second of the command's own per-event work, no broker."""
    from edaenv.application import publishing
    from edaenv.config import load_config

    config = load_config(root / "edaenv.yaml")
    contract = load_contract(next((root / "eda" / "events").glob("*.schema.json")))
    started = time.perf_counter()
    publishing.prepare(config, contract, publishing.generated(contract, count, None))
    return count / (time.perf_counter() - started)


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


def raw_kafka(url: str, batch: list[Message]) -> Timing:
    from confluent_kafka import Producer

    prepared: list[tuple[bytes, bytes, Any]] = [
        (m.value, m.key.encode(), list(KAFKA.headers(m.attributes, m.headers).items()))
        for m in batch
    ]
    topic = batch[0].topic
    acked = [0]

    def done(err: Any, _msg: Any) -> None:
        if err is None:
            acked[0] += 1

    clock = Clock()
    producer = Producer(
        {
            "bootstrap.servers": url,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
        }
    )
    producer.list_topics(timeout=10)  # metadata first, as the adapter does: no first-send stall
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
    timing = clock.stop()
    assert acked[0] == len(batch), acked
    return timing


def raw_rabbitmq(url: str, batch: list[Message]) -> Timing:
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
    clock = Clock()
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
    timing = clock.stop()
    connection.close()
    return timing


def raw_nats(url: str, batch: list[Message]) -> Timing:
    import nats

    prepared = [
        (
            nats_subject(m.topic, m.key),
            m.value,
            {**NATS.headers(m.attributes, m.headers), "Nats-Msg-Id": m.attributes["id"]},
        )
        for m in batch
    ]

    async def go() -> Timing:
        clock = Clock()
        nc = await nats.connect(url)
        js = nc.jetstream(publish_async_max_pending=1000)
        futures = [
            await js.publish_async(subject, body, headers=headers)
            for subject, body, headers in prepared
        ]
        await asyncio.gather(*futures)
        timing = clock.stop()
        await nc.close()
        return timing

    return asyncio.run(go())


RAW = {"kafka": raw_kafka, "rabbitmq": raw_rabbitmq, "nats": raw_nats}


def windowed_vs_single(broker: str, batch: list[Message]) -> tuple[float, float]:
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
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=1000, help="messages for windowed vs 1 ack")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs; best of each")
    parser.add_argument("--brokers", default="kafka,rabbitmq,nats")
    args = parser.parse_args()
    rows = []
    for broker in args.brokers.split(","):
        require_quietly(broker)
        os.environ["EDAENV_BROKER_URL"] = BROKER_URLS[broker]
        root = project(broker)
        try:
            rows.append(measure(broker, root, args.count, args.single, args.repeat))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nedaenv seed vs raw client loop, {args.count} events, best of {args.repeat} "
        "alternating runs (msg/s)"
    )
    header = (
        "broker",
        "seed e2e",
        "seed send",
        "raw",
        "e2e/raw",
        "send/raw",
        "prep/raw",
        "raw cores",
        "raw py",
        "e2e cores",
        "ack p50",
        "ack p99",
        "windowed",
        "1 ack/msg",
        "speed-up",
    )
    print("  ".join(f"{h:>9}" for h in header))
    for row in rows:
        print(
            "  ".join(
                f"{c:>9}" if isinstance(c, str) else f"{c:>9.2f}" if c < 100 else f"{c:>9.0f}"
                for c in row
            )
        )
    print(
        "\nseed e2e: the whole command in-process (config, generate, validate, envelope, "
        "connect, publish); raw: connect + publish pre-built messages; seed send: the "
        "command's publishing loop alone (its summary's msg/s, connection excluded); prep/raw: "
        "the command's per-event work alone (no broker) against raw: e2e/raw's ceiling. "
        "raw cores: the raw loop's process CPU time / wall time (all threads, the client "
        "library's own too; this machine has "
        f"{os.cpu_count()}); raw py: the raw loop's Python thread's CPU time / wall time (the "
        "thread holding the GIL that the command's per-event work would share); e2e cores: the "
        "same as raw cores for the whole command."
    )
    for row in rows:
        broker, ratio, speed_up = row[0], row[4], row[-1]
        verdicts = [
            f"e2e/raw {ratio:.2f} {'met' if ratio >= 0.8 else 'NOT MET'} (goal >= 0.8)",
            f"speed-up {speed_up:.1f} {'met' if speed_up >= 5 else 'NOT MET'} (goal >= 5)",
        ]
        print(f"goals, {broker}: " + "; ".join(verdicts))


def measure(broker: str, root: Path, count: int, single_count: int, repeat: int) -> tuple[Any, ...]:
    best: dict[str, Any] = {
        "seed": 0.0,
        "send": 0.0,
        "prepare": 0.0,
        "raw": 0.0,
        "windowed": 0.0,
        "single": 0.0,
        "p50": None,
        "p99": None,
        "seed_cores": None,
        "raw_cores": None,
        "raw_py": None,
    }
    for _ in range(repeat):
        seed_timing, summary = run_seed(root, count)
        if count / seed_timing.seconds > best["seed"]:
            latency = summary["ack_latency_ms"]
            best.update(
                seed=count / seed_timing.seconds,
                p50=latency["p50"],
                p99=latency["p99"],
                seed_cores=seed_timing.cpu / seed_timing.seconds,
            )
        best["send"] = max(best["send"], summary["msg_per_s"])
        best["prepare"] = max(best["prepare"], prepare_only(root, count))
        batch = messages(root, summary["topic"], count)
        raw = RAW[broker](BROKER_URLS[broker], batch)
        if count / raw.seconds > best["raw"]:
            best.update(
                raw=count / raw.seconds,
                raw_cores=raw.cpu / raw.seconds,
                raw_py=raw.thread / raw.seconds,
            )
        fresh = messages(root, summary["topic"], single_count)  # new ids: no de-duplication
        windowed, single = windowed_vs_single(broker, fresh)
        best["windowed"] = max(best["windowed"], windowed)
        best["single"] = max(best["single"], single)
    return (
        broker,
        best["seed"],
        best["send"],
        best["raw"],
        best["seed"] / best["raw"],
        best["send"] / best["raw"],
        best["prepare"] / best["raw"],
        best["raw_cores"],
        best["raw_py"],
        best["seed_cores"],
        best["p50"],
        best["p99"],
        best["windowed"],
        best["single"],
        best["windowed"] / best["single"],
    )


if __name__ == "__main__":
    main()
