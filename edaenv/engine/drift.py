"""What differs between the running stack and edaenv.yaml: the broker, an image, a published
port, a component. Read from the engine's container list (labels, image, port bindings): no
inspect per container, nothing started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edaenv.config import Config
from edaenv.engine.status import PROJECT_LABEL, SERVICE_LABEL

if TYPE_CHECKING:
    from edaenv.engine.api import Engine

BROKER_LABEL = "dev.edaenv.broker"  # set by each broker fragment
BUILT = ("relay", "consumer")  # images built by `up`, not named in edaenv.yaml


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
    """`containers`: the project's entries of the engine's container list."""
    found: list[Drift] = []
    configured = config.services()
    ports = config.ports()
    for attrs in sorted(containers, key=lambda a: str((a.get("Labels") or {}).get(SERVICE_LABEL))):
        labels = attrs.get("Labels") or {}
        service = labels.get(SERVICE_LABEL, "")
        if service not in configured:
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
        if published and published != wanted:
            found.append(Drift(f"ports of {service}", _ports(published), _ports(wanted)))
    return found


def drift(config: Config, engine: Engine) -> list[Drift]:
    return find_drift(config, engine.containers({"label": [f"{PROJECT_LABEL}={config.project}"]}))


def advice(drifts: list[Drift]) -> str:
    """How to bring the stack in line with edaenv.yaml."""
    if any(d.what == "broker" for d in drifts):
        return (
            "`edaenv down` then `edaenv up` starts the configured broker (each broker keeps its "
            "data in a volume of its own), or restore edaenv.yaml's broker"
        )
    return "`edaenv up` applies edaenv.yaml to the running stack"


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports)) or "none"
