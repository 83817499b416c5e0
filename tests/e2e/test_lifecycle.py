"""`edaenv up/status/env/logs/down` on a real Docker engine, with real clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import MakeStack, Stack

pytestmark = pytest.mark.engine
SMALL = ("postgres", "prometheus")


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def check_postgres(env: dict[str, str]) -> None:
    """psql, a real third-party client, reaches the DSN and sees the outbox migration."""
    url = env["EDAENV_DATABASE_URL"]
    assert urlsplit(url).hostname == "127.0.0.1"
    query = "select count(*) from outbox; select count(*) from processed_events"
    result = subprocess.run(
        ["psql", url, "-tA", "-c", query], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0"]


def check_kafka(env: dict[str, str]) -> None:
    """kafka-python, an independent client, bootstraps from the host listener, creates a topic,
    produces and reads back: metadata must advertise the published 127.0.0.1 port."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    bootstrap = env["EDAENV_BROKER_URL"]
    assert bootstrap.startswith("127.0.0.1:")
    topic, payload = f"e2e-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex.encode()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        producer.send(topic, key=b"k", value=payload).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        values: list[bytes] = []
        for _ in range(20):
            for records in consumer.poll(timeout_ms=1000).values():
                values += [record.value for record in records]
            if values:
                break
    finally:
        consumer.close()
    assert values == [payload]


