"""What the pytest plugin started on the engine, and which sessions are using the stack.

A lease is a marker file under the git-ignored `<scaffold>/.generated/` naming the containers
(ids), networks and volumes the plugin created or started, and the pids of the sessions holding
the stack; it changes only under a file lock beside it. `acquire` completes the stack with `up`
that recreates nothing and records the difference; `release` lets go, and the last holder out
removes exactly what the lease owns: never a container, network or volume that was there
before. See edaenv/pytest_plugin.py for the behaviour users see.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edaenv.config import Config
from edaenv.engine.lifecycle import up
from edaenv.engine.status import (
    PROJECT_LABEL,
    ServiceState,
    containers,
    docker_client,
    health,
    service_state,
)
from edaenv.errors import EdaenvError, EngineError

if TYPE_CHECKING:
    from docker import DockerClient

MARKER_NAME = "pytest-stack.json"
LOCK_NAME = "pytest-stack.lock"
# Waiting for the lock covers another session's whole `up` (its --edaenv-timeout) and more.
LOCK_SLACK_S = 120.0
STOP_TIMEOUT_S = 10  # as `docker compose down`: time to shut down cleanly before SIGKILL
BROKEN_STATES = ("paused", "restarting", "dead", "removing")


@dataclass(frozen=True)
class Found:
    """The project's containers, networks and volumes on the engine right now."""

    states: list[ServiceState]
    mounts: dict[str, set[str]]  # container id -> names of the volumes it mounts
    networks: dict[str, str]  # id -> name
    volumes: set[str]

    @classmethod
    def of(cls, client: DockerClient, project: str) -> Found:
        label = {"label": f"{PROJECT_LABEL}={project}"}
        found = containers(client, project)
        return cls(
            [service_state(container) for container in found],
            {
                str(c.id): {str(m["Name"]) for m in c.attrs.get("Mounts") or [] if m.get("Name")}
                for c in found
            },
            {str(n.id): str(n.name) for n in client.networks.list(filters=label)},
            {str(v.name) for v in client.volumes.list(filters=label)},
        )


@dataclass
class Owned:
    """What the plugin started: the only things it ever stops or removes."""

    containers: dict[str, str] = field(default_factory=dict)  # id -> service: created, removed
    started: dict[str, str] = field(default_factory=dict)  # id -> service: were stopped, stop
    networks: dict[str, str] = field(default_factory=dict)  # id -> name
    # Volumes have no id: one is the plugin's while a container the plugin created mounts it
    # (name -> those container ids), so a volume the user made again under that name is not.
    volumes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def between(cls, before: Found, after: Found) -> Owned:
        found = {state.id: state for state in before.states}
        created = {s.id: s.service for s in after.states if s.id not in found}
        return cls(
            containers=created,
            started={
                s.id: s.service
                for s in after.states
                if s.id in found
                and found[s.id].state in ("created", "exited")
                and s.state != found[s.id].state
            },
            networks={i: n for i, n in after.networks.items() if i not in before.networks},
            volumes={
                name: sorted(i for i in created if name in after.mounts.get(i, ()))
                for name in sorted(after.volumes - before.volumes)
            },
        )

    @classmethod
    def from_json(cls, data: Any) -> Owned:
        if not isinstance(data, dict):
            return cls()
        parts: dict[str, Any] = {}
        for name in ("containers", "started", "networks"):
            value = data.get(name)
            if isinstance(value, dict):
                parts[name] = {str(k): str(v) for k, v in value.items()}
        volumes = data.get("volumes")
        if isinstance(volumes, dict):
            parts["volumes"] = {
                str(k): [str(i) for i in v] for k, v in volumes.items() if isinstance(v, list)
            }
        return cls(**parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "containers": self.containers,
            "started": self.started,
            "networks": self.networks,
            "volumes": self.volumes,
        }

    def __bool__(self) -> bool:
        return bool(self.containers or self.started or self.networks or self.volumes)

    def update(self, other: Owned) -> None:
        self.containers.update(other.containers)
        self.started.update(other.started)
        self.networks.update(other.networks)
        self.volumes.update(other.volumes)

    def prune(self, found: Found) -> None:
        """Forget what is gone: a container recreated by the user since has another id and is
        theirs, and so is a volume no container of the plugin's mounts any more."""
        ids = {state.id for state in found.states}
        self.containers = {i: s for i, s in self.containers.items() if i in ids}
        self.started = {i: s for i, s in self.started.items() if i in ids}
        self.networks = {i: n for i, n in self.networks.items() if i in found.networks}
        self.volumes = {
            name: users
            for name, users in self.volumes.items()
            if name in found.volumes
            and any(name in found.mounts.get(i, ()) for i in users if i in self.containers)
        }

    def shown(self) -> str:
        parts = [f"container {s} ({i[:12]})" for i, s in self.containers.items()]
        parts += [f"network {n}" for n in self.networks.values()]
        parts += [f"volume {n}" for n in self.volumes]
        return ", ".join(parts) or "nothing"


