"""edaenv: local and CI stacks for event-driven architecture."""

__version__ = "0.1.0"
