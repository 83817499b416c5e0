"""The root of the CLI: global options, the command groups, and the one error boundary."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from edaenv import __version__
from edaenv.cli import (
    bundle,
    ci,
    common,
    events,
    faults,
    lazy,
    lifecycle,
    outbox,
    stack,
    verify,
)
from edaenv.errors import EdaenvError


def _keep_argument_help() -> None:
    """typer 0.25 sets an argument's help, then calls click's Argument.__init__, which from
    click 8.5 on takes a `help` of its own and resets it to None: the help of every argument
    vanished. (typer 0.26+ would fix it but costs ~60 ms per command: it imports pydantic and
    builds a validator per parameter; measured with bench/cli_startup.py.)"""
    argument = typer.core.TyperArgument
    if "help" in inspect.signature(click.Argument.__init__).parameters:
        original = argument.__init__

        def init(self: typer.core.TyperArgument, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.help = kwargs.get("help")

        argument.__init__ = init  # type: ignore[method-assign]


_keep_argument_help()

app = typer.Typer(
    name="edaenv",
    help="Local and CI stacks for event-driven architecture: a broker, Postgres with a "
    "transactional outbox, tracing and metrics, from one edaenv.yaml.",
    no_args_is_help=True,
    # `--install-completion` / `--show-completion`; costs nothing until a shell asks.
    add_completion=True,
    # click 8.4+ says "Did you mean" itself: typer's own suggestion would say it twice.
    suggest_commands=not hasattr(click.exceptions, "NoSuchCommand"),
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rich help costs ~90 ms of start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"edaenv {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Path to edaenv.yaml (default: found by walking up from here).",
            envvar="EDAENV_CONFIG",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only errors and machine output (JSON, `env`, events)."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    from edaenv import console  # light: rich is imported only when something is printed

    common.state.config_path = config
    common.state.debug = debug
    console.quiet = quiet


for group in (stack, lifecycle, events, outbox, faults, verify, ci, bundle):
    group.register(app)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        # Each subcommand is built when it runs (cli/lazy.py): --help and --version build none.
        lazy.command(app)(prog_name="edaenv")
    except EdaenvError as exc:
        if debug:
            raise
        from edaenv import console

        console.error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last resort: a bug, reported without a traceback
        if debug:
            raise
        from edaenv import console

        console.error(
            EdaenvError(
                f"unexpected {type(exc).__name__}: {exc}",
                hint="run again with --debug for the traceback, and report it",
            )
        )
        sys.exit(1)
