"""`edaenv publish`, `seed` and `tail`: events on the broker, checked against their contracts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edaenv.cli import common
from edaenv.errors import UsageError

if TYPE_CHECKING:
    from edaenv.application import Stack
    from edaenv.application.publishing import Batch
    from edaenv.brokers.base import Broker

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
OutboxOption = Annotated[
    bool,
    typer.Option(
        "--via-outbox",
        help="Insert into the outbox table in one transaction instead; the relay publishes it.",
    ),
]
HeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        "-H",
        metavar="NAME=VALUE",
        help="Add a header (repeatable); traceparent= and correlationid= replace the envelope's.",
    ),
]


def register(app: typer.Typer) -> None:
    app.command()(publish)
    app.command()(seed)
    app.command()(tail)


def publish(
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="Event type: OrderPlaced (latest version) or OrderPlaced.v1."
        ),
    ],
    stdin: Annotated[
        str | None,
        typer.Argument(
            metavar="[-]", help="Read the data from standard input.", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The event data as JSON.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the data from a JSON file.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Message key (default: the contract's aggregate id field of the data)."),
    ] = None,
    header: HeaderOption = None,
    via_outbox: OutboxOption = False,
    json_: JsonOption = False,
) -> None:
    """Publish one event, validated against its contract, as a CloudEvent with broker
    acknowledgement; print its id and where it landed."""
    from edaenv import console
    from edaenv.application import Stack, publishing

    stack = Stack(common.config())
    config = stack.config
    contract = stack.contract(event_type)
    where, value = _read_data(stdin, data, file)
    batch = publishing.prepare(
        config, contract, [(where, value)], key=key, header_pairs=header or []
    )
    message = batch.messages[0]
    if via_outbox:
        with publishing.commit_span(config, message, header or []):
            publishing.write_outbox(stack, batch)
        position: dict[str, Any] = {"outbox": True}
    else:
        broker = _connect(stack, batch)
        try:
            position = publishing.send(broker, batch.messages)[0]
        finally:
            broker.close()
    result = {
        "id": message.attributes["id"],
        "type": contract.name,
        "topic": message.topic,
        "key": message.key,
        "position": position,
    }
    if json_:
        console.emit_json(result)
        return
    console.plain(f"{result['id']} {_where(message.topic, position)}")


def seed(
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="Event type: OrderPlaced (latest version) or OrderPlaced.v1."
        ),
    ],
    count: Annotated[
        int | None,
        typer.Option(
            "--count", "-n", help="How many events (default with --from-file: every line)."
        ),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="At most this many events per second.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file", help="Events from a JSON Lines file instead of generated data."
        ),
    ] = None,
    random_seed: Annotated[
        int | None, typer.Option("--random-seed", help="Generate the same data for the same seed.")
    ] = None,
    via_outbox: Annotated[
        bool,
        typer.Option(
            "--via-outbox",
            help="Insert into the outbox table instead (one transaction per 5000 events); the "
            "relay publishes them.",
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Publish many schema-valid events (generated, or from a file) with windowed broker
    acknowledgements; report sent / acknowledged / failed, msg/s and ack latency."""
    from edaenv import console
    from edaenv.application import Stack, publishing
    from edaenv.events.validate import read_jsonl

    if count is None and from_file is None:
        raise UsageError("how many events?", where="--count", hint="e.g. --count 1000")
    if count is not None and count < 1:
        raise UsageError(
            f"--count must be at least 1, got {count}", where="--count", hint="e.g. --count 1000"
        )
    if rate is not None and rate <= 0:
        raise UsageError(
            f"--rate must be positive, got {rate:g}",
            where="--rate",
            hint="e.g. --rate 500 (events per second), or leave it out",
        )
    stack = Stack(common.config())
    config = stack.config
    contract = stack.contract(event_type)
    # The destination first: an unreachable one fails in a second, not after generating
    # everything.
    if via_outbox:
        publishing.check_outbox(stack)
    broker = None if via_outbox else stack.broker()
    try:
        if from_file is not None:
            items: Any = read_jsonl(from_file)
            if count is not None:
                items = (item for _, item in zip(range(count), items, strict=False))
        else:
            assert count is not None
            items = publishing.generated(contract, count, random_seed)
        with console.status(f"checking the events against {contract.name}"):
            batch = publishing.prepare(config, contract, items)
        if not batch.messages:
            raise UsageError(
                f"{from_file} holds no events",
                where="--from-file",
                hint="one JSON object per line",
            )
        if broker is not None:
            publishing.check_sizes(batch, broker.max_message_bytes)
            broker.ensure_topology([contract.topic])
        with console.progress(len(batch.messages), f"seeding {contract.name}") as advance:
            summary = publishing.seed(
                broker,
                batch,
                rate=rate,
                advance=advance,
                on_batch=(lambda part: publishing.write_outbox(stack, part))
                if via_outbox
                else None,
            )
    finally:
        if broker is not None:
            broker.close()
    report = {
        "type": contract.name,
        "topic": contract.topic,
        "via": "outbox" if via_outbox else config.broker,
        **summary.as_dict(),
    }
    if json_ or not console.stdout_is_terminal():
        console.emit_json(report)
    else:
        latency = report["ack_latency_ms"]
        console.table(
            f"seeded {contract.name} -> {contract.topic}",
            ["sent", "acknowledged", "failed", "msg/s", "ack p50 ms", "ack p99 ms"],
            [
                [
                    report["sent"],
                    report["acknowledged"],
                    report["failed"],
                    report["msg_per_s"],
                    latency["p50"],
                    latency["p99"],
                ]
            ],
        )
    if summary.error:
        from edaenv.errors import BrokerError

        raise BrokerError(f"stopped after {summary.acknowledged} acknowledged: {summary.error}")
    if summary.interrupted:
        console.warn(f"interrupted: {summary.acknowledged} of {len(batch.messages)} acknowledged")
        raise typer.Exit(130)


