"""`edaenv verify`: run delivery scenarios against the running stack and check what the
consumer did with every event.

Exit codes: 0 every scenario held; 1 a scenario found violations (each is listed), or the stack
did not recover from a fault; 2 a bad or unknown scenario, a role the stack does not have, or a
stack with faults still active (nothing was injected, nothing sent); 3 the broker or the
database does not answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edaenv.cli import common


def register(app: typer.Typer) -> None:
    app.command()(verify)


def verify(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Scenarios to run, by name (default: every one in <scaffold>/scenarios).",
            metavar="[SCENARIO]...",
            show_default=False,
        ),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the reports as JSON (progress goes to stderr).")
    ] = False,
    junit_xml: Annotated[
        Path | None,
        typer.Option("--junit-xml", help="Also write the reports as JUnit XML.", metavar="PATH"),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds each scenario waits for the consumer to finish (default: the "
            "scenario's check.quiet_timeout).",
            min=1,
            metavar="SECONDS",
        ),
    ] = None,
) -> None:
    """Send each scenario's workload while its steps break the stack (kill, pause, partition,
    duplicate, poison, ...), heal everything, wait until the consumer is done, and check that
    every event was processed once, in order per aggregate, or dead-lettered."""
    from edaenv import console
    from edaenv.application import Stack
    from edaenv.verify import report as reports_
    from edaenv.verify.run import preflight, run
    from edaenv.verify.scenario import find_scenarios

    config = common.config()
    # Every scenario is loaded and the stack checked before anything is injected or sent.
    scenarios = find_scenarios(config.scaffold_dir / "scenarios", names or [])
    stack = Stack(config)
    preflight(stack, scenarios)
    done = []
    for scenario in scenarios:
        console.info(f"{scenario.name} ...")
        report = run(
            stack, scenario, progress=lambda line: console.info(f"  {line}"), quiet_timeout=timeout
        )
        done.append(report)
        if not json_:
            console.line(reports_.text(report))
    if junit_xml is not None:
        _write(junit_xml, reports_.junit_xml(done))
    if json_:
        console.emit_json(reports_.as_json(done))
    failed = [s.name for s, r in zip(scenarios, done, strict=True) if not r.ok]
    if failed:
        console.info(f"✘ {len(failed)} of {len(done)} scenario(s) failed: {', '.join(failed)}")
        raise typer.Exit(1)
    console.success(f"{len(done)} scenario(s) held")


def _write(path: Path, text: str) -> None:
    """All or nothing: a CI step never reads half a report."""
    from edaenv.stack.files import commit_files, file_error

    target = path.absolute()
    try:
        commit_files({target: text}, staging=target.parent)
    except OSError as exc:
        raise file_error(exc) from None
