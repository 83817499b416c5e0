"""Where the packaged templates and compose fragments are: in the wheel, or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent  # edaenv/


def _data(name: str) -> Path:
    installed = _PACKAGE / "_data" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def fragments_dir() -> Path:
    return _data("compose-fragments")


def templates_dir() -> Path:
    return _data("templates")
