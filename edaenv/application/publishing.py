"""What `edaenv publish`, `seed` and `tail` do: validate everything before anything is sent,
publish with broker acknowledgement (or into the outbox), read back."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edaenv.application.stack import Stack
from edaenv.config import Config
from edaenv.errors import BrokerError, ContractError, UsageError
from edaenv.events import jsondata
from edaenv.events.contracts import Contract
from edaenv.events.envelope import CORRELATION_ID, TRACEPARENT, Envelope, aggregate_id, outbox_row
from edaenv.events.validate import Validator
from edaenv.names import shown

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker
    from edaenv.wire import Message

# Messages per publish() call. Each call waits for all its acknowledgements, so a call is
# several of the adapters' own in-flight windows: the pipeline drains once per call, not often.
WINDOW = 5000
EXTENSIONS = (TRACEPARENT, CORRELATION_ID)


def parse_headers(pairs: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """--header k=v: `traceparent` and `correlationid` replace the envelope's; others are sent
    as plain protocol headers."""
    extensions: dict[str, str] = {}
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(
                f"{shown(pair)} is not NAME=VALUE",
                where="--header",
                hint="e.g. --header correlationid=order-flow-42",
            )
        name = name.strip()
        if name.lower() in EXTENSIONS:
            extensions[name.lower()] = value
        else:
            headers[name] = value
    return extensions, headers


@dataclass
class Batch:
    """Events checked against their contract, ready to send: nothing is sent unless all are."""

    contract: Contract
    messages: list[Message] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)  # where each event came from


def prepare(
    config: Config,
    contract: Contract,
    items: Iterable[tuple[str, Any]],
    *,
    key: str | None = None,
    header_pairs: Sequence[str] = (),
    validator: Validator | None = None,
) -> Batch:
    """Validate every (where, data) item and wrap it in the envelope; the first violation
    raises, naming where, the JSON pointer and the rule."""
    extensions, headers = parse_headers(header_pairs)
    envelope = Envelope(contract, config.project, extensions=extensions, headers=headers)
    validator = validator or Validator(contract)
    batch = Batch(contract)
    for where, data in items:
        # Encoded first: NaN, Infinity and nesting too deep are refused with their pointer
        # (they would pass the schema and go out as JSON nobody can parse).
        try:
            body = jsondata.encode(data)
        except jsondata.BadJson as bad:
            raise UsageError(
                bad.message, where=f"{where}#{bad.pointer}", hint=f"{bad.hint}; nothing was sent"
            ) from None
        if not validator.is_valid(data):  # the verdict alone first: check() finds the rule
            validator.check(data, where)
        message_key = key or aggregate_id(contract, data)
        if message_key is None:
            raise UsageError(
                f"the data has no '{contract.key}', the aggregate id of "
                f"{contract.name} and so the message key",
                where=where,
                hint=f'add "{contract.key}" to the data, or pass --key',
            )
        batch.messages.append(envelope.message(data, message_key, body=body))
        batch.wheres.append(where)
    return batch


def check_sizes(batch: Batch, limit: int) -> None:
    """Every event fits the broker, or none is sent."""
    for where, message in zip(batch.wheres, batch.messages, strict=True):
        attributes, headers = message.attributes, message.headers
        size = len(message.value) + len(message.key)
        size += sum(map(len, attributes)) + sum(map(len, attributes.values()))
        size += sum(map(len, headers)) + sum(map(len, headers.values()))
        if size > limit - 512:  # room for the protocol's own framing
            raise UsageError(
                f"the event is {size} bytes with its envelope, more than the "
                f"broker accepts ({limit} bytes)",
                where=where,
                hint="send less data in the event (a reference to it, say); nothing was published",
            )


def send(broker: Broker, messages: Sequence[Message]) -> list[dict[str, Any]]:
    positions: list[dict[str, Any]] = []
    for start in range(0, len(messages), WINDOW):
        positions += [ack.as_dict() for ack in broker.publish(messages[start : start + WINDOW])]
    return positions


@contextmanager
def commit_span(
    config: Config, message: Message, header_pairs: Sequence[str] = ()
) -> Iterator[None]:
    """The producer's part of the trace: a span around the outbox commit, exported to the
    stack's Jaeger, whose context becomes the row's traceparent, so that the relay's and the
    consumer's spans continue it. A traceparent given with --header becomes its parent;
    otherwise it starts the trace (the envelope's generated traceparent names no exported span,
    so it cannot be a parent). Skipped (the generated traceparent stays) when the stack has no
    Jaeger or it does not answer."""
    endpoint = _otlp_endpoint(config)
    if endpoint is None:
        yield
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    from edaenv.outbox import tracing

    provider = TracerProvider(resource=Resource.create({"service.name": "edaenv-publish"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint, timeout=2)))
    tracer = provider.get_tracer("edaenv")
    attributes = message.attributes
    given = TRACEPARENT in parse_headers(header_pairs)[0]
    with tracer.start_as_current_span(
        f"outbox commit {attributes['type']}",
        context=tracing.parent_context(attributes) if given else None,
        kind=SpanKind.PRODUCER,
        attributes={"messaging.destination.name": message.topic, "event.id": attributes["id"]},
    ) as span:
        carrier: dict[str, str] = {}
        tracing.inject(span, carrier)
        attributes[TRACEPARENT] = carrier[TRACEPARENT]
        yield
    provider.shutdown()


def _otlp_endpoint(config: Config) -> str | None:
    import socket

    if not config.has("jaeger"):
        return None
    port = config.ports()["jaeger"]["otlp-http"]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return None
    return f"http://127.0.0.1:{port}/v1/traces"


def write_outbox(stack: Stack, batch: Batch) -> int:
    """Insert the events into the outbox in one transaction, for the relay to publish."""
    rows = [outbox_row(m, batch.contract) for m in batch.messages]
    with (
        stack.database() as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY outbox (id, aggregate_type, aggregate_id, event_type, payload, headers) "
            "FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(
                (
                    row["id"],
                    row["aggregate_type"],
                    row["aggregate_id"],
                    row["event_type"],
                    row["payload"],
                    row["headers"],
                )
            )
    return len(rows)


def check_outbox(stack: Stack) -> None:
    """The outbox table answers: `seed --via-outbox` checks it before generating anything."""
    with stack.database() as conn:
        conn.execute("SELECT 1 FROM outbox LIMIT 0")


# --- seed -----------------------------------------------------------------------------------------


@dataclass
class Summary:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "msg_per_s": round(self.acknowledged / self.seconds, 1) if self.seconds else 0.0,
            "ack_latency_ms": {
                "p50": _percentile(self.latencies, 50),
                "p99": _percentile(self.latencies, 99),
            },
            "interrupted": self.interrupted,
            "error": self.error,
        }


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, (len(ordered) * q) // 100)], 3)


def generated(contract: Contract, count: int, seed: int | None) -> Iterator[tuple[str, Any]]:
    from edaenv.events.generate import generator

    make = generator(contract)
    rng = random.Random(seed)
    for number in range(1, count + 1):
        try:
            data = make(rng)
        except (ArithmeticError, ValueError, IndexError, TypeError, RecursionError) as exc:
            # A valid schema the generator follows wrongly (it knows the common keywords only).
            raise ContractError(
                f"cannot generate data for {contract.name}: {type(exc).__name__}: "
                f"{shown(str(exc))}",
                where=str(contract.path),
                hint="seed from your own examples with --from-file FILE.jsonl",
            ) from None
        yield f"generated event {number}", data


def seed(
    broker: Broker | None,
    batch: Batch,
    *,
    rate: float | None,
    advance: Callable[[int], None],
    on_batch: Callable[[Batch], int] | None = None,
) -> Summary:
    """Send the batch window by window (or into the outbox by on_batch), paced to `rate`.
    Ctrl-C stops after the window in flight and reports what was acknowledged; a second
    Ctrl-C aborts at once."""
    summary = Summary()
    messages = batch.messages
    step = WINDOW if not rate else max(1, min(WINDOW, int(rate / 20) or 1))
    started = time.perf_counter()
    with first_interrupt_stops() as stop:
        for start in range(0, len(messages), step):
            if rate:
                stop.wait(started + start / rate - time.perf_counter())
            if stop.is_set():
                summary.interrupted = True
                break
            window = messages[start : start + step]
            summary.sent += len(window)
            try:
                if on_batch is not None:
                    summary.acknowledged += on_batch(Batch(batch.contract, list(window)))
                else:
                    assert broker is not None
                    acks = broker.publish(window)
                    # One the broker dropped as a duplicate was not stored: not acknowledged.
                    summary.acknowledged += sum(not ack.duplicate for ack in acks)
                    summary.latencies += [ack.latency_ms for ack in acks]
            except BrokerError as exc:
                summary.failed += len(window)
                summary.error = str(exc)
                break
            advance(len(window))
        summary.interrupted = summary.interrupted or stop.is_set()
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def first_interrupt_stops() -> Iterator[threading.Event]:
    """SIGINT sets the event instead of raising: a KeyboardInterrupt inside a client library's
    C code (librdkafka's flush) would leave the window in flight unaccounted for."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def interrupted(_signum: int, _frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


# --- tail -----------------------------------------------------------------------------------------


def default_topic(stack: Stack) -> str:
    names = stack.topics()
    if len(names) == 1:
        return names[0]
    raise UsageError(
        "the contracts name several topics: which one?",
        where="TOPIC",
        hint=f"e.g. `edaenv tail {names[0]}`; topics: {', '.join(names)}",
    )


def record(delivery: Any) -> dict[str, Any]:
    """A delivery as a dict: envelope, data (parsed when it is JSON), broker position."""
    try:
        data: Any = json.loads(delivery.value, parse_constant=_not_json)
    except ValueError:
        data = delivery.value.decode("utf-8", "replace")
    return {
        "topic": delivery.topic,
        "key": delivery.key,
        "position": delivery.position,
        "attributes": delivery.attributes,
        "headers": delivery.headers,
        "data": data,
    }


def json_line(delivery: Any) -> str:
    """record() as one JSON line. A body that is strict JSON on one line goes in as it is:
    parsed to check it, never encoded again."""
    head = _dumps(
        {
            "topic": delivery.topic,
            "key": delivery.key,
            "position": delivery.position,
            "attributes": delivery.attributes,
            "headers": delivery.headers,
        }
    )
    value = delivery.value
    try:
        parsed = json.loads(value, parse_constant=_not_json)
    except ValueError:
        data = _dumps(value.decode("utf-8", "replace"))
    else:
        data = value.decode() if b"\n" not in value and b"\r" not in value else _dumps(parsed)
    return f'{head[:-1]},"data":{data}}}\n'


def _dumps(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, check_circular=False, default=str
    )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def matches(delivery: Any, event_type: str | None, key: str | None) -> bool:
    if key is not None and delivery.key != key:
        return False
    if event_type is not None:
        found = delivery.attributes.get("type", "")
        return found == event_type or found.startswith(f"{event_type}.v")
    return True
