"""One of two modules a `pytest -n 2 --dist loadfile` run gives to different workers: each
records which stack it saw (the Postgres server's start time) and when it was done with it,
into the directory named by EDAENV_PLUGIN_RECORD."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def record(stack, name: str, **more: object) -> None:
    started = stack.sql("SELECT pg_postmaster_start_time()::text")[0][0]
    entry = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "postgres": started}
    entry.update(more, done=time.time())
    Path(os.environ["EDAENV_PLUGIN_RECORD"], f"{name}.json").write_text(json.dumps(entry))


def test_worker_a_uses_the_stack(edaenv_stack) -> None:
    assert edaenv_stack.sql("SELECT 1") == [(1,)]
    record(edaenv_stack, "a")
