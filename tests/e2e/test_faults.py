"""`edaenv inject` against a real engine.

Part 1 needs only the engine: container faults on a small compose project that carries the
stack's project name and role names (faults find containers by those compose labels).
Part 2 runs the full stack with the real relay and consumer (marked full_stack: they run last).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, run_edaenv, run_user_pytest

pytestmark = pytest.mark.engine

PLAIN_COMPOSE = """
services:
  broker:
    image: {image}
    command: ["python3", "-m", "http.server", "8000"]
    healthcheck:
      test: ["CMD", "python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000')"]
      interval: 1s
      timeout: 3s
      retries: 30
  consumer:
    image: {image}
    command: ["python3", "-m", "http.server", "8000"]
    healthcheck:
      test: ["CMD", "python3", "-c", "import socket; socket.gethostbyname('broker')"]
      interval: 1s
      timeout: 3s
      retries: 30
"""


@dataclass
class PlainStack:
    root: Path
    project: str

    def edaenv(self, *args: str, timeout: float = 120) -> Result:
        return run_edaenv(*args, cwd=self.root, timeout=timeout)

    def ok(self, *args: str, timeout: float = 120) -> Result:
        result = self.edaenv(*args, timeout=timeout)
        assert result.code == 0, f"edaenv {' '.join(args)} failed:\n{result.out}\n{result.err}"
        return result

    def container(self, role: str) -> dict:
        out = docker(
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={role}",
        )
        return json.loads(docker("inspect", out.split()[0]))[0]

    def resolves(self, role: str, name: str) -> bool:
        probe = subprocess.run(
            [
                "docker",
                "exec",
                self.container(role)["Id"],
                "python3",
                "-c",
                f"import socket; socket.gethostbyname({name!r})",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return probe.returncode == 0

    def wait_healthy(self, role: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.container(role)["State"]
            if state["Status"] == "running" and state.get("Health", {}).get("Status") == "healthy":
                return
            time.sleep(0.5)
        raise AssertionError(f"{role} not healthy after {timeout}s: {state}")


def docker(*args: str, timeout: float = 180) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"docker {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def python_image() -> str:
    from tests.images.standins import ensure_images

    return ensure_images(["python"])["python"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, docker_engine: object) -> Iterator[PlainStack]:
    root = tmp_path_factory.mktemp("plain")
    project = f"edaenv-faults-{uuid.uuid4().hex[:8]}"
    init = run_edaenv(
        "init",
        "--defaults",
        "--name",
        project,
        "--without",
        "grafana",
        "--without",
        "prometheus",
        cwd=root,
    )
    assert init.code == 0, init.err
    compose = root / "plain-compose.yaml"
    compose.write_text(PLAIN_COMPOSE.format(image=python_image()))
    base = ["compose", "-p", project, "-f", str(compose)]
    docker(*base, "up", "-d", "--wait", timeout=300)
    stack = PlainStack(root, project)
    try:
        yield stack
    finally:
        stack.edaenv("inject", "heal", "--all")
        docker(*base, "down", "-v", "--timeout", "1")


@pytest.fixture
def healthy(plain: PlainStack) -> Iterator[PlainStack]:
    yield plain
    plain.ok("inject", "heal", "--all")
    for role in ("broker", "consumer"):
        plain.wait_healthy(role)


def active(stack: PlainStack) -> list[dict]:
    return json.loads(stack.ok("inject", "status", "--json").out)


def test_kill_is_recorded_and_start_resolves_it(healthy: PlainStack) -> None:
    fault = json.loads(healthy.ok("inject", "kill", "consumer", "--json").out)
    assert healthy.container("consumer")["State"]["Status"] == "exited"
    assert [(f["id"], f["kind"], f["target"]) for f in active(healthy)] == [
        (fault["id"], "kill", "consumer")
    ]
    again = healthy.edaenv("inject", "kill", "consumer")
    assert again.code != 0 and "already has an active kill fault" in again.err
    assert "Traceback" not in again.err
    healthy.ok("inject", "start", "consumer")
    assert healthy.container("consumer")["State"]["Status"] == "running"
    assert active(healthy) == []


def test_pause_heals_by_itself_with_for(healthy: PlainStack) -> None:
    fault = json.loads(healthy.ok("inject", "pause", "broker", "--for", "2s", "--json").out)
    assert healthy.container("broker")["State"]["Status"] == "paused"
    assert fault["until"] and fault["healer_pid"]
    deadline = time.monotonic() + 30
    while active(healthy) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert active(healthy) == []
    assert healthy.container("broker")["State"]["Status"] == "running"


def test_partition_and_heal_restores_the_service_alias(healthy: PlainStack) -> None:
    assert healthy.resolves("broker", "consumer")
    healthy.ok("inject", "partition", "consumer")
    assert healthy.container("consumer")["NetworkSettings"]["Networks"] == {}
    assert not healthy.resolves("consumer", "broker")
    assert "disconnected from" in healthy.ok("inject", "status").out
    healthy.ok("inject", "heal", "consumer")
    # Other containers find it by its role name again, and it finds them.
    assert healthy.resolves("broker", "consumer")
    assert healthy.resolves("consumer", "broker")


def test_heal_all_undoes_every_fault_and_gives_addresses_back(healthy: PlainStack) -> None:
    def address(role: str) -> str:
        networks = healthy.container(role)["NetworkSettings"]["Networks"]
        return next(iter(networks.values()))["IPAddress"]

    before = {role: address(role) for role in ("broker", "consumer")}
    low, high = sorted(before, key=lambda role: tuple(map(int, before[role].split("."))))
    # Newest first would restart `high` first, and docker gives it the lowest free address:
    # the one `low` gave up.
    healthy.ok("inject", "partition", low)
    healthy.ok("inject", "stop", high, "--timeout", "1")
    healthy.ok("inject", "pause", low)
    assert {f["kind"] for f in active(healthy)} == {"partition", "pause", "stop"}
    healed = json.loads(
        healthy.ok("inject", "heal", "--all", "--wait", "--timeout", "60", "--json").out
    )
    assert [(f["kind"], f["target"]) for f in healed] == [
        ("partition", low),
        ("stop", high),
        ("pause", low),
    ]
    assert active(healthy) == []
    assert {role: address(role) for role in before} == before
    assert healthy.container("consumer")["State"]["Health"]["Status"] == "healthy"
    assert healthy.resolves("consumer", "broker")


def test_bad_fault_input_is_a_clear_error(healthy: PlainStack) -> None:
    unknown = healthy.edaenv("inject", "kill", "brokr")
    assert unknown.code == 2 and "no service 'brokr'" in unknown.err and "broker" in unknown.err
    duration = healthy.edaenv("inject", "pause", "broker", "--for", "soon")
    assert duration.code == 2 and "'soon' is not a duration" in duration.err
    assert healthy.container("broker")["State"]["Status"] == "running"
    nothing = healthy.edaenv("inject", "heal")
    assert nothing.code == 2 and "--all" in nothing.err
    assert "Traceback" not in unknown.err + duration.err + nothing.err


def test_bundle_collects_what_it_can_while_things_are_broken(
    healthy: PlainStack, tmp_path: Path
) -> None:
    fault = json.loads(healthy.ok("inject", "pause", "consumer", "--json").out)
    out = tmp_path / "bundle"
    result = healthy.ok("bundle", str(out))
    assert "bundle written" in result.err
    states = {s["service"]: s["state"] for s in json.loads((out / "status.json").read_text())}
    assert states == {"broker": "running", "consumer": "paused"}
    assert '"GET / HTTP/1.1" 200' in (out / "logs" / "broker.log").read_text()
    faults = json.loads((out / "faults.json").read_text())
    assert [f["id"] for f in faults["active"]] == [fault["id"]]
    summary = (out / "summary.md").read_text()
    # This stack has no postgres and no broker: those parts are reported, not fatal.
    assert "## Not collected" in summary and "- outbox:" in summary
    assert f"- {fault['id']}: pause consumer" in summary


# --- Part 2: the full stack (broker, postgres, relay, consumer, jaeger) ---------------------
#
# One stack for the module, reused by every test and healed between them. Events enter the way
# applications write them: rows in the outbox table, published by the relay.

FULL_BROKER = os.environ.get("EDAENV_E2E_FAULTS_BROKER", "kafka")
FULL = pytest.mark.full_stack


@pytest.fixture(scope="module")
def full(
    tmp_path_factory: pytest.TempPathFactory, docker_engine: Any, stack_images: dict[str, str]
) -> Iterator[Any]:
    from tests.e2e.conftest import Stack, claim_offset, use_images

    project = f"e2e-faults-{uuid.uuid4().hex[:6]}"
    offset, slot = claim_offset()
    root = tmp_path_factory.mktemp(project)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    stack = Stack(
        root,
        project,
        FULL_BROKER,
        ("postgres", "outbox", "consumer", "jaeger"),
        offset,
        docker_engine,
        slot,
    )
    try:
        init = stack.edaenv(
            "init",
            "--defaults",
            f"--broker={FULL_BROKER}",
            f"--name={project}",
            f"--port-offset={offset}",
            "--without=prometheus",
            "--without=grafana",
        )
        assert init.code == 0, init.text
        use_images(stack, stack_images)
        stack.up("--timeout", "300", timeout=900)
        stack.dsn = stack.env()["EDAENV_DATABASE_URL"]
        assert_flows(stack)
        yield stack
    finally:
        stack.edaenv("inject", "heal", "--all")
        stack.destroy()


@pytest.fixture
def stack(full: Any) -> Iterator[Any]:
    """The full stack, healthy before and after the test."""
    yield full
    healed = full.edaenv("inject", "heal", "--all", "--wait", "--timeout", "180", timeout=300)
    assert healed.code == 0, healed.text
    try:
        assert_flows(full)
    except AssertionError as exc:
        evidence = failure_evidence(full)
        # Reported for this test; the next ones get fresh relay and consumer processes.
        for role in ("relay", "consumer"):
            full.edaenv("inject", "restart", role)
        raise AssertionError(f"{exc}\n{evidence}") from None


def failure_evidence(stack: Any) -> str:
    """The failure bundle's summary and the relay's and consumer's last log lines."""
    out = stack.root / f"bundle-{uuid.uuid4().hex[:6]}"
    stack.edaenv("bundle", str(out))
    parts = [(out / "summary.md").read_text() if (out / "summary.md").is_file() else ""]
    for role in ("relay", "consumer"):
        log = out / "logs" / f"{role}.log"
        if log.is_file():
            parts.append(f"--- {role} log ---\n" + "\n".join(log.read_text().splitlines()[-25:]))
    return "\n".join(parts)


