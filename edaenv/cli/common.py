"""State shared by the commands: the global options and the config they resolve to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edaenv.config import Config, load_config


@dataclass
class State:
    config_path: Path | None = None
    debug: bool = False


state = State()


def config(*, isolation: bool = True) -> Config:
    return load_config(state.config_path, isolation=isolation)
