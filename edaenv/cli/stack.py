"""`edaenv init` and `edaenv render`: the scaffold and the stack's compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edaenv.cli import common
from edaenv.config import BROKERS, COMPONENTS, REQUIRES
from edaenv.errors import UsageError
from edaenv.names import check_owner, check_project, check_topic, safe_project_name, shown


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(render)


def init(
    path: Annotated[Path, typer.Argument(help="Repository to scaffold.")] = Path("."),
    broker: Annotated[
        str | None, typer.Option(help=f"Broker: {', '.join(BROKERS)} (default kafka).")
    ] = None,
    with_: Annotated[
        list[str] | None,
        typer.Option("--with", help="Turn a component on (repeatable).", metavar="COMPONENT"),
    ] = None,
    without: Annotated[
        list[str] | None,
        typer.Option(
            help="Turn a component off (repeatable). Components: "
            + ", ".join(COMPONENTS)
            + "; grafana needs prometheus, outbox and consumer need postgres.",
            metavar="COMPONENT",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Compose project name (default: the directory name, made safe)."),
    ] = None,
    port_offset: Annotated[
        str,
        typer.Option(
            help="Added to every published port; `auto`: the first hundred with all ports free.",
            metavar="N|auto",
        ),
    ] = "0",
    topic: Annotated[str | None, typer.Option(help="Topic of the first event.")] = None,
    owner: Annotated[str | None, typer.Option(help="Team owning the first contract.")] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", "-y", help="Ask nothing: accept the suggested answers.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Rewrite edaenv.yaml; add missing scaffold files, never overwrite yours."
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Scaffold edaenv in a repository: edaenv.yaml, .env with fresh secrets, events/, the outbox
    migration, and the stack's compose file."""
    from edaenv import console
    from edaenv.stack.scaffold import InitPlan
    from edaenv.stack.scaffold import init as run_init

    target = path.resolve()
    project = name if name is not None else safe_project_name(target.name)
    components = _components(with_ or [], without or [])
    offset = _port_offset(port_offset)
    if console.is_interactive() and not defaults:
        # The flags given first: no question is asked in vain.
        check_project(project, where="--name")
        flags = (("--broker", broker, _check_broker), ("--topic", topic, check_topic))
        for flag, value, check in (*flags, ("--owner", owner, check_owner)):
            if value is not None:
                check(value, where=flag)
        if broker is None:
            broker = console.ask("Broker", _check_broker, default="kafka", choices=BROKERS)
        if topic is None:
            topic = console.ask(
                "Topic of the first event, OrderPlaced",
                lambda answer: check_topic(answer, where=None),
                default="orders",
            )
        if owner is None:
            owner = console.ask(
                "Team owning the OrderPlaced contract",
                lambda answer: check_owner(answer, where=None),
                default=f"{project}-team",
            )
        if not with_ and not without:
            leave_out = console.ask(
                f"Components to leave out ({', '.join(COMPONENTS)}; comma-separated)",
                lambda answer: _components([], _listed(answer)),
                default="none",
            )
            components = _components([], _listed(leave_out))
    elif defaults and owner is None:
        owner = f"{project}-team"
    plan = InitPlan(
        target=target,
        project=project,
        broker="kafka" if broker is None else broker,
        components=components,
        port_offset=offset,
        topic="orders" if topic is None else topic,
        owner=owner,
        force=force,
    )
    result = run_init(plan)
    if json_:
        console.emit_json(
            {
                "project": project,
                "broker": result.config.broker,
                "created": [_rel(created, target) for created in result.written],
                "kept": [_rel(kept, target) for kept in result.kept],
            }
        )
        return
    for created in result.written:
        console.created(_rel(created, target))
    for kept in result.kept:
        console.kept(_rel(kept, target))
    console.success(f"edaenv initialised for '{project}' with {result.config.broker}")
    console.next_step(
        ("edaenv up", "starts the stack"),
        ("edaenv render --check", "in CI catches a stale compose file"),
    )


def _check_broker(answer: str, where: str | None = None) -> None:
    if answer not in BROKERS:
        raise UsageError(
            f"unknown broker {shown(answer)}", where=where, hint=f"use one of: {', '.join(BROKERS)}"
        )


def _listed(answer: str) -> list[str]:
    """Components named in an answer: comma- or space-separated; `none` for none."""
    parts = answer.replace(",", " ").split()
    return [] if parts == ["none"] else parts


def render(
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Print the compose YAML instead.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Exit 1 when a generated file on disk is stale; write nothing."
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Assemble the stack's compose file and service configs from edaenv.yaml."""
    from edaenv import console
    from edaenv.stack.render import render_committed, render_stack, stale_files, write_files

    if stdout and (check or json_):
        raise UsageError(
            f"prints the compose YAML, so it cannot go with {'--check' if check else '--json'}",
            where="--stdout",
            hint="drop --stdout, or run `edaenv render --stdout` alone",
        )
    if check:
        # What the repository commits, from edaenv.yaml alone: no .env (a fresh clone has
        # none) and no CI isolation variables (they move a run, not the committed file).
        config = common.config(isolation=False)
        stale = [
            _rel(config.scaffold_dir / rel, Path.cwd())
            for rel in stale_files(config, render_committed(config))
        ]
        if json_:
            console.emit_json({"up_to_date": not stale, "stale": stale})
        else:
            for path in stale:
                console.info(f"stale: {path}")
            if stale:
                console.info("run `edaenv render` to regenerate")
            else:
                console.success("generated files are up to date")
        if stale:
            raise typer.Exit(1)
        return
    config = common.config()
    if stdout:
        [compose_text] = render_committed(config).values()
        console.plain(compose_text)
        return
    written = write_files(config, render_stack(config))
    compose_file = _rel(config.compose_file, Path.cwd())
    if json_:
        console.emit_json(
            {"compose_file": compose_file, "written": [_rel(p, Path.cwd()) for p in written]}
        )
        return
    console.plain(compose_file)


def _components(with_: list[str], without: list[str]) -> frozenset[str]:
    for flag, names in (("--with", with_), ("--without", without)):
        for name in names:
            if name not in COMPONENTS:
                raise UsageError(
                    f"unknown component '{name}'",
                    where=flag,
                    hint=f"components: {', '.join(COMPONENTS)}",
                )
    on = (set(COMPONENTS) - set(without)) | set(with_)
    for name in sorted(on):
        for need in REQUIRES.get(name, ()):
            if need not in on:
                raise UsageError(
                    f"component '{name}' needs '{need}'",
                    hint=f"drop --without {need}, or add --without {name}",
                )
    return frozenset(on)


def _port_offset(text: str) -> int:
    if text == "auto":
        from edaenv.ci.isolation import all_base_ports, auto_port_offset, published_ports

        return auto_port_offset(all_base_ports(), taken=published_ports())
    if not text.lstrip("-").isdigit():
        raise UsageError(
            f"'{text}' is not a port offset",
            where="--port-offset",
            hint="a number such as 100, or `auto` for the first free hundred",
        )
    return int(text)


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
