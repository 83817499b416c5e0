"""The outbox relay at its edges, through the code users run (`edaenv relay`, `edaenv bundle`,
`python -m edaenv.outbox` as the stack's relay container runs it), against the native
PostgreSQL and the native brokers:

- a database whose encoding is SQL_ASCII;
- rows it cannot publish (no contract, a payload breaking its contract, too large, headers that
  are no object): reported by status' and bundle's functions and the relay's metrics, holding
  back only their own aggregate;
- an unversioned event type, published as the contract's latest version with its dataschema;
- published_at is the broker's acknowledgement time;
- the metrics endpoint's address, the relay's log, and spans whose parents exist.

Projects are made by `edaenv init --port-offset 3000`: the stack's ports + 3000 are the native
test services' (tests/services.env).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from events_support import BROKER_URLS, require
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from outbox_support import (
    INSERT,
    SERVICES,
    event_row,
    fresh_database,
    make_broker,
    new_topic,
    own_tansu,
    pg_url,
    use_test_database,
)

from edaenv.config import load_config
from edaenv.outbox import stuck
from edaenv.outbox.relay import Relay

pytestmark = [pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "templates/scaffold/template/db/migrations"
EDAENV = str(Path(sys.executable).with_name("edaenv"))
OFFSET = 3000
PYTHON = sys.executable


# --- projects and databases -----------------------------------------------------------------------


@dataclass
class Repo:
    root: Path
    broker: str
    topic: str
    url: str  # its database

    @property
    def events(self) -> Path:
        return self.root / "eda" / "events"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDAENV_")}
        env.update(COLUMNS="250", NO_COLOR="1", EDAENV_BROKER_URL=BROKER_URLS[self.broker])
        return {**env, **(extra or {})}

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [EDAENV, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=180,
        )
        assert result.returncode == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def insert(self, *rows: tuple[Any, ...]) -> None:
        with connect(self.url) as conn, conn.cursor() as cur:
            cur.executemany(INSERT, rows)

    def unpublished(self) -> set[str]:
        with connect(self.url) as conn:
            found = conn.execute("SELECT id::text FROM outbox WHERE published_at IS NULL")
            return {row[0] for row in found.fetchall()}

    def tail(self, *args: str) -> list[dict[str, Any]]:
        out = self.run("tail", self.topic, "--no-follow", "--json", *args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, client_encoding="UTF8")


@contextlib.contextmanager
def database(*migrations: str, encoding: str | None = None) -> Iterator[str]:
    """A new database on the native server with the scaffold's migrations named; dropped
    afterwards."""
    require("postgres")
    name = f"edaenv_edges_{uuid.uuid4().hex[:12]}"
    create = f'CREATE DATABASE "{name}"'
    if encoding:
        create += f" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    admin_url = pg_url(SERVICES["EDAENV_TEST_PG_DB"])
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(create.encode())
    url = pg_url(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in migrations:
                conn.execute((MIGRATIONS / migration).read_bytes())
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def make_repo(tmp_path: Path, url: str, broker: str = "kafka", *flags: str) -> Repo:
    require(broker)
    topic = new_topic()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    repo = Repo(tmp_path, broker, topic, url)
    repo.run(
        "init",
        "--defaults",
        "--broker",
        broker,
        "--topic",
        topic,
        "--port-offset",
        str(OFFSET),
        *flags,
    )
    use_test_database(tmp_path / "eda" / ".env", url)
    return repo


def order_row(
    aggregate: str,
    *,
    event_type: str = "OrderPlaced.v1",
    data: dict[str, Any] | None = None,
    headers: str | None = None,
) -> tuple[Any, ...]:
    event_id = uuid.uuid4()
    payload = data or {"orderId": str(uuid.uuid4()), "customerId": "c-1", "total": 10.5}
    return (
        event_id,
        "Order",
        aggregate,
        event_type,
        # Characters beyond ASCII as they are: a SQL_ASCII database refuses jsonb's \u escapes
        # of them (PostgreSQL cannot convert those to its encoding).
        json.dumps(payload, ensure_ascii=False),
        headers if headers is not None else json.dumps({"id": str(event_id)}),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_address(pid: int, port: int) -> str:
    """The local address a process listens on for a TCP port, from the kernel's socket table:
    nothing is sent anywhere."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port_hex = fields[1].split(":")
        if fields[3] == "0A" and int(port_hex, 16) == port and fields[9] in inodes:
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"process {pid} does not listen on port {port}")


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.2)


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


