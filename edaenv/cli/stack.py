"""`edaenv init` and `edaenv render`: the scaffold and the stack's compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edaenv.cli import common
from edaenv.config import BROKERS, COMPONENTS, REQUIRES, check_project_name, safe_project_name
from edaenv.errors import UsageError


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
) -> None:
    """Scaffold edaenv in a repository: edaenv.yaml, .env with fresh secrets, events/, the outbox
    migration, and the stack's compose file."""
    from edaenv import console
    from edaenv.stack.render import render_stack, write_files
    from edaenv.stack.scaffold import InitPlan
    from edaenv.stack.scaffold import init as run_init

    target = path.resolve()
    project = name if name is not None else safe_project_name(target.name)
    if broker is not None and broker not in BROKERS:
        raise UsageError(
            f"unknown broker '{broker}'", where="--broker", hint=f"use one of: {', '.join(BROKERS)}"
        )
    components = _components(with_ or [], without or [])
    interactive = console.is_interactive() and not defaults
    plan = InitPlan(
        target=target,
        project=project,
        broker=broker if broker or interactive else "kafka",
        components=components,
        port_offset=_port_offset(port_offset),
        topic=topic,
        owner=owner if owner or not defaults else f"{project}-team",
        interactive=interactive,
        force=force,
    )
    check_project_name(project, where="--name")
    result = run_init(plan)
    written = write_files(result.config, render_stack(result.config))
    for created in [*result.written, *written]:
        console.info(f"  [green]created[/] {_rel(created, target)}")
    for kept in result.kept:
        console.info(f"  [dim]kept[/]    {_rel(kept, target)}")
    console.success(f"edaenv initialised for '{project}' with {result.config.broker}")
    console.info(
        "next: [bold]edaenv up[/] starts the stack; [bold]edaenv render --check[/] "
        "in CI catches a stale compose file"
    )


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
) -> None:
    """Assemble the stack's compose file and service configs from edaenv.yaml."""
    from edaenv import console
    from edaenv.stack.render import render_stack, stale_files, write_files

    config = common.config()
    files = render_stack(config)
    if stdout:
        console.plain(files["compose.yaml"])
        return
    if check:
        stale = stale_files(config, files)
        for rel in stale:
            console.info(f"stale: {_rel(config.scaffold_dir / rel, Path.cwd())}")
        if stale:
            console.info("run `edaenv render` to regenerate")
            raise typer.Exit(1)
        console.success("generated files are up to date")
        return
    write_files(config, files)
    console.plain(_rel(config.compose_file, Path.cwd()))


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
        from edaenv.ci import all_base_ports, auto_port_offset, published_ports

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
