"""`up` and `down`: preflight, render, `docker compose`, and the engine watched meanwhile."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    step: Callable[[str], None] | None = None,
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

    say = step or (lambda _: None)
    render_if_changed(config)
    compose.write_engine_override(config, engine.api_version)
    building = any(name in config.services() for name in APP_SERVICES)
    if building and importlib.util.find_spec("edaenv.engine.images") is not None:
        from edaenv.engine.images import prepare_app_wheels

        say("preparing edaenv's wheels for the relay and consumer images")
        prepare_app_wheels(config)

    command = compose.compose(config, "up", "--detach")
    command.flag("--remove-orphans", not keep_existing).flag("--no-recreate", keep_existing)
    command.flag("--build", building).flag("--wait", wait)
    command.option("--wait-timeout", f"{timeout:g}" if wait else None)
    command.extend(services)
    # The subprocess's own limit only catches a hung compose: --wait-timeout reports first.
    limit = None if building else timeout + 60
    # Before compose, only what it is about to change: its containers (the watch's first
    # state, and drift) and its volumes (the credentials they keep); and .env, whose errors
    # must stop `up` before anything starts. The checks on them, the images and the messages
    # follow once compose is on its way.
    secrets = _secrets(config)
    watch = Watch(engine, config.project)
    ready_at: dict[str, float] = {}
    broken: list[ServiceState] = []
    remembered = False
    try:
        volumes = _volumes(config, engine)
        running = compose.start(command)
        # compose's exit wakes the loop at once rather than at its next tick.
        job = _Background(lambda: running.finish(timeout=limit), then=watch.wake)
        try:
            # Looked up once compose runs: it loads its project before it pulls anything.
            for image in _missing_images(config, engine, services):
                say(f"pulling {image} (not on this machine yet)")
            stale = _warn_stale_volumes(config, volumes, secrets, warn)
            _warn_drift(config, watch.listed, warn)
            if building:
                say("building the relay and consumer images (cached after the first time)")
            say("starting")
            while True:
                watch.update(TICK_S)
                finished = job.wait(0)
                elapsed = time.monotonic() - started
                states = sorted(watch.states.values(), key=lambda s: s.service)
                for state in states:
                    if not state.ready:
                        ready_at.pop(state.service, None)  # (re)starting: time it afresh
                    elif state.service not in ready_at:
                        ready_at[state.service] = elapsed
                if progress:
                    progress(states, elapsed)
                # A container of this run that exited, failed to start or whose health check
                # failed for good: nothing left to wait for. One the engine restarts by its
                # policy shows as restarting, and a one-shot that exited 0 did its job.
                broken = [s for s in states if broken_for_good(s) and s.id in watch.fresh]
                if finished or (wait and broken):
                    break
                if not remembered and watch.fresh and all(done(s) for s in states):
                    # Done while compose waits for its next health poll rather than after:
                    # compose made every volume before its first container.
                    _remember_volumes(config, engine, secrets)
                    remembered = True
        except BaseException:  # Ctrl-C: compose runs in its own process group, stop it too
            running.stop()
            raise
    finally:
        watch.close()
    stopped = bool(broken) and not job.wait(0)
    if stopped:
        running.stop()  # the containers stay as they are, for `edaenv logs` and `status`
    if not remembered:
        _remember_volumes(config, engine, secrets)
    if stopped:
        seen = {state.service: state for state in broken}
        raise _failure(config, engine, services, timeout, seen=seen) or EngineError("up failed")
    try:
        job.result()
    except compose.ComposeError as exc:
        # Without compose v2 (or with one too old for --wait) `up` fails having started
        # nothing: checking only then keeps the version check off the way to healthy.
        preflight.check_compose()
        failure = _failure(config, engine, services, timeout, compose_said=exc.result.stderr)
        raise failure or exc from None
    if wait:
        # compose 2.40 can exit 0 when --wait-timeout expires: trust the engine, not the code.
        failure = _failure(config, engine, services, timeout)
        if failure:
            raise failure
    return UpResult(time.monotonic() - started, ready_at, states, stale)


def _secrets(config: Config) -> dict[str, str]:
    from edaenv.stack.dotenv import read_env

    return read_env(config.env_file)


def _volumes(config: Config, engine: api.Engine) -> list[dict[str, Any]]:
    from edaenv.engine.volumes import project_volumes

    return project_volumes(config, engine)


def _warn_stale_volumes(
    config: Config,
    volumes: list[dict[str, Any]],
    secrets: dict[str, str],
    warn: Callable[[str, str], None] | None,
) -> list[str]:
    from edaenv.engine.volumes import stale_volumes

    stale = stale_volumes(config, volumes, secrets)
    if stale and warn:
        warn(
            f"volume{'s' if len(stale) > 1 else ''} {', '.join(stale)} created with other "
            "credentials than .env: the service keeps the old ones and clients will fail to "
            "log in",
            "`edaenv down --volumes` deletes that data so the next `up` starts afresh "
            "(or restore the previous .env)",
        )
    return stale


def _warn_drift(
    config: Config, listed: list[dict[str, Any]], warn: Callable[[str, str], None] | None
) -> None:
    """What this `up` changes in a running stack because edaenv.yaml changed. `listed`: the
    engine's container list from before compose started."""
    from edaenv.engine.drift import applied, find_drift

    changes = find_drift(config, listed)
    if changes and warn:
        warn(*applied(config, changes))


