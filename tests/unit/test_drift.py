"""Drift: the running stack compared with edaenv.yaml, on container-list entries shaped as the
engine gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.config import BROKERS, COMPONENTS, REQUIRES, SERVICE_PORTS, Config, parse_config
from edaenv.engine.drift import BROKER_LABEL, Drift, advice, applied, find_drift

SERVICE = "com.docker.compose.service"
BUILT = ("relay", "consumer")
SERVICE_NAMES = ["broker", *SERVICE_PORTS]


def running(config: Config) -> list[dict[str, Any]]:
    """The container list of a stack started from `config`."""
    entries = []
    for service, ports in config.ports().items():
        labels = {SERVICE: service}
        if service == "broker":
            labels[BROKER_LABEL] = config.broker
        image = f"p-{service}:dev" if service in ("relay", "consumer") else config.image(service)
        published = [{"IP": "127.0.0.1", "PublicPort": p, "Type": "tcp"} for p in ports.values()]
        entries.append({"Labels": labels, "Image": image, "Ports": published, "State": "running"})
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


def services_of(config: Config) -> st.SearchStrategy[str]:
    return st.sampled_from(config.services())


@settings(max_examples=200, deadline=None)
@given(configs, st.data())
def test_one_changed_image_is_one_drift(config: Config, data: st.DataObject) -> None:
    service = data.draw(st.sampled_from([s for s in config.services() if s not in BUILT]))
    started = running(config)
    entry = next(e for e in started if e["Labels"][SERVICE] == service)
    entry["Image"] = "registry.example/other:1"
    assert find_drift(config, started) == [
        Drift(f"image of {service}", "registry.example/other:1", config.image(service))
    ]


@settings(max_examples=200, deadline=None)
@given(configs, st.data())
def test_one_moved_port_is_one_drift(config: Config, data: st.DataObject) -> None:
    service = data.draw(services_of(config))
    started = running(config)
    entry = next(e for e in started if e["Labels"][SERVICE] == service)
    wanted = sorted(config.ports()[service].values())
    moved = max(wanted) + 7  # e.g. `ports: {broker: ...}` edited in edaenv.yaml
    entry["Ports"][-1] = {**entry["Ports"][-1], "PublicPort": moved}
    published = sorted(p["PublicPort"] for p in entry["Ports"])
    assert find_drift(config, started) == [
        Drift(f"ports of {service}", ", ".join(map(str, published)), ", ".join(map(str, wanted)))
    ]


@settings(max_examples=200, deadline=None)
@given(configs, st.data())
@example(config_of("kafka", frozenset({"grafana"}), 0), None).via("explicit")
def test_one_component_that_is_off_but_runs_is_one_drift(
    config: Config, data: st.DataObject | None
) -> None:
    off = [name for name in SERVICE_NAMES if name not in config.services()]
    if not off:
        return
    service = data.draw(st.sampled_from(off)) if data is not None else off[0]
    extra = {"Labels": {SERVICE: service}, "Image": f"{service}:x", "Ports": [], "State": "running"}
    assert find_drift(config, [*running(config), extra]) == [
        Drift(f"component {service}", "it", "it is off")
    ]


def test_one_off_and_exited_leftover_containers_are_not_drift() -> None:
    """`compose run` containers and an exited container of a component turned off run nothing
    of the stack (`up --remove-orphans` removes the latter)."""
    config = config_of("nats", frozenset({"grafana"}), 0)
    started = running(config)
    oneoff = {
        "Labels": {SERVICE: "postgres", "com.docker.compose.oneoff": "True"},
        "Image": "other:1",
        "Ports": [],
        "State": "running",
    }
    exited = {"Labels": {SERVICE: "grafana"}, "Image": "g:1", "Ports": [], "State": "exited"}
    stopped_broker = {**started[0], "Ports": [], "State": "exited"}  # publishes nothing now
    assert find_drift(config, [stopped_broker, *started[1:], oneoff, exited]) == []
    assert find_drift(config, [*started, {**exited, "State": "running"}]) == [
        Drift("component grafana", "it", "it is off")
    ]


def test_what_status_and_up_say_about_a_broker_change() -> None:
    config = config_of("kafka", frozenset(), 0)
    found = find_drift(config, running(config_of("rabbitmq", frozenset(), 0)))
    assert [d.shown() for d in found] == ["broker: rabbitmq runs, edaenv.yaml says kafka"]
    assert advice(found) == (
        "run `edaenv up` to replace the rabbitmq broker with kafka (each broker keeps its data "
        "in a volume of its own: rabbitmq's stays in rabbitmq-data), or restore edaenv.yaml's "
        "broker"
    )
    assert applied(config, found) == (
        "edaenv.yaml changed since the stack started; up applies: broker rabbitmq -> kafka",
        "the rabbitmq broker's container is replaced by a kafka one on its own volume "
        "kafka-data; rabbitmq's data stays in rabbitmq-data (`edaenv down --volumes` deletes "
        "every volume of the stack)",
    )
    image = [Drift("image of postgres", "postgres:16", "postgres:18")]
    assert advice(image) == "run `edaenv up` to apply edaenv.yaml to the running stack"
    assert applied(config, image) == (
        "edaenv.yaml changed since the stack started; up applies: image of postgres "
        "postgres:16 -> postgres:18",
        "the services whose configuration changed are recreated",
    )


def test_each_broker_fragment_labels_its_kind_and_names_its_own_volume() -> None:
    """The label is what tells the running broker apart; one volume name for every broker
    handed one broker's files to the next."""
    from edaenv.stack.render import render_committed

    for broker in BROKERS:
        config = config_of(broker, frozenset(), 0)
        (text,) = render_committed(config).values()
        compose = yaml.safe_load(text)
        assert compose["services"]["broker"]["labels"][BROKER_LABEL] == broker
        mounted = [v.split(":")[0] for v in compose["services"]["broker"]["volumes"]]
        assert f"{broker}-data" in mounted and "broker-data" not in mounted
        assert f"{broker}-data" in compose["volumes"]
