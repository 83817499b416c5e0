"""Idle cost: no health check starts a JVM or an interpreter every second for the life of the
stack (they ran a `python3 -c` in the relay and consumer and a JVM in Kafka every second: ~22%
of a core for an idle stack)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edaenv.config import BROKERS, parse_config
from edaenv.stack.render import render_committed

EXPENSIVE = (
    "java",
    "python",
    "python3",
    "node",
    "kafka-broker-api-versions.sh",
    "kafka-",
    "rabbitmq-diagnostics",
    "rabbitmqctl",
    "jcmd",
)


def checks(broker: str) -> dict[str, dict]:
    config = parse_config(f"project: shop\nbroker: {broker}\n", Path("/r/edaenv.yaml"))
    compose = yaml.safe_load(next(iter(render_committed(config).values())))
    return {name: spec["healthcheck"] for name, spec in compose["services"].items()}


def seconds(text: str) -> float:
    return float(text.rstrip("s")) if text.endswith("s") and not text.endswith("ms") else 0.0


def expensive(test: list[str]) -> list[str]:
    words = " ".join(test[1:]).replace(";", " ").replace("&&", " ").split()
    return [
        w for w in words if any(w == e or w.startswith(e) or w.endswith("/" + e) for e in EXPENSIVE)
    ]


@pytest.mark.parametrize("broker", BROKERS)
def test_no_check_starts_a_jvm_or_an_interpreter_every_second(broker: str) -> None:
    for service, check in checks(broker).items():
        if seconds(check["interval"]) >= 10:
            continue
        assert expensive(check["test"]) == [], f"{service}: {check['test']}"


def test_the_check_catches_an_interpreter() -> None:
    """Seen failing: the relay's old check."""
    old = ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('x')"]
    assert expensive(old) == ["python3"]
    assert (
        expensive(["CMD-SHELL", "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server x"])
        != []
    )


@pytest.mark.parametrize(
    ("api", "written"),
    [("1.41", False), ("1.43", False), ("1.44", True), ("1.51", True), ("", False)],
)
def test_engines_that_take_start_interval_get_idle_checks(api: str, written: bool) -> None:
    from edaenv.engine.compose import engine_override

    config = parse_config("project: shop\nbroker: nats\n", Path("/r/edaenv.yaml"))
    text = engine_override(config, api)
    assert (text is not None) == written
    if text is not None:
        services = yaml.safe_load(text)["services"]
        assert set(services) == set(config.services())
        assert all(
            s["healthcheck"] == {"start_interval": "1s", "interval": "30s"}
            for s in services.values()
        )
