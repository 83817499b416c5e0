"""The terminal layer: the only module that imports rich."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
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


Update = Callable[[Iterable[Sequence[Any]]], None]


@contextmanager
def live_table(columns: Sequence[str]) -> Iterator[Update | None]:
    """A table redrawn in place on stderr; None when that is no terminal (print lines then)."""
    if not err.is_terminal or os.environ.get("CI"):
        yield None
        return
    from rich.live import Live

    def build(rows: Iterable[Sequence[Any]]) -> Table:
        t = Table(box=None, header_style="bold", pad_edge=False)
        for column in columns:
            t.add_column(column)
        for row in rows:
            t.add_row(*("" if cell is None else str(cell) for cell in row))
        return t

    with Live(build([]), console=err, refresh_per_second=8) as live:
        yield lambda rows: live.update(build(rows))


@contextmanager
def progress(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; advance(n) does nothing when that is no terminal."""
    if not err.is_terminal or os.environ.get("CI"):
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
