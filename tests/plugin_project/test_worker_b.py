"""The other module of the `pytest -n 2` run (see test_worker_a.py). It keeps using the stack
after the other worker is done: a worker finishing first must not take the stack away."""

from __future__ import annotations

import time

from test_worker_a import record


def test_worker_b_uses_the_stack_longer(edaenv_stack) -> None:
    first = edaenv_stack.sql("SELECT pg_postmaster_start_time()::text")
    time.sleep(8)
    assert edaenv_stack.sql("SELECT pg_postmaster_start_time()::text") == first
    record(edaenv_stack, "b")
