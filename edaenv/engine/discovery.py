"""Which Docker engine edaenv talks to: the one the docker CLI, and so `docker compose`, uses.

The docker CLI's order (docker/cli `resolveContextName`):
1. DOCKER_HOST, when set (contexts are then not consulted);
2. the context DOCKER_CONTEXT names, else `currentContext` in $DOCKER_CONFIG/config.json
   (DOCKER_CONFIG defaults to ~/.docker); its endpoint is in the context store,
   $DOCKER_CONFIG/contexts/meta/<sha256 of the name>/meta.json, its TLS files beside it under
   contexts/tls/;
3. the default socket, unix:///var/run/docker.sock.
One endpoint comes out, as with the CLI: falling back to another engine than the one compose
uses would split a stack between two engines. `docker compose` resolves the same way by itself;
the Docker SDK and the raw HTTP of engine/api.py take the host from here.

Podman: its socket speaks the Docker API. Point DOCKER_HOST (or a context) at it, e.g.
`unix://$XDG_RUNTIME_DIR/podman/podman.sock` (rootless): compose and edaenv then both use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edaenv.errors import EngineError

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_CONTEXT = "default"  # the docker CLI's name for "DOCKER_HOST, else the default socket"


@dataclass(frozen=True)
class Tls:
    ca: Path | None
    cert: Path | None
    key: Path | None
    verify: bool


@dataclass(frozen=True)
class Endpoint:
    host: str  # unix:///..., tcp://..., ssh://...
    source: str  # where the host came from, for messages
    looked: tuple[str, ...]  # each place looked at, in order, and what it held
    tls: Tls | None = None  # a context's TLS settings (DOCKER_HOST's come from the environment)


def discover(environ: Mapping[str, str] | None = None) -> Endpoint:
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST")
    if host:
        return Endpoint(host, "DOCKER_HOST", (f"DOCKER_HOST={host} (Docker contexts not read)",))
    looked = ["DOCKER_HOST: not set"]
    config_dir = _config_dir(env)
    name = env.get("DOCKER_CONTEXT")
    if name:
        looked.append(f"DOCKER_CONTEXT={name}")
    else:
        looked.append("DOCKER_CONTEXT: not set")
        name = _current_context(config_dir / "config.json", looked)
    if name and name != DEFAULT_CONTEXT:
        return _context(config_dir, name, tuple(looked))
    looked.append(f"the default socket {DEFAULT_HOST}")
    return Endpoint(DEFAULT_HOST, "the default socket", tuple(looked))


def _config_dir(env: Mapping[str, str]) -> Path:
    configured = env.get("DOCKER_CONFIG")
    if configured:
        return Path(configured)
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker"


def _current_context(config_file: Path, looked: list[str]) -> str | None:
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        looked.append(f"{config_file}: no such file")
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _error(
            f"cannot read the Docker CLI's configuration: {exc}",
            looked,
            where=str(config_file),
            hint="fix or remove the file (the docker CLI fails on it too)",
        ) from None
    name = data.get("currentContext") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        looked.append(f"{config_file}: no currentContext")
        return None
    looked.append(f"{config_file}: currentContext {name}")
    return name


def _context(config_dir: Path, name: str, looked: tuple[str, ...]) -> Endpoint:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest / "meta.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        docker = data["Endpoints"]["docker"]
        host = docker["Host"]
        skip_verify = bool(docker.get("SkipTLSVerify", False))
    except FileNotFoundError:
        raise _error(
            f"Docker context '{name}' does not exist",
            [*looked, f"context store: no {meta}"],
            hint="list the contexts with `docker context ls`, then `docker context use NAME` "
            "(or unset DOCKER_CONTEXT)",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise _error(
            f"Docker context '{name}' has no readable docker endpoint ({type(exc).__name__}: "
            f"{exc})",
            [*looked, f"context store: {meta}"],
            where=str(meta),
            hint=f"inspect it with `docker context inspect {name}`",
        ) from None
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    found = {part: tls_dir / f"{part}.pem" for part in ("ca", "cert", "key")}
    present = {part: path if path.is_file() else None for part, path in found.items()}
    tls = None
    if any(present.values()) or skip_verify:
        tls = Tls(present["ca"], present["cert"], present["key"], verify=not skip_verify)
    return Endpoint(
        host,
        f"Docker context '{name}'",
        (*looked, f"Docker context '{name}' ({meta}): {host}"),
        tls,
    )


def _error(message: str, looked: list[str], **kwargs: str) -> EngineError:
    from edaenv.engine.status import EngineUnreachable

    return EngineUnreachable(message + _places(looked), **kwargs)


def _places(looked: tuple[str, ...] | list[str]) -> str:
    return "\n  looked where the docker CLI looks, in its order:" + "".join(
        f"\n  - {place}" for place in looked
    )


def unreachable(endpoint: Endpoint, reason: str) -> EngineError:
    """The "no engine" error: the host, why, and every place looked at to find it."""
    from edaenv.engine.status import ENGINE_HINT, EngineUnreachable

    reason = _socket_problem(endpoint.host) or reason
    hint = ENGINE_HINT
    if endpoint.source.startswith("Docker context"):
        hint = (
            f"start the engine of {endpoint.source} (Colima: `colima start`), or switch "
            "context: `docker context use NAME` (`docker context ls` lists them)"
        )
    return EngineUnreachable(
        f"no Docker engine answers at {endpoint.host} ({endpoint.source}): {reason}"
        + _places(endpoint.looked),
        hint=hint,
    )


def _socket_problem(host: str) -> str | None:
    """Why a unix socket refuses a connection, in the system's words (the SDK wraps them)."""
    if not host.startswith("unix://"):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(host[len("unix://") :])
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def client(endpoint: Endpoint, timeout: float) -> DockerClient:
    """A Docker SDK client for the endpoint (not yet checked with a ping)."""
    import docker
    from docker.tls import TLSConfig

    if endpoint.source == "DOCKER_HOST":
        # from_env also honours DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as the CLI does.
        return docker.from_env(timeout=timeout)
    tls: TLSConfig | bool = False
    if endpoint.tls is not None:
        pair = (str(endpoint.tls.cert), str(endpoint.tls.key))
        tls = TLSConfig(
            client_cert=pair if endpoint.tls.cert and endpoint.tls.key else None,
            ca_cert=str(endpoint.tls.ca) if endpoint.tls.ca else None,
            verify=endpoint.tls.verify,
        )
    return docker.DockerClient(
        base_url=endpoint.host,
        timeout=int(timeout),
        tls=tls,
        use_ssh_client=endpoint.host.startswith("ssh://"),
    )
