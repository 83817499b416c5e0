"""The per-event fast paths of `edaenv seed` (one random draw per envelope, json's C encoder built
once, generated objects as one dict display) give exactly what the plain code gave."""

from __future__ import annotations

import json
import random
import re
import uuid
from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.events import jsondata
from edaenv.events.envelope import Envelope
from edaenv.events.generate import ALPHABET, generator
from tests.unit.test_events import contract

SCHEMA: dict[str, Any] = {
    "$id": "urn:shop:events:OrderPlaced:v1",
    "type": "object",
    "required": ["orderId", "customerId", "total"],
    "properties": {
        "orderId": {"type": "string", "format": "uuid"},
        "customerId": {"type": "string", "minLength": 1, "maxLength": 64},
        "total": {"type": "number", "minimum": 0, "maximum": 1000000},
    },
}


def test_every_envelope_has_a_fresh_v4_uuid_and_its_own_trace_context() -> None:
    envelope = Envelope(contract(SCHEMA), "shop")
    messages = [envelope.message({"orderId": "o"}, "o") for _ in range(3000)]
    ids = [m.attributes["id"] for m in messages]
    traces = [m.attributes["traceparent"] for m in messages]
    assert len(set(ids)) == len(set(traces)) == 3000
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert str(parsed) == event_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    for event_id, trace in zip(ids, traces, strict=True):
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", trace), trace
        assert trace[3:35] != event_id.replace("-", "")  # drawn apart, not the id again
    # Every hex digit appears in the trace ids' random part: no bits left constant.
    assert set("".join(t[3:52].replace("-", "") for t in traces)) == set("0123456789abcdef")


def test_the_envelope_attributes_keep_their_order_and_a_given_id() -> None:
    message = Envelope(
        contract(SCHEMA), "shop", extensions={"correlationid": "flow-1", "traceparent": "tp"}
    ).message({"orderId": "o"}, "o", event_id="given-id")
    assert list(message.attributes) == [
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "dataschema",
        "time",
        "subject",
        "traceparent",
        "correlationid",
    ]
    assert message.attributes["id"] == "given-id"
    assert message.attributes["traceparent"] == "tp"
    assert message.attributes["correlationid"] == "flow-1"


JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUE)
@example(value={"a": 'é\u2028"\\', "b": [1.5, -0.0, 1e300, None, True]})
@example(value="text")
def test_encoding_is_json_dumps_compact_byte_for_byte(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert jsondata.encode(value) == expected.encode()


def test_encoding_still_refuses_what_json_does_not_have_and_goes_on_working() -> None:
    circular: list[Any] = []
    circular.append(circular)
    cases = [
        ({"a": [1, float("nan")]}, "NaN is not a JSON number", "/a/1"),
        ({"a": {"b": float("-inf")}}, "-Infinity is not a JSON number", "/a/b"),
        ({"a": object()}, "a object is not a JSON value", "/a"),
        ({"a": "\ud800"}, "'\\ud800' has a lone surrogate at character 0", "/a"),
        (circular, f"nested deeper than {jsondata.MAX_DEPTH} levels", "/0" * jsondata.MAX_DEPTH),
    ]
    for value, message, pointer in cases:
        with pytest.raises(jsondata.BadJson) as caught:
            jsondata.encode(value)
        assert (caught.value.message, caught.value.pointer) == (message, pointer)
        # A failure leaves the shared encoder usable: the next document encodes.
        assert jsondata.encode({"ok": [1]}) == b'{"ok":[1]}'


PROPERTY_NAME = st.text(min_size=1, max_size=12)
LEAF_SCHEMA = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "minLength": 3, "maxLength": 40},
        {"type": "string", "format": "uuid"},
        {"type": "integer", "minimum": -5, "maximum": 5},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        {"type": "boolean"},
        {"enum": ["a", 1, None]},
    ]
)
OBJECT_SCHEMA = st.recursive(
    LEAF_SCHEMA,
    lambda inner: st.dictionaries(PROPERTY_NAME, inner, max_size=6).map(
        lambda properties: {
            "type": "object",
            "properties": properties,
            "required": sorted(properties),
            "additionalProperties": False,
        }
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(schema=OBJECT_SCHEMA, seed=st.integers(0, 2**32))
@example(
    schema={
        "type": "object",
        "properties": {"rng": {"type": "string"}, "k0": {"type": "string"}, "'}": {"const": 1}},
    },
    seed=0,
)
def test_generated_objects_are_valid_ordered_and_reproducible(
    schema: dict[str, Any], seed: int
) -> None:
    """Property names are data, never code: quotes, braces, `rng` and the maker's own variable
    names come back as keys, in the schema's order."""
    make = generator(contract(schema))
    data = make(random.Random(seed))
    checker = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert checker.is_valid(data), data
    if "properties" in schema:
        assert list(data) == list(schema["properties"])
    assert make(random.Random(seed)) == data


def test_a_generated_name_like_string_is_the_property_name_and_eight_characters() -> None:
    make = generator(contract(SCHEMA))
    values = [make(random.Random(seed))["customerId"] for seed in range(500)]
    for value in values:
        prefix, _, tail = value.partition("-")
        assert prefix == "customerId" and len(tail) == 8 and set(tail) <= set(ALPHABET), value
    assert len(set(values)) == 500