@dataclass
class Lease:
    """The marker file: who holds the stack, what the plugin started, a failed start."""

    project: str = ""
    holders: set[int] = field(default_factory=set)  # pids of the sessions using the stack
    owned: Owned = field(default_factory=Owned)
    failed: dict[str, Any] | None = None  # holder, message and hint of a failed `up`

    @classmethod
    def read(cls, directory: Path) -> Lease:
        try:
            data = json.loads((directory / MARKER_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError):
            # Unreadable: the plugin cannot know what it started, so it owns nothing.
            return cls()
        if not isinstance(data, dict):
            return cls()
        holders = data.get("holders")
        failed = data.get("failed")
        return cls(
            project=str(data.get("project", "")),
            holders={h for h in holders if isinstance(h, int)}
            if isinstance(holders, list)
            else set(),
            owned=Owned.from_json(data.get("owned")),
            failed=failed if isinstance(failed, dict) else None,
        )

    def write(self, directory: Path) -> None:
        marker = directory / MARKER_NAME
        self.holders = {pid for pid in self.holders if _alive(pid)}
        if self.failed and not _alive(int(self.failed.get("holder") or 0)):
            self.failed = None
        if not (self.holders or self.owned or self.failed):
            marker.unlink(missing_ok=True)
            return
        data = {
            "written_by": "edaenv's pytest plugin: it removes only what `owned` lists",
            "project": self.project,
            "holders": sorted(self.holders),
            "owned": self.owned.to_json(),
            "failed": self.failed,
        }
        temporary = directory / f".{MARKER_NAME}.tmp"
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, marker)


def broken(states: list[ServiceState]) -> list[ServiceState]:
    """Services `up` cannot bring back without restarting or recreating them."""
    # A stopped container keeps the health it had (often "unhealthy"): `up` starts it.
    return [
        s
        for s in states
        if s.state in BROKEN_STATES or (s.state == "running" and s.health == "unhealthy")
    ]


def _not_healthy(config: Config, broken: list[ServiceState]) -> Exception:
    listed = ", ".join(f"{s.service} {s.shown()}" for s in broken)
    first = broken[0].service
    return EngineError(
        f"the stack '{config.project}' is up but not healthy ({listed}): the plugin does not "
        "restart or recreate containers it did not start, so it changed nothing",
        hint=f"`edaenv inject heal --all` undoes injected faults, `edaenv logs {first}` shows "
        "why a service fails; or `edaenv down` (your volumes stay) and the session brings up "
        "its own containers",
    )


