"""`edaenv relay` and `edaenv dlq list | show | replay | purge`: the outbox relay and dead
letters."""

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
    from edaenv.outbox.stuck import Report

dlq_app = typer.Typer(
    name="dlq", help="Inspect, re-publish and remove dead letters.", no_args_is_help=True
)

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
    dlq_app.command("purge")(dlq_purge)
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
        typer.Option(
            "--once",
            help="Publish what is pending, then exit (for scripts and CI); exit 1 when rows "
            "cannot be published.",
        ),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Publish committed outbox rows to the broker, at least once and in order per aggregate,
    from this host (the stack's `relay` service does the same in a container). Rows it cannot
    publish (no contract for their type, a payload breaking its contract, too large) are
    reported, and hold back only their own aggregate. Stops cleanly on SIGTERM or Ctrl-C."""
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
        published, stuck = _relay_once(config, settings, options)
        if json_:
            console.emit_json({"published": published, "stuck": stuck.to_json()})
        else:
            console.success(f"published {published} outbox row(s)")
            if stuck.total:
                console.warn(
                    f"{stuck.total} outbox row(s) cannot be published; each holds back the "
                    "later rows of its aggregate",
                    "correct the rows (or the contracts), then run the relay again",
                )
                for row in stuck.rows:
                    console.info(f"  {row.shown()}")
                    console.info(f"    hint: {row.hint}")
        if stuck.total:
            raise typer.Exit(1)
        return
    from dataclasses import replace

    from edaenv.outbox.service import run_relay

    console.info(f"relay running ({config.broker}); Ctrl-C stops it after the batch in flight")
    run_relay(replace(settings, metrics_port=metrics_port), events_dir, options)


def _relay_once(config: Config, settings: Settings, options: Options) -> tuple[int, Report]:
    from edaenv.events.contracts import load_contracts
    from edaenv.outbox.service import open_relay

    relay = open_relay(settings, load_contracts(config.scaffold_dir / "events"), options)
    try:
        published = relay.drain()
        return published, relay.stuck_report(limit=20)
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
    """Re-publish dead letters to their original topic, once per event, and remove them when
    the broker has acknowledged the re-send: a replay that fails again leaves one new letter.
    The event keeps its id, so the consumer's idempotency makes a replay of an event it
    already handled a no-op."""
    from edaenv import console
    from edaenv.outbox.dlq import chosen, replay

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
        done = replay(broker, letters if all_ else chosen(letters, [event_id or ""]))
    finally:
        broker.close()
    if json_:
        console.emit_json(
            {
                "replayed": done.replayed,
                "count": len(done.replayed),
                "dropped_as_duplicate": done.dropped,
                "removed": done.removed,
            }
        )
        return
    if not letters:
        console.success("no dead letters: nothing to replay")
        return
    console.success(
        f"re-published {len(done.replayed)} event(s); removed {done.removed} dead letter(s)"
    )
    if done.dropped:
        console.warn(
            f"{len(done.dropped)} event(s) not sent again: {config.broker} dropped them as "
            f"duplicates of their earlier replay, which it holds: {', '.join(done.dropped)}"
        )


def dlq_purge(
    event_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--id", help="Event id (or a unique prefix) to remove; repeatable.", metavar="ID"
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask on a terminal.")] = False,
    topic: TopicOption = None,
    json_: JsonOption = False,
) -> None:
    """Remove dead letters for good, without re-publishing them (every letter of each event
    named). Asks first on a terminal, unless --yes."""
    from edaenv import console
    from edaenv.outbox.dlq import chosen, purge

    if bool(event_ids) == all_:
        raise UsageError(
            "give either --id ID (repeatable) or --all",
            where="edaenv dlq purge",
            hint="`edaenv dlq list` shows the ids; --all removes every dead letter",
        )
    config = common.config()
    broker = _broker(config)
    try:
        letters = _read(topic, config, broker)
        doomed = letters if all_ else chosen(letters, event_ids or [])
        if doomed and not yes and console.is_interactive():
            answer = console.ask(
                f"Remove {len(doomed)} dead letter(s) for good",
                _yes_or_no,
                default="n",
                choices=("y", "n"),
            )
            if answer.strip().lower() not in ("y", "yes"):
                console.info("nothing removed")
                return
        removed = purge(broker, doomed)
    finally:
        broker.close()
    if json_:
        console.emit_json({"purged": [letter.id for letter in removed], "count": len(removed)})
        return
    if not doomed:
        console.success("no dead letters: nothing to purge")
        return
    console.success(f"purged {len(removed)} dead letter(s)")
    if len(removed) < len(doomed):
        console.warn(f"{len(doomed) - len(removed)} were gone already (removed meanwhile)")


def _yes_or_no(answer: str) -> None:
    if answer.strip().lower() not in ("y", "yes", "n", "no"):
        raise UsageError("answer y or n")


def _broker(config: Config) -> Broker:
    """The stack's broker on the host. Dead letters need no database: postgres may be off."""
    from edaenv.application import Stack

    return Stack(config).broker()


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
