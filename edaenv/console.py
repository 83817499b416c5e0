"""The terminal layer: the only module that imports rich.

Commands say what happened (`created(path)`, `success(...)`, `state(...)`), never how it looks:
the styles live here. Every text a command passes is printed literally (rich `Text`, markup
and emoji codes off), so a user's value such as `[/]` or `[draft]` shows as written. rich is
imported on first use: a command that prints only JSON never loads it.

`quiet` (the global `-q`) leaves only errors and machine output: `plain`, `emit_json` and the
event lines of `tail`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from edaenv.errors import EdaenvError, UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

quiet = False

# A service's condition (health, else state) -> its colour in `up` and `status`.
STATE_STYLES = {
    "healthy": "green",
    "unhealthy": "red",
    "exited": "red",
    "dead": "red",
    "starting": "yellow",
}


@cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=True)


def _err() -> Console:
    return _console(stderr=True)


def _out() -> Console:
    return _console(stderr=False)


def _text(*parts: str | tuple[str, str]) -> Text:
    """Literal text from parts, each a string or a (string, style) pair."""
    from rich.text import Text

    return Text.assemble(*parts)


def is_interactive() -> bool:
    """Questions and live displays only on a real terminal, never in CI."""
    return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


def stdout_is_terminal() -> bool:
    """Whether stdout is read by a person (tables) or by a program (JSON)."""
    return _out().is_terminal


def info(message: str) -> None:
    if not quiet:
        _err().print(_text(message))


def success(message: str) -> None:
    if not quiet:
        _err().print(_text(("✔", "green"), " ", message))


def warn(message: str, hint: str | None = None) -> None:
    if quiet:
        return
    _err().print(_text(("warning:", "yellow"), " ", message))
    if hint:
        _err().print(_text("  ", ("hint:", "dim"), " ", hint))


def error(exc: EdaenvError) -> None:
    _err().print(_text(("error:", "bold red"), " ", str(exc)))
    if exc.hint:
        _err().print(_text("  ", ("hint:", "dim"), " ", exc.hint))


def created(path: str) -> None:
    """A file a command wrote for the first time (or wrote again)."""
    if not quiet:
        _err().print(_text("  ", ("created", "green"), " ", path))


def kept(path: str) -> None:
    """A file a command left as it was, because it is the user's."""
    if not quiet:
        _err().print(_text("  ", ("kept", "dim"), "    ", path))


def next_step(*steps: tuple[str, str], label: str = "next") -> None:
    """`label: COMMAND what it does; COMMAND what it does`, the commands in bold."""
    if quiet:
        return
    parts: list[str | tuple[str, str]] = [f"{label}: "]
    for number, (command, does) in enumerate(steps):
        parts += ["; " if number else "", (command, "bold"), f" {does}" if does else ""]
    _err().print(_text(*parts))


def state(shown: str, condition: str) -> Text:
    """A service state as a table cell, coloured by its condition (healthy, starting, ...)."""
    return _text((shown, STATE_STYLES.get(condition, "")))


def heading(text: str) -> None:
    """The first line of an item in a listing on stdout (an event in `tail`)."""
    _out().print(_text((text, "bold cyan")))


def detail(text: str) -> None:
    """A secondary line of an item on stdout."""
    _out().print(_text((text, "dim")))


def line(text: str) -> None:
    """A line of a listing on stdout, as it is."""
    _out().print(_text(text))


def plain(text: str) -> None:
    """Machine-readable output goes to stdout untouched."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def emit_json(data: Any) -> None:
    plain(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, live: bool = False
) -> Table:
    from rich.table import Table
    from rich.text import Text

    if live:
        t = Table(box=None, header_style="bold", pad_edge=False)
    else:
        t = Table(title=_text(title) if title else None, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(_text(column))
    for row in rows:
        t.add_row(*(cell if isinstance(cell, Text) else _text(_cell(cell)) for cell in row))
    return t


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    if not quiet:
        _out().print(_table(title, columns, rows))


@contextmanager
def status(message: str) -> Iterator[None]:
    if _err().is_terminal and not quiet:
        with _err().status(_text(message)):
            yield
    else:
        yield


Update = Callable[[Iterable[Sequence[Any]]], None]


@contextmanager
def live_table(columns: Sequence[str]) -> Iterator[Update | None]:
    """A table redrawn in place on stderr; None when that is no terminal (print lines then)."""
    if not _err().is_terminal or os.environ.get("CI") or quiet:
        yield None
        return
    from rich.live import Live

    with Live(_table(None, columns, [], live=True), console=_err(), refresh_per_second=8) as live:
        yield lambda rows: live.update(_table(None, columns, rows, live=True))


@contextmanager
def progress(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; advance(n) does nothing when that is no terminal."""
    if not _err().is_terminal or os.environ.get("CI") or quiet:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def ask(
    question: str,
    check: Callable[[str], object],
    *,
    default: str | None = None,
    choices: Sequence[str] = (),
) -> str:
    """Ask on the terminal until `check` accepts the answer (it raises EdaenvError saying why
    not); an empty answer takes the default."""
    suffix = f" ({'/'.join(choices)})" if choices else ""
    suffix += f" [{default}]" if default is not None else ""
    while True:
        _err().print(_text((question, "bold"), suffix, ": "), end="")
        answer = sys.stdin.readline()
        if not answer:
            _err().print()
            raise UsageError(f"no answer to '{question}': the input ended")
        answer = answer.rstrip("\n")
        if not answer and default is not None:
            answer = default
        try:
            check(answer)
        except EdaenvError as exc:
            _err().print(_text("  ", (exc.message, "red")))
            if exc.hint:
                _err().print(_text("  ", ("hint:", "dim"), " ", exc.hint))
            continue
        return answer
