"""Failure injection: container faults (Docker SDK), message faults (broker adapters), and the
record of what is active so that `edaenv inject heal --all` can undo it."""
