"""pytest plugin (entry point `pytest11`): tests against an edaenv stack.

    def test_order_is_processed(edaenv_stack):
        event_id = edaenv_stack.publish("OrderPlaced", {"orderId": "o-1", ...})
        edaenv_stack.wait_processed(event_id, timeout=30)

`edaenv_stack` (session scope) reuses a stack that is already up and healthy, or brings one up
and tears down what it started (with its volumes) at the end of the session. Every pytest run
that has edaenv installed loads this module, so it imports nothing heavy until a fixture runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from edaenv.brokers.base import Delivery
    from edaenv.config import Config

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edaenv", "edaenv stack")
    group.addoption(
        "--edaenv-config",
        default=None,
        metavar="PATH",
        help="edaenv.yaml of the stack (default: found from the rootdir upwards).",
    )
    group.addoption(
        "--edaenv-keep",
        action="store_true",
        default=False,
        help="Leave a stack the session started running afterwards.",
    )
    group.addoption(
        "--edaenv-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="How long bringing the stack up may take.",
    )
    parser.addini("edaenv_config", "edaenv.yaml of the stack, relative to the rootdir.")


class WaitTimeout(AssertionError):
    """A helper's condition did not hold in time: a test failure, with what was last seen."""


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll until condition() returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what} did not happen within {timeout:g}s (last: {last!r})")
        time.sleep(interval)


class EdaenvStack:
    """The running stack: endpoints, and helpers to publish and to wait for effects."""

    def __init__(self, config: Config, started: bool):
        from edaenv.engine.endpoints import environment

        self.config = config
        self.started = started  # True when this session brought it up (and will tear it down)
        self.env: dict[str, str] = environment(config)

    @property
    def database_url(self) -> str:
        return self.env["EDAENV_DATABASE_URL"]

    @property
    def broker_url(self) -> str:
        return self.env["EDAENV_BROKER_URL"]

    def publish(
        self,
        event: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        key: str | None = None,
    ) -> str:
        """Publish one contract-valid event straight to the broker (generated data unless
        given, validated against its contract); returns its CloudEvents id."""
        from edaenv.faults.messages import publish_one

        return publish_one(self.config, event, data, key=key)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def processed(self, event_id: str) -> int:
        """How many times the consumer recorded this event id (1 when processed once)."""
        rows = self.sql("SELECT count(*) FROM processed_events WHERE event_id = %s", (event_id,))
        return int(rows[0][0])

    def wait_processed(self, event_id: str, timeout: float = 30) -> None:
        """Wait for the consumer's effect: the event id in processed_events."""
        wait_until(
            lambda: self.processed(event_id),
            timeout=timeout,
            what=f"the consumer processing event {event_id}",
        )

    def wait_for(
        self, condition: Callable[[], T | None], timeout: float = 30, what: str = "condition"
    ) -> T:
        """Wait for any effect: condition() polled until truthy, e.g. a row in your table."""
        return wait_until(condition, timeout=timeout, what=what)

    def wait_for_message(
        self, topic: str, match: Callable[[Delivery], bool] | None = None, timeout: float = 30
    ) -> Delivery:
        """The first message on a topic (from its beginning) for which match() holds."""
        from edaenv.faults.messages import open_broker

        deadline = time.monotonic() + timeout
        broker = open_broker(self.config)
        try:
            while time.monotonic() < deadline:
                idle = max(0.5, min(5.0, deadline - time.monotonic()))
                for delivery in broker.tail(
                    topic, from_beginning=True, follow=False, idle_timeout=idle
                ):
                    if match is None or match(delivery):
                        return delivery
        finally:
            broker.close()
        raise WaitTimeout(f"no matching message on '{topic}' within {timeout:g}s")


def _config_path(config: pytest.Config) -> Path | None:
    given = config.getoption("--edaenv-config") or config.getini("edaenv_config")
    if given:
        return Path(str(config.rootpath / given))
    from edaenv.config import find_config

    return find_config(config.rootpath)


def _healthy(config: Config) -> bool:
    from edaenv.engine.status import docker_client, snapshot

    states = {state.service: state for state in snapshot(docker_client(), config.project)}
    return all(name in states and states[name].ready for name in config.services())


@pytest.fixture(scope="session")
def edaenv_stack(pytestconfig: pytest.Config) -> Iterator[EdaenvStack]:
    """The stack of this repository's edaenv.yaml, up and healthy for the whole session."""
    from edaenv.config import load_config
    from edaenv.engine.lifecycle import down, up
    from edaenv.errors import EdaenvError

    try:
        config = load_config(_config_path(pytestconfig))
        started = not _healthy(config)
        if started:
            up(config, [], wait=True, timeout=pytestconfig.getoption("--edaenv-timeout"))
        stack = EdaenvStack(config, started)
    except EdaenvError as exc:
        pytest.fail(
            f"edaenv stack: {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), pytrace=False
        )
    try:
        yield stack
    finally:
        if started and not pytestconfig.getoption("--edaenv-keep"):
            down(config, volumes=True)


@pytest.fixture(scope="session")
def edaenv_env(edaenv_stack: EdaenvStack) -> dict[str, str]:
    """The stack's endpoints as EDAENV_* variables, also exported to os.environ for code
    under test that reads its settings from the environment."""
    os.environ.update(edaenv_stack.env)
    return edaenv_stack.env