def _remember_volumes(config: Config, engine: api.Engine, secrets: dict[str, str]) -> None:
    """Once compose has created the volumes, whether `up` succeeded or not."""
    from edaenv.engine.volumes import remember_volumes

    remember_volumes(config, _volumes(config, engine), secrets)


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
    config: Config,
    engine: api.Engine,
    services: list[str],
    timeout: float,
    *,
    compose_said: str = "",
    seen: dict[str, ServiceState] | None = None,
) -> ServiceFailed | None:
    """Every service `up` started that is not ready, each with its likely cause, its last
    health checks and log lines. "Timeout" only when all that is wrong is still starting.
    `seen`: failures the engine's events told of, which its container list may not show yet."""
    wanted = [s for s in config.services() if not services or s in services]
    wanted += [name for name in seen or {} if name not in wanted]  # e.g. compose.override's
    final = {s.service: s for s in snapshot(engine, config.project)}
    final.update(seen or {})
    if all(name in final and done(final[name]) for name in wanted):
        return None
    from docker.errors import NotFound  # the Docker SDK only once something failed

    client = docker_client()
    causes: dict[str, str] = {}
    found: dict[str, Any] = {}  # service -> its container
    pulls: dict[str, str] = {}  # service -> the image compose could not pull
    for name in wanted:
        state = final.get(name)
        if state is not None and done(state):
            continue
        attrs: dict[str, Any] = {}
        if state is not None:
            try:
                found[name] = client.containers.get(state.container)
                attrs = found[name].attrs
            except NotFound:
                pass
        image = _image(config, name)
        if state is None and image is not None and not _image_present(client, image):
            pulls[name] = image
        causes[name] = cause(state, attrs, image=pulls.get(name), said=compose_said)
    # A container never started: did it wait for one that failed or is still starting, or did
    # `up` stop first?
    starting = {name for name, said in causes.items() if said == STILL_STARTING}
    failed = {name for name, said in causes.items() if not said.startswith("not ")} - starting
    for name, said in causes.items():
        if said.startswith("not started"):
            attrs = found[name].attrs if name in found else {}
            causes[name] = cause(final[name], attrs, failed=failed, starting=starting)
    if pulls:
        # compose pulls before it creates anything: one image it cannot pull stops it all.
        for name, said in causes.items():
            if name not in pulls and said.startswith("not created ("):
                causes[name] = "not created: compose stopped at the image it could not pull"
    # The failures first, then what was still starting, then what followed from a failure
    # (never created, never started).
    causes = dict(
        sorted(
            causes.items(), key=lambda kv: (kv[1] == STILL_STARTING) + 2 * kv[1].startswith("not ")
        )
    )
    details: list[str] = []
    for name, said in causes.items():
        details.append(f"{name}: {said}")
        if name in pulls:
            told = [line for line in compose_said.splitlines() if pulls[name] in line]
            told = told or compose_said.strip().splitlines()[-1:]
            details += [f"  compose said: {line.strip()[:300]}" for line in told[-1:]]
        if name in found:
            checks = health_output(found[name])
            if checks:
                details.append("  health check (latest last):")
                details += [f"    {line}" for line in checks]
            logs = log_tail(found[name], 15)
            if logs:
                details.append("  last log lines:")
                details += [f"    | {line}" for line in logs]
    names = ", ".join(causes)
    pending = [waits_only(said) for said in causes.values()]
    first = next((n for n, p in zip(causes, pending, strict=True) if not p), next(iter(causes)))
    if all(pending):
        return ServiceFailed(
            f"{names} did not become healthy within {timeout:g}s (still starting)\n"
            + "\n".join(details),
            hint=f"`edaenv logs {first}` shows the whole log; a slow machine may need "
            f"`--timeout {int(timeout * 2)}`",
        )
    if pulls:
        key, image = next(iter(pulls.items()))
        hint = (
            "no registry reachable? pull the image where one is and `docker load` it here "
            "(or push it to a local registry), or name a mirror in edaenv.yaml "
            f"(`images: {{{key}: mirror.example.com/{image.rsplit('/', 1)[-1]}}}`) or in the "
            "engine's registry-mirrors"
        )
    else:
        hint = f"`edaenv logs {first}` shows the whole log, `edaenv status` every service"
    summary = "; ".join(f"{name} {said.splitlines()[0]}" for name, said in causes.items())
    return ServiceFailed(f"up failed: {summary}\n" + "\n".join(details), hint=hint)


