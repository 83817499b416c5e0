"""Checks before `up` starts anything: engine, compose v2, free ports."""

from __future__ import annotations

import errno
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edaenv.config import Config
from edaenv.engine import compose
from edaenv.engine.status import PROJECT_LABEL, EngineUnreachable
from edaenv.errors import EngineError

if TYPE_CHECKING:
    from docker import DockerClient


COMPOSE_HINT = (
    "install the Compose v2 CLI plugin: `apt-get install docker-compose-plugin` "
    "(Docker's apt repository) or Docker Desktop, see "
    "https://docs.docker.com/compose/install/linux/ ; the Python `docker-compose` "
    "v1 does not work"
)


class PreflightError(EngineUnreachable):
    """The machine is not ready for the stack: nothing was started."""


@dataclass(frozen=True)
class BusyPort:
    service: str
    name: str
    port: int
    holder: str  # who holds it, as far as we can tell


def check_compose() -> str:
    """The compose v2 version, or a PreflightError saying how to install it."""
    try:
        result = compose.run(["docker", "compose", "version", "--short"], check=False, timeout=30)
    except EngineError as exc:  # no docker CLI at all
        raise PreflightError(exc.message, hint=exc.hint) from None
    version = result.stdout.strip().lstrip("v")
    major = re.match(r"(\d+)\.", version)
    if result.returncode != 0 or not major or int(major.group(1)) < 2:
        said = result.tail(3) or f"exit code {result.returncode}"
        raise PreflightError(
            f"Docker Compose v2 is not available (`docker compose version`: {said})",
            hint=COMPOSE_HINT,
        )
    return version


def busy_ports(config: Config, client: DockerClient) -> list[BusyPort]:
    """Published ports of the stack that something other than this stack holds."""
    own: set[int] = set()
    others: dict[int, str] = {}
    for container in client.containers.list(ignore_removed=True):
        project = container.labels.get(PROJECT_LABEL)
        for bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            for binding in bindings or []:
                port = int(binding["HostPort"])
                if project == config.project:
                    own.add(port)
                else:
                    where = f" of compose project '{project}'" if project else ""
                    others[port] = f"container {container.name}{where}"
    busy = []
    for service, ports in config.ports().items():
        for name, port in ports.items():
            # Without docker's userland proxy a published port binds nothing on the host.
            if port in own or (port not in others and port_free(port)):
                continue
            busy.append(BusyPort(service, name, port, others.get(port, "another process")))
    return busy


def busy_host_ports(config: Config) -> list[int]:
    """The stack's ports that something on this host holds, whoever that is."""
    return [
        port for ports in config.ports().values() for port in ports.values() if not port_free(port)
    ]


def check_ports(config: Config, client: DockerClient) -> None:
    busy = busy_ports(config, client)
    if not busy:
        return
    first = busy[0]
    moved = first.port - config.port_offset + 1
    listed = "; ".join(f"{b.port} ({b.service}.{b.name}, held by {b.holder})" for b in busy)
    offset = free_offset(config)
    suggestion = f"`offset: {offset}` under `ports:`" if offset is not None else "an offset"
    raise PreflightError(
        f"port {first.port} for {first.service} is already in use: {listed}",
        where=str(config.path.name),
        hint=f"set {suggestion} in edaenv.yaml (what `edaenv init --port-offset` writes), or "
        f"move one port, e.g. `ports: {{{first.service}: {moved}}}`"
        f", or stop what holds it; nothing was started",
    )


def free_offset(config: Config) -> int | None:
    """The smallest offset, in hundreds above the current one, with every port free."""
    ports = [port for named in config.ports().values() for port in named.values()]
    base = {port - config.port_offset for port in ports}
    for step in range(1, 100):
        offset = config.port_offset + 100 * step
        if max(base) + offset > 65535:
            return None
        if all(port_free(port + offset) for port in base):
            return offset
    return None


def port_free(port: int) -> bool:
    """Whether a service may publish this port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port whose last connections linger in TIME_WAIT is free to publish.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True