def assert_flows(stack: Any) -> None:
    """An event goes through outbox, relay, broker and consumer. Also waits out the consumer's
    group join, slow on the Kafka stand-in (Tansu), so that faults hit a settled stack."""
    wait_processed(stack.dsn, insert_orders(stack.dsn, 1), timeout=240)


def insert_orders(dsn: str, count: int, *, key: str | None = None) -> list[str]:
    """Outbox rows as the application writes them; returns their ids (the event ids)."""
    import psycopg

    ids = [str(uuid.uuid4()) for _ in range(count)]
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cursor,
        cursor.copy(
            "COPY outbox (id, aggregate_type, aggregate_id, event_type, payload) FROM STDIN"
        ) as copy,
    ):
        for event_id in ids:
            order = key or str(uuid.uuid4())
            payload = {"orderId": order, "customerId": "c-e2e", "total": 10.5}
            copy.write_row((event_id, "Order", order, "OrderPlaced", json.dumps(payload)))
    return ids


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def processed_count(dsn: str, ids: list[str]) -> int:
    return int(
        query(dsn, "SELECT count(*) FROM processed_events WHERE event_id = ANY(%s)", ids)[0][0]
    )


def wait_processed(dsn: str, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = processed_count(dsn, ids)
        if done == len(ids):
            return
        time.sleep(1)
    raise AssertionError(f"{done} of {len(ids)} events processed after {timeout:g}s")


def assert_one_effect_each(dsn: str, ids: list[str]) -> None:
    rows = query(
        dsn,
        "SELECT event_id, count(*) FROM order_confirmations "
        "WHERE event_id = ANY(%s) GROUP BY event_id",
        ids,
    )
    counts = dict(rows)
    assert set(counts) == set(ids), f"{len(set(ids) - set(counts))} events have no effect"
    twice = {k: v for k, v in counts.items() if v != 1}
    assert not twice, f"events with more than one effect: {list(twice.items())[:5]}"


def wait_no_faults(stack: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if json.loads(stack.edaenv("inject", "status", "--json").out) == []:
            return
        time.sleep(0.5)
    raise AssertionError(f"faults still active after {timeout:g}s")


@FULL
def test_consumer_killed_during_a_5k_seed_processes_every_event_once(stack: Any) -> None:
    ids: list[str] = []
    for batch in range(20):  # 5000 events over a few seconds, the consumer killed early on
        ids += insert_orders(stack.dsn, 250)
        if batch == 4:
            kill = stack.edaenv("inject", "kill", "consumer")
            assert kill.code == 0, kill.text
        time.sleep(0.1)
    assert processed_count(stack.dsn, ids) < len(ids)  # the kill did interrupt the flow
    start = stack.edaenv("inject", "start", "consumer")
    assert start.code == 0, start.text
    wait_processed(stack.dsn, ids, timeout=420)
    assert_one_effect_each(stack.dsn, ids)


@FULL
def test_broker_paused_10s_relay_and_consumer_recover_nothing_lost(stack: Any) -> None:
    before = insert_orders(stack.dsn, 100)
    paused = stack.edaenv("inject", "pause", "broker", "--for", "10s")
    assert paused.code == 0, paused.text
    during = insert_orders(stack.dsn, 400)
    time.sleep(2)
    assert stack.status()["healthy"] is False  # the broker is paused
    wait_no_faults(stack, timeout=30)
    ids = before + during
    wait_processed(stack.dsn, ids, timeout=300)
    assert_one_effect_each(stack.dsn, ids)
    unpublished = query(
        stack.dsn,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND id = ANY(%s::uuid[])",
        ids,
    )[0][0]
    assert unpublished == 0


@FULL
def test_postgres_restarted_relay_and_consumer_connect_again_nothing_lost(stack: Any) -> None:
    import psycopg

    before = insert_orders(stack.dsn, 200)
    restarted = stack.edaenv("inject", "restart", "postgres", "--timeout", "2")
    assert restarted.code == 0, restarted.text
    after: list[str] = []
    deadline = time.monotonic() + 120
    while not after:  # until PostgreSQL takes writes again
        try:
            after = insert_orders(stack.dsn, 200)
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "PostgreSQL did not come back"
            time.sleep(1)
    ids = before + after
    wait_processed(stack.dsn, ids, timeout=300)
    assert_one_effect_each(stack.dsn, ids)
    logs = stack.edaenv("logs", "consumer")
    assert "connecting again" in logs.text, "the consumer did not lose its connection"


@FULL
def test_partitioned_consumer_resolves_the_broker_again_and_drains_the_backlog(stack: Any) -> None:
    cut = stack.edaenv("inject", "partition", "consumer")
    assert cut.code == 0, cut.text
    ids = insert_orders(stack.dsn, 300)
    deadline = time.monotonic() + 120
    while (
        query(
            stack.dsn,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND id = ANY(%s::uuid[])",
            ids,
        )[0][0]
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)  # the relay publishes them: a backlog in the broker
    assert processed_count(stack.dsn, ids) == 0  # the consumer cannot reach anything
    healed = stack.edaenv("inject", "heal", "consumer")
    assert healed.code == 0 and "reconnected with aliases" in healed.text, healed.text
    wait_processed(stack.dsn, ids, timeout=300)
    assert_one_effect_each(stack.dsn, ids)


@FULL
def test_poison_lands_in_the_dead_letters_and_the_flow_goes_on(stack: Any) -> None:
    from edaenv.application import Stack
    from edaenv.config import load_config

    poisoned = []
    for kind in ("unparseable", "invalid"):
        result = stack.edaenv("inject", "poison", "--kind", kind, "--json")
        assert result.code == 0, result.text
        poisoned += json.loads(result.out)["event_ids"]
    after = insert_orders(stack.dsn, 50)
    wait_processed(stack.dsn, after, timeout=180)
    assert_one_effect_each(stack.dsn, after)
    app = Stack(load_config(stack.root / "edaenv.yaml"))
    deadline, found = time.monotonic() + 120, set()
    broker = app.broker()
    try:
        while found != set(poisoned) and time.monotonic() < deadline:
            for delivery in broker.tail(
                app.dead_letter_source("orders"),
                from_beginning=True,
                follow=False,
                idle_timeout=2,
            ):
                if delivery.attributes.get("id") in poisoned:
                    found.add(delivery.attributes["id"])
    finally:
        broker.close()
    assert found == set(poisoned)
    assert (
        query(
            stack.dsn, "SELECT count(*) FROM order_confirmations WHERE event_id = ANY(%s)", poisoned
        )[0][0]
        == 0
    )


@FULL
def test_duplicate_has_one_side_effect(stack: Any) -> None:
    key = str(uuid.uuid4())
    [event_id] = insert_orders(stack.dsn, 1, key=key)
    wait_processed(stack.dsn, [event_id], timeout=120)
    result = stack.edaenv("inject", "duplicate", event_id, "--times", "3", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out)["event_ids"] == [event_id]
    # Same aggregate, so delivered after the duplicates: once it is processed, they were too.
    [sentinel] = insert_orders(stack.dsn, 1, key=key)
    wait_processed(stack.dsn, [sentinel], timeout=120)
    assert_one_effect_each(stack.dsn, [event_id, sentinel])
    missing = stack.edaenv("inject", "duplicate", str(uuid.uuid4()))
    assert missing.code == 2 and "no event with id" in missing.err


@FULL
def test_burst_reorder_and_delay_reach_the_consumer(stack: Any) -> None:
    from edaenv.application import Stack
    from edaenv.config import load_config

    burst = stack.edaenv("inject", "burst", "2000", "--keys", "20", "--json")
    assert burst.code == 0, burst.text
    spike = json.loads(burst.out)
    assert spike["count"] == 2000 and spike["rate"] > 0
    reorder = stack.edaenv("inject", "reorder", "--count", "5", "--json")
    assert reorder.code == 0, reorder.text
    shuffled = json.loads(reorder.out)
    delay = stack.edaenv("inject", "delay", "--by", "4s", "--count", "3", "--json")
    assert delay.code == 0, delay.text
    held = json.loads(delay.out)["event_ids"]
    assert processed_count(stack.dsn, held) == 0
    assert [f["kind"] for f in json.loads(stack.edaenv("inject", "status", "--json").out)] == [
        "delay"
    ]
    wait_processed(stack.dsn, shuffled["event_ids"] + held + [spike["last_id"]], timeout=240)
    wait_no_faults(stack, timeout=30)
    broker = Stack(load_config(stack.root / "edaenv.yaml")).broker()
    try:
        sequence = [
            d.attributes["sequence"]
            for d in broker.tail("orders", from_beginning=True, follow=False, idle_timeout=2)
            if d.key == shuffled["key"]
        ]
    finally:
        broker.close()
    assert sequence == ["5", "4", "3", "2", "1"]  # one aggregate, published last to first


@FULL
def test_bundle_of_the_full_stack(stack: Any, tmp_path: Path) -> None:
    poison = stack.edaenv("inject", "poison", "--json")
    assert poison.code == 0, poison.text
    [poisoned] = json.loads(poison.out)["event_ids"]
    ids = insert_orders(stack.dsn, 5)
    wait_processed(stack.dsn, ids, timeout=180)
    out = tmp_path / "bundle"
    deadline = time.monotonic() + 120
    while True:  # the consumer dead-letters after its retries
        result = stack.edaenv("bundle", str(out))
        assert result.code == 0, result.text
        dead = out / "dead-letters" / "orders.jsonl"
        if (dead.is_file() and poisoned in dead.read_text()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    events = [
        json.loads(line) for line in (out / "events" / "orders.jsonl").read_text().splitlines()
    ]
    assert set(ids) <= {e["attributes"]["id"] for e in events}
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert poisoned in {letter["attributes"]["id"] for letter in letters}
    outbox = json.loads((out / "outbox.json").read_text())
    assert outbox["backlog"] == 0 and outbox["processed_events"]["order-placed-sample"] > 0
    traces = json.loads((out / "traces.json").read_text())
    assert traces and all(len(t["trace_id"]) == 32 and "url" in t for t in traces)
    assert "consuming orders" in (out / "logs" / "consumer.log").read_text()
    assert "## Not collected" not in (out / "summary.md").read_text()


@FULL
def test_heal_all_restores_a_healthy_status(stack: Any) -> None:
    for args in (
        ("pause", "broker"),
        ("kill", "relay"),
        ("partition", "consumer"),
        ("stop", "jaeger"),
    ):
        result = stack.edaenv("inject", *args)
        assert result.code == 0, result.text
    assert stack.edaenv("status").code == 1
    assert len(json.loads(stack.edaenv("inject", "status", "--json").out)) == 4
    healed = stack.edaenv("inject", "heal", "--all", "--wait", "--timeout", "180", timeout=300)
    assert healed.code == 0, healed.text
    status = stack.edaenv("status", "--json")
    assert status.code == 0 and json.loads(status.out)["healthy"] is True, status.text
    ids = insert_orders(stack.dsn, 20)
    wait_processed(stack.dsn, ids, timeout=180)


@FULL
def test_plugin_reuses_a_running_stack_and_leaves_it_running(stack: Any) -> None:
    result = run_plugin_project(stack.root)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout
    assert stack.status()["healthy"] is True


@FULL
def test_plugin_brings_a_stack_up_and_tears_down_what_it_started(make_stack: Any) -> None:
    small = make_stack(FULL_BROKER, ("postgres",))
    result = run_plugin_project(small.root, "-k", "not consumer")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
    assert small.containers() == [] and small.volumes() == [] and small.networks() == []
    assert not (small.scaffold / ".generated" / "pytest-stack.json").exists()


def run_plugin_project(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tests = root / "tests"
    tests.mkdir(exist_ok=True)
    source = Path(__file__).resolve().parents[1] / "plugin_project" / "test_with_edaenv.py"
    (tests / source.name).write_text(source.read_text())
    return run_user_pytest(root, tests, "--edaenv-timeout", "300", *args, timeout=900)
