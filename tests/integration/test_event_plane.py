"""`edaenv publish`, `seed` and `tail` against real brokers: one behaviour suite, run for Kafka
(Tansu), RabbitMQ and NATS JetStream, plus interoperability with third-party clients."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from events_support import DATABASE_URL, EDAENV, Project, make_project, require

ORDER = "6d3a1c39-2a3b-4c1e-9b43-0d4c3f1f6e11"


def order(order_id: str = ORDER, total: float = 10.5) -> dict[str, Any]:
    return {"orderId": order_id, "customerId": "c-1", "total": total}


def publish(project: Project, data: dict[str, Any], *extra: str) -> dict[str, Any]:
    out = project.ok("publish", "OrderPlaced", "--data", json.dumps(data), "--json", *extra)
    return json.loads(out)


# --- the behaviour suite: every broker ---------------------------------------------------------


def test_publish_then_tail_carries_every_cloudevents_attribute(event_project: Project) -> None:
    sent = publish(
        event_project, order(), "--header", "correlationid=flow-42", "-H", "x-tenant=acme"
    )
    assert sent["key"] == ORDER and sent["topic"] == event_project.topic
    assert sent["position"]["latency_ms"] >= 0

    [got] = [r for r in event_project.tail() if r["attributes"].get("id") == sent["id"]]
    attributes = got["attributes"]
    assert attributes["type"] == "OrderPlaced.v1"
    assert attributes["specversion"] == "1.0"
    assert attributes["source"].startswith("/edaenv/")
    assert attributes["subject"] == ORDER
    assert attributes["datacontenttype"] == "application/json"
    assert attributes["dataschema"].endswith(":events:OrderPlaced:v1")
    assert datetime.fromisoformat(attributes["time"].replace("Z", "+00:00")).tzinfo is not None
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", attributes["traceparent"])
    assert attributes["correlationid"] == "flow-42"
    assert got["headers"]["x-tenant"] == "acme"
    assert got["key"] == ORDER
    assert got["data"] == order()
    if event_project.broker != "rabbitmq":  # RabbitMQ confirms carry no position; tail has its own
        shared = set(sent["position"]) & set(got["position"])
        assert shared and all(sent["position"][k] == got["position"][k] for k in shared)


def test_events_of_one_key_arrive_in_order(event_project: Project, tmp_path: Path) -> None:
    keys = [str(uuid.uuid4()) for _ in range(3)]
    lines = [json.dumps(order(keys[i % 3], total=float(i))) for i in range(90)]
    (tmp_path / "orders.jsonl").write_text("\n".join(lines) + "\n")
    summary = json.loads(
        event_project.ok("seed", "OrderPlaced", "--from-file", "orders.jsonl", "--json")
    )
    assert summary["acknowledged"] == 90 and summary["failed"] == 0

    seen: dict[str, list[float]] = {k: [] for k in keys}
    for record in event_project.tail():
        seen[record["key"]].append(record["data"]["total"])
    for key in keys:
        assert seen[key] == sorted(seen[key]) and len(seen[key]) == 30, key


def test_invalid_input_publishes_nothing(event_project: Project, tmp_path: Path) -> None:
    publish(event_project, order())  # the topic exists, with one event

    bad = event_project.run("publish", "OrderPlaced", "--data", json.dumps(order(total=-1)))
    assert bad.returncode == 2
    assert "--data#/total" in bad.stderr and "'minimum'" in bad.stderr

    missing_key = event_project.run("publish", "OrderPlaced", "--data", '{"customerId": "c"}')
    assert missing_key.returncode == 2 and "'orderId' is a required property" in missing_key.stderr

    malformed = event_project.run("publish", "OrderPlaced", "--data", '{"orderId": ')
    assert malformed.returncode == 2 and "not valid JSON" in malformed.stderr

    unknown = event_project.run("publish", "OrderShipped", "--data", "{}")
    assert unknown.returncode == 2 and "unknown event type 'OrderShipped'" in unknown.stderr

    lines = [json.dumps(order(str(uuid.uuid4()))) for _ in range(5)]
    lines[3] = '{"orderId": "x", '
    (tmp_path / "broken.jsonl").write_text("\n".join(lines) + "\n")
    broken = event_project.run("seed", "OrderPlaced", "--from-file", "broken.jsonl")
    assert broken.returncode == 2 and "broken.jsonl:4" in broken.stderr

    lines[3] = json.dumps(order(str(uuid.uuid4()), total=2_000_000))
    (tmp_path / "invalid.jsonl").write_text("\n".join(lines) + "\n")
    invalid = event_project.run("seed", "OrderPlaced", "--from-file", "invalid.jsonl")
    assert invalid.returncode == 2 and "invalid.jsonl:4#/total" in invalid.stderr

    for result in (bad, missing_key, malformed, unknown, broken, invalid):
        assert "Traceback" not in result.stderr
    assert len(event_project.tail()) == 1


def test_data_from_stdin_or_a_file_and_an_explicit_key(
    event_project: Project, tmp_path: Path
) -> None:
    piped = event_project.run(
        "publish", "OrderPlaced", "-", "--key", "k-explicit", input=json.dumps(order())
    )
    assert piped.returncode == 0, piped.stderr
    event_id, where = piped.stdout.split(" ", 1)
    assert where.startswith(f"-> {event_project.topic} ")
    (tmp_path / "order.json").write_text(json.dumps(order(total=3), indent=2))
    from_file = json.loads(
        event_project.ok("publish", "OrderPlaced", "--file", "order.json", "--json")
    )
    records = {r["attributes"]["id"]: r for r in event_project.tail()}
    assert records[event_id]["key"] == "k-explicit"
    assert records[event_id]["attributes"]["subject"] == "k-explicit"
    assert records[from_file["id"]]["data"]["total"] == 3


def test_ctrl_c_stops_seed_cleanly_and_reports_what_was_acknowledged(
    event_project: Project,
) -> None:
    publish(event_project, order())  # topology in place, so the seed starts sending at once
    process = subprocess.Popen(
        [EDAENV, "seed", "OrderPlaced", "--count", "20000", "--rate", "400", "--json"],
        cwd=event_project.root,
        env=event_project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(event_project.tail()) < 50 and time.monotonic() < deadline:
        time.sleep(0.2)  # until it is sending (generating 20000 events comes first)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] and 0 < summary["acknowledged"] < 20000
    assert "Traceback" not in err and "interrupted" in err
    assert summary["acknowledged"] <= len(event_project.tail()) - 1 <= summary["sent"]


def test_tail_follows_new_events_until_ctrl_c(event_project: Project) -> None:
    publish(event_project, order())  # the topic exists before tail attaches
    process = subprocess.Popen(
        [EDAENV, "tail", event_project.topic, "--json"],
        cwd=event_project.root,
        env=event_project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    sent: set[str] = set()
    seen: set[str] = set()
    pending = b""
    deadline = time.monotonic() + 60
    while not sent & seen and time.monotonic() < deadline:
        # Published until one shows up: tail starts at the end, whenever it is attached.
        sent.add(publish(event_project, order(str(uuid.uuid4())))["id"])
        time.sleep(0.5)
        try:
            pending += os.read(fd, 1 << 20)
        except BlockingIOError:
            continue
        *lines, pending = pending.split(b"\n")
        seen.update(json.loads(line)["attributes"]["id"] for line in lines if line)
    time.sleep(2)  # idle: still following
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert sent & seen, err.decode()
    assert process.returncode in (0, 130) and b"Traceback" not in err


def test_tail_leaves_no_trace(event_project: Project) -> None:
    from edaenv.brokers.base import Endpoint
    from edaenv.brokers.registry import connect

    summary = json.loads(
        event_project.ok("seed", "OrderPlaced", "--count", "40", "--random-seed", "7", "--json")
    )
    assert summary["acknowledged"] == 40
    first = [r["attributes"]["id"] for r in event_project.tail()]
    second = [r["attributes"]["id"] for r in event_project.tail()]
    assert len(first) == 40 and sorted(first) == sorted(second)

    broker = connect(Endpoint(broker=event_project.broker, url=event_project.url))
    try:
        _assert_untouched(event_project, broker)
        subscription = broker.subscribe(event_project.topic, f"g-{uuid.uuid4().hex[:8]}")
        got: list[str] = []
        deadline = time.monotonic() + 60
        while len(got) < 40 and time.monotonic() < deadline:
            for delivery in subscription.fetch(100, 1.0):
                got.append(delivery.attributes["id"])
                subscription.ack(delivery)
        subscription.close()
        assert sorted(got) == sorted(first)
    finally:
        broker.close()


def _assert_untouched(project: Project, broker: Any) -> None:
    """Nothing of the tails is left on the broker."""
    if project.broker == "kafka":
        from confluent_kafka.admin import AdminClient

        groups = (
            AdminClient({"bootstrap.servers": project.url})
            .list_consumer_groups(request_timeout=10)
            .result()
            .valid
        )
        assert not [g.group_id for g in groups if g.group_id.startswith("edaenv-tail")]
    elif project.broker == "rabbitmq":
        channel = broker.connection.channel()
        queue = channel.queue_declare(f"{project.topic}.consumer", passive=True)
        assert queue.method.message_count == 40  # still all there for the consumer
        channel.close()
    else:
        from edaenv.brokers.nats import nats_stream

        info = broker._run(broker.js.stream_info(nats_stream(project.topic)))
        assert info.state.consumer_count == 0


def test_unreachable_broker_fails_fast_naming_the_endpoint(event_project: Project) -> None:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = {
        "kafka": f"127.0.0.1:{port}",
        "rabbitmq": f"amqp://u:p@127.0.0.1:{port}/%2F",
        "nats": f"nats://127.0.0.1:{port}",
    }[event_project.broker]
    started = time.monotonic()
    result = event_project.run(
        "publish", "OrderPlaced", "--data", json.dumps(order()), env={"EDAENV_BROKER_URL": url}
    )
    assert time.monotonic() - started < 20
    assert result.returncode == 3
    assert f"cannot reach {event_project.broker} at 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_tail_of_a_missing_topic_says_so(event_project: Project) -> None:
    result = event_project.run("tail", "no-such-topic", "--no-follow")
    assert result.returncode == 3 and "no-such-topic" in result.stderr
    assert "Traceback" not in result.stderr


def test_tail_filters_by_type_key_and_limit(event_project: Project) -> None:
    other = str(uuid.uuid4())
    for key in (ORDER, other, ORDER):
        publish(event_project, order(key))
    assert [r["key"] for r in event_project.tail("--key", other)] == [other]
    assert len(event_project.tail("--type", "OrderPlaced", "--limit", "2")) == 2
    assert event_project.tail("--type", "OrderCancelled") == []


@pytest.mark.kafka
@pytest.mark.nats
@pytest.mark.parametrize("broker", ["kafka", "nats"])
def test_message_too_large_is_refused_before_sending(broker: str, tmp_path: Path) -> None:
    """Kafka and NATS accept about 1 MiB (RabbitMQ 128 MiB, too much to build in a test)."""
    project = make_project(tmp_path, broker)
    schema = json.loads((tmp_path / "eda/events/OrderPlaced.v1.schema.json").read_text())
    schema["properties"]["note"] = {"type": "string"}
    (tmp_path / "eda/events/OrderPlaced.v1.schema.json").write_text(json.dumps(schema))
    publish(project, order())
    (tmp_path / "big.json").write_text(json.dumps({**order(), "note": "x" * 1_100_000}))
    result = project.run("publish", "OrderPlaced", "--file", "big.json")
    assert result.returncode == 2 and "more than the broker accepts" in result.stderr
    assert len(project.tail()) == 1


# --- the outbox ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_publish_via_outbox_writes_one_row_with_the_envelope(tmp_path: Path) -> None:
    import psycopg

    require("postgres")
    project = make_project(tmp_path, "kafka")
    schema = f"s_{uuid.uuid4().hex[:10]}"
    migration = (tmp_path / "eda/db/migrations/001_outbox.sql").read_text()
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute(migration)
    url = f"{DATABASE_URL}?options=-csearch_path%3D{schema}"
    try:
        result = project.run(
            "publish",
            "OrderPlaced",
            "--data",
            json.dumps(order()),
            "--via-outbox",
            "--json",
            env={"EDAENV_DATABASE_URL": url},
        )
        assert result.returncode == 0, result.stderr
        sent = json.loads(result.stdout)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT id::text, aggregate_id, event_type, payload, headers FROM outbox"
            ).fetchall()
        assert len(rows) == 1
        row_id, aggregate, event_type, payload, headers = rows[0]
        assert (row_id, aggregate, event_type) == (sent["id"], ORDER, "OrderPlaced.v1")
        assert payload == order()
        assert headers["id"] == sent["id"] and headers["subject"] == ORDER
        assert headers["traceparent"].startswith("00-") and headers["correlationid"]

        from edaenv.events.envelope import message_from_outbox

        message = message_from_outbox(project.topic, aggregate, json.dumps(payload), headers)
        assert message.attributes["type"] == "OrderPlaced.v1" and message.key == ORDER
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# --- interoperability with third-party clients ---------------------------------------------------


@pytest.mark.kafka
def test_kafka_python_and_the_cloudevents_sdk_read_what_publish_wrote(tmp_path: Path) -> None:
    from cloudevents.core.bindings import kafka as ce_kafka
    from kafka import KafkaConsumer, KafkaProducer

    project = make_project(tmp_path, "kafka")
    sent = publish(project, order())
    consumer = KafkaConsumer(
        project.topic,
        bootstrap_servers=project.url,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    records = [r for r in consumer if dict(r.headers).get("ce_id") == sent["id"].encode()]
    consumer.close()
    assert len(records) == 1
    record = records[0]
    headers = dict(record.headers)
    assert record.key == ORDER.encode()
    assert (
        headers["ce_type"] == b"OrderPlaced.v1" and headers["content-type"] == b"application/json"
    )
    event = ce_kafka.from_binary(
        ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value), JSONFormat()
    )
    assert event.get_id() == sent["id"] and event.get_subject() == ORDER
    assert event.get_data() == order()
    assert event.get_extension("correlationid") == sent["id"]

    producer = KafkaProducer(bootstrap_servers=project.url)
    producer.send(
        project.topic,
        key=b"k-3p",
        value=b'{"from": "kafka-python"}',
        headers=[
            ("ce_id", b"3p-1"),
            ("ce_type", b"Foreign.v1"),
            ("ce_specversion", b"1.0"),
            ("ce_source", b"/kafka-python"),
        ],
    ).get(10)
    producer.close()
    [foreign] = [r for r in project.tail() if r["key"] == "k-3p"]
    assert foreign["attributes"]["id"] == "3p-1" and foreign["data"] == {"from": "kafka-python"}


@pytest.mark.rabbitmq
def test_amqp_tools_read_what_publish_wrote_and_tail_shows_theirs(tmp_path: Path) -> None:
    from cloudevents.core.bindings import amqp as ce_amqp

    project = make_project(tmp_path, "rabbitmq")
    sent = publish(project, order())
    url = project.url.replace("/%2F", "")
    got = subprocess.run(
        [shutil.which("amqp-get") or "amqp-get", "--url", url, "-q", f"{project.topic}.consumer"],
        capture_output=True,
        timeout=30,
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == order()

    done = subprocess.run(
        [
            shutil.which("amqp-publish") or "amqp-publish",
            "--url",
            url,
            "-e",
            project.topic,
            "-r",
            "k-amqp",
            "-C",
            "application/json",
            "-H",
            "cloudEvents_id: amqp-1",
            "-H",
            "cloudEvents_type: Foreign.v1",
            "-b",
            '{"from": "amqp-publish"}',
        ],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    records = project.tail()
    [foreign] = [r for r in records if r["key"] == "k-amqp"]
    assert foreign["attributes"]["id"] == "amqp-1" and foreign["data"] == {"from": "amqp-publish"}

    [ours] = [r for r in records if r["attributes"].get("id") == sent["id"]]
    properties = {
        f"cloudEvents_{k}": v for k, v in ours["attributes"].items() if k != "datacontenttype"
    }
    event = ce_amqp.from_binary(
        ce_amqp.AMQPMessage(
            properties={"content-type": "application/json"},
            application_properties=properties,
            application_data=json.dumps(ours["data"]).encode(),
        ),
        JSONFormat(),
    )
    assert event.get_id() == sent["id"] and event.get_type() == "OrderPlaced.v1"


@pytest.mark.nats
def test_a_plain_nats_subscriber_and_the_cloudevents_sdk_read_what_publish_wrote(
    tmp_path: Path,
) -> None:
    import asyncio

    import nats
    from cloudevents.core.bindings import http as ce_http

    project = make_project(tmp_path, "nats")
    sent = publish(project, order())

    async def read() -> Any:
        nc = await nats.connect(project.url)
        js = nc.jetstream()
        sub = await js.subscribe(f"{project.topic}.>", ordered_consumer=True)
        msg = await sub.next_msg(timeout=10)
        await nc.close()
        return msg

    msg = asyncio.run(read())
    assert msg.subject == f"{project.topic}.{ORDER}"
    assert msg.headers["Nats-Msg-Id"] == sent["id"]
    message = ce_http.HTTPMessage(headers=dict(msg.headers), body=msg.data)
    event = ce_http.from_binary(message, JSONFormat())
    assert event.get_id() == sent["id"] and event.get_data() == order()
