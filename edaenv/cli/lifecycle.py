"""`edaenv up/down/status/logs/env`: the stack's lifecycle on the Docker engine.

Exit codes: 0 ok; 1 a service failed or is not healthy (also `status` when the stack is not
all healthy); 2 bad usage or config; 4 the machine is not ready (no engine, no compose v2, a port
in use), in which case nothing was started.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edaenv.cli import common
from edaenv.errors import EdaenvError, EngineError, UsageError

if TYPE_CHECKING:
    from edaenv.config import Config
    from edaenv.console import Update
    from edaenv.engine.drift import Drift
    from edaenv.engine.status import ServiceState
    from edaenv.outbox.stuck import Report


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(logs)
    app.command()(env)


def up(
    services: Annotated[
        list[str] | None,
        typer.Argument(
            help="Services to start, with what they depend on (default: all).",
            metavar="[SERVICE]...",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until every service is healthy.")
    ] = True,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the health checks before failing.", min=1, metavar="SECONDS"
        ),
    ] = 180,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (progress goes to stderr).")
    ] = False,
) -> None:
    """Check the machine, render the stack, start it and wait until it is healthy; then show
    its endpoints."""
    started = time.monotonic()
    from edaenv.engine import lifecycle

    config = common.config()
    # rich is imported only once compose runs: it is not on the way to a healthy stack.
    with contextlib.ExitStack() as displays:
        progress = _Progress(displays, None if json_ else config)
        result = lifecycle.up(
            config,
            services or [],
            wait=wait,
            timeout=timeout,
            progress=progress.update,
            warn=_warn,
            started=started,
            step=progress.step,
        )
    from edaenv import console

    if json_:
        console.emit_json(
            {
                "project": config.project,
                "healthy": wait and all(lifecycle.done(state) for state in result.services),
                "seconds": round(result.seconds, 2),
                "services": [
                    {
                        "service": state.service,
                        "state": state.state,
                        "health": state.health,
                        "ready_s": round(result.ready_at[state.service], 2)
                        if state.service in result.ready_at
                        else None,
                    }
                    for state in result.services
                ],
                "stale_volumes": result.stale_volumes,
            }
        )
        return
    _endpoints_table(config, progress.endpoints or _endpoint_rows(config))
    if not wait:
        console.success(
            f"stack '{config.project}' started in {result.seconds:.1f}s, health "
            "checks still running: `edaenv status` shows them"
        )
        return
    slowest = max(result.ready_at.items(), key=lambda item: item[1], default=None)
    detail = f" (slowest: {slowest[0]} at {slowest[1]:.1f}s)" if slowest else ""
    console.success(f"stack '{config.project}' healthy in {result.seconds:.1f}s{detail}")
    console.info("`edaenv env` prints these endpoints with credentials as EDAENV_* variables")


def down(
    volumes: Annotated[
        bool,
        typer.Option(
            "--volumes", "-v", help="Also delete the volumes: every message, row and metric."
        ),
    ] = False,
    rmi: Annotated[
        bool,
        typer.Option(
            "--rmi", help="Also remove the relay and consumer images `up` built (not pulled ones)."
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Stop and remove the stack's containers and network (volumes are kept unless asked)."""
    from edaenv import console
    from edaenv.engine import lifecycle

    config = common.config()
    done = lifecycle.down(config, volumes=volumes, images=rmi)
    if json_:
        console.emit_json(
            {
                "project": config.project,
                "containers_removed": done.containers,
                "volumes_deleted": done.volumes if volumes else None,
                "images_removed": done.images,
            }
        )
        return
    kept = (
        f", {done.volumes} volume(s) deleted" if volumes else "; volumes kept (--volumes deletes)"
    )
    built = f", {len(done.images)} built image(s) removed" if rmi else ""
    console.success(
        f"stack '{config.project}' is down: {done.containers} container(s) removed{kept}{built}"
    )