def check_rabbitmq(env: dict[str, str]) -> None:
    """amqp-tools publish to the topic exchange from the contracts and get the message back from
    the consumer queue bound to it; the management API answers with the same credentials."""
    url = env["EDAENV_BROKER_URL"]
    body = uuid.uuid4().hex
    sent = subprocess.run(
        [
            "amqp-publish",
            f"--url={url}",
            "--exchange=orders",
            "--routing-key=e2e",
            f"--body={body}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    got = subprocess.run(
        ["amqp-get", f"--url={url}", "--queue=orders.consumer"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == body
    parts = urlsplit(url)
    assert parts.username and parts.password
    status, raw = http_get(
        f"{env['EDAENV_RABBITMQ_MANAGEMENT_URL']}/api/whoami", auth=(parts.username, parts.password)
    )
    assert status == 200 and json.loads(raw)["name"] == parts.username


def check_nats(env: dict[str, str]) -> None:
    """The monitor says JetStream is up; nats-py logs in with the .env credentials."""
    status, raw = http_get(f"{env['EDAENV_NATS_MONITOR_URL']}/healthz?js-enabled-only=true")
    assert status == 200 and json.loads(raw)["status"] == "ok"

    async def round_trip() -> bytes:
        import nats

        client = await nats.connect(
            env["EDAENV_BROKER_URL"], connect_timeout=10, allow_reconnect=False
        )
        try:
            subscription = await client.subscribe("e2e.check")
            await client.publish("e2e.check", b"ping")
            message = await subscription.next_msg(timeout=10)
            return bytes(message.data)
        finally:
            await client.close()

    assert asyncio.run(round_trip()) == b"ping"


def check_prometheus(env: dict[str, str]) -> None:
    status, _ = http_get(f"{env['EDAENV_PROMETHEUS_URL']}/-/ready")
    assert status == 200


BROKER_CHECKS: dict[str, Callable[[dict[str, str]], None]] = {
    "kafka": check_kafka,
    "redpanda": check_kafka,
    "rabbitmq": check_rabbitmq,
    "nats": check_nats,
}


def assert_all_healthy(stack: Stack, services: set[str]) -> None:
    status = stack.status()
    states = {s["service"]: s for s in status["services"]}
    assert status["healthy"] is True, status
    assert set(states) == services
    for name, state in states.items():
        assert (state["state"], state["health"]) == ("running", "healthy"), name
        assert state["container"].startswith(f"{stack.project}-")
        assert {port["host_ip"] for port in state["ports"]} == {"127.0.0.1"}, name


def assert_nothing_left(stack: Stack) -> None:
    assert stack.containers() == []
    assert stack.networks() == []
    assert stack.volumes() == []


@pytest.mark.parametrize("broker", ["kafka", "rabbitmq", "nats", "redpanda"])
def test_up_serves_every_endpoint_and_down_leaves_nothing(
    make_stack: MakeStack, broker: str
) -> None:
    stack = make_stack(broker, SMALL)
    result = stack.up("--timeout", "120")
    assert f"stack '{stack.project}' healthy in" in result.err
    for service in ("broker", "postgres", "prometheus"):
        assert f"{service:<12} healthy" in result.err  # one progress line per state change
    env = stack.env()
    assert "****" in result.out and env["EDAENV_DATABASE_URL"] not in result.out
    assert env["EDAENV_PROMETHEUS_URL"] in result.out

    assert_all_healthy(stack, {"broker", "postgres", "prometheus"})
    check_postgres(env)
    BROKER_CHECKS[broker](env)
    check_prometheus(env)
    logs = stack.edaenv("logs", "postgres", "--tail", "200")
    assert logs.code == 0 and "ready to accept connections" in logs.out

    again = stack.up()  # idempotent: its own ports are not "in use"
    assert "healthy in" in again.err

    down = stack.edaenv("down", "--volumes")
    assert down.code == 0, down.text
    assert "volume(s) deleted" in down.err
    assert_nothing_left(stack)
    after = stack.edaenv("status", "--json")
    assert after.code == 1 and json.loads(after.out)["services"] == []


def test_up_one_service_and_env_for_a_shell(make_stack: MakeStack) -> None:
    stack = make_stack("nats", SMALL)
    stack.up("postgres", "--timeout", "120")
    status = stack.edaenv("status", "--json")
    data = json.loads(status.out)
    assert status.code == 1  # broker and prometheus are not up: not all healthy
    assert [s["service"] for s in data["services"]] == ["postgres"]
    assert sorted(data["missing"]) == ["broker", "prometheus"]
    # `set -a; eval "$(edaenv env)"` exports exactly what `env --json` says.
    shell = subprocess.run(
        ["bash", "-c", f'set -a; eval "$({sys.executable} -m edaenv env)"; env'],
        cwd=stack.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    exported = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    for key, value in stack.env().items():
        assert exported[key] == value
    check_postgres(exported)


def test_a_healthy_service_is_checked_rarely_and_a_restarted_one_every_second(
    make_stack: MakeStack,
) -> None:
    """Each health check costs the engine a `runc exec` (~14 ms of CPU): once a service is
    healthy its checks must be rare (Docker 25+: start_interval; older engines: the gate of
    engine/compose.py, which sleeps inside the container), yet a restarted container is
    checked every second again until it is healthy. Counted from the engine's own events."""
    stack = make_stack("nats", SMALL)
    stack.up("postgres", "--timeout", "120")
    (container,) = stack.containers()

    def checks(since: float, until: float) -> list[float]:
        """When the engine started a health check in the container, from its events."""
        events = stack.client.events(
            since=since, until=until, decode=True, filters={"container": container.id}
        )
        return [e["timeNano"] / 1e9 for e in events if e["Action"].startswith("exec_start")]

    healthy_at = time.time()
    time.sleep(25)
    rare = checks(healthy_at, time.time())
    assert len(rare) <= 2, f"{len(rare)} checks in 25 s of a healthy service"
    assert all(b - a >= 10 for a, b in itertools.pairwise(rare)), rare

    container.restart(timeout=0)
    restarted = time.time()
    container.reload()
    while container.attrs["State"].get("Health", {}).get("Status") != "healthy":
        assert time.time() - restarted < 15, "not healthy again within 15 s of a restart"
        time.sleep(0.2)
        container.reload()
    assert time.time() - restarted < 15
    frequent = checks(restarted, time.time())  # every second until healthy
    assert frequent and frequent[0] - restarted < 3, (frequent, restarted)
    assert all(b - a < 3 for a, b in itertools.pairwise(frequent)), frequent


def test_two_stacks_side_by_side(make_stack: MakeStack) -> None:
    first, second = make_stack("nats", SMALL), make_stack("nats", SMALL)
    assert first.offset != second.offset
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: s.edaenv("up", "--timeout", "120"), [first, second]))
    for result in results:
        assert result.code == 0, result.text
    envs = [first.env(), second.env()]
    assert envs[0]["EDAENV_DATABASE_URL"] != envs[1]["EDAENV_DATABASE_URL"]
    for stack, env in zip([first, second], envs, strict=True):
        assert_all_healthy(stack, {"broker", "postgres", "prometheus"})
        check_postgres(env)
        check_nats(env)

    assert first.edaenv("down", "--volumes").code == 0
    assert_nothing_left(first)
    assert_all_healthy(second, {"broker", "postgres", "prometheus"})


def test_busy_port_is_named_and_nothing_starts(make_stack: MakeStack) -> None:
    stack = make_stack("nats", SMALL)
    port = urlsplit(stack.env()["EDAENV_DATABASE_URL"]).port
    assert port is not None
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = stack.edaenv("up", "--timeout", "60")
    assert result.code == 4, result.text
    assert f"port {port} for postgres is already in use" in result.err
    assert "offset:" in result.err and "edaenv.yaml" in result.err
    assert "Traceback" not in result.text
    assert_nothing_left(stack)


def test_no_engine_fails_fast(
    make_stack: MakeStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = make_stack("nats", SMALL)
    dead = tmp_path_factory.mktemp("dead") / "docker.sock"
    for command in (["up"], ["status"], ["down"]):
        result = stack.edaenv(*command, env={"DOCKER_HOST": f"unix://{dead}"}, timeout=60)
        assert result.code == 4, result.text
        assert f"no Docker engine answers at unix://{dead}" in result.err
        assert "hint:" in result.err and "Traceback" not in result.text
        assert result.seconds < 5
    assert_nothing_left(stack)


def test_service_never_healthy_fails_within_timeout_and_shows_why(make_stack: MakeStack) -> None:
    stack = make_stack("nats", ("postgres", "outbox"))
    stack.override(
        "services:\n"
        "  postgres:\n"
        "    healthcheck:\n"
        '      test: ["CMD-SHELL", "echo e2e: deliberately unhealthy; exit 1"]\n'
    )
    result = stack.edaenv("up", "--timeout", "8", timeout=120)
    assert result.code == 1, result.text
    assert result.seconds < 8 + 20
    assert "postgres, relay did not become healthy within 8s (still starting)" in result.err
    # The relay needs postgres healthy: compose never started it.
    assert "relay: not started: it waits for postgres, still starting" in result.err
    assert "e2e: deliberately unhealthy" in result.err  # its health check output
    assert "last log lines:" in result.err and "Traceback" not in result.text
    status = stack.status()
    assert status["healthy"] is False
    assert {s["service"]: s["health"] for s in status["services"]}["postgres"] != "healthy"


def test_volume_with_other_credentials_warns(make_stack: MakeStack) -> None:
    stack = make_stack("nats", ("postgres",))
    stack.up("--timeout", "120")
    assert stack.edaenv("down").code == 0  # volumes kept
    env_file = stack.scaffold / ".env"
    lines = env_file.read_text().splitlines()
    env_file.write_text(
        "\n".join(
            "POSTGRES_PASSWORD=changed-after-first-up"
            if line.startswith("POSTGRES_PASSWORD=")
            else line
            for line in lines
        )
        + "\n"
    )
    result = stack.up("--timeout", "120")
    assert f"{stack.project}_postgres-data created with other credentials" in result.err
    assert "edaenv down --volumes" in result.err
    # The record lives in the git-ignored .generated/ (0600), never in compose.yaml.
    record = stack.scaffold / ".generated" / "volumes" / f"{stack.project}.json"
    assert record.stat().st_mode & 0o777 == 0o600
    assert b"\n  postgres-data: {}\n" in (stack.scaffold / "compose.yaml").read_bytes()  # no label
    # The fix the warning gives works: a fresh volume takes the current .env, no warning.
    assert stack.edaenv("down", "--volumes").code == 0
    assert "other credentials" not in stack.up("--timeout", "120").err
    assert "other credentials" not in stack.up("--timeout", "120").err


@pytest.mark.full_stack
def test_full_stack_all_but_grafana(make_stack: MakeStack) -> None:
    components = ("postgres", "outbox", "consumer", "jaeger", "prometheus")
    stack = make_stack("kafka", components)
    stack.up("--timeout", "300", timeout=900)
    assert_all_healthy(stack, {"broker", "postgres", "relay", "consumer", "jaeger", "prometheus"})
    env = stack.env()
    check_postgres(env)
    check_kafka(env)
    for variable in ("EDAENV_RELAY_METRICS_URL", "EDAENV_CONSUMER_METRICS_URL"):
        assert http_get(f"{env[variable]}/healthz")[0] == 200
    assert http_get(f"{env['EDAENV_JAEGER_URL']}/api/services")[0] == 200
    check_outbox_to_consumer_in_one_trace(stack, env)
    assert stack.edaenv("down", "--volumes").code == 0
    assert_nothing_left(stack)


def check_outbox_to_consumer_in_one_trace(stack: Stack, env: dict[str, str]) -> None:
    """`publish --via-outbox` reaches the consumer through the relay, and Jaeger holds one trace
    with the commit, the relay's publish and the consumer's handling."""
    data = {"orderId": str(uuid.uuid4()), "customerId": "c-e2e", "total": 12.5}
    published = stack.edaenv(
        "publish", "OrderPlaced", "--via-outbox", "--json", "--data", json.dumps(data)
    )
    assert published.code == 0, published.text
    event_id = json.loads(published.out)["id"]
    url = env["EDAENV_DATABASE_URL"]

    def query(sql: str) -> str:
        result = subprocess.run(
            ["psql", url, "-tA", "-c", sql], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    traceparent = query(f"select headers->>'traceparent' from outbox where id = '{event_id}'")
    trace_id = traceparent.split("-")[1]
    services: set[str] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        processed = query(f"select count(*) from processed_events where event_id = '{event_id}'")
        if processed == "1":
            try:  # 404 until the first span of the trace arrives
                body = http_get(f"{env['EDAENV_JAEGER_URL']}/api/traces/{trace_id}")[1]
            except urllib.error.HTTPError:
                body = b'{"data": []}'
            traces = json.loads(body)["data"]
            services = {p["serviceName"] for t in traces for p in t["processes"].values()}
            if {"edaenv-publish", "relay", "consumer"} <= services:
                return
        time.sleep(1)
    raise AssertionError(
        f"event {event_id}: processed={processed}, services in trace {trace_id}: {services}"
    )
