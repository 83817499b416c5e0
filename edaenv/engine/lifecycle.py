"""`up` and `down`: preflight, render, `docker compose`, and the engine watched meanwhile."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edaenv.config import Config
from edaenv.engine import api, compose, preflight
from edaenv.engine.rendering import render_if_changed
from edaenv.engine.status import (
    PROJECT_LABEL,
    ServiceState,
    containers,
    docker_client,
    health_output,
    log_tail,
)
from edaenv.engine.watch import Watch, snapshot
from edaenv.errors import EngineError, UsageError

if TYPE_CHECKING:
    from docker import DockerClient

APP_SERVICES = ("relay", "consumer")
TICK_S = 0.1  # progress refresh; no engine calls behind it


class ServiceFailed(EngineError):
    """A service exited or never became healthy."""


@dataclass
class UpResult:
    seconds: float  # from the start of `up` to every service healthy (or started: --no-wait)
    ready_at: dict[str, float] = field(default_factory=dict)  # service -> seconds to ready
    services: list[ServiceState] = field(default_factory=list)
    stale_volumes: list[str] = field(default_factory=list)


Progress = Callable[[list[ServiceState], float], None]


def up(
    config: Config,
    services: list[str],
    *,
    wait: bool = True,
    timeout: float = 180,
    progress: Progress | None = None,
    warn: Callable[[str, str], None] | None = None,
    started: float | None = None,
    keep_existing: bool = False,
) -> UpResult:
    """Start `services` (all when empty). keep_existing leaves the project's existing
    containers as they are (no recreate, no orphan removal): only missing containers are created
    and stopped ones started, as the pytest plugin does on a stack it found."""
    started = time.monotonic() if started is None else started
    unknown = [name for name in services if name not in config.services()]
    if unknown:
        raise UsageError(
            f"no service '{unknown[0]}' in this stack",
            where="SERVICE",
            hint=f"services of '{config.project}': {', '.join(config.services())}",
        )
    # No Docker SDK on the way to healthy (see api.py); it comes in when a port is taken (maybe
    # by this very stack) or something failed.
    engine = api.connect()
    if preflight.busy_host_ports(config):
        preflight.check_ports(config, docker_client())

    render_if_changed(config)
    building = any(name in config.services() for name in APP_SERVICES)
    if building and importlib.util.find_spec("edaenv.engine.images") is not None:
        from edaenv.engine.images import prepare_app_wheels

        prepare_app_wheels(config)

    command = compose.compose(config, "up", "--detach")
    command.flag("--remove-orphans", not keep_existing).flag("--no-recreate", keep_existing)
    command.flag("--build", building).flag("--wait", wait)
    command.option("--wait-timeout", f"{timeout:g}" if wait else None)
    command.extend(services)
    # The subprocess's own limit only catches a hung compose: --wait-timeout reports first.
    limit = None if building else timeout + 60
    stale = _warn_stale_volumes(config, engine, warn)
    running = compose.start(command)
    job = _Background(lambda: running.finish(timeout=limit))
    ready_at: dict[str, float] = {}
    watch: Watch | None = None
    try:
        # Subscribed after compose started: what happened before is in the watch's snapshot.
        watch = Watch(engine, config.project)
        while True:
            done = job.wait(0)
            watch.update(TICK_S)
            elapsed = time.monotonic() - started
            states = sorted(watch.states.values(), key=lambda s: s.service)
            for state in states:
                if not state.ready:
                    ready_at.pop(state.service, None)  # (re)starting: time it afresh
                elif state.service not in ready_at:
                    ready_at[state.service] = elapsed
            if progress:
                progress(states, elapsed)
            if done:
                break
    except BaseException:  # Ctrl-C: compose runs in its own process group, stop it too
        running.stop()
        raise
    finally:
        if watch is not None:
            watch.close()
    _remember_volumes(config, engine)
    try:
        job.result()
    except compose.ComposeError as exc:
        # Without compose v2 (or with one too old for --wait) `up` fails having started
        # nothing: checking only then keeps the version check off the way to healthy.
        preflight.check_compose()
        said = exc.result.tail(1)
        reason = f"compose: {said}" if said else f"compose exit code {exc.result.returncode}"
        raise _failure(config, engine, services, timeout, reason) or exc from None
    if wait:
        # compose 2.40 can exit 0 when --wait-timeout expires: trust the engine, not the code.
        failure = _failure(config, engine, services, timeout, "compose reported success")
        if failure:
            raise failure
    return UpResult(time.monotonic() - started, ready_at, states, stale)


def _warn_stale_volumes(
    config: Config, engine: api.Engine, warn: Callable[[str, str], None] | None
) -> list[str]:
    from edaenv.engine.volumes import stale_volumes
    from edaenv.stack.dotenv import read_env

    stale = stale_volumes(config, engine, read_env(config.env_file))
    if stale and warn:
        warn(
            f"volume{'s' if len(stale) > 1 else ''} {', '.join(stale)} created with other "
            "credentials than .env: the service keeps the old ones and clients will fail to "
            "log in",
            "`edaenv down --volumes` deletes that data so the next `up` starts afresh "
            "(or restore the previous .env)",
        )
    return stale


def _remember_volumes(config: Config, engine: api.Engine) -> None:
    """Once compose has created the volumes, whether `up` succeeded or not."""
    from edaenv.engine.volumes import remember_volumes
    from edaenv.stack.dotenv import read_env

    remember_volumes(config, engine, read_env(config.env_file))


@dataclass
class DownResult:
    containers: int  # removed
    volumes: int  # deleted (with --volumes)
    images: list[str] = field(default_factory=list)  # built images removed (with --rmi)


def down(config: Config, *, volumes: bool, images: bool = False) -> DownResult:
    """Stop and remove the project's containers and network; with `volumes` its volumes, with
    `images` the images `up` built for it (relay, consumer; never a pulled one). Only things
    carrying this project's label or its image names are touched."""
    client = docker_client()
    label = {"label": f"{PROJECT_LABEL}={config.project}"}
    removed = len(containers(client, config.project))
    if config.compose_file.is_file():
        command = compose.compose(config, "down", "--remove-orphans")
    else:  # never rendered: compose finds the containers by the project label alone
        command = compose.Command(
            ["docker", "compose", "--project-name", config.project, "down", "--remove-orphans"]
        )
    deleted = len(client.volumes.list(filters=label)) if volumes else 0
    compose.run(command.flag("--volumes", volumes), timeout=300)
    if volumes:
        # compose deletes only the volumes the current file declares; a component turned off
        # since `up` leaves its volume behind.
        for volume in client.volumes.list(filters=label):
            volume.remove()
    return DownResult(removed, deleted, _remove_built_images(config, client) if images else [])


