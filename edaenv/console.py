"""The terminal layer: the only module that imports rich."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from edaenv.errors import EdaenvError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def is_interactive() -> bool:
    """Questions and live displays only on a real terminal, never in CI."""
    return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


def info(message: str) -> None:
    err.print(message)


def success(message: str) -> None:
    err.print(f"[green]✔[/] {message}")


def warn(message: str, hint: str | None = None) -> None:
    err.print(f"[yellow]warning:[/] {message}", markup=True)
    if hint:
        err.print(f"  [dim]hint:[/] {hint}")


def error(exc: EdaenvError) -> None:
    err.print(f"[bold red]error:[/] {exc}", markup=True)
    if exc.hint:
        err.print(f"  [dim]hint:[/] {exc.hint}")


def plain(text: str) -> None:
    """Machine-readable output goes to stdout untouched."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def emit_json(data: Any) -> None:
    plain(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(t)


@contextmanager
def status(message: str) -> Iterator[None]:
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        yield
