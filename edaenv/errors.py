"""One error hierarchy. The CLI boundary turns these into a message, a hint and an exit code."""

from __future__ import annotations


class EdaenvError(Exception):
    """Something the user can act on: what is wrong, where, and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UsageError(EdaenvError):
    """Bad input on the command line or in a file the user wrote."""

    exit_code = 2


class ConfigError(UsageError):
    """edaenv.yaml is missing, malformed or inconsistent."""


class ContractError(UsageError):
    """An event does not match its contract, or the contract itself is bad."""


# How much of what a failed command said an error shows: its last lines, each cut short.
OUTPUT_LINES = 20
OUTPUT_WIDTH = 400


class EngineError(EdaenvError):
    """Docker or compose failed, or is not available. When a command or an engine call failed,
    `command` is what ran (a `docker ...` command line, or the Engine API request) and `output`
    what it said, trimmed; the message shows both, so the user can run it again and see why."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: str | None = None,
        command: str | None = None,
        output: str | None = None,
    ):
        super().__init__(message, hint=hint, where=where)
        self.command = command
        self.output = trim_output(output or "")

    def __str__(self) -> str:
        text = super().__str__()
        if self.command and self.command not in text:
            text += f" (`{self.command}`)"
        if self.output:
            text += ":\n" + "\n".join(f"  | {line}" for line in self.output.splitlines())
        return text


def trim_output(text: str) -> str:
    """The last OUTPUT_LINES non-blank lines of `text`, each at most OUTPUT_WIDTH characters."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(
        line if len(line) <= OUTPUT_WIDTH else line[: OUTPUT_WIDTH - 3] + "..."
        for line in lines[-OUTPUT_LINES:]
    )


class BrokerError(EdaenvError):
    """A broker is unreachable or refused what we sent."""

    exit_code = 3
