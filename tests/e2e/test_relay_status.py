"""A stack whose relay cannot publish a row: `edaenv status` says the relay is degraded and
names the row, the relay's metric counts it, `edaenv bundle` keeps it; other aggregates flow."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from tests.e2e.conftest import MakeStack


@pytest.mark.full_stack
def test_status_metrics_and_bundle_show_a_row_the_relay_cannot_publish(
    make_stack: MakeStack,
) -> None:
    import psycopg

    stack = make_stack("nats", ("postgres", "outbox"))
    stack.up("--timeout", "300", timeout=900)
    env = stack.env()
    bad, behind, good = (str(uuid.uuid4()) for _ in range(3))
    order = {"orderId": str(uuid.uuid4()), "customerId": "c-e2e", "total": 10.5}
    rows = [
        (bad, "order-bad", {**order, "total": -1}),
        (behind, "order-bad", order),
        (good, "order-good", order),
    ]
    dsn = env["EDAENV_DATABASE_URL"]
    with psycopg.connect(dsn, client_encoding="UTF8") as conn:
        for event_id, aggregate, data in rows:
            conn.execute(
                "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload) "
                "VALUES (%s, 'Order', %s, 'OrderPlaced', %s)",
                (event_id, aggregate, json.dumps(data)),
            )

    def unpublished() -> set[str]:
        with psycopg.connect(dsn, client_encoding="UTF8") as conn:
            found = conn.execute("SELECT id::text FROM outbox WHERE published_at IS NULL")
            return {row[0] for row in found.fetchall()}

    deadline = time.monotonic() + 60
    while unpublished() != {bad, behind} or not stack.status()["stuck_outbox_rows"]["total"]:
        assert time.monotonic() < deadline, f"unpublished: {unpublished()}"
        time.sleep(0.5)

    status = stack.edaenv("status")
    assert status.code == 1, status.text
    [relay_line] = [line for line in status.out.splitlines() if "relay" in line]
    assert "degraded" in relay_line
    assert "relay degraded: 1 outbox row(s) cannot be published" in status.err
    assert f"row {bad} (Order 'order-bad', 'OrderPlaced'): invalid-payload: the payload " in (
        status.err
    )
    assert "1 later row(s) of its aggregate wait" in status.err
    data = stack.status()
    assert data["healthy"] is False
    [row] = data["stuck_outbox_rows"]["rows"]
    assert (row["id"], row["pointer"], row["rule"]) == (bad, "/total", "minimum")

    # Through the port published on 127.0.0.1: the relay listens on the compose network.
    # The gauge is sampled every few seconds (Options.stats_every), not when the row is recorded.
    url = f"{env['EDAENV_RELAY_METRICS_URL']}/metrics"
    stuck_line = 'edaenv_outbox_stuck_rows{reason="invalid-payload"} 1.0'
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:
            metrics = response.read().decode()
        if stuck_line in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert stuck_line in metrics

    assert stack.edaenv("bundle", "bundle").code == 0
    outbox = json.loads((stack.root / "bundle" / "outbox.json").read_text())
    assert [r["id"] for r in outbox["stuck"]["rows"]] == [bad]
    assert stack.edaenv("down", "--volumes").code == 0
