"""pytest plugin (entry point `pytest11`): tests against an edaenv stack.

    def test_order_is_processed(edaenv_stack):
        event_id = edaenv_stack.publish("OrderPlaced", {"orderId": "o-1", ...})
        edaenv_stack.wait_processed(event_id, timeout=30)

`edaenv_stack` (session scope) gives the tests a healthy stack and leaves a stack it found as it
found it:

- A healthy stack is reused as it is.
- A stack missing services (e.g. after `edaenv up broker postgres`), or with services stopped,
  is completed with `up` that recreates nothing: missing containers are created, stopped ones
  started. At the end the plugin removes exactly the containers, network and volumes it created
  and stops again the containers it started. It never runs `down --volumes`; a volume that
  existed before the session is never removed.
- A stack with a service paused, restarting or unhealthy is left untouched and the fixture
  fails, naming those services: restarting or recreating a container the developer may be
  debugging (or has injected a fault into) would throw its state away.
- What the plugin started is recorded in `<scaffold>/.generated/pytest-stack.json` (container
  and network ids, volume names with the plugin's containers mounting them), changed only
  under a file lock (`pytest-stack.lock` beside it). Every session using the stack registers
  there as a holder; the first brings the stack up while the others wait for the lock, and the
  last one out removes what the plugin started, once. Under pytest-xdist the controller
  process is the holder for all its workers and lets go once they have all finished, so a
  worker that is done early never stops the stack the others use. Holders that died are
  dropped, and whatever a crashed session started is removed by the next session that ends
  last.
- `--edaenv-keep` leaves what the session started running and hands it over: the record is
  dropped, so later sessions reuse that stack and leave it running, like any stack they find.
- When bringing the stack up fails, what that attempt created is removed again (kept with
  `--edaenv-keep`, for a look) and the other workers of the run fail at once with the same
  message instead of trying again.

Every pytest run that has edaenv installed loads this module, so it imports nothing heavy
until a fixture runs.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest

if TYPE_CHECKING:
    from edaenv.brokers.base import Delivery
    from edaenv.config import Config
    from edaenv.verify.check import Report

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
        help="Leave what the session started running afterwards; it is then yours (later "
        "sessions reuse it and leave it running).",
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
        from edaenv.stack.endpoints import environment

        self.config = config
        # True when this session started something (removed by the last session out)
        self.started = started
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
        from edaenv.stack.endpoints import connect_database

        with connect_database(self.database_url) as conn:
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
        from edaenv.application import Stack

        deadline = time.monotonic() + timeout
        broker = Stack(self.config).broker()
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

    def verify(self, *names: str, timeout: float | None = None) -> list[Report]:
        """Run scenarios of <scaffold>/scenarios (every one when no name is given) as
        `edaenv verify` does, and return their reports; the test fails with the violations when
        a scenario did not hold."""
        from edaenv.application import Stack
        from edaenv.errors import EdaenvError
        from edaenv.verify.report import text
        from edaenv.verify.run import preflight, run
        from edaenv.verify.scenario import find_scenarios

        try:
            scenarios = find_scenarios(self.config.scaffold_dir / "scenarios", list(names))
            stack = Stack(self.config)
            preflight(stack, scenarios)
            reports = [run(stack, scenario, quiet_timeout=timeout) for scenario in scenarios]
        except EdaenvError as exc:
            _fail(exc)
        failed = [text(report) for report in reports if not report.ok]
        if failed:
            pytest.fail("\n\n".join(failed), pytrace=False)
        return reports


def _config_path(config: pytest.Config) -> Path | None:
    given = config.getoption("--edaenv-config") or config.getini("edaenv_config")
    if given:
        return Path(str(config.rootpath / given))
    from edaenv.config import find_config

    return find_config(config.rootpath)


# --- pytest-xdist: the controller holds the stack for its workers ----------------------------
# The controller passes its pid to the workers (workerinput) as the holder for them all; each
# worker that used the stack reports its marker directory back (workeroutput), and the
# controller lets go once every worker has finished.

HOLDER_KEY = "edaenv_holder"
USED_KEY = "edaenv_marker_dir"
_USED = pytest.StashKey[set[str]]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[HOLDER_KEY] = os.getpid()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    used = getattr(node, "workeroutput", {}).get(USED_KEY)
    if used:
        node.config.stash.setdefault(_USED, set()).add(used)


def pytest_sessionfinish(session: pytest.Session) -> None:
    used = session.config.stash.get(_USED, set())
    if not used:
        return
    from edaenv.errors import EdaenvError

    for directory in sorted(used):
        try:
            _release(Path(directory), os.getpid(), session.config)
        except (EdaenvError, OSError) as exc:  # the tests have run: a warning, not a crash
            warnings.warn(pytest.PytestWarning(f"edaenv stack: {exc}"), stacklevel=1)


def _holder(config: pytest.Config) -> tuple[int, bool]:
    """Who holds the stack for this session, and whether the session lets go itself (False
    in an xdist worker: its controller does, after the last worker)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput and HOLDER_KEY in workerinput:
        return int(workerinput[HOLDER_KEY]), False
    return os.getpid(), True


def _release(directory: Path, holder: int, config: pytest.Config) -> None:
    from edaenv.engine.lease import release

    keep = config.getoption("--edaenv-keep")
    warning = release(directory, holder, keep=keep, timeout=config.getoption("--edaenv-timeout"))
    if warning:
        warnings.warn(pytest.PytestWarning(f"edaenv stack: {warning}"), stacklevel=1)


def _fail(exc: Exception) -> NoReturn:
    hint = getattr(exc, "hint", None)
    message = f"edaenv stack: {exc}" + (f"\n  hint: {hint}" if hint else "")
    raise pytest.fail.Exception(message, pytrace=False) from None  # the message says it all


@pytest.fixture(scope="session")
def edaenv_stack(pytestconfig: pytest.Config) -> Iterator[EdaenvStack]:
    """The stack of this repository's edaenv.yaml, up and healthy for the whole session."""
    from edaenv.config import load_config
    from edaenv.engine.lease import acquire
    from edaenv.errors import EdaenvError

    keep = pytestconfig.getoption("--edaenv-keep")
    holder, lets_go = _holder(pytestconfig)
    try:
        config = load_config(_config_path(pytestconfig))
        if not lets_go:
            pytestconfig.workeroutput[USED_KEY] = str(config.generated_dir)  # type: ignore[attr-defined]
        timeout = pytestconfig.getoption("--edaenv-timeout")
        stack = EdaenvStack(config, acquire(config, holder, timeout=timeout, keep=keep))
    except (EdaenvError, OSError) as exc:
        _fail(exc)
    try:
        yield stack
    finally:
        if lets_go:
            try:
                _release(config.generated_dir, holder, pytestconfig)
            except (EdaenvError, OSError) as exc:
                _fail(exc)


@pytest.fixture(scope="session")
def edaenv_env(edaenv_stack: EdaenvStack) -> dict[str, str]:
    """The stack's endpoints as EDAENV_* variables, also exported to os.environ for code
    under test that reads its settings from the environment."""
    os.environ.update(edaenv_stack.env)
    return edaenv_stack.env
