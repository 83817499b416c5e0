"""`edaenv relay` and `edaenv dlq list | show | replay`: the outbox relay and dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from edaenv.cli import common
from edaenv.errors import UsageError

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker
    from edaenv.config import Config
    from edaenv.outbox.dlq import DeadLetter
    from edaenv.outbox.relay import Options
    from edaenv.outbox.runtime import Settings

dlq_app = typer.Typer(name="dlq", help="Inspect and re-publish dead letters.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TopicOption = Annotated[
    list[str] | None,
    typer.Option(
        "--topic",
        help="Dead letters of this topic (repeatable; default: every contract's topic).",
        metavar="TOPIC",
    ),
]


def register(app: typer.Typer) -> None:
    app.command()(relay)
    dlq_app.command("list")(dlq_list)
    dlq_app.command("show")(dlq_show)
    dlq_app.command("replay")(dlq_replay)
    app.add_typer(dlq_app)


def relay(
    batch_size: Annotated[int, typer.Option(help="Rows claimed and published per batch.")] = 500,
    retention: Annotated[
        float, typer.Option(help="Seconds a published row is kept before the relay deletes it.")
    ] = 24 * 3600.0,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between polls when no NOTIFY wakes the relay.")
    ] = 1.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics and /healthz on this port of 127.0.0.1.")
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Publish what is pending, then exit (for scripts and CI)."),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Publish committed outbox rows to the broker, at least once and in order per aggregate,
    from this host (the stack's `relay` service does the same in a container). Stops cleanly on
    SIGTERM or Ctrl-C."""
    from edaenv import console
    from edaenv.outbox.relay import Options
    from edaenv.outbox.runtime import from_config

    checks = (
        ("--batch-size", batch_size, 1),
        ("--poll-interval", poll_interval, 0.01),
        ("--retention", retention, 0),
    )
    for name, value, low in checks:
        if value < low:
            raise UsageError(
                f"{name} must be at least {low}, got {value}",
                where=name,
                hint=f"e.g. {name} {low if low else 3600}",
            )
    config = common.config()
    options = Options(batch_size=batch_size, poll_interval=poll_interval, retention=retention)
    settings = from_config(config)
    events_dir = config.scaffold_dir / "events"
    if once:
        published = _relay_once(config, settings, options)
        if json_:
            console.emit_json({"published": published})
        else:
            console.success(f"published {published} outbox row(s)")
        return
    from dataclasses import replace

    from edaenv.outbox.service import run_relay

    console.info(f"relay running ({config.broker}); Ctrl-C stops it after the batch in flight")
    run_relay(replace(settings, metrics_port=metrics_port), events_dir, options)


def _relay_once(config: Config, settings: Settings, options: Options) -> int:
    from edaenv.events.contracts import load_contracts
    from edaenv.outbox.service import open_relay

    relay = open_relay(settings, load_contracts(config.scaffold_dir / "events"), options)
    try:
        return relay.drain()
    finally:
        relay.close()
        relay.broker.close()


def dlq_list(topic: TopicOption = None, json_: JsonOption = False) -> None:
    """List the dead letters: the original event's id, where it came from, why it failed."""
    from edaenv import console

    letters = _read(topic)
    if json_:
        console.emit_json([letter.summary() for letter in letters])
        return
    if not letters:
        console.success("no dead letters")
        return
    console.table(
        None,
        ["ID", "TYPE", "KEY", "TOPIC", "ATTEMPTS", "EXCEPTION", "LAST FAILURE"],
        [
            [
                s["id"],
                s["type"],
                s["key"],
                s["topic"],
                s["attempts"],
                f"{s['exception'].rpartition('.')[2]}: {s['message']}"[:80],
                s["last_failure"],
            ]
            for s in (letter.summary() for letter in letters)
        ],
    )


def dlq_show(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="Event id (or a unique prefix).")],
    topic: TopicOption = None,
    json_: JsonOption = False,
) -> None:
    """Show one dead letter: failure headers, CloudEvents attributes and the event data."""
    import json

    from edaenv import console
    from edaenv.outbox.dlq import find

    detail = find(_read(topic), event_id).detail()
    if json_:
        console.emit_json(detail)
        return
    rows = [
        [key, detail[key]]
        for key in (
            "id",
            "type",
            "key",
            "topic",
            "attempts",
            "exception",
            "message",
            "last_failure",
        )
    ]
    rows += [[f"header {k}", v] for k, v in sorted(detail["headers"].items())]
    rows += [[f"attribute {k}", v] for k, v in sorted(detail["attributes"].items())]
    console.table(f"dead letter {detail['id']}", ["FIELD", "VALUE"], rows)
    console.plain(json.dumps(detail["data"], indent=2, sort_keys=True))


def dlq_replay(
    event_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="Event id (or a unique prefix) to re-publish."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Re-publish every dead letter.")] = False,
    topic: TopicOption = None,
    json_: JsonOption = False,
) -> None:
    """Re-publish dead letters to their original topic (acknowledged by the broker). The
    consumer's idempotency makes a replay of an event it already handled a no-op."""
    from edaenv import console
    from edaenv.outbox.dlq import find, replay

    if (event_id is None) == (not all_):
        raise UsageError(
            "give either an ID or --all",
            where="edaenv dlq replay",
            hint="`edaenv dlq list` shows the ids; --all replays every one",
        )
    config = common.config()
    broker = _broker(config)
    try:
        letters = _read(topic, config, broker)
        chosen = letters if all_ else [find(letters, event_id or "")]
        count = replay(broker, chosen)
    finally:
        broker.close()
    if json_:
        console.emit_json({"replayed": [letter.id for letter in chosen], "count": count})
    else:
        console.success(f"re-published {count} event(s)")


def _broker(config: Config) -> Broker:
    from edaenv.outbox.runtime import connect_broker, from_config

    return connect_broker(from_config(config))


def _read(
    topics: list[str] | None, config: Config | None = None, broker: Broker | None = None
) -> list[DeadLetter]:
    from edaenv.events.contracts import load_contracts
    from edaenv.events.contracts import topics as contract_topics
    from edaenv.outbox.dlq import read_dead_letters

    config = config or common.config()
    names = topics or contract_topics(load_contracts(config.scaffold_dir / "events"))
    if not names:
        raise UsageError(
            "no topics: the scaffold has no event contracts",
            where="--topic",
            hint="pass --topic NAME, or add a contract under events/",
        )
    own = broker is None
    broker = broker or _broker(config)
    try:
        return read_dead_letters(broker, config.broker, names)
    finally:
        if own:
            broker.close()
