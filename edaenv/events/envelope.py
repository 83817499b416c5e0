"""The CloudEvents 1.0 envelope in binary mode: the attributes travel as protocol headers, the
JSON data is the message body, and the aggregate id is the message key.

The header names follow each protocol binding, which its broker adapter holds (a
`wire.Binding`: Kafka `ce_<attr>`, AMQP `cloudEvents_<attr>`, NATS `ce-<attr>`). Besides the core
attributes an event carries two extensions: `traceparent` (W3C Trace Context, the CloudEvents
distributed-tracing extension) and `correlationid`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edaenv.wire import Message

if TYPE_CHECKING:
    from edaenv.events.contracts import Contract

SPECVERSION = "1.0"
JSON = "application/json"
CORE = ("id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema")
TRACEPARENT = "traceparent"
CORRELATION_ID = "correlationid"
_OUTBOX_ATTRIBUTES = frozenset((*CORE, TRACEPARENT, CORRELATION_ID))


# Ids and trace contexts come from a generator seeded by the OS (random.Random seeds itself
# from os.urandom): unique across processes, and ~4x cheaper per event than uuid.uuid4(). A
# forked child inherits the parent's state and would mint the parent's next ids (a consumer
# then drops real events as duplicates): it seeds itself again from the OS.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_clock: list[Any] = [0, ""]


# The version (4) and variant (10) bits of a UUID: cleared, then set; in a 320-bit draw, the
# UUID is the top 128 bits.
_UUID_BITS = (0xF000 << 64) | (0xC000 << 48)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
_UUID_CLEAR, _PAIR_CLEAR, _PAIR_SET = ~_UUID_BITS, ~(_UUID_BITS << 192), _UUID_SET << 192


def new_id(rng: random.Random = _random) -> str:
    """A random (version 4) UUID, as str(uuid.UUID(int=rng.getrandbits(128), version=4))."""
    h = f"{rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_traceparent() -> str:
    """A fresh W3C trace context: version 00, random trace and span ids, sampled."""
    h = f"{_random.getrandbits(192):048x}"
    return f"00-{h[:32]}-{h[32:]}-01"


def _id_and_traceparent() -> tuple[str, str]:
    """new_id() and new_traceparent() from one draw of 320 bits: one call and one formatting
    instead of two, per event."""
    h = f"{_random.getrandbits(320) & _PAIR_CLEAR | _PAIR_SET:080x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}", f"00-{h[32:64]}-{h[64:]}-01"


def now() -> str:
    """RFC 3339 UTC time in milliseconds (formatted once per millisecond)."""
    millis = int(time.time() * 1000)
    if _clock[0] != millis:
        moment = datetime.fromtimestamp(millis / 1000, UTC)
        _clock[:] = [millis, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")]
    return str(_clock[1])


def source(project: str) -> str:
    return f"/edaenv/{project}"


def dataschema(contract: Contract) -> str:
    schema_id = contract.schema.get("$id")
    return schema_id if isinstance(schema_id, str) and schema_id else contract.path.name


def aggregate_id(contract: Contract, data: Any) -> str | None:
    """The contract's key field of the data, the message key; None when the data lacks it."""
    if isinstance(data, dict) and data.get(contract.key) not in (None, ""):
        value = data[contract.key]
        return value if isinstance(value, str) else json.dumps(value)
    return None


class Envelope:
    """Builds the messages of one contract: the attributes every event of it shares are computed
    once, so an event costs an id, a timestamp and its JSON."""

    def __init__(
        self,
        contract: Contract,
        project: str,
        *,
        extensions: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.contract = contract
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})
        self.shared = {
            "id": "",
            "source": source(project),
            "type": contract.name,
            "specversion": SPECVERSION,
            "datacontenttype": JSON,
            "dataschema": dataschema(contract),
        }

    def message(
        self, data: Any, key: str, *, body: bytes | None = None, event_id: str | None = None
    ) -> Message:
        fresh_id, traceparent = _id_and_traceparent()
        event_id = event_id or fresh_id
        attributes = {
            **self.shared,
            "id": event_id,
            "time": now(),
            "subject": key,
            TRACEPARENT: traceparent,
            CORRELATION_ID: event_id,
        }
        if self.extensions:
            attributes.update(self.extensions)
        if body is None:
            body = _compact_json(data).encode()
        return Message(
            topic=self.contract.topic,
            key=key,
            value=body,
            attributes=attributes,
            headers=self.headers,
        )


def outbox_row(message: Message, contract: Contract) -> dict[str, Any]:
    """The outbox row of an event (columns of db/migrations/001_outbox.sql): the relay publishes
    it with the same envelope, `headers` holding the CloudEvents attributes by name."""
    return {
        "id": message.attributes["id"],
        "aggregate_type": contract.aggregate,
        "aggregate_id": message.key,
        "event_type": contract.name,
        "payload": message.value.decode(),
        "headers": json.dumps({**message.attributes, **message.headers}),
    }


def message_from_outbox(
    topic: str, aggregate_id: str, payload: str, headers: Mapping[str, Any]
) -> Message:
    """The message the relay publishes for an outbox row written by outbox_row(): its headers
    split into CloudEvents attributes and other headers, values as text."""
    attributes: dict[str, str] = {}
    other: dict[str, str] = {}
    for key, value in headers.items():
        (attributes if key in _OUTBOX_ATTRIBUTES else other)[key] = str(value)
    return Message(
        topic=topic, key=aggregate_id, value=payload.encode(), attributes=attributes, headers=other
    )