def status(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """State, health, ports and uptime of every service; what differs from edaenv.yaml and the
    injected faults that are active (exit 1 unless all are healthy and as edaenv.yaml says)."""
    from edaenv import console
    from edaenv.application import Stack
    from edaenv.engine import api
    from edaenv.engine.drift import advice, drift

    config = common.config()
    health = Stack(config).health()
    states, missing, unhealthy = list(health.states), list(health.missing), health.unhealthy
    stuck = _stuck_rows(config, states)
    drifted = drift(config, api.connect()) if states else []
    faults = _active_faults(config, states)
    healthy = health.all_healthy and not stuck.total and not drifted
    if json_:
        console.emit_json(
            {
                "project": config.project,
                "healthy": healthy,
                "missing": missing,
                "services": [state.to_json() for state in states],
                "stuck_outbox_rows": stuck.to_json(),
                "drift": [d.to_json() for d in drifted],
                "active_faults": faults,
            }
        )
    else:
        rows = [
            (s.service, _shown(s, stuck.total), _ports(s), _duration(s.uptime_s)) for s in states
        ]
        rows += [(name, "not created", "", "") for name in missing]
        console.table(
            f"stack '{config.project}'",
            ("service", "state", "ports (127.0.0.1 -> container)", "uptime"),
            rows,
        )
        if drifted:
            console.warn(
                "the running stack differs from edaenv.yaml:\n"
                + "\n".join(f"  {d.shown()}" for d in drifted),
                hint=advice(drifted),
            )
        if faults:
            console.warn(
                "injected faults are active:\n" + "\n".join(map(_fault_line, faults)),
                hint="`edaenv inject heal --all` ends every one",
            )
        faulted = {fault.get("target") for fault in faults}
        down = [name for name in missing + unhealthy if name not in faulted]
        if down and faults:
            # A paused broker takes the relay and consumer down with it: `up` would not help.
            console.info(
                f"not healthy: {', '.join(down)}, maybe because of the faults above; "
                "`edaenv logs SERVICE` shows why a service fails"
            )
        elif down:
            console.info(
                f"not healthy: {', '.join(down)}; `edaenv up` starts "
                "the stack, `edaenv logs SERVICE` shows why a service fails"
            )
        _show_stuck(stuck)
    if not healthy:
        raise typer.Exit(1)


def _active_faults(config: Config, states: list[ServiceState]) -> list[dict[str, Any]]:
    """Faults `edaenv inject` left active (pause, stop, partition, held events). A container
    fault whose container is gone (`down` and `up` since) no longer holds anything."""
    from edaenv.faults.state import FaultStore

    present = {state.id for state in states}
    return [
        fault.to_json()
        for fault in FaultStore(config.generated_dir).active()
        if fault.container is None or fault.container in present
    ]


FAULT_STATES = {
    "kill": "is killed",
    "stop": "is stopped",
    "pause": "is paused",
    "partition": "is cut off from its networks",
    "delay": "has events held back",
}


def _fault_line(fault: dict[str, Any]) -> str:
    """`broker is paused (fault 3f2a1c from `edaenv inject pause`): `edaenv inject heal 3f2a1c`
    ends it`; a fault injected with `--for` also says when it heals by itself."""
    kind, ident = fault.get("kind", "?"), fault.get("id", "?")
    state = FAULT_STATES.get(kind, f"has a {kind} fault")
    until = f", heals by itself at {fault['until']}" if fault.get("until") else ""
    return (
        f"  {fault.get('target')} {state} (fault {ident} from `edaenv inject {kind}`{until}): "
        f"`edaenv inject heal {ident}` ends it"
    )


def _stuck_rows(config: Config, states: list[ServiceState]) -> Report:
    """Outbox rows the relay cannot publish (they and their aggregates' later rows wait)."""
    from edaenv.outbox.stuck import Report, read_stack

    if not any(s.service == "postgres" and s.ready for s in states):
        return Report(0, [])
    return read_stack(config, limit=20) or Report(0, [])


def _shown(state: ServiceState, stuck: int) -> str:
    return "degraded" if state.service == "relay" and stuck and state.ready else state.shown()


def _show_stuck(stuck: Report) -> None:
    from edaenv import console

    if not stuck.total:
        return
    console.warn(
        f"relay degraded: {stuck.total} outbox row(s) cannot be published; each holds back "
        "the later rows of its aggregate, other aggregates flow",
        "correct the rows (the relay checks them again within seconds), or the contracts; "
        "`edaenv bundle` keeps the list",
    )
    for row in stuck.rows:
        console.info(f"  {row.shown()}")
        console.info(f"    hint: {row.hint}")
    if stuck.total > len(stuck.rows):
        console.info(f"  ... and {stuck.total - len(stuck.rows)} more")


def logs(
    service: Annotated[
        str | None, typer.Argument(help="One service (default: all).", show_default=False)
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    tail: Annotated[
        int | None, typer.Option(help="Only the last N lines of each service.", metavar="N")
    ] = None,
) -> None:
    """Print the services' logs."""
    from edaenv.engine import compose

    config = common.config()
    if service is not None and service not in config.services():
        raise UsageError(
            f"no service '{service}' in this stack",
            where="SERVICE",
            hint=f"services of '{config.project}': {', '.join(config.services())}",
        )
    # compose prints nothing and exits 0 for a stack that is not there: say so instead (the
    # engine knows the project's containers by label, rendered compose file or not).
    from edaenv.engine import api
    from edaenv.engine.watch import snapshot

    present = {state.service for state in snapshot(api.connect(), config.project)}
    if not present or (service is not None and service not in present):
        what = f"service '{service}' of stack" if service else "stack"
        raise EngineError(
            f"{what} '{config.project}' has no container, so no logs",
            hint="start it with `edaenv up`; `edaenv status` shows what runs",
        )
    if not config.compose_file.is_file():
        raise UsageError(
            f"{config.compose_file} does not exist, so compose cannot read the logs",
            hint="`edaenv render` writes it again",
        )
    command = compose.compose(config, "logs").flag("--follow", follow).option("--tail", tail)
    compose.run([*command, *([service] if service else [])], capture=False)


def env(
    json_: Annotated[bool, typer.Option("--json", help="A JSON object instead of lines.")] = False,
) -> None:
    """The endpoints as EDAENV_* variables (credentials included), for scripts and tests:
    `set -a; eval "$(edaenv env)"; set +a`."""
    import shlex

    from edaenv import console
    from edaenv.stack.endpoints import environment

    config = common.config()
    variables = environment(config)
    drifted = _warn_drift(config)
    if json_:
        # Only on drift: the object stays a plain variable -> value mapping otherwise.
        extra = {"drift": [d.to_json() for d in drifted]} if drifted else {}
        console.emit_json({**variables, **extra})
        return
    console.plain("".join(f"{key}={shlex.quote(value)}\n" for key, value in variables.items()))


def _warn_drift(config: Config) -> list[Drift]:
    """On stderr, when the running stack is not what edaenv.yaml describes: these endpoints
    may not exist. Silent without an engine or a stack (`env` works before `up`)."""
    from edaenv import console
    from edaenv.engine.drift import advice, drift_if_running

    drifted = drift_if_running(config)
    if drifted:
        console.warn(
            "the running stack differs from edaenv.yaml, so some of these endpoints do not "
            "exist:\n" + "\n".join(f"  {d.shown()}" for d in drifted),
            hint=advice(drifted),
        )
    return drifted


class _Progress:
    """Live table on a terminal; elsewhere one line per state change."""

    def __init__(self, displays: contextlib.ExitStack, endpoints_of: Config | None):
        """endpoints_of: the config whose endpoints table `up` shows at the end: worked out
        while compose runs, not once the stack is healthy."""
        self.displays = displays
        self.endpoints_of = endpoints_of
        self.endpoints: list[tuple[str, str, str]] = []
        self.live: Update | None = None
        self.started = False
        self.shown: dict[str, str] = {}
        self.ready_at: dict[str, float] = {}

    def step(self, message: str) -> None:
        """What `up` does before any container exists (wheels, builds, pulls): said at once,
        so a terminal is never blank for seconds."""
        from edaenv import console

        console.info(f"{message} ...")

    def update(self, states: list[ServiceState], elapsed: float) -> None:
        from edaenv import console

        if not self.started:
            self.started = True
            self.live = self.displays.enter_context(
                console.live_table(("service", "state", "time"))
            )
            # A .env broken meanwhile fails `up` at the end, after the stack, as it did.
            if self.endpoints_of is not None:
                with contextlib.suppress(EdaenvError):
                    self.endpoints = _endpoint_rows(self.endpoints_of)
        rows = []
        for state in states:
            if state.ready:
                self.ready_at.setdefault(state.service, elapsed)
            else:
                self.ready_at.pop(state.service, None)
            at = self.ready_at.get(state.service, elapsed)
            shown = console.state(state.shown(), state.health or state.state)
            rows.append((state.service, shown, f"{at:.1f}s"))
            if self.live is None and self.shown.get(state.service) != state.shown():
                console.info(f"  {state.service:<12} {state.shown():<12} {elapsed:5.1f}s")
            self.shown[state.service] = state.shown()
        if self.live is not None:
            self.live(rows)


def _warn(message: str, hint: str) -> None:
    from edaenv import console

    console.warn(message, hint)


def _endpoints_table(config: Config, rows: list[tuple[str, str, str]]) -> None:
    from edaenv import console

    console.table(f"endpoints of '{config.project}'", ("service", "what", "address"), rows)


def _endpoint_rows(config: Config) -> list[tuple[str, str, str]]:
    from edaenv.stack.endpoints import endpoints

    return [(e.service, e.what, e.shown()) for e in endpoints(config)]


def _ports(state: ServiceState) -> str:
    return ", ".join(f"{p.host_port}->{p.container_port}" for p in state.ports)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
