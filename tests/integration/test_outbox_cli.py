"""`edaenv relay --once` and `edaenv dlq list | show | replay`, as a user runs them: a repository
made by `edaenv init`, its ports moved onto the native test services (offset 3000), edaenv's
own Kafka adapter, real PostgreSQL and Tansu."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from outbox_support import (
    SERVICES,
    fresh_database,
    new_topic,
    read_all,
    require_port,
    use_test_database,
)

from edaenv.brokers.base import Delivery, Endpoint
from edaenv.outbox import dlq

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]
EDAENV = str(Path(sys.executable).parent / "edaenv")
OFFSET = 3000  # stack defaults + 3000 = the native test services' ports (tests/services.env)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """(repository, topic, database url)."""
    assert int(SERVICES["EDAENV_TEST_PG_PORT"]) == 5432 + OFFSET
    assert int(SERVICES["EDAENV_TEST_KAFKA_PORT"]) == 9092 + OFFSET
    require_port("the Kafka-protocol broker (Tansu)", 9092 + OFFSET)
    topic = new_topic()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run(
        tmp_path,
        "init",
        "--defaults",
        "--topic",
        topic,
        "--port-offset",
        str(OFFSET),
        "--without",
        "jaeger",
    )  # its UI port would pass 65535
    with fresh_database() as url:
        use_test_database(tmp_path / "eda" / ".env", url)
        yield tmp_path, topic, url


def run(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDAENV_")}
    env["COLUMNS"] = "250"  # rich wraps tables to the terminal width
    result = subprocess.run(
        [EDAENV, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == code, (result.stdout, result.stderr)
    return result


def order(n: int) -> dict[str, object]:
    """Data of the scaffold's OrderPlaced.v1 contract (the relay checks it)."""
    return {"orderId": str(uuid.uuid4()), "customerId": f"c-{n}", "total": n}


def test_relay_once_publishes_what_is_pending(repo: tuple[Path, str, str]) -> None:
    root, topic, url = repo
    with psycopg.connect(url) as conn:
        for i in range(25):
            event_id = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, "
                "headers) VALUES (%s, 'Order', %s, 'OrderPlaced.v1', %s, %s)",
                (event_id, f"order-{i % 3}", json.dumps(order(i)), json.dumps({"id": event_id})),
            )
    result = run(root, "relay", "--once", "--json")
    nothing_stuck = {"total": 0, "rows": []}
    assert json.loads(result.stdout) == {"published": 25, "stuck": nothing_stuck}
    again = json.loads(run(root, "relay", "--once", "--json").stdout)
    assert again == {"published": 0, "stuck": nothing_stuck}
    received = read_all(f"127.0.0.1:{9092 + OFFSET}", topic, idle=2.0)
    assert len(received) == 25
    assert {d.attributes["type"] for d in received} == {"OrderPlaced.v1"}


def test_relay_rejects_bad_options_without_traceback(repo: tuple[Path, str, str]) -> None:
    result = run(repo[0], "relay", "--batch-size", "0", code=2)
    assert "--batch-size must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_dlq_list_show_replay(repo: tuple[Path, str, str]) -> None:
    from edaenv.brokers.registry import connect

    root, topic, _ = repo
    broker = connect(Endpoint("kafka", f"127.0.0.1:{9092 + OFFSET}"))
    broker.ensure_topology([topic])
    ids = [str(uuid.uuid4()) for _ in range(3)]
    now = datetime.now(UTC)
    for n, event_id in enumerate(ids):
        original = Delivery(
            topic=topic,
            key=f"order-{n}",
            value=json.dumps({"orderId": f"order-{n}"}).encode(),
            attributes={
                "id": event_id,
                "type": "OrderPlaced.v1",
                "specversion": "1.0",
                "source": "/tests",
                "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            },
            headers={},
            position={"partition": 0, "offset": n},
        )
        headers = dlq.failure_headers(original, KeyError("total"), 5, now, now)
        broker.publish_dead_letter(topic, original, headers)

    listed = json.loads(run(root, "dlq", "list", "--json").stdout)
    assert sorted(entry["id"] for entry in listed) == sorted(ids)
    assert {(e["attempts"], e["exception"], e["topic"]) for e in listed} == {
        ("5", "builtins.KeyError", topic)
    }
    table = run(root, "dlq", "list").stdout
    assert ids[0] in table and "KeyError" in table

    shown = json.loads(run(root, "dlq", "show", ids[1][:13], "--json").stdout)
    assert shown["id"] == ids[1] and shown["data"] == {"orderId": "order-1"}
    assert shown["headers"][dlq.ORIGINAL_TOPIC] == topic

    missing = run(root, "dlq", "show", "no-such-id", code=2)
    assert "no dead letter has the id 'no-such-id'" in missing.stderr
    assert "Traceback" not in missing.stderr
    neither = run(root, "dlq", "replay", code=2)
    assert "give either an ID or --all" in neither.stderr

    assert json.loads(run(root, "dlq", "replay", ids[2], "--json").stdout)["count"] == 1
    # A replayed letter is removed once the broker acknowledged the re-send.
    assert json.loads(run(root, "dlq", "replay", "--all", "--json").stdout)["count"] == 2
    assert json.loads(run(root, "dlq", "list", "--json").stdout) == []
    replayed = read_all(f"127.0.0.1:{9092 + OFFSET}", topic, idle=2.0)
    assert sorted(d.attributes["id"] for d in replayed) == sorted(ids)
    assert all(not any(k.startswith(dlq.PREFIX) for k in d.headers) for d in replayed)
    broker.close()
