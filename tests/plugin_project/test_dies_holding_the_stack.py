"""A session that dies holding the stack (SIGKILL: no teardown runs). The session that ends
last after it must remove what this one started (tests/e2e/test_plugin_ownership.py)."""

from __future__ import annotations

import os
import signal


def test_session_dies_holding_the_stack(edaenv_stack) -> None:
    assert edaenv_stack.started
    os.kill(os.getpid(), signal.SIGKILL)
