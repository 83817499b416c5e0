"""Idle cost: no health check starts a JVM, an interpreter or a heavy client every second for the
life of the stack. They ran `python3 -c` in the relay and consumer, a JVM in Kafka
(kafka-broker-api-versions.sh) and `rpk cluster health` in Redpanda every second: ~22% of a core
for an idle stack. Docker 20.10 has no start_interval, so a check that runs every second must be
cheap (a shell builtin socket probe, busybox wget, pg_isready)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.config import BROKERS, Config, parse_config
from edaenv.engine.compose import IDLE_SLEEP_S, engine_override, gate
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


def committed(tmp_path: Path, broker: str = "nats") -> Config:
    """A config whose compose.yaml is rendered on disk, as `up` has it."""
    config = parse_config(f"project: shop\nbroker: {broker}\n", tmp_path / "edaenv.yaml")
    for name, text in render_committed(config).items():
        (config.scaffold_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (config.scaffold_dir / name).write_text(text)
    return config


@pytest.mark.parametrize("api", ["1.44", "1.51"])
def test_engines_that_take_start_interval_get_idle_checks(tmp_path: Path, api: str) -> None:
    config = committed(tmp_path)
    services = yaml.safe_load(engine_override(config, api) or "")["services"]
    assert set(services) == set(config.services())
    assert all(
        s["healthcheck"] == {"start_interval": "1s", "interval": "30s"} for s in services.values()
    )


@pytest.mark.parametrize("api", ["1.41", "1.43"])
@pytest.mark.parametrize("broker", BROKERS)
def test_older_engines_get_every_committed_check_gated(
    tmp_path: Path, api: str, broker: str
) -> None:
    config = committed(tmp_path, broker)
    services = yaml.safe_load(engine_override(config, api) or "")["services"]
    assert {name: spec["healthcheck"] for name, spec in services.items()} == {
        name: {"test": gate(check["test"]), "timeout": f"{IDLE_SLEEP_S + 5}s"}
        for name, check in checks(broker).items()
    }


def test_an_unreadable_engine_version_gets_no_override(tmp_path: Path) -> None:
    assert engine_override(committed(tmp_path), "") is None


# The gate under a real shell: `sleep` is a function that says it slept, so no test waits.
SHELLS = [name for name in ("sh", "bash", "busybox") if shutil.which(name)]


def run_gate(shell: str, probe: list[str], stamp: Path) -> tuple[int, bool, str]:
    """What the gated check did, as the engine runs it: (exit code, whether it slept first,
    what the probe printed)."""
    script = gate(probe, sleep_s=20, stamp=str(stamp))[1]
    assert "$" not in script.replace("$$", ""), "every $ escaped for compose"
    command = [shell, "sh", "-c"] if shell == "busybox" else [shell, "-c"]
    said = subprocess.run(
        [*command, "sleep() { echo slept; }; " + script.replace("$$", "$")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    slept = said.stdout.startswith("slept\n")
    return said.returncode, slept, said.stdout.removeprefix("slept\n")


PROBE_WORDS = st.text(st.sampled_from("ab -'\"\\$;&|()\n*?"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    code=st.integers(0, 255),
    words=st.lists(PROBE_WORDS, max_size=3),
    form=st.sampled_from(["CMD", "CMD-SHELL"]),
    shell=st.sampled_from(SHELLS),
)
@example(code=0, words=["$$x", "it's"], form="CMD", shell="sh")
def test_the_gate_keeps_the_probes_verdict_and_sleeps_only_after_a_success(
    tmp_path_factory: pytest.TempPathFactory, code: int, words: list[str], form: str, shell: str
) -> None:
    stamp = tmp_path_factory.mktemp("gate") / "stamp"
    # Any arguments, written as in compose.yaml (`$` as `$$`): they reach the probe unchanged.
    escaped = [w.replace("$", "$$") for w in words]
    if form == "CMD":
        probe = [
            "CMD",
            "sh",
            "-c",
            f'for a; do printf "%s|" "$$a"; done; exit {code}',
            "probe",
            *escaped,
        ]
        printed = "".join(f"{w}|" for w in words)
    else:
        probe = ["CMD-SHELL", f"printf %s {shlex.quote(' '.join(escaped))}; exit {code}"]
        printed = " ".join(words)
    first = run_gate(shell, probe, stamp)
    second = run_gate(shell, probe, stamp)
    assert first == (min(code, 1), False, printed)  # starting: no stamp, no sleep
    assert second == (min(code, 1), code == 0, printed)  # healthy a moment ago: sleep first
    assert stamp.exists() == (code == 0)


def test_a_failure_or_a_stale_stamp_probes_at_once(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    healthy, failing = ["CMD-SHELL", "true"], ["CMD-SHELL", "false"]
    assert run_gate(SHELLS[0], healthy, stamp)[:2] == (0, False)
    assert run_gate(SHELLS[0], failing, stamp)[:2] == (1, True)  # slept: it was healthy
    assert run_gate(SHELLS[0], failing, stamp)[:2] == (1, False)  # failing: every second
    assert run_gate(SHELLS[0], healthy, stamp)[:2] == (0, False)
    for old in ("1", "", "garbage", "12 34"):  # a probe killed by the timeout, a torn write
        stamp.write_text(old)
        assert run_gate(SHELLS[0], healthy, stamp)[:2] == (0, False)
    assert run_gate(SHELLS[0], healthy, tmp_path / "no-such-dir" / "stamp") == (0, False, "")


@pytest.mark.parametrize("text", ["", "services: 3\n", "services:\n  broker: [1]\n", "- a\n"])
def test_a_compose_file_edited_out_of_shape_gets_no_gate_and_no_crash(
    tmp_path: Path, text: str
) -> None:
    config = committed(tmp_path)
    config.compose_file.write_text(text)
    assert yaml.safe_load(engine_override(config, "1.41") or "") == {"services": {}}
