"""The application layer: what commands, the pytest plugin, CI and fault injection do with one
stack (its contracts, its broker, its database), so no command reaches into another's module.
See docs/architecture.md."""

from edaenv.application.stack import Stack

__all__ = ["Stack"]
