"""Start-up of the CLI: `--help` and `--version` load no heavy module, and the root command that
builds its subcommands on first use (edaenv/cli/lazy.py) says exactly what typer's eager build
says. bench/cli_startup.py measures the time."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
import typer
from click.testing import CliRunner

from edaenv import __version__
from edaenv.cli import lazy
from edaenv.cli.app import app

# Third-party packages only commands use: each costs from a few to ~100 ms to import.
HEAVY = {
    "confluent_kafka",
    "copier",
    "docker",
    "jinja2",
    "jsonschema",
    "kafka",
    "nats",
    "opentelemetry",
    "pika",
    "prometheus_client",
    "psycopg",
    "pydantic",
    "requests",
    "rich",
    "urllib3",
    "yaml",
}
# What of edaenv the CLI's skeleton needs (the console loads rich only to print): commands
# import the rest inside their functions.
LIGHT = {
    "edaenv",
    "edaenv.__main__",
    "edaenv.config",
    "edaenv.console",
    "edaenv.errors",
    "edaenv.names",
}


def loaded(*argv: str, prelude: str = "") -> set[str]:
    """The modules one `python -m edaenv ARGV...` run imports (`prelude` runs first)."""
    probe = (
        "import runpy, sys, json\n"
        f"{prelude}\n"
        f"sys.argv = ['edaenv', *{list(argv)!r}]\n"
        "try:\n"
        "    runpy.run_module('edaenv', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return set(json.loads(run.stderr.strip().splitlines()[-1]))


def too_heavy(modules: set[str]) -> list[str]:
    """The heavy modules among `modules`: third-party ones that commands use, and edaenv's own
    beyond the CLI layer and the config."""
    return sorted(
        name
        for name in modules
        if name.split(".")[0] in HEAVY
        or (
            name.startswith("edaenv")
            and name not in LIGHT
            and name != "edaenv.cli"
            and not name.startswith("edaenv.cli.")
        )
    )


@pytest.mark.parametrize(
    "argv", [["--help"], ["-h"], [], ["--version"], ["up", "--help"], ["inject", "--help"]]
)
def test_help_and_version_import_no_heavy_module(argv: list[str]) -> None:
    assert too_heavy(loaded(*argv)) == []


def test_version_is_answered_without_typer() -> None:
    modules = loaded("--version")
    assert "typer" not in modules and "click" not in modules
    assert too_heavy(modules) == []


def test_the_check_catches_a_heavy_import() -> None:
    # The same run with a command module's dependencies imported on the way: the check names
    # them.
    caught = too_heavy(loaded("--help", prelude="import yaml, edaenv.engine.api"))
    assert {"yaml", "edaenv.engine.api"} <= set(caught)


def paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `command`, itself first."""
    found = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += paths(sub, (*path, name))
    return found


EAGER = typer.main.get_command(app)


def said(command: click.Command, argv: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(command, argv, prog_name="edaenv")
    return result.exit_code, result.output


@pytest.mark.parametrize("path", paths(EAGER), ids=lambda path: " ".join(path) or "edaenv")
def test_the_lazy_root_shows_the_same_help(path: tuple[str, ...]) -> None:
    assert said(lazy.command(app), [*path, "--help"]) == said(EAGER, [*path, "--help"])


@pytest.mark.parametrize("argv", [[], ["-h"], ["--version"], ["uq"], ["inject"], ["up", "-x"]])
def test_the_lazy_root_answers_as_typer_does(argv: list[str]) -> None:
    assert said(lazy.command(app), argv) == said(EAGER, argv)


def test_version_from_the_fast_path_and_from_typer() -> None:
    fast = subprocess.run(
        [sys.executable, "-m", "edaenv", "--version"], capture_output=True, text=True
    )
    typer_ = CliRunner().invoke(EAGER, ["--version"])
    assert fast.stdout == typer_.output == f"edaenv {__version__}\n"
