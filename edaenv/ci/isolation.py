"""CI isolation: a unique project name, free ports and fresh secrets per job.

It works through two environment variables that edaenv.yaml's loader honours, EDAENV_PROJECT
and EDAENV_PORT_OFFSET: `edaenv ci prepare` picks them once per job and appends them to
$GITHUB_ENV, so every later step (`up`, `env`, the tests, `bundle`, `down`) agrees.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edaenv.config import BROKER_PORTS, SERVICE_PORTS, Config
from edaenv.engine.preflight import port_free
from edaenv.errors import UsageError

if TYPE_CHECKING:
    pass


def unique_project(project: str, environ: dict[str, str] | None = None) -> str:
    """project-<run id>-<attempt> on GitHub Actions, project-<random> elsewhere."""
    env = os.environ if environ is None else environ
    run_id, attempt = env.get("GITHUB_RUN_ID"), env.get("GITHUB_RUN_ATTEMPT", "1")
    suffix = f"{run_id}-{attempt}" if run_id else secrets.token_hex(4)
    return f"{project}-{suffix}"


def auto_port_offset(
    base_ports: list[int], *, taken: set[int] | None = None, start: int = 0, step: int = 100
) -> int:
    """The smallest offset (0, 100, 200, ...) putting every port on a free 127.0.0.1
    port. `taken` are ports published by containers, which bind nothing on the host when the
    engine runs without its userland proxy."""
    taken = taken or set()
    offset = start
    while max(base_ports) + offset <= 65535:
        if all(p + offset not in taken and port_free(p + offset) for p in base_ports):
            return offset
        offset += step
    raise UsageError(
        "no port offset leaves every port of the stack free",
        hint="stop other stacks (`edaenv down`), or set ports by hand in edaenv.yaml",
    )


def stack_base_ports(config: Config) -> list[int]:
    return sorted(
        {port - config.port_offset for ports in config.ports().values() for port in ports.values()}
    )


def all_base_ports() -> list[int]:
    """Every port any stack may publish, whatever its broker (for `init`, before a config)."""
    ports = {
        p for group in (*BROKER_PORTS.values(), *SERVICE_PORTS.values()) for p in group.values()
    }
    return sorted(ports)


def published_ports() -> set[int]:
    """Host ports published by running containers (empty when no engine answers)."""
    from edaenv.engine.status import docker_client
    from edaenv.errors import EngineError

    try:
        client = docker_client(timeout=5)
    except EngineError:
        return set()
    ports: set[int] = set()
    for container in client.containers.list(ignore_removed=True):
        for bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            ports.update(int(b["HostPort"]) for b in bindings or [])
    return ports


@dataclass
class Prepared:
    variables: dict[str, str]
    env_written: bool


def prepare(config: Config, *, unique: bool, port_offset: str | None) -> Prepared:
    """Fresh secrets when .env is missing (a fresh clone), and the isolating variables."""
    from edaenv.stack.dotenv import fresh_secrets, write_env

    variables: dict[str, str] = {}
    if unique:
        variables["EDAENV_PROJECT"] = unique_project(config.project)
    if port_offset == "auto":
        offset = auto_port_offset(stack_base_ports(config), taken=published_ports())
        variables["EDAENV_PORT_OFFSET"] = str(offset)
    elif port_offset is not None:
        from edaenv.names import parse_port_offset

        # Checked here, up front: an offset past the last port made every later step fail.
        offset = parse_port_offset(
            port_offset, "--port-offset", highest_port=max(stack_base_ports(config))
        )
        variables["EDAENV_PORT_OFFSET"] = str(offset)
    written = not config.env_file.exists()
    if written:
        write_env(config.env_file, fresh_secrets())
    return Prepared(variables, written)
