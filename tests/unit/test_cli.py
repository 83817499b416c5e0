"""The package and CLI skeleton: entry points, version, help, the error boundary."""

from __future__ import annotations

import subprocess
import sys

from edaenv import __version__
from tests.conftest import run_edaenv
from tests.unit.test_cli_imports import loaded


def test_version_alike_from_console_script_and_module() -> None:
    module = run_edaenv("--version")
    script = subprocess.run(
        [sys.executable, "-c", "from edaenv.cli.app import main; main()", "--version"],
        capture_output=True,
        text=True,
    )
    assert module.code == 0 and module.out == f"edaenv {__version__}\n"
    assert script.stdout == module.out


def test_help_lists_the_commands() -> None:
    result = run_edaenv("--help")
    assert result.code == 0
    for command in ("init", "render"):
        assert command in result.out


def test_parsing_a_commands_parameters_imports_no_pydantic() -> None:
    # typer 0.26+ parses every parameter through pydantic: ~90 ms more for each command run.
    modules = loaded("seed", "OrderPlaced", "--count", "5", "--rate", "fast")
    assert "typer" in modules and "pydantic" not in modules


def test_help_describes_arguments() -> None:
    assert "Event type: OrderPlaced (latest version)" in run_edaenv("seed", "--help").out
    assert "Services to start" in run_edaenv("up", "--help").out


def test_errors_have_no_traceback_unless_debug(tmp_path) -> None:
    plain = run_edaenv("render", cwd=tmp_path)
    assert plain.code == 2
    assert "Traceback" not in plain.err
    assert plain.err.startswith("error: no edaenv.yaml in ")
    debug = run_edaenv("--debug", "render", cwd=tmp_path)
    assert debug.code != 0 and "Traceback" in debug.err
