"""Idle cost: no health check starts a JVM, an interpreter or a heavy client every second for the
life of the stack. They ran `python3 -c` in the relay and consumer, a JVM in Kafka
(kafka-broker-api-versions.sh) and `rpk cluster health` in Redpanda every second: ~22% of a core
for an idle stack. Docker 20.10 has no start_interval, so a check that runs every second must be
cheap (a shell builtin socket probe, busybox wget, pg_isready)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.config import BROKERS, parse_config
from edaenv.stack.render import render_committed

# A program's name, or a prefix of it ("python3.12", "kafka-topics.sh").
EXPENSIVE = re.compile(
    r"^(java|jshell|jcmd|python[0-9.]*|node|deno|bun|ruby|perl|php|erl|escript|rpk|kafka-\S*"
    r"|rabbitmq-\S*|rabbitmqctl|nats|jaeger\S*|promtool|grafana\S*|psql)$"
)
LONG_ENOUGH = 10.0  # seconds: a check this rare may cost what it likes


def checks(broker: str) -> dict[str, dict]:
    """Each service's healthcheck in the stack with every component."""
    config = parse_config(f"project: shop\nbroker: {broker}\n", Path("/r/edaenv.yaml"))
    compose = yaml.safe_load(next(iter(render_committed(config).values())))
    return {name: spec["healthcheck"] for name, spec in compose["services"].items()}


def seconds(duration: str) -> float:
    """A compose duration ("1s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"([0-9.]+)(h|ms|us|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def expensive(test: list[str]) -> list[str]:
    """The programs a check's command starts that cost a JVM, an interpreter or a heavy client."""
    assert test[0] in ("CMD", "CMD-SHELL"), test
    words = re.split(r"[\s;&|()`'\"<>$]+", " ".join(test[1:]))
    return [w for w in words if EXPENSIVE.match(w.rpartition("/")[2])]


@pytest.mark.parametrize("broker", BROKERS)
def test_no_frequent_check_starts_a_jvm_or_an_interpreter(broker: str) -> None:
    found = checks(broker)
    assert {"broker", "postgres", "relay", "consumer", "jaeger", "prometheus", "grafana"} <= set(
        found
    )
    costly = {
        service: expensive(check["test"])
        for service, check in found.items()
        if seconds(check["interval"]) < LONG_ENOUGH and expensive(check["test"])
    }
    assert costly == {}


@pytest.mark.parametrize("broker", BROKERS)
def test_every_check_stays_fast_to_turn_healthy(broker: str) -> None:
    """`up` waits for healthy: a check that runs rarely would slow it (bench/up.py)."""
    intervals = {s: seconds(c["interval"]) for s, c in checks(broker).items()}
    assert intervals == dict.fromkeys(intervals, 1.0)


@pytest.mark.parametrize(
    ("old", "found"),
    [
        # The checks on main before this change: each is caught.
        (
            ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('x')"],
            ["python3"],
        ),
        (
            [
                "CMD-SHELL",
                "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server 127.0.0.1:19092",
            ],
            ["/opt/kafka/bin/kafka-broker-api-versions.sh"],
        ),
        (["CMD-SHELL", "rpk cluster health | grep -E 'Healthy:.+true'"], ["rpk"]),
        (["CMD", "rabbitmq-diagnostics", "-q", "ping"], ["rabbitmq-diagnostics"]),
        (["CMD-SHELL", "x=$(java -version) && true"], ["java"]),
        (["CMD", "bash", "-c", "exec python3.12 -c 1"], ["python3.12"]),
    ],
)
def test_the_check_catches_the_old_checks(old: list[str], found: list[str]) -> None:
    assert expensive(old) == found


@pytest.mark.parametrize(
    "cheap",
    [
        ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/5672"],
        ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:9090/-/ready"],
        ["CMD-SHELL", 'pg_isready -h 127.0.0.1 -U "$${POSTGRES_USER}"'],
    ],
)
def test_cheap_checks_pass(cheap: list[str]) -> None:
    assert expensive(cheap) == []


@settings(max_examples=50, deadline=None)
@given(
    program=st.sampled_from(["java", "python3", "node", "rpk", "kafka-topics.sh", "rabbitmqctl"]),
    directory=st.sampled_from(["", "/usr/bin/", "/opt/kafka/bin/"]),
    before=st.sampled_from(["", "true && ", "x=$(", "exec ", "timeout 5 "]),
    shell=st.booleans(),
)
@example(program="python3", directory="", before="", shell=False)
def test_an_expensive_program_is_found_wherever_it_stands(
    program: str, directory: str, before: str, shell: bool
) -> None:
    command = f"{before}{directory}{program} --flag"
    test = ["CMD-SHELL", command] if shell else ["CMD", "bash", "-c", command]
    assert expensive(test) == [directory + program]


def test_durations() -> None:
    assert [seconds(d) for d in ("1s", "90s", "1m30s", "500ms")] == [1.0, 90.0, 90.0, 0.5]


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
