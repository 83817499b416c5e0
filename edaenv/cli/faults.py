"""`edaenv inject ...`: failure injection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from edaenv.cli import common
from edaenv.errors import UsageError

if TYPE_CHECKING:
    from edaenv.config import Config
    from edaenv.faults.state import Fault

inject_app = typer.Typer(
    name="inject",
    no_args_is_help=True,
    help="Break the stack on purpose: container faults on roles (broker, relay, consumer, "
    "postgres, ...) and message faults through the broker. Every fault is recorded; "
    "`inject status` lists what is active, `inject heal --all` undoes it.",
)

Role = Annotated[
    str, typer.Argument(help="Service role: broker, postgres, relay, consumer, ...", metavar="ROLE")
]
For = Annotated[
    str | None,
    typer.Option(
        "--for",
        help="Heal by itself after this long (e.g. 10s, 2m): a detached "
        "`edaenv inject heal ID --after N` process does it.",
        metavar="DURATION",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the fault record as JSON.")]
Timeout = Annotated[int, typer.Option(help="Seconds the container gets to stop gracefully.")]


def register(app: typer.Typer) -> None:
    app.add_typer(inject_app)


@inject_app.command()
def kill(
    role: Role,
    signal: Annotated[str, typer.Option(help="Signal to send.")] = "SIGKILL",
    for_: For = None,
    json: Json = False,
) -> None:
    """Kill a role's container (SIGKILL by default): no graceful shutdown."""
    _container_fault("kill", role, for_, json, signal=signal)


@inject_app.command()
def stop(role: Role, timeout: Timeout = 10, for_: For = None, json: Json = False) -> None:
    """Stop a role's container gracefully (SIGTERM, then SIGKILL after --timeout)."""
    _container_fault("stop", role, for_, json, timeout=timeout)


@inject_app.command()
def pause(role: Role, for_: For = None, json: Json = False) -> None:
    """Freeze a role's processes: connections stay open but nothing answers."""
    _container_fault("pause", role, for_, json)


@inject_app.command()
def partition(role: Role, for_: For = None, json: Json = False) -> None:
    """Disconnect a role's container from the stack network (its aliases are recorded)."""
    _container_fault("partition", role, for_, json)


@inject_app.command()
def restart(role: Role, timeout: Timeout = 10, json: Json = False) -> None:
    """Restart a role's container (recorded in the history; nothing stays to heal)."""
    _container_fault("restart", role, None, json, timeout=timeout)


@inject_app.command()
def start(role: Role, json: Json = False) -> None:
    """Start a killed or stopped role; resolves its recorded kill/stop faults."""
    _repair("start", role, json)


@inject_app.command()
def unpause(role: Role, json: Json = False) -> None:
    """Unpause a paused role; resolves its recorded pause fault."""
    _repair("unpause", role, json)


@inject_app.command()
def heal(
    targets: Annotated[
        list[str] | None, typer.Argument(help="Fault ids or roles to heal.", metavar="[ID|ROLE]...")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Heal every active fault.")] = False,
    after: Annotated[
        float | None,
        typer.Option(help="Wait this many seconds first (used by --for).", hidden=True),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait until the healed containers are healthy again.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 120,
    json: Json = False,
) -> None:
    """Undo active faults: start, unpause, reconnect with service aliases, release held events."""
    import time

    from edaenv import console
    from edaenv.errors import EngineError
    from edaenv.faults import service

    if not targets and not all_:
        raise UsageError(
            "name what to heal",
            where="edaenv inject heal",
            hint="pass fault ids or roles (see `edaenv inject status`), or --all",
        )
    if after:
        time.sleep(after)
    config = common.config()
    healed = service.heal(config, targets or [], all_=all_, quiet_missing=after is not None)
    if wait:
        roles = sorted({f.target for f in healed if f.target in config.services()})
        pending = service.wait_healthy(config, roles, timeout)
        if pending:
            raise EngineError(
                f"not healthy after {timeout:.0f}s: {', '.join(pending)}",
                hint="see `edaenv status` and `edaenv logs ROLE`",
            )
    if json:
        console.emit_json([f.to_json() for f in healed])
        return
    if not healed and after is None:
        console.info("no active fault matched: nothing to heal")
    for fault in healed:
        console.success(f"healed {fault.id} ({fault.kind} {fault.target}): {fault.heal_result}")


@inject_app.command("status")
def status_(json: Json = False) -> None:
    """List the active faults, with what their container looks like now."""
    from edaenv import console
    from edaenv.faults import service

    faults = service.status(common.config())
    if json:
        console.emit_json([f.to_json() for f in faults])
        return
    if not faults:
        console.info("no active faults")
        return
    console.table(
        "active faults",
        ["id", "fault", "target", "since", "heals at", "now"],
        [(f.id, f.kind, f.target, f.started, f.until or "-", f.now or "") for f in faults],
    )


# --- message faults ---------------------------------------------------------------------

Event = Annotated[
    str | None,
    typer.Option(
        help="Event type (e.g. OrderPlaced or OrderPlaced.v1); default: the only/first contract."
    ),
]


@inject_app.command()
def duplicate(
    event_id: Annotated[str, typer.Argument(help="id of an event already published.")],
    times: Annotated[int, typer.Option("--times", "-n", help="Extra deliveries.", min=1)] = 1,
    topic: Annotated[str | None, typer.Option(help="Topic to search (default: all).")] = None,
    json: Json = False,
) -> None:
    """Re-deliver an already published event N more times, byte for byte, same CloudEvents id.
    The broker's own de-duplication (NATS Nats-Msg-Id) is bypassed, so the copies reach the
    consumer and its idempotency is what gets tested; the report counts what the broker
    stored, and names any copy it dropped as a duplicate."""
    from edaenv.faults import messages

    _report(messages.duplicate(common.config(), event_id, times=times, topic=topic), json)


@inject_app.command()
def poison(
    kind: Annotated[
        str,
        typer.Option(
            help="unparseable: bytes that are not JSON; invalid: a CloudEvent whose data "
            "breaks its contract."
        ),
    ] = "unparseable",
    event: Event = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1)] = 1,
    json: Json = False,
) -> None:
    """Publish a message that cannot be parsed or fails its contract (for the dead letters)."""
    from edaenv.faults import messages

    _report(messages.poison(common.config(), kind=kind, event=event, count=count), json)


