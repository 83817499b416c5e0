"""What runs, from the Docker SDK: a project's containers found by the compose project label."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edaenv.errors import EngineError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ENGINE_HINT = (
    "start Docker (Docker Desktop, or `sudo systemctl start docker`), or point "
    "DOCKER_HOST at a running engine"
)


class EngineUnreachable(EngineError):
    """No Docker engine answers: nothing was started."""

    exit_code = 4


def docker_client(timeout: float = 10) -> DockerClient:
    from docker.errors import DockerException

    from edaenv.engine import discovery

    endpoint = discovery.discover()  # as the docker CLI: DOCKER_HOST, context, default socket
    try:
        client = discovery.client(endpoint, timeout)
        client.ping()
    except DockerException as exc:
        reason = str(exc).split(" (Caused by")[0]
        raise discovery.unreachable(endpoint, reason) from None
    return client


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int
    container_port: int
    protocol: str


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    state: str  # created | running | paused | restarting | exited | dead
    health: str | None  # starting | healthy | unhealthy, None without a health check
    exit_code: int | None
    started_at: str | None
    uptime_s: float | None
    ports: list[Port] = field(default_factory=list)
    id: str = ""

    @property
    def ready(self) -> bool:
        """Healthy, or running when the service has no health check."""
        return self.state == "running" and self.health in (None, "healthy")

    @property
    def failed(self) -> bool:
        return self.health == "unhealthy" or self.state in ("exited", "dead")

    def shown(self) -> str:
        if self.state == "running":
            return self.health or "running"
        if self.state in ("exited", "dead"):
            return f"{self.state} ({self.exit_code})"
        return self.state

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Health:
    """Is the stack up and healthy: the one answer `edaenv status` and the pytest plugin share
    (Stack.health() reads it from the engine)."""

    states: tuple[ServiceState, ...]  # every container of the project
    missing: tuple[str, ...]  # services of edaenv.yaml without a container

    @property
    def unhealthy(self) -> list[str]:
        """Services with a container that is not ready (not running, or not healthy yet)."""
        return [state.service for state in self.states if not state.ready]

    @property
    def all_healthy(self) -> bool:
        return not self.missing and not self.unhealthy


def health(states: list[ServiceState], services: list[str]) -> Health:
    present = {state.service for state in states}
    return Health(tuple(states), tuple(name for name in services if name not in present))


def containers(client: DockerClient, project: str) -> list[Container]:
    return list(
        client.containers.list(
            all=True, ignore_removed=True, filters={"label": f"{PROJECT_LABEL}={project}"}
        )
    )


def service_state(container: Container, now: datetime | None = None) -> ServiceState:
    attrs = container.attrs
    state = attrs.get("State", {})
    running = state.get("Status") == "running"
    started = state.get("StartedAt") if running else None
    uptime = None
    if started:
        uptime = round(((now or datetime.now(UTC)) - _parse_time(started)).total_seconds(), 1)
    ports = []
    for spec, bindings in sorted((attrs.get("NetworkSettings", {}).get("Ports") or {}).items()):
        number, _, protocol = spec.partition("/")
        for binding in bindings or []:
            ports.append(
                Port(
                    binding.get("HostIp", ""),
                    int(binding["HostPort"]),
                    int(number),
                    protocol or "tcp",
                )
            )
    return ServiceState(
        service=container.labels.get(SERVICE_LABEL, container.name),
        container=str(container.name),
        state=str(state.get("Status", "unknown")),
        health=(state.get("Health") or {}).get("Status"),
        exit_code=None if running else state.get("ExitCode"),
        started_at=started,
        uptime_s=uptime,
        ports=ports,
        id=str(container.id),
    )


def snapshot(client: DockerClient, project: str) -> list[ServiceState]:
    now = datetime.now(UTC)
    return sorted(
        (service_state(c, now) for c in containers(client, project)),
        key=lambda s: (s.service, s.container),
    )


def summary_state(attrs: dict[str, Any]) -> ServiceState:
    """A ServiceState from an entry of the engine's container list (no inspect needed): state
    and health, no start time or ports."""
    status = str(attrs.get("Status", ""))
    health = next((h for h in ("unhealthy", "healthy") if f"({h})" in status), None)
    if "(health: starting)" in status:
        health = "starting"
    code = re.search(r"Exited \((-?\d+)\)", status)
    names = attrs.get("Names") or [str(attrs.get("Id", ""))]
    return ServiceState(
        service=(attrs.get("Labels") or {}).get(SERVICE_LABEL, names[0]),
        container=names[0].lstrip("/"),
        state=str(attrs.get("State", "unknown")),
        health=health,
        exit_code=int(code.group(1)) if code else None,
        started_at=None,
        uptime_s=None,
        id=str(attrs.get("Id", "")),
    )


def health_output(container: Container, checks: int = 3) -> list[str]:
    """The output of the last health checks (newest last, repeats folded), a few lines each."""
    log = (container.attrs.get("State", {}).get("Health") or {}).get("Log") or []
    shown: list[str] = []
    for entry in log[-checks:]:
        lines = [line for line in _plain(entry.get("Output") or "").splitlines() if line.strip()]
        text = " / ".join(lines[:2]) or "(no output)"
        line = f"exit {entry.get('ExitCode')}: {text[:200]}"
        if not shown or shown[-1] != line:
            shown.append(line)
    return shown


def log_tail(container: Container, lines: int = 20) -> list[str]:
    raw = container.logs(tail=lines, stdout=True, stderr=True)
    return _plain(raw.decode("utf-8", "replace")).rstrip().splitlines()


def _plain(text: str) -> str:
    return ANSI.sub("", text)


def _parse_time(text: str) -> datetime:
    # Docker gives nanoseconds ("...:01.123456789Z"); datetime takes microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    frac = (frac.split("+")[0] + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{frac}+00:00")