class RelayService:
    """`python -m edaenv.outbox`, configured by the environment exactly as the stack's relay
    container is (compose-fragments/relay.yaml.j2)."""

    def __init__(self, repo: Repo, **extra: str):
        self.port = free_port()
        env = repo.env(
            {
                "EDAENV_BROKER": repo.broker,
                "EDAENV_BROKER_URL": BROKER_URLS[repo.broker],
                "EDAENV_DATABASE_URL": repo.url,
                "EDAENV_EVENTS_DIR": str(repo.events),
                "EDAENV_METRICS_PORT": str(self.port),
                "OTEL_TRACES_EXPORTER": "none",
                **extra,
            }
        )
        self.process = subprocess.Popen(
            [PYTHON, "-m", "edaenv.outbox"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: self.poll() or self.metrics(), 60, "the relay serves /metrics")

    def poll(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the relay exited: {self.process.communicate()}")
        return False

    def metrics(self) -> str | None:
        return http_get(f"http://127.0.0.1:{self.port}/metrics")

    def stuck_gauge(self) -> dict[str, float]:
        text = self.metrics() or ""
        values = {}
        for line in text.splitlines():
            if line.startswith("edaenv_outbox_stuck_rows{"):
                labels, _, value = line.rpartition(" ")
                values[labels.split('"')[1]] = float(value)
        return values

    def stop(self) -> str:
        """SIGTERM; the relay's log (stderr)."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        return err


# --- the database's encoding ----------------------------------------------------------------------


@pytest.mark.kafka
def test_a_sql_ascii_database_is_relayed(tmp_path: Path) -> None:
    # A cluster initialised without a UTF-8 locale makes SQL_ASCII databases: psycopg then
    # gives text columns as bytes, unless the connection asks for UTF-8.
    with database("001_outbox.sql", "002_outbox_stuck.sql", encoding="SQL_ASCII") as url:
        with psycopg.connect(url) as conn:
            # The bug itself: text comes as bytes.
            assert conn.execute("SHOW server_encoding").fetchone() == (b"SQL_ASCII",)
        repo = make_repo(tmp_path, url)
        data = {"orderId": str(uuid.uuid4()), "customerId": "Zoë", "total": 3}
        rows = [order_row(f"order-{i}", data=data if i == 0 else None) for i in range(5)]
        repo.insert(*rows)
        result = repo.run("relay", "--once", "--json")
        assert json.loads(result.stdout) == {"published": 5, "stuck": {"total": 0, "rows": []}}
        assert repo.unpublished() == set()
    events = repo.tail()
    assert sorted(e["attributes"]["id"] for e in events) == sorted(str(r[0]) for r in rows)
    assert {e["attributes"]["type"] for e in events} == {"OrderPlaced.v1"}
    assert [e["data"] for e in events if e["key"] == "order-0"] == [data]


# --- rows the relay cannot publish ----------------------------------------------------------------


def test_rows_it_cannot_publish_are_reported_and_hold_back_only_their_aggregate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database made by the first migration only, as before outbox_stuck existed: the relay
    # creates the table.
    with database("001_outbox.sql") as url:
        repo = make_repo(tmp_path, url, "kafka", "--without", "jaeger")
        bad = {
            "no-type": order_row("agg-no-type", event_type="OrderShipped"),
            "no-version": order_row("agg-no-version", event_type="OrderPlaced.v9"),
            "invalid": order_row(
                "agg-invalid",
                data={"orderId": str(uuid.uuid4()), "customerId": "c-2", "total": -5},
            ),
            "too-large": order_row("agg-too-large", headers=json.dumps({"x-big": "x" * 1_100_000})),
            "bad-headers": order_row("agg-bad-headers", headers="[]"),
        }
        behind = {name: order_row(str(row[2])) for name, row in bad.items()}
        good = [order_row(f"agg-ok-{i % 3}") for i in range(6)]
        repo.insert(*bad.values(), *behind.values(), *good)
        service = RelayService(repo)
        try:
            waiting = {str(r[0]) for r in (*bad.values(), *behind.values())}
            wait_for(lambda: repo.unpublished() == waiting, 30, "the good rows published")
            gauge = {
                "no-contract": 2.0,
                "invalid-payload": 1.0,
                "too-large": 1.0,
                "bad-headers": 1.0,
            }
            wait_for(lambda: service.stuck_gauge() == gauge, 30, f"the gauge at {gauge}")

            # What `edaenv status` shows: the rows, each with its reason.
            monkeypatch.delenv("EDAENV_DATABASE_URL", raising=False)
            report = stuck.read_stack(load_config(repo.root / "edaenv.yaml"))
            assert report is not None and report.total == 5
            found = {row.id: row for row in report.rows}
            assert set(found) == {str(row[0]) for row in bad.values()}
            invalid = found[str(bad["invalid"][0])]
            assert (invalid.reason, invalid.pointer, invalid.rule) == (
                "invalid-payload",
                "/total",
                "minimum",
            )
            assert invalid.detail == (
                "the payload breaks OrderPlaced.v1 at /total: -5 is less than the minimum of 0 "
                "(rule 'minimum')"
            )
            assert invalid.hint.endswith("OrderPlaced.v1.schema.json#/properties/total/minimum")
            assert found[str(bad["no-version"][0])].detail == (
                "no contract for event type 'OrderPlaced.v9': OrderPlaced has OrderPlaced.v1"
            )
            assert found[str(bad["no-type"][0])].detail == (
                "no contract for event type 'OrderShipped'; contracts: OrderPlaced.v1"
            )
            assert found[str(bad["too-large"][0])].detail.endswith(
                "more than kafka accepts (1000000 bytes)"
            )
            assert found[str(bad["bad-headers"][0])].reason == "bad-headers"
            assert {row.waiting for row in report.rows} == {1}
            assert {row.reason for row in report.rows} == {*gauge}

            # What `edaenv bundle` keeps.
            repo.run("bundle", "bundle")
            outbox = json.loads((repo.root / "bundle" / "outbox.json").read_text())
            assert outbox["stuck"]["total"] == 5
            assert {row["id"] for row in outbox["stuck"]["rows"]} == set(found)
            summary = (repo.root / "bundle" / "summary.md").read_text()
            assert "- rows the relay cannot publish: 5\n" in summary
            assert f"  - {invalid.id} (OrderPlaced.v1): invalid-payload: {invalid.detail}\n" in (
                summary
            )

            # Corrected in place, the row goes out at the next check, and the one behind it.
            with psycopg.connect(url) as conn:
                conn.execute(
                    "UPDATE outbox SET payload = jsonb_set(payload, '{total}', '5') WHERE id = %s",
                    (bad["invalid"][0],),
                )
            waiting -= {str(bad["invalid"][0]), str(behind["invalid"][0])}
            wait_for(lambda: repo.unpublished() == waiting, 30, "the corrected row published")
            wait_for(
                lambda: service.stuck_gauge() == {**gauge, "invalid-payload": 0.0},
                30,
                "the gauge down",
            )
        finally:
            log = service.stop()
        # One error line per stuck row, however often the relay looked at it again.
        for name, row in bad.items():
            assert log.count(f"cannot publish outbox row {row[0]}") == 1, name

        # `relay --once` says what it could not publish, and fails.
        result = repo.run("relay", "--once", "--json", code=1)
        assert json.loads(result.stdout)["published"] == 0
        assert json.loads(result.stdout)["stuck"]["total"] == 4
        text = repo.run("relay", "--once", code=1)
        assert "4 outbox row(s) cannot be published" in text.stderr
        assert f"row {bad['no-type'][0]} (Order 'agg-no-type', 'OrderShipped'): no-contract" in (
            text.stderr
        )
    events = repo.tail()
    published = {e["attributes"]["id"] for e in events}
    assert published == {str(r[0]) for r in (*good, bad["invalid"], behind["invalid"])}


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=70,
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 2_000_000),
    st.floats(-10, 2e6, allow_nan=False),
    TEXT,
    st.uuids().map(str),
)


@st.composite
def orders(draw: st.DrawFn) -> dict[str, Any]:
    """OrderPlaced data, valid or not: each field right, wrong or missing, sometimes more."""
    right = {
        "orderId": st.uuids().map(str),
        "customerId": st.text(min_size=1, max_size=64),
        "total": st.floats(0, 1e6, allow_nan=False),
    }
    # Each field right 2 times in 3, missing 1 in 10; another field 1 in 4.
    fields = {name: draw(st.one_of(good, good, VALUES)) for name, good in right.items()}
    kept = {k: v for k, v in fields.items() if draw(st.integers(0, 9))}
    more = draw(st.dictionaries(TEXT, VALUES, max_size=2)) if not draw(st.integers(0, 3)) else {}
    return {**kept, **more}


@pytest.fixture(scope="module")
def checked() -> Iterator[tuple[str, Relay, dict[str, Any]]]:
    """A relay routing by the scaffold's contract, on a database and topic of its own."""
    import jinja2

    from edaenv.events.contracts import load_contract
    from edaenv.outbox.relay import contract_router

    require("kafka")
    template = ROOT / "templates/scaffold/template/events/OrderPlaced.v1.schema.json.jinja"
    topic = new_topic()
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        path = directory / "OrderPlaced.v1.schema.json"
        text = jinja2.Template(template.read_text()).render(project="p", topic=topic, owner="o")
        path.write_text(text)
        contract = load_contract(path)
        url = stack.enter_context(database("001_outbox.sql"))
        broker = make_broker()
        stack.callback(broker.close)
        relay = Relay(url, broker, route=contract_router([contract]), topics=[topic])
        stack.callback(relay.close)
        yield url, relay, contract.schema


@pytest.mark.kafka
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(data={"orderId": "not-a-uuid", "customerId": "c", "total": 1})
@example(data={"orderId": str(uuid.UUID(int=2)), "customerId": "Zoë", "total": 0})
@example(data={"orderId": str(uuid.UUID(int=1)), "customerId": "c", "total": 1, "x": None})
@given(data=orders())
def test_the_relay_publishes_exactly_the_payloads_its_contract_accepts(
    checked: tuple[str, Relay, dict[str, Any]], data: dict[str, Any]
) -> None:
    import jsonschema

    url, relay, schema = checked
    row = order_row(f"agg-{uuid.uuid4().hex}", data=data)
    with connect(url) as conn:
        conn.execute(INSERT, row)
        [stored] = conn.execute("SELECT payload::text FROM outbox WHERE id = %s", (row[0],))
    payload = json.loads(stored[0])  # as the relay reads it, after jsonb
    published = relay.relay_batch()
    cls = jsonschema.validators.validator_for(schema)
    valid = cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(payload)
    assert published == int(valid), (payload, valid)
    event("valid" if valid else "invalid")
    if valid:
        return
    with connect(url) as conn:
        [found] = [r for r in stuck.report(conn, limit=1000).rows if r.id == str(row[0])]
    assert (found.reason, found.waiting) == ("invalid-payload", 0)
    assert found.pointer is not None and found.rule is not None
    target: Any = payload  # the pointer leads to a place in the payload
    for part in found.pointer.split("/")[1:]:
        target = target[part.replace("~1", "/").replace("~0", "~")]
    assert found.rule in json.dumps(schema)
    assert found.detail.startswith(f"the payload breaks OrderPlaced.v1 at {found.pointer or '/'}")


def test_the_relay_creates_the_table_as_the_migration_does() -> None:
    columns = """
        SELECT column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_name = 'outbox_stuck' ORDER BY column_name
    """
    with database("001_outbox.sql", "002_outbox_stuck.sql") as url, psycopg.connect(url) as conn:
        migrated = conn.execute(columns).fetchall()
    with database("001_outbox.sql") as url, psycopg.connect(url, autocommit=True) as conn:
        stuck.ensure_table(conn)
        stuck.ensure_table(conn)  # again: nothing to do
        created = conn.execute(columns).fetchall()
        # The migration applied after the relay made the table: nothing to do either.
        conn.execute((MIGRATIONS / "002_outbox_stuck.sql").read_bytes())
    assert len(migrated) == 7 and created == migrated


@pytest.mark.kafka
def test_a_role_that_may_not_create_the_table_is_told_how_to_fix_it(tmp_path: Path) -> None:
    role, password = f"edaenv_relay_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin_url = pg_url(SERVICES["EDAENV_TEST_PG_DB"])
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'".encode())
    try:
        with database("001_outbox.sql") as url:
            with psycopg.connect(url, autocommit=True) as owner:
                # What a service's role may do: write and read the outbox, not create tables.
                owner.execute(f"GRANT SELECT, UPDATE, DELETE ON outbox TO {role}".encode())
            repo = make_repo(tmp_path, url)
            env_file = repo.root / "eda" / ".env"
            env_file.write_text(
                env_file.read_text()
                .replace(
                    f"POSTGRES_USER={SERVICES['EDAENV_TEST_PG_USER']}", f"POSTGRES_USER={role}"
                )
                .replace(
                    f"POSTGRES_PASSWORD={SERVICES['EDAENV_TEST_PG_PASSWORD']}",
                    f"POSTGRES_PASSWORD={password}",
                )
            )
            repo.insert(order_row("order-1"))
            refused = repo.run("relay", "--once", code=2)
            assert refused.stderr.startswith(
                f"error: the database role '{role}' may not create the table outbox_stuck"
            )
            assert "hint: apply db/migrations/002_outbox_stuck.sql as the database's owner" in (
                refused.stderr
            )
            with psycopg.connect(url, autocommit=True) as owner:
                owner.execute((MIGRATIONS / "002_outbox_stuck.sql").read_bytes())
                grant = f"GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_stuck TO {role}"
                owner.execute(grant.encode())
            done = repo.run("relay", "--once", "--json")
            assert json.loads(done.stdout)["published"] == 1
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}".encode())


# --- what a row is published as -------------------------------------------------------------------


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
def test_an_unversioned_event_type_goes_out_as_its_latest_version(
    tmp_path: Path, broker: str
) -> None:
    with database("001_outbox.sql", "002_outbox_stuck.sql") as url:
        repo = make_repo(tmp_path, url, broker)
        v1 = json.loads((repo.events / "OrderPlaced.v1.schema.json").read_text())
        v2 = json.loads(json.dumps(v1))
        v2["$id"] = v1["$id"].replace(":v1", ":v2")
        v2["x-edaenv"]["version"] = 2
        v2["properties"]["currency"] = {"type": "string", "minLength": 3, "maxLength": 3}
        v2["required"].append("currency")
        (repo.events / "OrderPlaced.v2.schema.json").write_text(json.dumps(v2))
        data = {"orderId": str(uuid.uuid4()), "customerId": "c-1", "total": 1, "currency": "EUR"}
        # Written by hand, as the README allows: unversioned type, no CloudEvents headers.
        unversioned = order_row("order-a", event_type="OrderPlaced", data=data, headers="{}")
        versioned = order_row("order-b")
        repo.insert(unversioned, versioned)
        result = repo.run("relay", "--once", "--json")
        assert json.loads(result.stdout)["published"] == 2
    [latest] = repo.tail("--type", "OrderPlaced.v2")
    assert latest["attributes"]["id"] == str(unversioned[0])
    assert latest["attributes"]["type"] == "OrderPlaced.v2"
    assert latest["attributes"]["dataschema"] == v2["$id"]
    assert latest["data"] == data
    [first] = repo.tail("--type", "OrderPlaced.v1")
    assert first["attributes"]["id"] == str(versioned[0])
    assert first["attributes"]["dataschema"] == v1["$id"]


def stopped(pid: int) -> None:
    """Returns once every thread of `pid` is stopped (a stop signal reaches a process's threads
    one by one): a thread still running could answer a request sent after the signal."""
    deadline = time.monotonic() + 5
    while True:
        states = {
            (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            for task in Path(f"/proc/{pid}/task").iterdir()
        }
        if states == {"T"}:
            return
        assert time.monotonic() < deadline, f"process {pid} not stopped: thread states {states}"
        time.sleep(0.01)


@pytest.mark.kafka
def test_published_at_is_when_the_broker_acknowledged() -> None:
    # Our own broker, stopped (SIGSTOP) while the relay publishes: the acknowledgement comes
    # only once it runs again, seconds after the row was claimed.
    topic = new_topic()
    with fresh_database() as url, own_tansu() as tansu:
        broker = make_broker(tansu.bootstrap, timeout=30)
        relay = Relay(url, broker, route=lambda row: topic, topics=[topic])
        try:
            with psycopg.connect(url) as conn:
                conn.execute(INSERT, event_row("order-warm", 0))
            assert relay.relay_batch() == 1  # connections and topic ready
            row = event_row("order-paused", 0)
            with psycopg.connect(url) as conn:
                conn.execute(INSERT, row)
            os.kill(tansu.process.pid, signal.SIGSTOP)
            stopped(tansu.process.pid)
            published: list[int] = []
            worker = threading.Thread(target=lambda: published.append(relay.relay_batch()))
            worker.start()
            time.sleep(2.0)  # below librdkafka's socket timeout (3 s) in make_broker
            resumed = datetime.now(UTC)
            os.kill(tansu.process.pid, signal.SIGCONT)
            worker.join(60)
            returned = datetime.now(UTC)
            assert published == [1]
        finally:
            os.kill(tansu.process.pid, signal.SIGCONT)
            relay.close()
            broker.close()
        with psycopg.connect(url) as conn:
            found = conn.execute(
                "SELECT created_at, published_at FROM outbox WHERE id = %s", (row[0],)
            ).fetchone()
    assert found is not None
    created, published_at = found
    assert created < resumed <= published_at <= returned, (created, resumed, published_at)


# --- the metrics endpoint, the log, the trace -----------------------------------------------------


@pytest.mark.kafka
def test_relay_metrics_listen_on_127_0_0_1_by_default(tmp_path: Path) -> None:
    with database("001_outbox.sql", "002_outbox_stuck.sql") as url:
        repo = make_repo(tmp_path, url)
        port = free_port()
        process = subprocess.Popen(
            [EDAENV, "relay", "--metrics-port", str(port)],
            cwd=repo.root,
            env=repo.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz"), 60, "/healthz")
            assert listening_address(process.pid, port) == "127.0.0.1"
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err

        # The stack's relay container: the compose file gives it 0.0.0.0, for Prometheus on
        # the compose network (the port is published on the host's 127.0.0.1 only).
        compose = yaml.safe_load((repo.root / "eda" / "compose.yaml").read_text())
        for role in ("relay", "consumer"):
            environment = compose["services"][role]["environment"]
            assert environment["EDAENV_METRICS_HOST"] == "0.0.0.0"
            assert all(p.startswith("127.0.0.1:") for p in compose["services"][role]["ports"])
        inside = RelayService(repo, EDAENV_METRICS_HOST="0.0.0.0")
        try:
            assert listening_address(inside.process.pid, inside.port) == "0.0.0.0"
        finally:
            inside.stop()
        alone = RelayService(repo)
        try:
            assert listening_address(alone.process.pid, alone.port) == "127.0.0.1"
        finally:
            alone.stop()


@pytest.mark.rabbitmq
def test_the_relay_log_has_no_client_library_chatter(tmp_path: Path) -> None:
    with database("001_outbox.sql", "002_outbox_stuck.sql") as url:
        repo = make_repo(tmp_path, url, "rabbitmq")
        repo.insert(order_row("order-1"))
        service = RelayService(repo)
        try:
            wait_for(lambda: not repo.unpublished(), 30, "the row published")
        finally:
            log = service.stop()
    infos = [line for line in log.splitlines() if " INFO " in line]
    # pika logs every connection step and channel at INFO; only the relay's own lines remain.
    assert infos and all(" INFO relay: " in line for line in infos), log


@pytest.mark.kafka
def test_every_span_of_an_outbox_event_has_its_parent_in_the_trace(tmp_path: Path) -> None:
    with database("001_outbox.sql", "002_outbox_stuck.sql") as url:
        repo = make_repo(tmp_path, url)
        config = load_config(repo.root / "edaenv.yaml")
        with otlp_collector(config.ports()["jaeger"]["otlp-http"]) as spans:
            data = {"orderId": str(uuid.uuid4()), "customerId": "c-1", "total": 2}
            repo.run("publish", "OrderPlaced", "--via-outbox", "--data", json.dumps(data))
            endpoint = f"http://127.0.0.1:{config.ports()['jaeger']['otlp-http']}"
            service = RelayService(
                repo, OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint
            )
            try:
                wait_for(lambda: not repo.unpublished(), 30, "the row published")
            finally:
                service.stop()  # flushes the relay's spans
    names = {span["name"]: span for span in spans}
    commit, relay = names["outbox commit OrderPlaced.v1"], names[f"{repo.topic} publish"]
    assert relay["trace"] == commit["trace"] and relay["parent"] == commit["span"]
    known = {(span["trace"], span["span"]) for span in spans}
    orphans = [s for s in spans if s["parent"] and (s["trace"], s["parent"]) not in known]
    assert not orphans, orphans


@contextlib.contextmanager
def otlp_collector(port: int) -> Iterator[list[dict[str, str]]]:
    """A stand-in for Jaeger's OTLP/HTTP receiver on 127.0.0.1: the spans it was sent."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        spans.append(
                            {
                                "name": span.name,
                                "trace": span.trace_id.hex(),
                                "span": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                            }
                        )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield spans
    finally:
        server.shutdown()
        server.server_close()