@inject_app.command()
def burst(
    count: Annotated[int, typer.Argument(help="Events to publish.", min=1)],
    event: Event = None,
    keys: Annotated[int, typer.Option(help="Distinct aggregates.", min=1)] = 100,
    json: Json = False,
) -> None:
    """A spike: N valid events at full speed, straight to the broker."""
    from edaenv.faults import messages

    _report(messages.burst(common.config(), count, event=event, keys=keys), json)


@inject_app.command()
def reorder(
    count: Annotated[
        int, typer.Option("--count", "-n", help="Events of the aggregate.", min=2)
    ] = 5,
    event: Event = None,
    key: Annotated[str | None, typer.Option(help="Aggregate id (default: a fresh one).")] = None,
    json: Json = False,
) -> None:
    """Publish the events of one aggregate out of order (sequence numbers in reverse)."""
    from edaenv.faults import messages

    _report(messages.reorder(common.config(), count, event=event, key=key), json)


@inject_app.command()
def delay(
    by: Annotated[
        str, typer.Option("--by", help="How long to hold them (e.g. 30s).", metavar="DURATION")
    ],
    count: Annotated[int, typer.Option("--count", "-n", min=1)] = 10,
    event: Event = None,
    json: Json = False,
) -> None:
    """Create N events now, hold them, release them after --by: late events whose CloudEvents
    `time` is older than their delivery. Active until released; `heal` releases early."""
    from edaenv.faults import messages
    from edaenv.faults.state import parse_duration

    seconds = parse_duration(by, "--by")
    config = common.config()
    fault = messages.delay(config, count, event=event)
    _report(_schedule_heal(config, fault, seconds), json)


# --- helpers -----------------------------------------------------------------------------


def _container_fault(kind: str, role: str, for_: str | None, json: bool, **options: Any) -> None:
    from edaenv.faults import containers
    from edaenv.faults.state import FaultStore, parse_duration

    seconds = parse_duration(for_) if for_ is not None else None
    config = common.config()
    fault = containers.inject(config, FaultStore(config.generated_dir), kind, role, **options)
    if seconds is not None:
        fault = _schedule_heal(config, fault, seconds)
    _report(fault, json)


def _schedule_heal(config: Config, fault: Fault, seconds: float) -> Fault:
    from edaenv.faults import service

    return service.schedule_heal(config, fault, seconds)


def _repair(kind: str, role: str, json: bool) -> None:
    from edaenv import console
    from edaenv.faults import containers
    from edaenv.faults.state import FaultStore

    config = common.config()
    resolved = containers.repair(config, FaultStore(config.generated_dir), kind, role)
    if json:
        console.emit_json([f.to_json() for f in resolved])
        return
    done = f"; resolved {', '.join(f.id for f in resolved)}" if resolved else ""
    console.success(f"{kind}: {role}{done}")


def _report(fault: Fault, json: bool) -> None:
    from edaenv import console

    if json:
        console.emit_json(fault.to_json())
        return
    what = f"{fault.kind} {fault.target}".strip()
    active = fault.kind in ("kill", "stop", "pause", "partition", "delay")
    until = f", heals by itself at {fault.until}" if fault.until else ""
    note = f" ({fault.summary})" if fault.summary else ""
    console.success(f"{what}{note}: fault {fault.id}{until}")
    if active and not fault.until:
        console.next_step((f"edaenv inject heal {fault.id}", "(or --all)"), label="undo")
