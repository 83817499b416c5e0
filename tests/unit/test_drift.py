"""Drift: the running stack compared with edaenv.yaml, on container-list entries shaped as the
engine gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edaenv.config import BROKERS, COMPONENTS, REQUIRES, Config, parse_config
from edaenv.engine.drift import BROKER_LABEL, Drift, find_drift

SERVICE = "com.docker.compose.service"


def running(config: Config) -> list[dict[str, Any]]:
    """The container list of a stack started from `config`."""
    entries = []
    for service, ports in config.ports().items():
        labels = {SERVICE: service}
        if service == "broker":
            labels[BROKER_LABEL] = config.broker
        image = f"p-{service}:dev" if service in ("relay", "consumer") else config.image(service)
        published = [{"IP": "127.0.0.1", "PublicPort": p, "Type": "tcp"} for p in ports.values()]
        entries.append({"Labels": labels, "Image": image, "Ports": published})
    return entries


def config_of(broker: str, off: frozenset[str], offset: int) -> Config:
    components = "".join(f"  {name}: false\n" for name in sorted(off))
    text = f"project: p\nbroker: {broker}\nports:\n  offset: {offset}\n"
    return parse_config(
        text + (f"components:\n{components}" if off else ""), Path("/r/edaenv.yaml")
    )


def closed(off: set[str]) -> frozenset[str]:
    """Turn off what needs a component that is off."""
    while True:
        more = {name for name in COMPONENTS for need in REQUIRES.get(name, ()) if need in off}
        if more <= off:
            return frozenset(off)
        off |= more


configs = st.builds(
    config_of,
    st.sampled_from(BROKERS),
    st.sets(st.sampled_from(COMPONENTS)).map(closed),
    st.integers(0, 50).map(lambda n: n * 100),
)


@settings(max_examples=200, deadline=None)
@given(configs)
def test_a_stack_started_from_the_config_has_no_drift(config: Config) -> None:
    assert find_drift(config, running(config)) == []


@settings(max_examples=200, deadline=None)
@given(configs, st.sampled_from(BROKERS))
def test_another_broker_is_one_drift(config: Config, other: str) -> None:
    started = config_of(other, frozenset(COMPONENTS) - config.components, config.port_offset)
    expected = [] if other == config.broker else [Drift("broker", other, config.broker)]
    assert find_drift(config, running(started)) == expected


@settings(max_examples=200, deadline=None)
@given(configs, st.integers(1, 5).map(lambda n: n * 7))
def test_moved_ports_are_one_drift_per_service(config: Config, shift: int) -> None:
    moved = config_of(
        config.broker, frozenset(COMPONENTS) - config.components, config.port_offset + shift
    )
    found = find_drift(config, running(moved))
    assert [d.what for d in found] == [f"ports of {s}" for s in sorted(config.services())]


def test_a_component_turned_off_and_an_image_changed_are_said_once_each() -> None:
    config = config_of("nats", frozenset({"grafana"}), 0)
    started = running(config_of("nats", frozenset(), 0))
    for entry in started:
        if entry["Labels"][SERVICE] == "postgres":
            entry["Image"] = "postgres:16"
    assert [d.shown() for d in find_drift(config, started)] == [
        "component grafana: it runs, edaenv.yaml says it is off",
        f"image of postgres: postgres:16 runs, edaenv.yaml says {config.image('postgres')}",
    ]
