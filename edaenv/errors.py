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


class EngineError(EdaenvError):
    """Docker or compose failed, or is not available."""


class BrokerError(EdaenvError):
    """A broker is unreachable or refused what we sent."""

    exit_code = 3
