"""Shared helpers: run the real CLI in a subprocess, make scratch projects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def load_services_env() -> dict[str, str]:
    """Ports and test credentials of the native services (tests/services.env)."""
    values = {}
    for line in (REPO / "tests" / "services.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_edaenv(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> Result:
    """The CLI as users run it: a real process, no terminal, no colour."""
    full_env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", **(env or {})}
    full_env.pop("EDAENV_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "edaenv", *args],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def run_user_pytest(
    root: Path, tests: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """pytest as a user's project runs it with edaenv's plugin: its own process and rootdir,
    none of this run's EDAENV_ or PYTEST_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EDAENV_", "PYTEST_"))}
    return subprocess.run(
        [*PYTEST, "--rootdir", str(root), *args, str(tests)],
        cwd=root,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty git repository to run `edaenv init` in."""
    repo = tmp_path / "shop"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


# "R1: ...", or per broker "R1 kafka: ...".
FIGURE = re.compile(r"^(R[1-4]|C[1-3])( [a-z]+)?: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability tests' figures (lines `R1: ...` to `C3: ...` that they print) in the
    summary, so a CI log shows them without -s."""
    figures = [
        line
        for report in terminalreporter.stats.get("passed", [])
        for line in report.capstdout.splitlines()
        if FIGURE.match(line)
    ]
    if figures:
        terminalreporter.section("reliability figures")
        for line in figures:
            terminalreporter.write_line(line)