STILL_STARTING = "still starting"
WAITS_FOR = "not started: it waits for "
DEPENDS_ON_LABEL = "com.docker.compose.depends_on"  # "name:condition:restart,..."


def waits_only(said: str) -> bool:
    """Whether a cause is only a matter of time: still starting, or never started because what
    it waits for is still starting (service names hold no ", "). Never a health check's output
    that happens to end so."""
    return said == STILL_STARTING or (
        said.startswith(WAITS_FOR) and said.endswith(f", {STILL_STARTING}")
    )


def broken_for_good(state: ServiceState) -> bool:
    """Exited (not to be restarted), failed to start, or unhealthy: waiting longer changes
    nothing."""
    return state.failed and not done(state)


def done(state: ServiceState) -> bool:
    """Ready, or a one-shot that exited 0 (compose itself says whether the stack needed it
    running)."""
    return state.ready or (state.state == "exited" and state.exit_code == 0)


def cause(
    state: ServiceState | None,
    attrs: dict[str, Any],
    *,
    image: str | None = None,
    said: str = "",
    failed: Collection[str] = (),
    starting: Collection[str] = (),
) -> str:
    """Why a service is not ready, in a few words a user can act on. attrs: the container's
    inspect data ({} without a container); image: the image it needs that is not on this
    machine; said: what compose printed when it failed; failed, starting: the services that
    failed, and those still starting."""
    if state is None:
        if image is not None:
            return f"image {image} is not here and could not be pulled"
        told = said.strip().splitlines()[-1:] or ["no container was created"]
        return f"not created ({told[0][:300]})"
    engine_state = attrs.get("State") or {}
    error = str(engine_state.get("Error") or "").strip()
    if error:
        return f"failed to start: {error[:300]} (does the image fit this service?)"
    code = engine_state.get("ExitCode", state.exit_code) if attrs else state.exit_code
    killed = " (killed: out of memory)" if engine_state.get("OOMKilled") else ""
    if state.state in ("exited", "dead"):
        return f"exited with code {code}{killed}"
    if state.health == "unhealthy":
        checks = (engine_state.get("Health") or {}).get("Log") or []
        output = " / ".join(
            line.strip()
            for line in str((checks[-1] if checks else {}).get("Output") or "").splitlines()
            if line.strip()
        )
        return f"unhealthy: {output[:200] or 'its health check failed, retries exhausted'}"
    restarted = int(attrs.get("RestartCount") or 0)
    if state.state == "restarting" or (restarted and state.state == "running"):
        # The engine restarts it by its restart policy: a crash loop, not a slow start.
        last = f"exited with code {code}{killed}" if state.state == "restarting" else "running"
        return f"restarting: {last}, restarted {restarted} time(s)"
    if state.state == "created":
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        needs = [dep.split(":")[0] for dep in labels.get(DEPENDS_ON_LABEL, "").split(",")]
        for among, which in ((failed, "which failed"), (starting, STILL_STARTING)):
            waits = [need for need in needs if need in among]
            if waits:
                return f"{WAITS_FOR}{', '.join(waits)}, {which}"
        return "not started: `up` stopped at the first failure, before compose started it"
    if state.state == "running" and state.health == "starting":
        return STILL_STARTING
    return state.shown()


def _missing_images(config: Config, engine: api.Engine, services: list[str]) -> list[str]:
    """The pulled images of the services `up` starts that are not on this machine: compose
    pulls them first, which takes a while (or fails without a registry)."""
    wanted = [s for s in config.services() if not services or s in services]
    images = {image for name in wanted if (image := _image(config, name)) is not None}
    return sorted(image for image in images if not engine.has_image(image))


def _image(config: Config, service: str) -> str | None:
    """The image a service runs: pulled ones from edaenv.yaml; the relay's and consumer's
    are built, not pulled; a service of the user's compose.override.yaml is not edaenv's."""
    if service in APP_SERVICES or service not in config.services():
        return None
    return config.image(service)


def _image_present(client: DockerClient, image: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True


class _Background:
    """A call running in a thread; result() re-raises what it raised."""

    def __init__(self, call: Callable[[], object], then: Callable[[], None] | None = None):
        self._call = call
        self._then = then  # called in the thread once `call` returned or raised
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:
            self._error = exc
        finally:
            if self._then is not None:
                self._then()

    def wait(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def result(self) -> object:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
