"""`edaenv ci prepare` (isolation) and `edaenv ci github` (the workflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edaenv.cli import common

ci_app = typer.Typer(name="ci", no_args_is_help=True, help="Run the stack in CI.")
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.add_typer(ci_app)


@ci_app.command()
def prepare(
    unique: Annotated[
        bool,
        typer.Option(
            help="A unique compose project name: <project>-<run id>-<attempt> on GitHub Actions, "
            "<project>-<random> elsewhere."
        ),
    ] = False,
    port_offset: Annotated[
        str | None,
        typer.Option(
            help="A port offset, or `auto`: the first hundred with every port of the stack free.",
            metavar="N|auto",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Isolate this job's stack: write a fresh .env when missing (a fresh clone has none) and
    print EDAENV_PROJECT / EDAENV_PORT_OFFSET, which every edaenv command then honours. On
    GitHub Actions they are also appended to $GITHUB_ENV for the later steps."""
    import os

    from edaenv import console
    from edaenv.ci.isolation import prepare as run_prepare

    # From edaenv.yaml itself: a second `prepare` in the same job isolates again, it does not
    # suffix an already isolated name.
    config = common.config(isolation=False)
    prepared = run_prepare(config, unique=unique, port_offset=port_offset)
    if prepared.env_written:
        console.info(f"wrote fresh secrets to {config.env_file}")
    github_env = os.environ.get("GITHUB_ENV")
    lines = "".join(f"{key}={value}\n" for key, value in prepared.variables.items())
    if github_env:
        with open(github_env, "a", encoding="utf-8") as out:
            out.write(lines)
    if json:
        console.emit_json(prepared.variables)
    elif lines:
        console.plain(lines)


@ci_app.command()
def github(
    test_command: Annotated[str, typer.Option(help="The project's test command.")] = "pytest",
    install: Annotated[
        str | None,
        typer.Option(
            help="Install step: edaenv and the project's test dependencies (default: `pip "
            "install -r` of the repository's requirements file naming edaenv, else edaenv as "
            "it is installed here)."
        ),
    ] = None,
    python: Annotated[str, typer.Option(help="Python version on the runner.")] = "3.12",
    broker_matrix: Annotated[
        bool, typer.Option("--broker-matrix", help="Run the job once per broker.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Run `edaenv verify` after the tests and upload its JUnit report.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to write (default: .github/workflows/edaenv-integration.yml in the "
            "git repository holding edaenv.yaml)."
        ),
    ] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="Print instead of writing.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite a workflow you changed.")] = False,
    json: Json = False,
) -> None:
    """Write a GitHub Actions workflow: stack up with --wait on free ports, the tests, a failure
    bundle as an artifact on failure, and always a teardown with volumes."""
    from edaenv import console
    from edaenv.ci.workflow import (
        WORKFLOW_PATH,
        git_root,
        github_workflow,
        install_step,
        write_workflow,
    )

    config = common.config()
    warning = install_step(config, git_root(config.root)).warning if install is None else None
    if warning and not json:
        console.warn(warning, hint="name edaenv in a requirements file, or pass --install")
    text = github_workflow(
        config,
        test_command=test_command,
        install=install,
        python=python,
        broker_matrix=broker_matrix,
        verify=verify,
    )
    if stdout:
        console.plain(text)
        return
    path = output or git_root(config.root) / WORKFLOW_PATH
    write_workflow(path, text, force=force)
    if json:
        console.emit_json({"path": str(path), "warning": warning})
        return
    console.success(f"wrote {path}")