def tail(
    topic: Annotated[
        str | None,
        typer.Argument(help="Topic (default: the contracts' topic, when they name one)."),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest event kept.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="Keep waiting for new events; --no-follow prints what is "
            "there (from the beginning) and exits.",
        ),
    ] = True,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Stop after this many (matching) events.")
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option("--type", help="Only this event type (OrderPlaced or OrderPlaced.v1)."),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only this message key (aggregate id).")] = None,
    json_: Annotated[
        bool,
        typer.Option("--json", help="JSON lines (the default when the output is no terminal)."),
    ] = False,
) -> None:
    """Show events as they arrive, without side effects: no consumer group offsets committed,
    nothing taken from any queue."""
    from edaenv import console
    from edaenv.application import Stack, publishing
    from edaenv.names import shown

    if limit is not None and limit < 1:
        raise UsageError(
            f"--limit must be at least 1, got {limit}", where="--limit", hint="e.g. --limit 10"
        )
    stack = Stack(common.config())
    name = topic or publishing.default_topic(stack)
    as_json = json_ or not console.stdout_is_terminal()
    broker = stack.broker()
    count = 0
    # Following, each line goes out at once; otherwise lines are written in blocks.
    lines: list[str] = []
    block = 1 if follow else 500
    try:
        deliveries = broker.tail(
            name, from_beginning=from_beginning or not follow, follow=follow, idle_timeout=5.0
        )
        for delivery in deliveries:
            if not publishing.matches(delivery, event_type, key):
                continue
            if as_json:
                lines.append(publishing.json_line(delivery))
                if len(lines) >= block:
                    _write(lines)
            else:
                _show(publishing.record(delivery))
            count += 1
            if limit is not None and count >= limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        _write(lines)
        broker.close()
    if not as_json and not count and not follow:
        console.info(f"no events on {shown(name)}")


def _connect(stack: Stack, batch: Batch) -> Broker:
    """The broker, after checking every event's size against it, with the topic's topology."""
    from edaenv.application import publishing

    broker = stack.broker()
    try:
        publishing.check_sizes(batch, broker.max_message_bytes)
        broker.ensure_topology([batch.contract.topic])
    except BaseException:
        broker.close()
        raise
    return broker


def _read_data(stdin: str | None, data: str | None, file: Path | None) -> tuple[str, Any]:
    from edaenv.config import decode_utf8, read_utf8
    from edaenv.events.validate import parse_json
    from edaenv.names import shown

    given = [
        name
        for name, value in (("-", stdin), ("--data", data), ("--file", file))
        if value is not None
    ]
    if len(given) != 1:
        raise UsageError(
            "give the event data once: --data JSON, --file FILE, or - for stdin"
            if not given
            else f"the data is given twice: {' and '.join(given)}",
            where=given[-1] if given else "TYPE",
            hint='e.g. edaenv publish OrderPlaced --data \'{"orderId": "..."}\'',
        )
    if stdin is not None:
        if stdin != "-":
            raise UsageError(
                f"unexpected argument {shown(stdin)}",
                where="[-]",
                hint="only `-` (read the data from stdin) may follow TYPE",
            )
        text = decode_utf8(sys.stdin.buffer.read(), where="stdin", hint="send the data as UTF-8")
        return "stdin", parse_json(text, "stdin")
    if file is not None:
        try:
            text = read_utf8(file, where=str(file), hint="save the file as UTF-8")
        except OSError as exc:
            raise UsageError(
                f"cannot read {file}: {exc.strerror}", where="--file", hint="check the path"
            ) from None
        return str(file), parse_json(text, str(file))
    assert data is not None
    return "--data", parse_json(data, "--data")


def _where(topic: str, position: dict[str, Any]) -> str:
    if position.get("outbox"):
        return "-> outbox (the relay publishes it)"
    shown = " ".join(
        f"{k}={v}" for k, v in position.items() if k not in ("latency_ms", "duplicate")
    )
    latency = position.get("latency_ms")
    acked = f" (acked in {latency:.1f} ms)" if latency is not None else ""
    if position.get("duplicate"):
        return f"-> {topic}: dropped by the broker as a duplicate of {shown}, not stored again"
    return f"-> {topic} {shown}{acked}"


def _write(lines: list[str]) -> None:
    if lines:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
        lines.clear()


def _show(item: dict[str, Any]) -> None:
    import json

    from edaenv import console

    attributes = item["attributes"]
    position = " ".join(f"{k}={v}" for k, v in item["position"].items())
    head = (
        f"{item['topic']} {position}  {attributes.get('type', '(no type)')}  "
        f"key={item['key']}  id={attributes.get('id', '-')}  {attributes.get('time', '')}"
    )
    console.heading(head)
    extra = {k: v for k, v in attributes.items() if k not in ("type", "id", "time")}
    console.detail("  " + " ".join(f"{k}={v}" for k, v in extra.items()))
    data = item["data"]
    console.line("  " + (json.dumps(data) if not isinstance(data, str) else data))
