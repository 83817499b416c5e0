"""Contracts' validation, generated data and the CloudEvents envelope, without a broker."""

from __future__ import annotations

import json
import random
import re
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edaenv.brokers.kafka import BINDING as KAFKA
from edaenv.brokers.nats import BINDING as NATS
from edaenv.brokers.rabbitmq import BINDING as AMQP
from edaenv.errors import ContractError, UsageError
from edaenv.events.contracts import Contract
from edaenv.events.envelope import (
    Envelope,
    message_from_outbox,
    new_id,
    outbox_row,
)
from edaenv.events.generate import generator
from edaenv.events.validate import Validator, parse_json, read_jsonl

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:shop:events:OrderPlaced:v1",
    "type": "object",
    "required": ["orderId", "customerId", "total"],
    "additionalProperties": False,
    "properties": {
        "orderId": {"type": "string", "format": "uuid"},
        "customerId": {"type": "string", "minLength": 1, "maxLength": 64},
        "total": {"type": "number", "minimum": 0, "maximum": 1000000, "multipleOf": 0.01},
        "status": {"enum": ["new", "paid", 1, None]},
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "exclusiveMinimum": 0},
                },
            },
        },
    },
}


def contract(schema: dict[str, Any] | None = None) -> Contract:
    return Contract(
        event="OrderPlaced",
        version=1,
        topic="orders",
        key="orderId",
        owner="orders-team",
        aggregate="Order",
        schema=schema or ORDER_SCHEMA,
        path=Path("events/OrderPlaced.v1.schema.json"),
    )


def mutations(rng: random.Random, value: Any) -> Any:
    """Valid data broken (or not) in the ways contracts are: types, bounds, keys."""
    data = json.loads(json.dumps(value))
    choice = rng.randrange(12)
    if choice == 0:
        data["total"] = rng.choice([-0.01, 1000000.01, "12", True, 12.345, 0, 1e300])
    elif choice == 1:
        data["orderId"] = rng.choice(["not-a-uuid", uuid.uuid4().hex, 5, str(uuid.uuid4())])
    elif choice == 2:
        data.pop(rng.choice(list(data)))
    elif choice == 3:
        data["extra"] = 1
    elif choice == 4:
        data["customerId"] = rng.choice(["", "x" * 65, "x" * 64, None])
    elif choice == 5:
        data["status"] = rng.choice(["new", "paid", 1, 1.0, True, None, "other", 2])
    elif choice == 6:
        data["lines"] = rng.choice(
            [
                [],
                [{"sku": "a"}] * 4,
                [{"sku": "a", "qty": 0}],
                [{"sku": "a", "qty": 2.0}],
                [{"qty": 1}],
                "x",
            ]
        )
    elif choice == 7:
        data = rng.choice([[], "x", None, 3])
    return data


def test_the_fast_validator_agrees_with_jsonschema() -> None:
    validator = Validator(contract())
    reference = jsonschema.Draft202012Validator(
        ORDER_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    make, rng = generator(contract()), random.Random(3)
    verdicts = set()
    for _ in range(5000):
        data = mutations(rng, make(rng))
        expected = reference.is_valid(data)
        assert validator.is_valid(data) is expected, data
        verdicts.add(expected)
    assert verdicts == {True, False}


def test_a_violation_names_the_json_pointer_and_the_rule() -> None:
    data = {
        "orderId": str(uuid.uuid4()),
        "customerId": "c",
        "total": 5,
        "lines": [{"sku": "a", "qty": 0}],
    }
    with pytest.raises(ContractError) as caught:
        Validator(contract()).check(data, "orders.jsonl:7")
    assert caught.value.where == "orders.jsonl:7#/lines/0/qty"
    assert "'exclusiveMinimum'" in caught.value.message
    assert "#/properties/lines/items/properties/qty/exclusiveMinimum" in str(caught.value.hint)


def test_schemas_beyond_the_fast_subset_are_still_checked() -> None:
    schema = {
        **ORDER_SCHEMA,
        "properties": {
            **ORDER_SCHEMA["properties"],
            "customerId": {"type": "string", "pattern": "^c-"},
        },
    }
    validator = Validator(contract(schema))
    base = {"orderId": str(uuid.uuid4()), "total": 1}
    assert validator.is_valid({**base, "customerId": "c-1"})
    assert not validator.is_valid({**base, "customerId": "x-1"})


def test_generated_data_is_valid_and_reproducible() -> None:
    validator = Validator(contract())
    make = generator(contract())
    first = [make(rng) for rng in [random.Random(42)] for _ in range(200)]
    again = [make(rng) for rng in [random.Random(42)] for _ in range(200)]
    assert first == again
    assert all(validator.is_valid(data) for data in first)
    assert len({data["orderId"] for data in first}) == 200


def test_a_schema_the_generator_cannot_follow_says_so() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}}
    with pytest.raises(ContractError, match="pattern"):
        generator(contract(schema))


