"""Fixtures of the event-plane suite: a project per broker, on the native test brokers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events_support import Project, make_project

BROKERS = [
    pytest.param("kafka", marks=pytest.mark.kafka),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("nats", marks=pytest.mark.nats),
]


@pytest.fixture(params=BROKERS)
def event_project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    """`edaenv init --defaults --broker X` in tmp_path, on a topic of its own, for each broker."""
    return make_project(tmp_path, request.param)
