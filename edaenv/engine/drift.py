"""What differs between the running stack and edaenv.yaml: the broker, an image, a published
port, a component. Read from one call of the engine's container list (labels, image, port
bindings): no inspect per container, nothing started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edaenv.config import Config
from edaenv.engine.status import PROJECT_LABEL, SERVICE_LABEL

if TYPE_CHECKING:
    from edaenv.engine.api import Engine

BROKER_LABEL = "dev.edaenv.broker"  # set by each broker fragment
ONEOFF_LABEL = "com.docker.compose.oneoff"  # `compose run` containers: not the stack's services
BUILT = ("relay", "consumer")  # images built by `up`, not named in edaenv.yaml
# A container in these states holds what it was created with; an exited orphan runs nothing
# and `up` removes it.
LIVE = ("running", "paused", "restarting")


@dataclass(frozen=True)
class Drift:
    what: str  # "broker", "image of postgres", "ports of broker", "component grafana"
    running: str
    configured: str

    def shown(self) -> str:
        return f"{self.what}: {self.running} runs, edaenv.yaml says {self.configured}"

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "running": self.running, "configured": self.configured}


def find_drift(config: Config, containers: list[dict[str, Any]]) -> list[Drift]:
    """`containers`: the project's entries of the engine's container list. A configured
    service without a container is not drift: `status` reports it as missing."""
    found: list[Drift] = []
    configured = config.services()
    ports = config.ports()
    services = [c for c in containers if (c.get("Labels") or {}).get(ONEOFF_LABEL) != "True"]
    for attrs in sorted(services, key=lambda a: str((a.get("Labels") or {}).get(SERVICE_LABEL))):
        labels = attrs.get("Labels") or {}
        service = labels.get(SERVICE_LABEL, "")
        if service not in configured:
            if attrs.get("State", "running") in LIVE:
                found.append(Drift(f"component {service}", "it", "it is off"))
            continue
        if service == "broker":
            kind = labels.get(BROKER_LABEL)
            if kind and kind != config.broker:
                found.append(Drift("broker", kind, config.broker))
                continue  # its image and ports differ too: one change, said once
        if service not in BUILT and attrs.get("Image") != config.image(service):
            found.append(
                Drift(f"image of {service}", str(attrs.get("Image")), config.image(service))
            )
        published = sorted(
            {int(p["PublicPort"]) for p in attrs.get("Ports") or [] if p.get("PublicPort")}
        )
        wanted = sorted(ports.get(service, {}).values())
        if published and published != wanted:  # a stopped container publishes nothing
            found.append(Drift(f"ports of {service}", _ports(published), _ports(wanted)))
    return found


def drift(config: Config, engine: Engine) -> list[Drift]:
    return find_drift(config, engine.containers({"label": [f"{PROJECT_LABEL}={config.project}"]}))


def drift_if_running(config: Config) -> list[Drift]:
    """Drift when an engine answers; none without one (the caller works before `up` too)."""
    from edaenv.engine import api
    from edaenv.errors import EdaenvError

    try:
        return drift(config, api.connect(timeout=2))
    except (EdaenvError, OSError):
        return []


def advice(drifts: list[Drift]) -> str:
    """How to bring the stack in line with edaenv.yaml."""
    old = next((d for d in drifts if d.what == "broker"), None)
    if old is not None:
        return (
            f"run `edaenv up` to replace the {old.running} broker with {old.configured} (each "
            f"broker keeps its data in a volume of its own: {old.running}'s stays in "
            f"{old.running}-data), or restore edaenv.yaml's broker"
        )
    return "run `edaenv up` to apply edaenv.yaml to the running stack"


def applied(config: Config, drifts: list[Drift]) -> tuple[str, str]:
    """What `up` says it changes in a running stack, and what happens to the data."""
    changes = "; ".join(f"{d.what} {d.running} -> {d.configured}" for d in drifts)
    message = f"edaenv.yaml changed since the stack started; up applies: {changes}"
    old = next((d.running for d in drifts if d.what == "broker"), None)
    if old is None:
        return message, "the services whose configuration changed are recreated"
    return message, (
        f"the {old} broker's container is replaced by a {config.broker} one on its own volume "
        f"{config.broker}-data; {old}'s data stays in {old}-data (`edaenv down --volumes` "
        "deletes every volume of the stack)"
    )


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports)) or "none"
