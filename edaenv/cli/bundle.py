"""`edaenv bundle`: what explains a failed run, collected into a directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edaenv.cli import common


def register(app: typer.Typer) -> None:
    app.command()(bundle)


def bundle(
    directory: Annotated[Path, typer.Argument(help="Directory to write the bundle into.")],
    events: Annotated[int, typer.Option(help="Last events kept per topic.")] = 50,
    log_lines: Annotated[int, typer.Option(help="Last log lines kept per service.")] = 2000,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Write a failure bundle: status, logs, last events per topic, dead letters, outbox
    backlog, trace ids and the fault history. Collects what it can; never fails the job."""
    from edaenv import console
    from edaenv.ci.bundle import write_bundle

    report = write_bundle(common.config(), directory, events=events, log_lines=log_lines)
    if json_:
        console.emit_json(
            {
                "directory": str(directory),
                "files": [str(path) for path in report.files],
                "problems": report.problems,
            }
        )
        return
    for name, problem in report.problems.items():
        console.warn(f"bundle: {name}: {problem}")
    console.success(f"bundle written to {directory} ({len(report.files)} files)")
