"""The watch `up` keeps on the engine while compose runs: compose's end ends its wait at once
(`up` used to notice it only at the next 0.1 s tick, then waited one more), and it lists the
project's containers once, which drift reads too. Against the real engine."""

from __future__ import annotations

import threading
import time
import uuid

from edaenv.engine import api
from edaenv.engine.watch import Watch


def test_a_wake_ends_the_wait_at_once_and_changes_nothing() -> None:
    watch = Watch(api.connect(), f"edaenv-test-watch-{uuid.uuid4().hex[:8]}")
    try:
        assert watch.listed == [] and watch.states == {}
        started = time.monotonic()
        threading.Timer(0.2, watch.wake).start()
        assert watch.update(60) is False
        waited = time.monotonic() - started
        assert 0.15 <= waited < 30, waited  # until the wake, not the 60 s limit
        assert watch.states == {}
    finally:
        watch.close()
