"""`edaenv bundle` against a real Kafka-protocol broker and a real PostgreSQL (issue 9, items 7
and 9; issue 10, item 8): it reads the database `publish --via-outbox` writes to, its summary
reads as text with the dead-letter count, and no topic makes it write outside its directory."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from events_support import DATABASE_URL, Project, make_project, require

ORDER = "6f1c0d0e-9a0b-4c1d-8e2f-3a4b5c6d7e8f"


def order(order_id: str = ORDER) -> str:
    return json.dumps({"orderId": order_id, "customerId": "c-1", "total": 12.5})


@pytest.fixture
def schema_url(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A schema of its own in the native test database; its URL and name."""
    import psycopg

    require("postgres")
    schema = f"s_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{DATABASE_URL}?options=-csearch_path%3D{schema}", schema
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents and ".git" not in p.parts
    }


@pytest.mark.kafka
@pytest.mark.postgres
def test_bundle_reads_the_outbox_of_edaenv_database_url_and_counts_dead_letters(
    tmp_path: Path, schema_url: tuple[str, str]
) -> None:
    import psycopg

    from edaenv.brokers.base import Endpoint, Message
    from edaenv.brokers.kafka import dlq_topic
    from edaenv.brokers.registry import connect

    url, _ = schema_url
    project = make_project(tmp_path / "shop", "kafka")
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in sorted((project.root / "eda/db/migrations").glob("*.sql")):
            conn.execute(migration.read_text())
    env = {"EDAENV_DATABASE_URL": url}
    for _ in range(2):  # the outbox: two rows, not yet published by any relay
        result = project.run("publish", "OrderPlaced", "--data", order(), "--via-outbox", env=env)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO processed_events (consumer, event_id) VALUES "
            "('order-placed-sample', 'e-1'), ('order-placed-sample', 'e-2'), ('audit', 'e-1')"
        )
    for _ in range(3):
        project.ok("publish", "OrderPlaced", "--data", order())
    broker = connect(Endpoint("kafka", project.url))
    try:
        for letter_id in ("dead-1", "dead-2"):
            letter = Message(dlq_topic(project.topic), ORDER, order().encode(), {"id": letter_id})
            assert not broker.publish([letter])[0].duplicate
    finally:
        broker.close()
    # Kafka cannot delete a record: the purge appends a marker naming dead-2. The bundle counts
    # and lists the letters still to handle, as `dlq list` does: neither the marker nor dead-2.
    project.ok("dlq", "purge", "--id", "dead-2", "--yes")

    result = project.run("bundle", "out", "--json", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["directory"] == "out" and "out/summary.md" in report["files"]
    outbox = json.loads((project.root / "out" / "outbox.json").read_text())
    assert outbox["backlog"] == 2
    summary = (project.root / "out" / "summary.md").read_text()
    section = summary.split("## Outbox\n\n", 1)[1].split("\n\n", 1)[0]
    assert re.fullmatch(
        r"- unpublished rows: 2\n"
        r"- oldest unpublished: \d+\.\d s ago\n"
        r"- processed events: 1 by audit, 2 by order-placed-sample\n"
        r"- rows the relay cannot publish: 0",
        section,
    ), section
    assert f"## Topics\n\n- {project.topic}: 3 events, 1 dead letter\n" in summary
    letters = (project.root / "out" / "dead-letters" / f"{project.topic}.jsonl").read_text()
    assert [json.loads(line)["attributes"]["id"] for line in letters.splitlines()] == ["dead-1"]
    for python in ("{'", "None", "[]"):
        assert python not in summary, summary


@pytest.mark.kafka
def test_bundle_writes_nothing_outside_its_directory_whatever_a_contract_names(
    tmp_path: Path,
) -> None:
    """A contract topic `../../x` made the bundle write `events/../../x.error.txt`."""
    project: Project = make_project(tmp_path / "shop", "kafka")
    contract = project.root / "eda/events/OrderPlaced.v1.schema.json"
    schema = json.loads(contract.read_text())
    schema["x-edaenv"]["topic"] = "../../x"
    contract.write_text(json.dumps(schema))
    bundle = project.root / "deep" / "bundle"
    before = snapshot(tmp_path, bundle)
    result = project.run("bundle", "deep/bundle", timeout=180)
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path, bundle) == before
    summary = (bundle / "summary.md").read_text()
    assert f"- events: {contract}#/x-edaenv/topic: '../../x' cannot be a topic\n" in summary