@contextlib.contextmanager
def _locked(directory: Path, timeout: float) -> Iterator[None]:
    """The marker's lock (fcntl.flock, released by the kernel when a holder dies)."""
    import fcntl  # not on Windows: imported only when a session uses the stack

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EngineError(
                        f"another pytest session has been bringing the stack up or down for "
                        f"over {timeout:g}s (it holds {directory / LOCK_NAME})",
                        hint="wait for it to finish, or stop it",
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def acquire(config: Config, holder: int, *, timeout: float, keep: bool) -> bool:
    """The stack healthy and `holder` registered; True when this call started something."""
    directory = config.generated_dir
    with _locked(directory, timeout + LOCK_SLACK_S):
        lease = Lease.read(directory)
        lease.project = config.project
        if lease.failed and lease.failed.get("holder") == holder:
            raise EngineError(
                "another worker of this test run could not bring the stack up: "
                f"{lease.failed.get('message', '')}",
                hint=lease.failed.get("hint"),
            )
        client = docker_client()
        before = Found.of(client, config.project)
        lease.owned.prune(before)
        services = config.services()
        states = [s for s in before.states if s.service in services]
        failing = broken(states)
        if failing:
            lease.write(directory)
            raise _not_healthy(config, failing)
        if health(states, services).all_healthy:
            lease.holders.add(holder)
            lease.failed = None
            lease.write(directory)
            return False
        try:
            up(config, [], wait=True, timeout=timeout, keep_existing=True)
        except BaseException as exc:
            attempt = Owned.between(before, Found.of(client, config.project))
            if not keep:  # with --edaenv-keep it stays for a look, and is the user's
                lease.owned.update(remove(client, attempt))
            if not isinstance(exc, EdaenvError):
                lease.write(directory)
                raise
            hint = exc.hint
            if attempt and not keep:
                hint = (f"{hint}; " if hint else "") + (
                    "the session removed what it had started: `--edaenv-keep` leaves it for a look"
                )
            lease.failed = {"holder": holder, "message": str(exc), "hint": hint}
            lease.write(directory)
            raise EngineError(str(exc), hint=hint) from exc
        lease.owned.update(Owned.between(before, Found.of(client, config.project)))
        lease.holders.add(holder)
        lease.failed = None
        lease.write(directory)
        return True


def release(directory: Path, holder: int, *, keep: bool, timeout: float) -> str | None:
    """`holder` done with the stack; the last one out removes what the plugin started (or,
    with `keep`, hands it over). Returns a warning when something could not be removed."""
    with _locked(directory, timeout + LOCK_SLACK_S):
        lease = Lease.read(directory)
        lease.holders = {pid for pid in lease.holders if pid != holder and _alive(pid)}
        warning = None
        if not lease.holders:
            lease.failed = None
            if keep:
                lease.owned = Owned()  # handed over: later sessions leave it running
            elif lease.owned:
                lease.owned = remove(docker_client(), lease.owned)
                if lease.owned:
                    warning = (
                        f"could not remove {lease.owned.shown()}: left in place (still "
                        f"recorded in {directory / MARKER_NAME} while the plugin's)"
                    )
        lease.write(directory)
        return warning


def remove(client: DockerClient, owned: Owned) -> Owned:
    """Stop and remove the containers (with their anonymous volumes), networks and volumes the
    plugin created, stop the containers it started; returns what could not be removed."""
    from concurrent.futures import ThreadPoolExecutor

    from docker.errors import APIError, NotFound

    def stop(container_id: str, remove: bool) -> bool:
        try:
            container = client.containers.get(container_id)
            container.stop(timeout=STOP_TIMEOUT_S)
            if remove:
                container.remove(v=True)
        except NotFound:
            return True
        except APIError:
            return False
        return True

    jobs = [(i, True) for i in owned.containers] + [(i, False) for i in owned.started]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        done = dict(zip(jobs, pool.map(lambda job: stop(*job), jobs), strict=True))
    left = Owned(
        containers={i: s for i, s in owned.containers.items() if not done[(i, True)]},
        started={i: s for i, s in owned.started.items() if not done[(i, False)]},
    )
    for network_id, name in owned.networks.items():
        try:
            client.networks.get(network_id).remove()
        except NotFound:
            pass
        except APIError:  # still in use, by a container that is not the plugin's
            left.networks[network_id] = name
    for name, users in owned.volumes.items():
        try:
            client.volumes.get(name).remove()
        except NotFound:
            pass
        except APIError:  # in use by a container that is not the plugin's
            left.volumes[name] = users
    return left
