"""The pytest plugin's lease (edaenv/engine/lease.py): what it counts as its own, from two
views of a project on the engine, and how it reads a marker it cannot trust.
The same behaviour against a real engine: tests/e2e/test_plugin_ownership.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from edaenv.engine.lease import MARKER_NAME, Found, Lease, Owned, broken
from edaenv.engine.status import ServiceState


def state(
    service: str, container_id: str, status: str = "running", health: str | None = None
) -> ServiceState:
    return ServiceState(
        service, f"x-{service}-1", status, health, None, None, None, id=container_id
    )


def found(*states: ServiceState, mounts=None, networks=None, volumes=()) -> Found:
    return Found(list(states), mounts or {}, networks or {}, set(volumes))


def test_the_plugin_owns_what_appeared_and_what_it_started_never_what_was_there() -> None:
    before = found(
        state("broker", "b"),
        state("postgres", "p", "exited"),
        mounts={"b": {"x_broker-data"}, "p": {"x_postgres-data"}},
        networks={"n1": "x_default"},
        volumes=["x_broker-data", "x_postgres-data"],
    )
    after = found(
        state("broker", "b"),
        state("postgres", "p"),
        state("prometheus", "q"),
        mounts={"b": {"x_broker-data"}, "p": {"x_postgres-data"}, "q": {"x_prometheus-data"}},
        networks={"n1": "x_default"},
        volumes=["x_broker-data", "x_postgres-data", "x_prometheus-data"],
    )

    owned = Owned.between(before, after)

    assert owned == Owned(
        containers={"q": "prometheus"},
        started={"p": "postgres"},
        networks={},
        volumes={"x_prometheus-data": ["q"]},
    )
    assert owned.shown() == "container prometheus (q), volume x_prometheus-data"


def test_what_the_user_made_again_is_theirs() -> None:
    owned = Owned(
        containers={"q": "prometheus", "j": "jaeger"},
        networks={"n1": "x_default"},
        volumes={"x_prometheus-data": ["q"], "x_jaeger-data": ["j"]},
    )
    # Since: `edaenv down --volumes && edaenv up jaeger prometheus` made everything again
    # under the same names, except jaeger's container, still the plugin's.
    now = found(
        state("prometheus", "q2"),
        state("jaeger", "j"),
        mounts={"q2": {"x_prometheus-data"}, "j": {"x_jaeger-data"}},
        networks={"n2": "x_default"},
        volumes=["x_prometheus-data", "x_jaeger-data"],
    )

    owned.prune(now)

    assert owned == Owned(containers={"j": "jaeger"}, volumes={"x_jaeger-data": ["j"]})


def test_a_marker_it_cannot_read_owns_nothing(tmp_path: Path) -> None:
    for text in ("{not json", "[]", '{"owned": {"containers": ["a"]}, "holders": "1"}', "\xff"):
        (tmp_path / MARKER_NAME).write_text(text, encoding="latin-1")
        lease = Lease.read(tmp_path)
        assert not lease.owned and lease.holders == set() and lease.failed is None, text


def test_a_marker_round_trips_and_goes_when_nothing_is_left(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    lease = Lease(
        project="x",
        holders={dead.pid, os.getpid()},
        owned=Owned(containers={"q": "prometheus"}, volumes={"x_prometheus-data": ["q"]}),
    )

    lease.write(tmp_path)

    written = json.loads((tmp_path / MARKER_NAME).read_text())
    assert written["holders"] == [os.getpid()]  # the dead one is dropped
    assert Lease.read(tmp_path) == lease
    lease.holders.clear()
    lease.owned = Owned()
    lease.write(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_service_is_broken_when_up_could_not_bring_it_back_without_a_restart() -> None:
    states = [
        state("broker", "1", "paused"),
        state("postgres", "2", "running", "unhealthy"),
        state("consumer", "3", "restarting"),
        state("relay", "4", "dead"),
        # up starts or waits for these:
        state("jaeger", "5", "exited", "unhealthy"),  # a stopped container keeps its health
        state("prometheus", "6", "running", "starting"),
        state("grafana", "7", "created"),
    ]

    assert [s.service for s in broken(states)] == ["broker", "postgres", "consumer", "relay"]
