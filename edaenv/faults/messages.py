"""Message faults, straight to the broker through its adapter (no outbox, no relay):
duplicate, poison, burst, reorder and delay.

Messages use the same envelope as the relay: CloudEvents in binary mode (attributes as
headers, the JSON payload as the value), keyed by the aggregate id, so the consumer cannot tell
them from relayed ones, except where the fault is the point. Every fault reports what the broker
acknowledged: a message it dropped as a duplicate (NATS, a message id it holds within the
stream's duplicate window) is reported as dropped, never as sent.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edaenv.application import Stack
from edaenv.config import Config
from edaenv.errors import UsageError
from edaenv.faults.state import Fault, FaultStore, HeldEvent, new_id, now

if TYPE_CHECKING:
    from edaenv.brokers.base import Ack, Message
    from edaenv.events.contracts import Contract

BATCH = 500
MAX_HELD = 10_000
POISON_KINDS = ("unparseable", "invalid")


def validate(contract: Contract, data: Any) -> None:
    from edaenv.events.validate import Validator

    Validator(contract).check(data, where="data")


def _publish(config: Config, messages: Sequence[Message]) -> tuple[float, list[Ack]]:
    """Publish in batches, each acknowledged; returns the seconds it took (topology creation
    excluded) and the acknowledgements. The topics are created when missing, as the relay and
    consumer do."""
    broker = Stack(config).broker()
    acks: list[Ack] = []
    try:
        broker.ensure_topology(sorted({m.topic for m in messages}))
        started = time.perf_counter()
        for start in range(0, len(messages), BATCH):
            acks += broker.publish(messages[start : start + BATCH])
        return time.perf_counter() - started, acks
    finally:
        broker.close()


def _dropped(config: Config, acks: Sequence[Ack], messages: Sequence[Message]) -> dict[str, Any]:
    """The fault record's account of messages the broker dropped as duplicates, and the note
    its summary gets; empty when it stored every one."""
    ids = [m.attributes.get("id", "") for m, a in zip(messages, acks, strict=True) if a.duplicate]
    if not ids:
        return {}
    return {
        "dropped_as_duplicate": tuple(ids),
        "note": f"; {len(ids)} dropped by {config.broker} as duplicates of messages it "
        "holds (not sent)",
    }


def _valid(contract: Contract, key: str | None = None) -> dict[str, Any]:
    from edaenv.events.generate import generator

    data = generator(contract)(random.Random())
    if key is not None and isinstance(data, dict):
        data[contract.key] = key
    return data


def _record(
    config: Config,
    kind: str,
    topic: str,
    summary: str,
    *,
    fault_id: str | None = None,
    dropped: dict[str, Any] | None = None,
    **extra: Any,
) -> Fault:
    dropped = dict(dropped or {})
    summary += dropped.pop("note", "")
    fault = Fault(
        id=fault_id or new_id(),
        kind=kind,
        target=topic,
        started=now(),
        ended=now(),
        summary=summary,
        **extra,
        **dropped,
    )
    FaultStore(config.generated_dir).record(fault)
    return fault


def publish_one(
    config: Config, event: str | None, data: dict[str, Any] | None, *, key: str | None = None
) -> str:
    """One contract-valid event (generated unless given); returns its id."""
    stack = Stack(config)
    chosen = stack.contract(event, where="--event")
    payload = data if data is not None else _valid(chosen, key)
    validate(chosen, payload)
    msg = stack.message(chosen, payload, key=key)
    _publish(config, [msg])
    return msg.attributes["id"]


def duplicate(config: Config, event_id: str, *, times: int = 1, topic: str | None = None) -> Fault:
    """Re-publish an event `times` times, byte for byte with its CloudEvents id. Each copy has
    a de-duplication id of its own, so a broker that drops repeats of a message id (NATS)
    delivers them too: the consumer's idempotency, not the broker, is what the fault tests."""
    from edaenv.brokers.base import Message
    from edaenv.events.contracts import load_contracts, topics

    candidates = [topic] if topic else topics(load_contracts(config.scaffold_dir / "events"))
    broker = Stack(config).broker()
    try:
        for name in candidates:
            for delivery in broker.tail(name, from_beginning=True, follow=False, idle_timeout=2.0):
                if delivery.attributes.get("id") == event_id:
                    fault_id = new_id()
                    copy = Message(
                        topic=delivery.topic,
                        key=delivery.key,
                        value=delivery.value,
                        attributes=dict(delivery.attributes),
                        headers=dict(delivery.headers),
                    )
                    copies = [
                        dataclasses.replace(copy, dedup_id=f"{event_id}:duplicate:{fault_id}:{n}")
                        for n in range(times)
                    ]
                    acks = broker.publish(copies)
                    delivered = sum(not ack.duplicate for ack in acks)
                    return _record(
                        config,
                        "duplicate",
                        delivery.topic,
                        f"event {event_id} delivered {delivered} more time(s)",
                        fault_id=fault_id,
                        dropped=_dropped(config, acks, copies),
                        event_ids=(event_id,),
                        times=times,
                        delivered=delivered,
                    )
    finally:
        broker.close()
    raise UsageError(
        f"no event with id '{event_id}' on {', '.join(candidates) or 'any topic'}",
        where="EVENT_ID",
        hint="`edaenv tail TOPIC` shows the ids (attribute `id`)",
    )


