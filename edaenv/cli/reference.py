"""docs/reference.md, generated from the CLI itself so the reference cannot drift from it.

python -m edaenv.cli.reference > docs/reference.md
"""

from __future__ import annotations

import click
import typer

HEADER = (
    "# Command reference\n\n"
    "Generated from the CLI by `python -m edaenv.cli.reference > docs/reference.md`; a test\n"
    "fails when it differs from what the CLI says. Every command also answers `--help`.\n"
)


def render_reference() -> str:
    from edaenv.cli.app import app

    root = typer.main.get_command(app)
    sections: list[str] = [HEADER]
    _command(root, ["edaenv"], sections)
    return "\n".join(sections)


def _command(command: click.Command, path: list[str], sections: list[str]) -> None:
    ctx = click.Context(command, info_name=" ".join(path))
    level = "#" * min(len(path) + 1, 4)
    sections.append(f"{level} `{' '.join(path)}`\n")
    if command.help:
        sections.append(_paragraphs(command.help) + "\n")
    pieces = command.collect_usage_pieces(ctx)
    sections.append(f"```text\n{' '.join([*path, *pieces])}\n```\n")
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None and isinstance(param, click.Argument):
            record = (param.make_metavar(ctx), getattr(param, "help", None) or "")
        if record:
            name, text = record
            rows.append(f"| `{_cell(name)}` | {_cell(text)} |")
    if rows:
        sections.append("| option | |\n|---|---|\n" + "\n".join(rows) + "\n")
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                _command(sub, [*path, name], sections)


def _paragraphs(text: str) -> str:
    blocks = [" ".join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
    return "\n\n".join(block for block in blocks if block)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    print(render_reference(), end="")