def test_the_envelope_carries_every_attribute_in_each_binding() -> None:
    data = {"orderId": str(uuid.uuid4()), "customerId": "c", "total": 1.5}
    message = Envelope(
        contract(), "shop", extensions={"correlationid": "flow-1"}, headers={"x-tenant": "acme"}
    ).message(data, data["orderId"])
    attributes = message.attributes
    assert attributes["subject"] == message.key == data["orderId"]
    assert attributes["type"] == "OrderPlaced.v1" and attributes["specversion"] == "1.0"
    assert attributes["dataschema"] == "urn:shop:events:OrderPlaced:v1"
    assert attributes["correlationid"] == "flow-1"
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", attributes["traceparent"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", attributes["time"])
    assert json.loads(message.value) == data

    kafka = KAFKA.headers(attributes, message.headers)
    assert kafka["ce_id"] == attributes["id"] and kafka["content-type"] == "application/json"
    assert "ce_datacontenttype" not in kafka and kafka["x-tenant"] == "acme"
    amqp = AMQP.headers(attributes, message.headers)
    assert amqp["cloudEvents_subject"] == data["orderId"] and "content-type" not in amqp
    nats = NATS.headers(attributes, message.headers)
    assert nats["ce-traceparent"] == attributes["traceparent"]
    for binding, headers, content_type in (
        (KAFKA, kafka, None),
        (AMQP, amqp, "application/json"),
        (NATS, nats, None),
    ):
        back, other = binding.split(headers.items(), content_type)
        assert back == attributes and other == {"x-tenant": "acme"}


def test_ids_are_random_version_4_uuids() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


def test_an_outbox_row_gives_back_the_same_message() -> None:
    data = {"orderId": str(uuid.uuid4()), "customerId": "c", "total": 1.5}
    message = Envelope(contract(), "shop").message(data, data["orderId"])
    row = outbox_row(message, contract())
    assert row["event_type"] == "OrderPlaced.v1" and row["aggregate_id"] == data["orderId"]
    again = message_from_outbox(
        "orders", row["aggregate_id"], row["payload"], json.loads(row["headers"])
    )
    assert again == message


def test_the_relay_publishes_an_outbox_row_as_its_message() -> None:
    from datetime import UTC, datetime

    from edaenv.outbox.relay import Row, to_message

    data = {"orderId": str(uuid.uuid4()), "customerId": "c", "total": 1.5}
    message = Envelope(contract(), "shop", headers={"x-tenant": "acme"}).message(
        data, data["orderId"]
    )
    written = outbox_row(message, contract())
    created = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    row = Row(created_at=created, ctid="(0,1)", **written)
    assert to_message(row, "orders") == message

    # Written by hand: the attributes it lacks, or holds as null, come from the columns.
    bare = Row(**{**vars(row), "headers": '{"time": null, "traceparent": null, "x-a": null}'})
    completed = to_message(bare, "orders")
    assert completed.attributes == {
        "specversion": "1.0",
        "id": written["id"],
        "type": "OrderPlaced.v1",
        "source": "/outbox/Order",
        "subject": data["orderId"],
        "datacontenttype": "application/json",
        "time": "2026-11-27T12:00:00+00:00",
    }
    assert completed.headers == {} and completed.value == message.value


def test_malformed_json_names_the_place(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        parse_json('{"a": 1,}', "--data")
    assert caught.value.where == "--data" and "column 9" in caught.value.message
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UsageError) as caught:
        list(read_jsonl(lines))
    assert str(caught.value.where).endswith("events.jsonl:3")


def test_the_host_endpoint_comes_from_the_config_unless_the_environment_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edaenv.config import parse_config
    from edaenv.stack.endpoints import host_endpoint

    config = parse_config(
        "version: 1\nproject: shop\nbroker: rabbitmq\nports: {offset: 100}\n",
        tmp_path / "edaenv.yaml",
    )
    config.env_file.parent.mkdir(parents=True)
    config.env_file.write_text(
        "RABBITMQ_USER=app\nRABBITMQ_PASSWORD=s3cret\nPOSTGRES_USER=app\n"
        "POSTGRES_PASSWORD=p\nPOSTGRES_DB=app\n"
    )
    monkeypatch.delenv("EDAENV_BROKER_URL", raising=False)
    assert host_endpoint(config).url == "amqp://app:s3cret@127.0.0.1:5772/%2F"
    monkeypatch.setenv("EDAENV_BROKER_URL", "amqp://u:p@127.0.0.1:55672/%2F")
    assert host_endpoint(config).url == "amqp://u:p@127.0.0.1:55672/%2F"


def test_empty_nats_credentials_mean_none() -> None:
    from edaenv.brokers.nats import _without_empty_credentials

    assert _without_empty_credentials("nats://:@127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert _without_empty_credentials("nats://a:b@h:1") == "nats://a:b@h:1"