def _remove_built_images(config: Config, client: DockerClient) -> list[str]:
    """The relay and consumer images `up` built (`<project>-<role>:dev`, see the fragments).
    compose's own `--rmi local` would skip them (they have a name), `--rmi all` would also
    remove the broker's and the databases' pulled images."""
    from docker.errors import ImageNotFound

    gone = []
    for role in APP_SERVICES:
        name = f"{config.project}-{role}:dev"
        try:
            client.images.remove(name)
        except ImageNotFound:
            continue
        gone.append(name)
    return gone


def _failure(
    config: Config, engine: api.Engine, services: list[str], timeout: float, reason: str
) -> ServiceFailed | None:
    """What failed among the services `up` started, with their health checks and logs."""
    wanted = set(services or config.services())
    final = [s for s in snapshot(engine, config.project) if s.service in wanted]
    failing = [s for s in final if s.failed] or [s for s in final if not s.ready]
    if not failing:
        return None
    from docker.errors import NotFound  # the Docker SDK only once something failed

    client = docker_client()
    lines: list[str] = []
    for state in failing:
        lines.append(f"{state.service}: {state.shown()}")
        try:
            container = client.containers.get(state.container)
        except NotFound:
            continue
        checks = health_output(container)
        if checks:
            lines.append("  health check (latest last):")
            lines += [f"    {line}" for line in checks]
        logs = log_tail(container, 15)
        if logs:
            lines.append("  last log lines:")
            lines += [f"    | {line}" for line in logs]
    names = ", ".join(s.service for s in failing)
    return ServiceFailed(
        f"{names} did not become healthy within {timeout:g}s ({reason})\n" + "\n".join(lines),
        hint=f"`edaenv logs {failing[0].service}` shows the whole log, `edaenv status` every "
        f"service; a slow machine may need `--timeout {int(timeout * 2)}`",
    )


class _Background:
    """A call running in a thread; result() re-raises what it raised."""

    def __init__(self, call: Callable[[], object]):
        self._call = call
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:
            self._error = exc

    def wait(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def result(self) -> object:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
