"""The root command as `edaenv` runs it: typer builds a subcommand's click object only when that
subcommand runs or shows its help.

Building one evaluates every annotation of its function's parameters (about 1 ms a command,
some 35 commands): `edaenv --help` needs none of them, `edaenv up` one. The root's help lists
each subcommand from a stand-in carrying only its name and help text, so it reads exactly as
typer's own eager build (`typer.main.get_command(app)`, which tests and the reference use);
tests/unit/test_cli_imports.py compares the two.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from functools import partial

import click
import typer
from typer.core import TyperGroup
from typer.main import (
    get_command_from_info,
    get_command_name,
    get_group_from_info,
    solve_typer_info_defaults,
)
from typer.models import CommandInfo


class LazyGroup(TyperGroup):
    """A TyperGroup whose deferred subcommands are built on first use."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._builders: dict[str, Callable[[], click.Command]] = {}
        self._listing = False

    def defer(self, stand_in: click.Command, build: Callable[[], click.Command]) -> None:
        assert stand_in.name
        self.commands[stand_in.name] = stand_in
        self._builders[stand_in.name] = build

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if not self._listing and cmd_name in self._builders:
            self.commands[cmd_name] = self._builders.pop(cmd_name)()
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing needs names and first sentences: the stand-ins have them.
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False


def command(app: typer.Typer) -> click.Command:
    """`app` as a click command whose subcommands are built on first use."""
    shell = copy.copy(app)  # the root alone: its options and callback, no subcommand
    shell.registered_commands, shell.registered_groups = [], []
    shell.info = copy.copy(app.info)
    shell.info.cls = LazyGroup
    root = typer.main.get_command(shell)
    assert isinstance(root, LazyGroup)
    short, markup = app.pretty_exceptions_short, app.rich_markup_mode  # as typer passes them
    for info in app.registered_commands:
        build_command = partial(
            get_command_from_info, info, pretty_exceptions_short=short, rich_markup_mode=markup
        )
        root.defer(_stand_in(info), build_command)
    for group in app.registered_groups:
        build = partial(
            get_group_from_info,
            group,
            pretty_exceptions_short=short,
            rich_markup_mode=markup,
            suggest_commands=app.suggest_commands,
        )
        solved = solve_typer_info_defaults(group)
        if not solved.name:  # typer merges an unnamed group's commands into the root
            root.commands.update(build().commands)
            continue
        stand_in = click.Group(
            solved.name,
            help=solved.help,
            short_help=solved.short_help,
            hidden=bool(solved.hidden),
            deprecated=solved.deprecated,
        )
        root.defer(stand_in, build)
    return root


def _stand_in(info: CommandInfo) -> click.Command:
    """Name and help as get_command_from_info gives them, without the parameters."""
    assert info.callback is not None
    name = info.name or get_command_name(info.callback.__name__)
    help_ = inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help)
    return click.Command(
        name,
        help=help_,
        short_help=info.short_help,
        hidden=info.hidden,
        deprecated=info.deprecated,
    )