def poison(
    config: Config, *, kind: str = "unparseable", event: str | None = None, count: int = 1
) -> Fault:
    stack = Stack(config)
    if kind not in POISON_KINDS:
        raise UsageError(
            f"unknown poison kind '{kind}'",
            where="--kind",
            hint=f"use one of: {', '.join(POISON_KINDS)}",
        )
    chosen = stack.contract(event, where="--event")
    messages = []
    for _ in range(count):
        key = str(uuid.uuid4())
        if kind == "unparseable":
            body = b"\x00{not json: edaenv poison"
            messages.append(stack.message(chosen, None, key=key, value=body))
        else:
            messages.append(stack.message(chosen, _invalid(chosen, key), key=key))
    _, acks = _publish(config, messages)
    ids = [m.attributes["id"] for m in messages]
    return _record(
        config,
        "poison",
        chosen.topic,
        f"{count} {kind} message(s)",
        dropped=_dropped(config, acks, messages),
        event_ids=tuple(ids),
        poison=kind,
    )


def _invalid(contract: Contract, key: str) -> dict[str, Any]:
    """Valid data with every required field but the key set to a wrong type (an object)."""
    import jsonschema

    data = _valid(contract, key)
    required = [f for f in contract.schema.get("required", []) if f != contract.key]
    for field in required:
        data[field] = {"edaenv": "poison"}
    data["edaenvPoison"] = True
    validator = jsonschema.validators.validator_for(contract.schema)(contract.schema)
    if validator.is_valid(data):
        raise UsageError(
            f"{contract.name} accepts any data: no message can fail it",
            hint="use --kind unparseable, or tighten the contract "
            "(required fields, additionalProperties: false)",
        )
    return data


def burst(config: Config, count: int, *, event: str | None = None, keys: int = 100) -> Fault:
    stack = Stack(config)
    chosen = stack.contract(event, where="--event")
    aggregates = [str(uuid.uuid4()) for _ in range(min(keys, count))]
    messages = [
        stack.message(chosen, _valid(chosen, aggregates[i % len(aggregates)])) for i in range(count)
    ]
    seconds, acks = _publish(config, messages)
    rate = count / seconds if seconds else float(count)
    return _record(
        config,
        "burst",
        chosen.topic,
        f"{count} events in {seconds:.2f}s ({rate:,.0f}/s) over {len(aggregates)} aggregates",
        dropped=_dropped(config, acks, messages),
        count=count,
        seconds=round(seconds, 3),
        rate=round(rate),
        first_id=messages[0].attributes["id"],
        last_id=messages[-1].attributes["id"],
    )


def reorder(
    config: Config, count: int, *, event: str | None = None, key: str | None = None
) -> Fault:
    """Events 1..N of one aggregate, created in order (CloudEvents `sequence` and `time`),
    published N..1."""
    stack = Stack(config)
    chosen = stack.contract(event, where="--event")
    aggregate = key or str(uuid.uuid4())
    created = [
        stack.message(
            chosen,
            _valid(chosen, aggregate),
            key=aggregate,
            extra={"sequence": str(i + 1), "sequencetype": "Integer"},
        )
        for i in range(count)
    ]
    sent = list(reversed(created))
    _, acks = _publish(config, sent)
    ids = [m.attributes["id"] for m in created]
    return _record(
        config,
        "reorder",
        chosen.topic,
        f"{count} events of aggregate {aggregate} published last to first",
        dropped=_dropped(config, acks, sent),
        key=aggregate,
        event_ids=tuple(ids),
    )


def delay(config: Config, count: int, *, event: str | None = None) -> Fault:
    """N events created now and held in the fault record; `release` publishes them."""
    stack = Stack(config)
    if count > MAX_HELD:
        raise UsageError(f"at most {MAX_HELD} events can be held", where="--count")
    chosen = stack.contract(event, where="--event")
    # Held events are released later, by a detached process: the broker must answer now and
    # have the topic, or the fault would be recorded and then silently fail to release.
    broker = stack.broker()
    try:
        broker.ensure_topology([chosen.topic])
    finally:
        broker.close()
    messages = [stack.message(chosen, _valid(chosen)) for _ in range(count)]
    fault = Fault(
        id=new_id(),
        kind="delay",
        target=chosen.topic,
        started=now(),
        summary=f"{count} events held",
        event_ids=tuple(m.attributes["id"] for m in messages),
        held=tuple(HeldEvent(m.topic, m.key, m.value.decode(), m.attributes) for m in messages),
    )
    FaultStore(config.generated_dir).add(fault)
    return fault


def release(config: Config, fault: Fault) -> str:
    from edaenv.brokers.base import Message

    messages = [
        Message(topic=h.topic, key=h.key, value=h.value.encode(), attributes=dict(h.attributes))
        for h in fault.held or ()
    ]
    _, acks = _publish(config, messages)
    released = sum(not ack.duplicate for ack in acks)
    dropped = len(acks) - released
    note = (
        f"; {dropped} dropped by {config.broker} as duplicates (released before)" if dropped else ""
    )
    return f"released {released} held events{note}"
