"""A user's test module using edaenv's pytest plugin (loaded through its pytest11 entry point).

tests/e2e/test_faults.py copies this file next to an edaenv.yaml and runs pytest on it in a
subprocess. Tests that need the sample consumer carry `consumer` in their name.
"""

from __future__ import annotations

import os
import uuid

import pytest


def test_publish_reaches_the_topic(edaenv_stack) -> None:
    topic = "orders"
    event_id = edaenv_stack.publish("OrderPlaced")
    delivery = edaenv_stack.wait_for_message(
        topic, lambda d: d.attributes.get("id") == event_id, timeout=60
    )
    assert delivery.attributes["type"].startswith("OrderPlaced")
    assert delivery.key


def test_publish_rejects_data_breaking_the_contract(edaenv_stack) -> None:
    from edaenv.errors import ContractError

    with pytest.raises(ContractError, match="total"):
        edaenv_stack.publish(
            "OrderPlaced", {"orderId": str(uuid.uuid4()), "customerId": "c", "total": "lots"}
        )


def test_env_fixture_exports_the_endpoints(edaenv_env) -> None:
    assert os.environ["EDAENV_BROKER_URL"] == edaenv_env["EDAENV_BROKER_URL"]
    assert edaenv_env["EDAENV_DATABASE_URL"].startswith("postgresql://")


def test_sql_and_wait_for(edaenv_stack) -> None:
    assert edaenv_stack.wait_for(lambda: edaenv_stack.sql("SELECT 1")[0][0], timeout=5) == 1
    with pytest.raises(AssertionError, match=r"nothing did not happen within 0\.5s"):
        edaenv_stack.wait_for(lambda: False, timeout=0.5, what="nothing")


def test_consumer_processes_a_published_event_once(edaenv_stack) -> None:
    order = {"orderId": str(uuid.uuid4()), "customerId": "c-plugin", "total": 12.5}
    event_id = edaenv_stack.publish("OrderPlaced", order)
    edaenv_stack.wait_processed(event_id, timeout=120)
    assert edaenv_stack.processed(event_id) == 1
    rows = edaenv_stack.sql(
        "SELECT order_id FROM order_confirmations WHERE event_id = %s", (event_id,)
    )
    assert rows == [(order["orderId"],)]
