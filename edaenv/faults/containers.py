"""Container faults through the Docker SDK, addressed by role (`broker`, `relay`, ...).

Compose labels find a role's container: `com.docker.compose.project` is the project name from
edaenv.yaml and `com.docker.compose.service` the role, the same for every broker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edaenv.config import Config
from edaenv.engine.api import sdk_call
from edaenv.engine.status import PROJECT_LABEL, SERVICE_LABEL, docker_client
from edaenv.errors import EngineError, UsageError
from edaenv.faults.state import Fault, FaultStore, new_id, now

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

# Faults that stay active until healed, and what heals each of them.
ACTIVE = {"kill": "start", "stop": "start", "pause": "unpause", "partition": "reconnect"}
# Repairs: running one resolves the recorded faults of these kinds on the same container.
REPAIRS = {"start": ("kill", "stop"), "unpause": ("pause",)}


def find_container(client: DockerClient, config: Config, role: str) -> Container:
    if role not in config.services():
        raise UsageError(
            f"no service '{role}' in this stack",
            where="ROLE",
            hint=f"services of '{config.project}': {', '.join(config.services())}",
        )
    labels = [f"{PROJECT_LABEL}={config.project}", f"{SERVICE_LABEL}={role}"]
    with sdk_call("docker ps --all " + " ".join(f"--filter label={label}" for label in labels)):
        found = client.containers.list(all=True, filters={"label": labels})
    if not found:
        raise EngineError(
            f"'{role}' has no container in project '{config.project}'",
            hint="start the stack first: `edaenv up`",
        )
    return found[0]


def _status(container: Container) -> str:
    with sdk_call(f"docker inspect {container.name}"):
        container.reload()
    return str(container.attrs["State"]["Status"])  # created|running|paused|restarting|exited|dead


def _fault(kind: str, role: str, container: Container, **extra: Any) -> Fault:
    return Fault(
        id=new_id(),
        kind=kind,
        target=role,
        container=container.id,
        container_name=container.name,
        started=now(),
        addresses={
            name: endpoint.get("IPAddress")
            for name, endpoint in container.attrs["NetworkSettings"]["Networks"].items()
            if endpoint.get("IPAddress")
        },
        **extra,
    )


def inject(
    config: Config,
    store: FaultStore,
    kind: str,
    role: str,
    *,
    signal: str = "SIGKILL",
    timeout: int = 10,
) -> Fault:
    """Break one container; the fault is recorded before this returns."""
    client = docker_client()
    container = find_container(client, config, role)
    status = _status(container)
    for fault in store.active():
        if fault.container == container.id and fault.kind == kind:
            raise UsageError(
                f"'{role}' already has an active {kind} fault ({fault.id})",
                hint=f"heal it first: `edaenv inject heal {fault.id}`",
            )
    wanted = "running" if kind in ("kill", "stop", "pause") else None
    if wanted and status != wanted:
        raise EngineError(
            f"'{role}' is {status}, not running: nothing to {kind}",
            hint=f"`edaenv inject status` lists active faults; "
            f"`edaenv inject start {role}` starts it",
        )
    if kind == "kill":
        with sdk_call(f"docker kill --signal {signal} {container.name}"):
            container.kill(signal=signal)
        fault = _fault(kind, role, container, signal=signal)
    elif kind == "stop":
        with sdk_call(f"docker stop --time {timeout} {container.name}"):
            container.stop(timeout=timeout)
        fault = _fault(kind, role, container)
    elif kind == "pause":
        _pause(container)
        fault = _fault(kind, role, container)
    elif kind == "partition":
        fault = _partition(client, container, role)
    elif kind == "restart":
        with sdk_call(f"docker restart --time {timeout} {container.name}"):
            container.restart(timeout=timeout)
        fault = _fault(kind, role, container, ended=now())
        store.record(fault)
        return fault
    else:
        raise UsageError(f"unknown container fault '{kind}'")
    store.add(fault)
    return fault


def _partition(client: DockerClient, container: Container, role: str) -> Fault:
    # A plain reconnect gives the container no service aliases, so other containers could no
    # longer resolve it by its role name: the aliases are recorded here and given back on heal.
    networks: dict[str, tuple[str, ...]] = {}
    short_id = container.id[:12]
    for name, endpoint in container.attrs["NetworkSettings"]["Networks"].items():
        if name in ("host", "none"):
            continue
        networks[name] = tuple(a for a in (endpoint.get("Aliases") or []) if a != short_id)
    if not networks:
        raise EngineError(
            f"'{role}' is on no network: nothing to partition",
            hint="`edaenv inject status` lists active faults",
        )
    fault = _fault("partition", role, container, networks=networks)
    for name in networks:
        with sdk_call(f"docker network disconnect {name} {container.name}"):
            client.networks.get(name).disconnect(container)
    return fault


def _pause(container: Container) -> None:
    with sdk_call(f"docker pause {container.name}"):
        container.pause()


def _unpause(container: Container) -> None:
    with sdk_call(f"docker unpause {container.name}"):
        container.unpause()


def _start(container: Container) -> None:
    with sdk_call(f"docker start {container.name}"):
        container.start()


def heal(config: Config, fault: Fault) -> str:
    """Undo one active fault; idempotent (a container already back is left alone)."""
    from docker.errors import NotFound

    client = docker_client()
    try:
        container = client.containers.get(fault.container)
    except NotFound:
        return f"{fault.target}: its container is gone (stack down?), nothing to heal"
    status = _status(container)
    kind = fault.kind
    if kind in ("kill", "stop"):
        if status == "paused":
            _unpause(container)
        elif status != "running":
            _start(container)
        return f"{fault.target}: started"
    if kind == "pause":
        if status == "paused":
            _unpause(container)
        return f"{fault.target}: unpaused"
    if kind == "partition" and fault.networks is not None:
        connected = set(container.attrs["NetworkSettings"]["Networks"])
        for name, aliases in fault.networks.items():
            if name in connected:
                continue
            try:
                network = client.networks.get(name)
            except NotFound:
                return f"{fault.target}: network {name} is gone, not reconnected"
            alias = "".join(f" --alias {a}" for a in aliases)
            with sdk_call(f"docker network connect{alias} {name} {container.name}"):
                network.connect(container, aliases=list(aliases))
        return f"{fault.target}: reconnected with aliases " + ", ".join(
            sorted({a for aliases in fault.networks.values() for a in aliases})
        )
    raise UsageError(f"fault {fault.id} ({kind}) is not a container fault")


def repair(config: Config, store: FaultStore, kind: str, role: str) -> list[Fault]:
    """`start` or `unpause` a role; returns the recorded faults this resolved."""
    client = docker_client()
    container = find_container(client, config, role)
    status = _status(container)
    if kind == "start" and status == "paused":
        _unpause(container)
    elif kind == "start" and status != "running":
        _start(container)
    elif kind == "unpause" and status == "paused":
        _unpause(container)
    elif kind == "unpause" and status != "running":
        raise EngineError(
            f"'{role}' is {status}: nothing to unpause",
            hint=f"`edaenv inject start {role}` starts it",
        )
    resolved = []
    for fault in store.active():
        if fault.container == container.id and fault.kind in REPAIRS[kind]:
            done = store.resolve(fault.id, f"inject {kind}")
            if done:
                resolved.append(done)
    return resolved


def wait_healthy(config: Config, roles: list[str], timeout: float) -> list[str]:
    """Wait until every role's container is running and healthy (or has no health check);
    returns the roles still not healthy when the timeout expires."""
    client = docker_client()
    deadline = time.monotonic() + timeout
    pending = list(roles)
    while pending:
        pending = [role for role in pending if not _healthy(client, config, role)]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return pending


def _healthy(client: DockerClient, config: Config, role: str) -> bool:
    try:
        container = find_container(client, config, role)
    except EngineError:
        return False
    state = container.attrs["State"]
    if state["Status"] != "running":
        return False
    health = state.get("Health")
    return health is None or health.get("Status") == "healthy"


def container_status(config: Config, fault: Fault) -> str:
    """What the container of a fault looks like now, for `inject status`."""
    from docker.errors import NotFound

    try:
        container = docker_client().containers.get(fault.container)
    except NotFound:
        return "gone"
    status = _status(container)
    if fault.kind == "partition" and fault.networks is not None:
        connected = set(container.attrs["NetworkSettings"]["Networks"])
        missing = [name for name in fault.networks if name not in connected]
        return f"{status}, disconnected from {', '.join(missing)}" if missing else status
    return status
