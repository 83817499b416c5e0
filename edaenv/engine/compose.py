"""The one way edaenv runs `docker compose` (the Docker SDK has no Compose support): a tiny
argument builder and one `run()` raising one error that shows exactly what ran and what it said.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from edaenv.config import Config
from edaenv.errors import EngineError

OVERRIDE_NAME = "compose.override.yaml"
TAIL_LINES = 20


class Command(list[str]):
    """An argument list that reads like the command line it builds."""

    def flag(self, name: str, on: bool = True) -> Command:
        if on:
            self.append(name)
        return self

    def option(self, name: str, value: object | None) -> Command:
        if value is not None:
            self += [name, str(value)]
        return self


def compose_files(config: Config) -> list[str]:
    files = [str(config.compose_file)]
    # With -f given, compose stops merging compose.override.yaml by itself: name it too.
    override = config.scaffold_dir / OVERRIDE_NAME
    if override.is_file():
        files.append(str(override))
    return files


def compose(config: Config, *args: str) -> Command:
    """`docker compose` for this stack's project, files and directory, then `args`."""
    command = Command(
        [
            "docker",
            "compose",
            "--project-name",
            config.project,
            "--project-directory",
            str(config.scaffold_dir),
        ]
    )
    for path in compose_files(config):
        command.option("-f", path)
    command.extend(args)
    return command


@dataclass(frozen=True)
class Result:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-lines:])


class ComposeError(EngineError):
    """A `docker compose` (or `docker`) command failed: the command, its exit code, its output."""

    def __init__(self, result: Result, message: str | None = None, hint: str | None = None):
        self.result = result
        head = message or (
            f"`{shlex.join(result.command)}` failed with exit code {result.returncode}"
        )
        tail = result.tail()
        text = head + (
            ":\n" + "\n".join(f"  | {line}" for line in tail.splitlines()) if tail else ""
        )
        super().__init__(text, hint=hint)


def run(
    command: Sequence[str],
    *,
    capture: bool = True,
    timeout: float | None = None,
    check: bool = True,
) -> Result:
    """Run a docker command without a terminal on stdin (compose's prompts answer "no").

    capture=False lets the output through to the user (logs). The command runs in its own
    process group: on a timeout or Ctrl-C the whole group stops, plugin included.
    """
    return start(command, capture=capture).finish(timeout=timeout, check=check)


def start(command: Sequence[str], *, capture: bool = True) -> Running:
    """The command started; `finish()` waits for it (run() is start + finish)."""
    command = list(command)
    pipe = subprocess.PIPE if capture else None
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=pipe,
            stderr=pipe,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise EngineError(
            f"`{command[0]}` is not installed (needed for `{shlex.join(command)}`)",
            hint="install Docker: https://docs.docker.com/engine/install/",
        ) from None
    return Running(command, proc)


class Running:
    def __init__(self, command: list[str], proc: subprocess.Popen[str]):
        self.command = command
        self.proc = proc

    def finish(self, timeout: float | None = None, check: bool = True) -> Result:
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            stdout, stderr = self.proc.communicate()
            result = Result(self.command, -1, stdout or "", stderr or "")
            raise ComposeError(
                result, f"`{shlex.join(self.command)}` did not finish within {timeout:g}s"
            ) from None
        except BaseException:
            self.stop()
            raise
        result = Result(self.command, self.proc.returncode, stdout or "", stderr or "")
        if check and result.returncode != 0:
            raise ComposeError(result)
        return result

    def stop(self) -> None:
        """SIGTERM to the whole group (docker CLI and compose plugin), SIGKILL after 10 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue
